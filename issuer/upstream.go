package issuer

import (
	"context"
	"crypto/rand"
	"errors"
	"fmt"
	"net/http"
	"net/url"
	"regexp"
	"strconv"
	"strings"
	"time"

	"github.com/meshauth/meshauth/issuer/store"
	"github.com/meshauth/meshauth/rp"
)

// Paths of signing in through an upstream provider: the login page's
// button, and the redirect URI registered at the provider.
const (
	pathUpstreamLogin    = "/authorize/upstream"
	pathUpstreamCallback = "/upstream/{provider}/callback"
)

// UpstreamProvider is an OpenID provider people may sign in with (an
// organisation's Keycloak, Entra ID, Google, Okta, Dex): the login page
// offers it, and meshauth signs them in as the local user linked to their
// identity there. Tokens meshauth issues carry the local user's id as sub,
// the provider's issuer as idp and "fed" in amr.
type UpstreamProvider struct {
	// ID names the provider in URLs and logs: 1-32 characters of a-z, 0-9
	// and '-'. The redirect URI to register at the provider is
	// {issuer URL}/upstream/{ID}/callback.
	ID string
	// Name is what the login page's button says: "Sign in with {Name}".
	Name string
	// Issuer is the provider's issuer identifier; it is discovered from
	// there.
	Issuer string
	// ClientID and ClientSecret are meshauth's client at the provider.
	ClientID, ClientSecret string
	// Scopes are requested besides openid; default profile and email.
	Scopes []string
	// CreateUsers creates a local user for an identity linked to none,
	// on its first sign-in. Otherwise only identities an administrator
	// linked, or found by email (LinkVerifiedEmail), may sign in.
	CreateUsers bool
	// LinkVerifiedEmail lets an identity linked to no user sign in as the
	// one local user whose email, verified, equals the identity's
	// verified email. It trusts the provider to vouch for those
	// addresses: enable it only for a provider that owns their domains.
	LinkVerifiedEmail bool
	// HTTPClient and Timeout are those of package rp: the client for the
	// provider, and the bound on each request (default rp.DefaultTimeout).
	HTTPClient *http.Client
	Timeout    time.Duration
}

// upstreamProvider is an UpstreamProvider ready for use.
type upstreamProvider struct {
	UpstreamProvider
	rp *rp.Provider
}

// upstreamButton is a provider on the login page.
type upstreamButton struct {
	Name, URL string
}

var upstreamIDPattern = regexp.MustCompile(`^[a-z0-9][a-z0-9-]{0,31}$`)

func (s *Server) addUpstreams(cfgs []UpstreamProvider) error {
	s.upstreamByID = make(map[string]*upstreamProvider, len(cfgs))
	for _, cfg := range cfgs {
		switch {
		case !upstreamIDPattern.MatchString(cfg.ID):
			return fmt.Errorf("upstream provider %q: the id must be 1-32 characters of a-z, 0-9 and '-'", cfg.ID)
		case s.upstreamByID[cfg.ID] != nil:
			return fmt.Errorf("upstream provider %q configured twice", cfg.ID)
		case strings.TrimSuffix(cfg.Issuer, "/") == s.issuerURL:
			return fmt.Errorf("upstream provider %q is this issuer", cfg.ID)
		}
		if cfg.Name == "" {
			cfg.Name = cfg.ID
		}
		if cfg.Scopes == nil {
			cfg.Scopes = []string{scopeProfile, scopeEmail}
		}
		p, err := rp.New(rp.Config{
			Issuer: cfg.Issuer, ClientID: cfg.ClientID, ClientSecret: cfg.ClientSecret,
			RedirectURL: s.endpoint(strings.Replace(pathUpstreamCallback, "{provider}", cfg.ID, 1)),
			Scopes:      cfg.Scopes, Timeout: cfg.Timeout, HTTPClient: cfg.HTTPClient,
			Logger: s.log.With("upstream", cfg.ID), Now: s.now,
		})
		if err != nil {
			return fmt.Errorf("upstream provider %q: %w", cfg.ID, err)
		}
		u := &upstreamProvider{UpstreamProvider: cfg, rp: p}
		s.upstreams = append(s.upstreams, u)
		s.upstreamByID[cfg.ID] = u
	}
	return nil
}

