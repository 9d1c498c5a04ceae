package issuer

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"net/url"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/meshauth/meshauth/issuer/store"
)

// Grant types of the browser flow (RFC 6749 §4.1, §6).
const (
	GrantTypeAuthorizationCode = "authorization_code"
	GrantTypeRefreshToken      = "refresh_token"
)

// responseTypeCode is the only response type served (RFC 6749 §4.1.1); the
// implicit grant is not (RFC 9700 §2.1.2).
const responseTypeCode = "code"

// authorizationCodeLifetime bounds how long a code may wait for its token
// request; RFC 6749 §4.1.2 recommends at most ten minutes, and a client
// redeems it within seconds.
const authorizationCodeLifetime = 60 * time.Second

// maxStateBytes bounds the state parameter, which travels in the login
// forms and back in the redirect.
const maxStateBytes = 2048

// authorizationRequest is a validated RFC 6749 §4.1.1 request. It travels
// sealed through the login and consent forms.
type authorizationRequest struct {
	ClientID string `json:"client_id"`
	// RedirectURI is where the answer goes; RedirectGiven says the request
	// named it, so that the token request must repeat it (§4.1.3).
	RedirectURI         string   `json:"redirect_uri"`
	RedirectGiven       bool     `json:"redirect_given,omitempty"`
	Scope               []string `json:"scope"`
	Audience            []string `json:"audience"`
	State               string   `json:"state,omitempty"`
	CodeChallenge       string   `json:"code_challenge,omitempty"`
	CodeChallengeMethod string   `json:"code_challenge_method,omitempty"`
	// OpenID Connect (Core §3.1.2.1): the client's nonce for the ID
	// Token; prompt; max_age in seconds, nil if absent; login_hint, to
	// fill in the user name; and the sub of a valid id_token_hint.
	Nonce       string   `json:"nonce,omitempty"`
	Prompt      []string `json:"prompt,omitempty"`
	MaxAge      *int64   `json:"max_age,omitempty"`
	LoginHint   string   `json:"login_hint,omitempty"`
	HintSubject string   `json:"hint_sub,omitempty"`
}

// pageError is an authorization error shown to the user as a page. It is
// used until the redirect URI is known to be the client's: redirecting
// anywhere else would make the issuer an open redirector (RFC 6749
// §4.1.2.1, RFC 9700 §4.11).
type pageError struct {
	status  int
	message string
}

func (e *pageError) Error() string { return e.message }

// redirectError is an authorization error answered to the client at its
// verified redirect URI (RFC 6749 §4.1.2.1).
type redirectError struct {
	req *authorizationRequest
	err *oauthError
}

func (e *redirectError) Error() string { return e.err.Error() }

// asOAuthError returns the *oauthError in err; validation helpers return
// nothing else, and anything that is not one is a malformed request.
func asOAuthError(err error) *oauthError {
	var oe *oauthError
	if errors.As(err, &oe) {
		return oe
	}
	return errInvalidRequest(err.Error())
}

func (s *Server) handleAuthorize(w http.ResponseWriter, r *http.Request) {
	var form url.Values
	var err error
	if r.Method == http.MethodPost {
		form, err = readForm(w, r)
	} else {
		form, err = parseForm(r.URL.RawQuery)
	}
	if err != nil {
		s.authorizeFailed(w, r, &pageError{http.StatusBadRequest, "The authorization request is malformed: " + asOAuthError(err).Description + "."})
		return
	}
	ctx := r.Context()
	c, req, err := s.authorizationRequest(ctx, form)
	if err != nil {
		s.authorizeFailed(w, r, err)
		return
	}
	si, err := s.currentSession(ctx, r)
	if err != nil {
		s.authorizeFailed(w, r, s.storeFailure(ctx, req, err))
		return
	}
	if si != nil && !si.satisfies(req, s.now()) {
		si = nil
	}
	if req.prompts(promptNone) {
		// OpenID Connect Core §3.1.2.1: no page at all; an answer now,
		// or the reason there can be none.
		switch {
		case si == nil:
			s.authorizeFailed(w, r, &redirectError{req: req, err: interactionError("login_required", "the user is not signed in")})
		case !si.consented(req):
			s.authorizeFailed(w, r, &redirectError{req: req, err: interactionError("consent_required", "the user has not allowed this request")})
		default:
			s.grantCode(w, r, c, req, si)
		}
		return
	}
	if si == nil {
		s.showLogin(w, r, c, req, http.StatusOK, loginHintName(req.LoginHint), "")
		return
	}
	s.proceed(w, r, c, req, si)
}

