package issuer

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"net/url"
	"slices"
	"strings"
	"time"

	"github.com/meshauth/meshauth/issuer/store"
)

// Sign-in session defaults: a session ends this long after the person
// signed in, or after this long unused, whichever comes first.
const (
	DefaultSessionLifetime    = 12 * time.Hour
	DefaultSessionIdleTimeout = time.Hour
)

// sessionTouchInterval is how stale a session's LastSeenAt may get before a
// use writes it again: the idle timeout is that much less exact, and a
// burst of authorizations costs no write each.
const sessionTouchInterval = time.Minute

// sessionValueLen is the length of a session cookie's value: 256 random
// bits in unpadded base64url.
const sessionValueLen = 43

// cookieName names one of the issuer's cookies. Over https it has the
// __Host- prefix, so that no sibling host can plant one. Over http (loopback
// development) it carries the issuer's port instead: browsers keep cookies
// per host, not per port, and two issuers on one machine (meshauth dev
// runs an upstream one) would otherwise overwrite each other's.
func (s *Server) cookieName(base string) string {
	if s.secureCookies {
		return "__Host-meshauth-" + base
	}
	return "meshauth-" + s.issuerPort + "-" + base
}

// setCookie sets one of the issuer's cookies, as __Host- requires (Path=/,
// Secure over https, no Domain). SameSite=Lax: authorization requests and
// upstream providers' answers arrive by cross-site navigations, which must
// carry them; cross-site POSTs do not. maxAge < 0 deletes the cookie.
func (s *Server) setCookie(w http.ResponseWriter, base, value string, maxAge time.Duration) {
	c := &http.Cookie{Name: s.cookieName(base), Value: value, Path: "/", HttpOnly: true, Secure: s.secureCookies, SameSite: http.SameSiteLaxMode}
	switch {
	case maxAge < 0:
		c.Value, c.MaxAge = "", -1
	case maxAge > 0:
		c.MaxAge = int(maxAge / time.Second)
	}
	http.SetCookie(w, c)
}

// parseSessionCookie returns the session value of the request's Cookie
// field: the first cookie of the session cookie's name, if it has the form
// of a value this issuer sets.
func (s *Server) parseSessionCookie(r *http.Request) (string, bool) {
	c, err := r.Cookie(s.cookieName("session"))
	if err != nil || len(c.Value) != sessionValueLen || !isBase64URL(c.Value) {
		return "", false
	}
	return c.Value, true
}

// signedIn is a live session and its user.
type signedIn struct {
	session *store.Session
	user    *store.User
}

// currentSession returns the browser's live session: not expired, used
// within the idle timeout, of a user who exists and is not disabled; nil if
// there is none. An error means the store failed.
func (s *Server) currentSession(ctx context.Context, r *http.Request) (*signedIn, error) {
	value, ok := s.parseSessionCookie(r)
	if !ok {
		return nil, nil
	}
	sess, err := s.store.GetSession(ctx, ReferenceTokenHash(value))
	if errors.Is(err, store.ErrNotFound) {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("look up session: %w", err)
	}
	now := s.now()
	// The store drops expired sessions, but by its clock; ours decides.
	if !now.Before(sess.ExpiresAt) || !now.Before(sess.LastSeenAt.Add(s.sessionIdle)) {
		return nil, nil
	}
	user, err := s.store.GetUser(ctx, sess.UserID)
	if errors.Is(err, store.ErrNotFound) {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("look up the session's user: %w", err)
	}
	if user.Disabled {
		return nil, nil
	}
	if now.Sub(sess.LastSeenAt) >= sessionTouchInterval {
		sess.LastSeenAt = now.UTC()
		switch err := s.store.UpdateSession(ctx, sess); {
		case errors.Is(err, store.ErrNotFound):
			return nil, nil // ended meanwhile
		case err != nil:
			return nil, fmt.Errorf("record the session's use: %w", err)
		}
	}
	return &signedIn{session: sess, user: user}, nil
}