// upstreamButtons are the login page's providers, each starting a sign-in
// with the page's form token.
func (s *Server) upstreamButtons(formToken string) []upstreamButton {
	out := make([]upstreamButton, len(s.upstreams))
	for i, u := range s.upstreams {
		out[i] = upstreamButton{Name: u.Name, URL: s.prefix + pathUpstreamLogin + "?" + url.Values{"provider": {u.ID}, "form_token": {formToken}}.Encode()}
	}
	return out
}

// upstreamLogin is a sign-in at a provider in progress, sealed in a cookie
// of the browser that started it until the provider sends it back.
type upstreamLogin struct {
	Request   authorizationRequest `json:"req"`
	Provider  string               `json:"provider"`
	Login     rp.Login             `json:"login"`
	ExpiresAt int64                `json:"exp"`
}

const (
	purposeUpstream = "meshauth upstream login v1"
	// upstreamLoginLifetime bounds the time at the provider.
	upstreamLoginLifetime = 10 * time.Minute
	// maxUpstreamCookie keeps the cookie within what every browser
	// stores (4096 bytes with its name).
	maxUpstreamCookie = 3900
)

// handleUpstreamLogin starts a sign-in at a provider from the login page:
// the pending sign-in goes into a cookie, the browser to the provider.
// It is a link, not a form post, because a browser would hold the
// redirect that answers a post to the page's form-action, which cannot
// name every provider's origin.
func (s *Server) handleUpstreamLogin(w http.ResponseWriter, r *http.Request) {
	q := r.URL.Query()
	st, c, ok := s.checkFormToken(w, r, purposeLogin, q.Get("form_token"))
	if !ok {
		return
	}
	p := s.upstreamByID[q.Get("provider")]
	if p == nil {
		s.showError(w, http.StatusBadRequest, "This sign-in page does not offer that identity provider.")
		return
	}
	req := &st.Request
	login := rp.NewLogin()
	// A request that asks the person to sign in again asks the provider
	// too, or its own session would answer for them.
	extra := url.Values{}
	if req.prompts(promptLogin) || req.prompts(promptSelectAccount) {
		extra.Set("prompt", promptLogin)
	}
	if req.MaxAge != nil {
		extra.Set("max_age", strconv.FormatInt(*req.MaxAge, 10))
	}
	target, err := p.rp.AuthCodeURL(r.Context(), login, extra)
	if err != nil {
		s.remote.WarnContext(r.Context(), "upstream provider unavailable", "upstream", p.ID, "error", err)
		s.showLogin(w, r, c, req, http.StatusBadGateway, "", p.Name+" cannot be reached right now. Try again in a moment, or sign in another way.")
		return
	}
	sealed, err := s.seal(purposeUpstream, &upstreamLogin{Request: *req, Provider: p.ID, Login: login, ExpiresAt: s.now().Add(upstreamLoginLifetime).Unix()})
	if err != nil {
		s.authorizeFailed(w, r, err)
		return
	}
	if len(sealed) > maxUpstreamCookie {
		s.showError(w, http.StatusBadRequest, "The application's request is too long to sign in through "+p.Name+" (its state or nonce). Sign in another way, or ask the application's developers.")
		return
	}
	s.setCookie(w, "upstream", sealed, upstreamLoginLifetime)
	redirectBrowser(w, r, target)
}