// authorizationRequest looks up the client of form and validates the
// request against it.
func (s *Server) authorizationRequest(ctx context.Context, form url.Values) (*store.Client, *authorizationRequest, error) {
	id := form.Get("client_id")
	if id == "" {
		return nil, nil, &pageError{http.StatusBadRequest, "The application did not say who it is (client_id is missing)."}
	}
	c, err := s.store.GetClient(ctx, id)
	if errors.Is(err, store.ErrNotFound) {
		return nil, nil, &pageError{http.StatusBadRequest, "The application is not registered with this authorization server (unknown client_id)."}
	}
	if err != nil {
		return nil, nil, fmt.Errorf("look up client: %w", err)
	}
	req, err := s.parseAuthorization(form, c)
	return c, req, err
}

// parseAuthorization validates an authorization request of client c. The
// redirect URI is checked first: until it is known, errors are a
// *pageError; after, a *redirectError.
func (s *Server) parseAuthorization(form url.Values, c *store.Client) (*authorizationRequest, error) {
	req := &authorizationRequest{ClientID: c.ID, RedirectURI: form.Get("redirect_uri"), RedirectGiven: form.Has("redirect_uri")}
	switch {
	case req.RedirectGiven && !redirectURIRegistered(c.RedirectURIs, req.RedirectURI):
		return nil, &pageError{http.StatusBadRequest, "The application asked to send you to an address it has not registered (redirect_uri mismatch). Nothing was sent to it."}
	case !req.RedirectGiven && len(c.RedirectURIs) == 1:
		// RFC 6749 §3.1.2.3: with one registered URI the parameter may be
		// omitted.
		req.RedirectURI = c.RedirectURIs[0]
	case !req.RedirectGiven:
		return nil, &pageError{http.StatusBadRequest, "The application did not say where to return you (redirect_uri is missing)."}
	}
	fail := func(e *oauthError) (*authorizationRequest, error) { return nil, &redirectError{req: req, err: e} }
	// state goes back with every redirect, errors included (§4.1.2.1).
	req.State = form.Get("state")
	if len(req.State) > maxStateBytes {
		req.State = ""
		return fail(errInvalidRequest(fmt.Sprintf("state longer than %d bytes", maxStateBytes)))
	}
	switch rt := form.Get("response_type"); {
	case rt == "":
		return fail(errInvalidRequest("response_type missing"))
	case rt != responseTypeCode:
		return fail(&oauthError{Status: http.StatusBadRequest, Code: "unsupported_response_type", Description: "only response_type=code is supported"})
	}
	if rm := form.Get("response_mode"); rm != "" && rm != "query" {
		return fail(errInvalidRequest("only response_mode=query is supported"))
	}
	if !slices.Contains(c.GrantTypes, GrantTypeAuthorizationCode) {
		return fail(errUnauthorizedClient("client is not registered for the authorization_code grant"))
	}
	scope, err := grantedScope(form.Get("scope"), c.Scope)
	if err != nil {
		return fail(asOAuthError(err))
	}
	req.Scope = scope
	if req.Audience, err = s.audiences(form, c); err != nil {
		return fail(asOAuthError(err))
	}
	if slices.Contains(req.Scope, scopeOpenID) && !form.Has("audience") && !form.Has("resource") {
		// The access token of an OpenID Connect request without an
		// audience is for the userinfo endpoint, which is this issuer.
		req.Audience = []string{s.issuerURL}
	}
	req.CodeChallenge, req.CodeChallengeMethod = form.Get("code_challenge"), form.Get("code_challenge_method")
	if e := checkCodeChallenge(req.CodeChallenge, req.CodeChallengeMethod, c.TokenEndpointAuthMethod == authNone); e != nil {
		return fail(e)
	}
	if e := s.parseOpenID(form, req); e != nil {
		return fail(e)
	}
	return req, nil
}

// redirectURIRegistered reports whether uri is one of the registered
// redirect URIs: an exact string match (RFC 9700 §4.1.3), except that a
// registered http loopback IP literal matches on any port, because a native
// app listens on a port chosen when it runs (RFC 8252 §7.3). "localhost"
// gets no such leeway (RFC 8252 §8.3).
func redirectURIRegistered(registered []string, uri string) bool {
	if slices.Contains(registered, uri) {
		return true
	}
	host, rest, ok := loopbackRedirect(uri)
	if !ok {
		return false
	}
	for _, r := range registered {
		if h, rr, ok := loopbackRedirect(r); ok && h == host && rr == rest {
			return true
		}
	}
	return false
}