// startSession signs user in in this browser: a new session (a new cookie
// value, so that a value planted or seen before sign-in is worth nothing),
// replacing the browser's previous one.
func (s *Server) startSession(ctx context.Context, w http.ResponseWriter, r *http.Request, user *store.User, amr []string, idp string) (*signedIn, error) {
	if old, ok := s.parseSessionCookie(r); ok {
		if err := s.store.DeleteSession(ctx, ReferenceTokenHash(old)); err != nil {
			return nil, fmt.Errorf("end the previous session: %w", err)
		}
	}
	now := s.now().UTC()
	value := referenceToken()
	sess := &store.Session{
		Hash: ReferenceTokenHash(value), UserID: user.ID, AuthTime: now, AMR: amr, IDP: idp,
		LastSeenAt: now, ExpiresAt: now.Add(s.sessionLifetime),
	}
	if err := s.store.CreateSession(ctx, sess); err != nil {
		return nil, fmt.Errorf("store session: %w", err)
	}
	s.setCookie(w, "session", value, s.sessionLifetime)
	return &signedIn{session: sess, user: user}, nil
}

// endSession ends the browser's session, if it has one, and deletes its
// cookie.
func (s *Server) endSession(ctx context.Context, w http.ResponseWriter, r *http.Request) error {
	if value, ok := s.parseSessionCookie(r); ok {
		if err := s.store.DeleteSession(ctx, ReferenceTokenHash(value)); err != nil {
			return fmt.Errorf("end session: %w", err)
		}
	}
	s.setCookie(w, "session", "", -1)
	return nil
}

// satisfies reports whether the session may answer req without asking the
// person to sign in again (OpenID Connect Core §3.1.2.1): not when req
// prompts for a sign-in or an account choice, when it is older than
// max_age, or when an id_token_hint names someone else.
func (si *signedIn) satisfies(req *authorizationRequest, now time.Time) bool {
	switch {
	case req.prompts(promptLogin) || req.prompts(promptSelectAccount):
		return false
	case req.MaxAge != nil && now.Sub(si.session.AuthTime) > time.Duration(*req.MaxAge)*time.Second:
		return false
	case req.HintSubject != "" && req.HintSubject != si.user.ID:
		return false
	}
	return true
}

// consented reports whether the person allowed req's client all of req's
// scope and audience during the session, and req does not ask to be asked
// again.
func (si *signedIn) consented(req *authorizationRequest) bool {
	if req.prompts(promptConsent) {
		return false
	}
	for _, c := range si.session.Consents {
		if c.ClientID == req.ClientID {
			return containsAll(c.Scope, req.Scope) && containsAll(c.Audience, req.Audience)
		}
	}
	return false
}

func containsAll(set, values []string) bool {
	for _, v := range values {
		if !slices.Contains(set, v) {
			return false
		}
	}
	return true
}

// rememberConsent adds req's scope and audience to what the person allowed
// its client during the session.
func (s *Server) rememberConsent(ctx context.Context, si *signedIn, req *authorizationRequest) error {
	sess := si.session
	i := slices.IndexFunc(sess.Consents, func(c store.Consent) bool { return c.ClientID == req.ClientID })
	if i < 0 {
		sess.Consents = append(sess.Consents, store.Consent{ClientID: req.ClientID})
		i = len(sess.Consents) - 1
	}
	c := &sess.Consents[i]
	c.Scope = dedupe(append(c.Scope, req.Scope...))
	c.Audience = dedupe(append(c.Audience, req.Audience...))
	if err := s.store.UpdateSession(ctx, sess); err != nil {
		return fmt.Errorf("remember consent: %w", err)
	}
	return nil
}

// proceed continues req once the person is signed in: to the consent page,
// or, when the session holds their consent already, straight back to the
// client with a code.
func (s *Server) proceed(w http.ResponseWriter, r *http.Request, c *store.Client, req *authorizationRequest, si *signedIn) {
	if !si.consented(req) {
		s.showConsent(w, r, c, req, si.user)
		return
	}
	s.grantCode(w, r, c, req, si)
}

// grantCode answers req with an authorization code for the session's user.
func (s *Server) grantCode(w http.ResponseWriter, r *http.Request, c *store.Client, req *authorizationRequest, si *signedIn) {
	ctx := r.Context()
	code, err := s.issueCode(ctx, req, si)
	if err != nil {
		s.authorizeFailed(w, r, s.storeFailure(ctx, req, err))
		return
	}
	s.remote.InfoContext(ctx, "authorization granted", "client_id", c.ID, "sub", si.user.ID, "scope", strings.Join(req.Scope, " "))
	s.redirectToClient(w, r, req, url.Values{"code": {code}})
}