// handleUpstreamCallback completes a sign-in at a provider: it is its
// redirect URI. The response must answer the sign-in this browser started
// (state, in the cookie), come from the provider (iss), be used once, and
// bring an ID Token of the provider for meshauth and this sign-in (nonce).
// Then the person is signed in as the local user of that identity and the
// authorization they came for continues.
func (s *Server) handleUpstreamCallback(w http.ResponseWriter, r *http.Request) {
	ctx := r.Context()
	p := s.upstreamByID[r.PathValue("provider")]
	if p == nil {
		s.showError(w, http.StatusNotFound, "This sign-in does not come from an identity provider this server knows.")
		return
	}
	// One attempt per sign-in: the cookie goes whatever happens next.
	s.setCookie(w, "upstream", "", -1)
	var pending upstreamLogin
	c, err := r.Cookie(s.cookieName("upstream"))
	if err != nil || s.unseal(purposeUpstream, c.Value, &pending) != nil || pending.Provider != p.ID || !s.now().Before(time.Unix(pending.ExpiresAt, 0)) {
		s.showError(w, http.StatusBadRequest, "This sign-in with "+p.Name+" was not started in this browser, or took longer than "+
			strconv.Itoa(int(upstreamLoginLifetime/time.Minute))+" minutes. Start again from the application.")
		return
	}
	req := &pending.Request
	client, ok := s.pendingClient(w, r, req)
	if !ok {
		return
	}
	id, err := p.rp.Exchange(ctx, pending.Login, r.URL.Query(), func() error {
		// The state, once the response is known to answer it, is used up
		// before the code is redeemed: a replayed response is refused.
		return s.store.UseOnce(ctx, "upstream-state/"+ReferenceTokenHash(pending.Login.State), time.Unix(pending.ExpiresAt, 0).Add(time.Minute))
	})
	if err != nil {
		s.upstreamFailed(w, r, client, req, p, err)
		return
	}
	user, err := s.upstreamUser(ctx, p, id)
	if err != nil {
		s.upstreamFailed(w, r, client, req, p, err)
		return
	}
	amr := dedupe(append([]string{amrFederated}, id.AMR...))
	si, err := s.startSession(ctx, w, r, user, amr, id.Issuer)
	if err != nil {
		s.upstreamFailed(w, r, client, req, p, err)
		return
	}
	s.log.InfoContext(ctx, "signed in through an upstream provider", "upstream", p.ID, "sub", user.ID, "upstream_sub", id.Subject, "client_id", client.ID)
	s.proceed(w, r, client, req, si)
}

// amrFederated is the authentication method of a sign-in through another
// identity provider, as Microsoft's and other providers' "amr" name it.
const amrFederated = "fed"

// Why an upstream identity may not sign in.
var (
	errNotLinked    = errors.New("the upstream identity is linked to no user, and creating users is not allowed")
	errUserDisabled = errors.New("the user is disabled")
	errLinkConflict = errors.New("the upstream identity cannot be linked to the user its email names")
)