// loopbackRedirect splits an http://127.0.0.1[:port] or http://[::1][:port]
// URI into its host and what follows the port, comparing the text as it is
// (no normalisation that two parsers could disagree on).
func loopbackRedirect(uri string) (host, rest string, ok bool) {
	for _, h := range [...]string{"http://127.0.0.1", "http://[::1]"} {
		r, found := strings.CutPrefix(uri, h)
		if !found {
			continue
		}
		if p, hasPort := strings.CutPrefix(r, ":"); hasPort {
			end := strings.IndexAny(p, "/?")
			if end < 0 {
				end = len(p)
			}
			if n, err := strconv.ParseUint(p[:end], 10, 16); err != nil || n == 0 || p[0] == '+' {
				return "", "", false
			}
			r = p[end:]
		}
		if r != "" && r[0] != '/' && r[0] != '?' {
			return "", "", false
		}
		return h, r, true
	}
	return "", "", false
}

// authorizeFailed answers a failed authorization step: a page for a
// *pageError, a redirect to the client for a *redirectError, and for
// anything else (the store failed) temporarily_unavailable, at the client
// if req names a verified redirect URI and as a page otherwise.
func (s *Server) authorizeFailed(w http.ResponseWriter, r *http.Request, err error) {
	var pe *pageError
	var re *redirectError
	switch {
	case errors.As(err, &pe):
		s.showError(w, pe.status, pe.message)
	case errors.As(err, &re):
		s.redirectToClient(w, r, re.req, url.Values{
			"error":             {re.err.Code},
			"error_description": {descriptionText(re.err.Description)},
		})
	default:
		s.remote.ErrorContext(r.Context(), "authorization failed", "path", r.URL.Path, "error", err)
		s.showError(w, http.StatusServiceUnavailable, "The authorization server is temporarily unavailable. Please try again in a moment.")
	}
}

// storeFailure turns a store failure during an authorization whose
// redirect URI is verified into RFC 6749 §4.1.2.1's temporarily_unavailable
// for the client, logging the cause.
func (s *Server) storeFailure(ctx context.Context, req *authorizationRequest, err error) error {
	s.remote.ErrorContext(ctx, "authorization failed", "client_id", req.ClientID, "error", err)
	return &redirectError{req: req, err: errUnavailable}
}

// redirectToClient sends the browser to the request's redirect URI with
// params, state and iss (RFC 9207 §2) added to its query, which is kept
// (RFC 6749 §3.1.2).
func (s *Server) redirectToClient(w http.ResponseWriter, r *http.Request, req *authorizationRequest, params url.Values) {
	if req.State != "" {
		params.Set("state", req.State)
	}
	params.Set("iss", s.issuerURL)
	redirectBrowser(w, r, withQuery(req.RedirectURI, params))
}

// withQuery returns uri with params added to its query.
func withQuery(uri string, params url.Values) string {
	switch {
	case strings.HasSuffix(uri, "?"):
	case strings.Contains(uri, "?"):
		uri += "&"
	default:
		uri += "?"
	}
	return uri + params.Encode()
}

// redirectBrowser sends the browser to target, uncached and without a
// referrer. 303 makes the browser follow with a GET after a form POST (RFC
// 9700 §4.12).
func redirectBrowser(w http.ResponseWriter, r *http.Request, target string) {
	h := w.Header()
	h.Set("Location", target)
	h.Set("Cache-Control", "no-store")
	h.Set("Referrer-Policy", "no-referrer")
	status := http.StatusFound
	if r.Method == http.MethodPost {
		status = http.StatusSeeOther
	}
	w.WriteHeader(status)
}

// issueCode records the authorization of req by the session's user as a
// new grant, with how they signed in, and returns an authorization code for
// it: 256 random bits, stored only as a hash, single use, valid for
// authorizationCodeLifetime.
func (s *Server) issueCode(ctx context.Context, req *authorizationRequest, si *signedIn) (string, error) {
	now := s.now().UTC()
	subject := si.user.ID
	g := &store.Grant{
		ID: randomID(), ClientID: req.ClientID, Subject: subject, Scope: req.Scope, Audience: req.Audience,
		CreatedAt: now, ExpiresAt: now.Add(s.grantLifetime),
		AuthTime: si.session.AuthTime, AMR: si.session.AMR, IDP: si.session.IDP, Nonce: req.Nonce,
	}
	if err := s.store.CreateGrant(ctx, g); err != nil {
		return "", fmt.Errorf("store grant: %w", err)
	}
	code := referenceToken()
	rec := &store.AuthorizationCode{
		Hash: ReferenceTokenHash(code), GrantID: g.ID, ClientID: req.ClientID, Subject: subject,
		Scope: req.Scope, Audience: req.Audience,
		CodeChallenge: req.CodeChallenge, CodeChallengeMethod: req.CodeChallengeMethod,
		IssuedAt: now, ExpiresAt: now.Add(authorizationCodeLifetime),
	}
	if req.RedirectGiven {
		rec.RedirectURI = req.RedirectURI
	}
	if err := s.store.PutAuthorizationCode(ctx, rec); err != nil {
		return "", fmt.Errorf("store authorization code: %w", err)
	}
	return code, nil
}