// upstreamFailed answers a sign-in at p that did not succeed: with the
// login page again, saying why, where another way to sign in may work;
// with an error page where the response cannot be trusted to belong to
// this browser's sign-in.
func (s *Server) upstreamFailed(w http.ResponseWriter, r *http.Request, c *store.Client, req *authorizationRequest, p *upstreamProvider, err error) {
	ctx := r.Context()
	var pe *rp.ProviderError
	log := s.remote.With("upstream", p.ID, "client_id", c.ID)
	switch {
	case errors.Is(err, store.ErrReplay):
		log.WarnContext(ctx, "upstream sign-in refused: its response was used before")
		s.showError(w, http.StatusBadRequest, "This sign-in with "+p.Name+" was completed already. Start again from the application.")
	case errors.Is(err, rp.ErrState), errors.Is(err, rp.ErrIssuer):
		log.WarnContext(ctx, "upstream sign-in refused", "error", err)
		s.showError(w, http.StatusBadRequest, "The answer from "+p.Name+" does not belong to this sign-in, so it was refused. Start again from the application.")
	case errors.As(err, &pe):
		log.InfoContext(ctx, "upstream provider did not sign the user in", "error", pe.Code)
		s.showLogin(w, r, c, req, http.StatusUnauthorized, "", p.Name+" did not sign you in ("+pe.Code+").")
	case errors.Is(err, rp.ErrUnavailable):
		log.WarnContext(ctx, "upstream provider unavailable", "error", err)
		s.showLogin(w, r, c, req, http.StatusBadGateway, "", p.Name+" cannot be reached right now. Try again in a moment, or sign in another way.")
	case errors.Is(err, rp.ErrIDToken):
		log.WarnContext(ctx, "upstream sign-in refused: invalid ID Token", "error", err)
		s.showLogin(w, r, c, req, http.StatusUnauthorized, "", "The sign-in from "+p.Name+" could not be verified, so it was refused.")
	case errors.Is(err, errNotLinked):
		log.InfoContext(ctx, "upstream sign-in refused: no linked user")
		s.showLogin(w, r, c, req, http.StatusForbidden, "", "Your "+p.Name+" account is not linked to an account at "+s.issuerHost+". Ask an administrator to link it.")
	case errors.Is(err, errUserDisabled):
		log.InfoContext(ctx, "upstream sign-in refused: the user is disabled")
		s.showLogin(w, r, c, req, http.StatusForbidden, "", "This account is disabled.")
	case errors.Is(err, errLinkConflict):
		log.WarnContext(ctx, "upstream sign-in refused", "error", err)
		s.showLogin(w, r, c, req, http.StatusForbidden, "", "Your "+p.Name+" account cannot be linked to an account here automatically. Ask an administrator.")
	default:
		// The store failed; the person may try again.
		log.ErrorContext(ctx, "upstream sign-in failed", "error", err)
		s.showLogin(w, r, c, req, http.StatusServiceUnavailable, "", "Signing in is temporarily unavailable. Please try again in a moment.")
	}
}

// upstreamUser returns the local user of the upstream identity id: the one
// it is linked to; else, if p allows, the one user whose verified email is
// its verified email, linking them; else, if p allows, a new user linked
// to it. One upstream identity is one local user, and a user has at most
// one identity per provider, so no identity can take over a user linked to
// another.
func (s *Server) upstreamUser(ctx context.Context, p *upstreamProvider, id *rp.IDToken) (*store.User, error) {
	link, err := s.store.GetIdentity(ctx, id.Issuer, id.Subject)
	switch {
	case err == nil:
		return s.enabledUser(ctx, link.UserID)
	case !errors.Is(err, store.ErrNotFound):
		return nil, fmt.Errorf("look up upstream identity: %w", err)
	}
	email := normalizeEmail(id.Email)
	newLink := &store.Identity{Issuer: id.Issuer, Subject: id.Subject, CreatedAt: s.now().UTC()}
	if p.LinkVerifiedEmail && id.EmailVerified && email != "" {
		users, err := s.store.FindUsersByEmail(ctx, email)
		if err != nil {
			return nil, fmt.Errorf("find users by email: %w", err)
		}
		var verified []*store.User
		for _, u := range users {
			if u.EmailVerified {
				verified = append(verified, u)
			}
		}
		switch {
		case len(verified) > 1:
			return nil, fmt.Errorf("%w: %d users have that verified email", errLinkConflict, len(verified))
		case len(verified) == 1:
			u := verified[0]
			if u.Disabled {
				return nil, errUserDisabled
			}
			newLink.UserID = u.ID
			if err := s.store.LinkIdentity(ctx, newLink); errors.Is(err, store.ErrExists) {
				// Linked meanwhile by a concurrent sign-in, or the user
				// has another identity at this provider.
				return s.linkedUser(ctx, id, u.ID)
			} else if err != nil {
				return nil, fmt.Errorf("link upstream identity: %w", err)
			}
			s.log.InfoContext(ctx, "upstream identity linked by verified email", "upstream", p.ID, "sub", u.ID, "upstream_sub", id.Subject)
			return u, nil
		}
	}
	if !p.CreateUsers {
		return nil, errNotLinked
	}
	u := &store.User{
		ID: randomID(), DisplayName: id.Name, Email: email, EmailVerified: email != "" && id.EmailVerified, CreatedAt: s.now().UTC(),
	}
	newLink.UserID = u.ID
	for attempt := 0; ; attempt++ {
		u.Name = upstreamUserName(p.ID, id, attempt)
		err := s.store.CreateUserWithIdentity(ctx, u, newLink)
		if err == nil {
			s.log.InfoContext(ctx, "user created for an upstream identity", "upstream", p.ID, "sub", u.ID, "name", u.Name, "upstream_sub", id.Subject)
			return u, nil
		}
		if !errors.Is(err, store.ErrExists) {
			return nil, fmt.Errorf("create user for upstream identity: %w", err)
		}
		// The identity was linked by a concurrent first sign-in, or the
		// name is taken: then try another.
		if link, err := s.store.GetIdentity(ctx, id.Issuer, id.Subject); err == nil {
			return s.enabledUser(ctx, link.UserID)
		}
		if attempt == 3 {
			return nil, fmt.Errorf("create user for upstream identity: no free name: %w", err)
		}
	}
}

// linkedUser returns the user of the identity id after a link to want
// was refused as existing: if the identity was linked meanwhile, by a
// concurrent sign-in, its user; if not, want has another identity at the
// provider, and the link is refused.
func (s *Server) linkedUser(ctx context.Context, id *rp.IDToken, want string) (*store.User, error) {
	link, err := s.store.GetIdentity(ctx, id.Issuer, id.Subject)
	switch {
	case errors.Is(err, store.ErrNotFound):
		return nil, fmt.Errorf("%w: user %q is linked to another identity at the provider", errLinkConflict, want)
	case err != nil:
		return nil, fmt.Errorf("look up upstream identity: %w", err)
	}
	return s.enabledUser(ctx, link.UserID)
}

// enabledUser returns the user with id unless it is disabled.
func (s *Server) enabledUser(ctx context.Context, id string) (*store.User, error) {
	u, err := s.store.GetUser(ctx, id)
	if errors.Is(err, store.ErrNotFound) {
		return nil, fmt.Errorf("%w: the linked user %q does not exist", errLinkConflict, id)
	}
	if err != nil {
		return nil, fmt.Errorf("look up linked user: %w", err)
	}
	if u.Disabled {
		return nil, errUserDisabled
	}
	return u, nil
}

// userNameChars are the characters a login name may not have, which an
// upstream name's are replaced with.
var userNameChars = regexp.MustCompile(`[^a-z0-9._@+-]+`)

// upstreamUserName is the login name of a user created for an upstream
// identity: the provider's id, a dot, and the identity's
// preferred_username, email or, failing both, "user"; after the first
// attempt with a random suffix, since the name may be taken. It is in the
// provider's namespace, so it never names an existing local user.
func upstreamUserName(provider string, id *rp.IDToken, attempt int) string {
	base := strings.ToLower(id.PreferredUsername)
	if base == "" {
		base, _, _ = strings.Cut(strings.ToLower(id.Email), "@")
	}
	base = strings.Trim(userNameChars.ReplaceAllString(base, "-"), "-.")
	if base == "" {
		base = "user"
	}
	if len(base) > 64 {
		base = base[:64]
	}
	name := provider + "." + base
	if attempt > 0 {
		name += "-" + strings.ToLower(rand.Text()[:6])
	}
	return name
}

// maxEmailBytes bounds an email address (RFC 5321 §4.5.3.1.3's path).
const maxEmailBytes = 254

// normalizeEmail returns the stored form of an email address, lower-cased,
// or "" if it is not one.
func normalizeEmail(email string) string {
	e := strings.ToLower(strings.TrimSpace(email))
	at := strings.LastIndexByte(e, '@')
	if at <= 0 || at == len(e)-1 || len(e) > maxEmailBytes || strings.ContainsAny(e, " \t\r\n<>\"") {
		return ""
	}
	return e
}
