package issuer

import (
	"bytes"
	"cmp"
	"context"
	"crypto/rand"
	"crypto/sha256"
	"crypto/subtle"
	"embed"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"html/template"
	"net/http"
	"net/url"
	"regexp"
	"strconv"
	"strings"
	"time"

	"golang.org/x/crypto/chacha20poly1305"

	"github.com/meshauth/meshauth/issuer/store"
)

// The login and consent pages are server-rendered HTML without JavaScript,
// styled by one inline stylesheet that the Content-Security-Policy admits
// by its hash.
//
//go:embed web/pages.html web/style.css
var webFiles embed.FS

var (
	pageTemplate = template.Must(template.ParseFS(webFiles, "web/pages.html"))
	pageCSS      = mustReadWeb("web/style.css")
	pageCSSHash  = func() string {
		sum := sha256.Sum256(pageCSS)
		return "'sha256-" + base64.StdEncoding.EncodeToString(sum[:]) + "'"
	}()
)

func mustReadWeb(name string) []byte {
	b, err := webFiles.ReadFile(name)
	if err != nil {
		panic(err)
	}
	return b
}

// Form purposes: the associated data of each sealed form token, so that a
// login form's token cannot be submitted as a consent.
const (
	purposeLogin   = "meshauth login form v1"
	purposeConsent = "meshauth consent form v1"
)

// How long a form may be answered: a login waits for a person to type; a
// consent only for a click.
const (
	loginFormLifetime   = 15 * time.Minute
	consentFormLifetime = 5 * time.Minute
)

// formState is what a login or consent form carries in its form_token,
// sealed: the validated authorization request, the browser it was shown
// to, and until when it may be submitted. The browser can neither read nor
// change it, and any replica holding the form key can open it, so no
// replica needs to remember a pending authorization.
type formState struct {
	Request authorizationRequest `json:"req"`
	// Binding is the hash of the browser's CSRF cookie: a form submitted
	// from another browser does not match (RFC 9700 §4.7).
	Binding   string `json:"bind"`
	ExpiresAt int64  `json:"exp"`
	// The consent form also names the signed-in user and has an id that
	// makes it single-use.
	ID       string `json:"id,omitempty"`
	UserID   string `json:"uid,omitempty"`
	UserName string `json:"name,omitempty"`
}

// formKeySize is the size of Config.FormKey. Forms are sealed with
// XChaCha20-Poly1305, whose 192-bit random nonces cannot collide however
// many forms a long-lived key seals.
const formKeySize = chacha20poly1305.KeySize

// maxFormTokenBytes bounds a form token before it is decoded.
const maxFormTokenBytes = 16 << 10

// seal returns v sealed for purpose, as base64url: the browser can
// neither read nor change it, and purpose, the associated data, keeps one
// kind of sealed value from being taken for another.
func (s *Server) seal(purpose string, v any) (string, error) {
	pt, err := json.Marshal(v)
	if err != nil {
		return "", fmt.Errorf("encode sealed state: %w", err)
	}
	n := s.formAEAD.NonceSize()
	nonce := make([]byte, n, n+len(pt)+s.formAEAD.Overhead())
	_, _ = rand.Read(nonce)
	return base64.RawURLEncoding.EncodeToString(s.formAEAD.Seal(nonce, nonce, pt, []byte(purpose))), nil
}

var errBadFormToken = errors.New("form token is not valid")

// unseal opens a value sealed for purpose into v.
func (s *Server) unseal(purpose, sealed string, v any) error {
	if len(sealed) > maxFormTokenBytes {
		return errBadFormToken
	}
	raw, err := base64.RawURLEncoding.DecodeString(sealed)
	n := s.formAEAD.NonceSize()
	if err != nil || len(raw) < n+s.formAEAD.Overhead() {
		return errBadFormToken
	}
	pt, err := s.formAEAD.Open(nil, raw[:n], raw[n:], []byte(purpose))
	if err != nil {
		return errBadFormToken
	}
	if err := json.Unmarshal(pt, v); err != nil {
		return errBadFormToken
	}
	return nil
}

// openForm opens a form token sealed for purpose.
func (s *Server) openForm(purpose, token string) (*formState, error) {
	var st formState
	if err := s.unseal(purpose, token, &st); err != nil {
		return nil, err
	}
	return &st, nil
}

// csrfCookieName is the cookie that binds forms to a browser.
func (s *Server) csrfCookieName() string { return s.cookieName("csrf") }

// browserBinding returns the binding of the browser's CSRF cookie, setting
// a new cookie if the browser has none. Reusing a cookie keeps forms open
// in other tabs valid.
func (s *Server) browserBinding(w http.ResponseWriter, r *http.Request) string {
	if v, ok := s.csrfCookie(r); ok {
		return ReferenceTokenHash(v)
	}
	v := referenceToken()
	http.SetCookie(w, &http.Cookie{
		Name: s.csrfCookieName(), Value: v, Path: "/", HttpOnly: true, Secure: s.secureCookies,
		// Lax, not Strict: the authorization request arrives by a
		// cross-site navigation, and with Strict the browser would hide
		// the cookie it has. Cross-site POSTs still go without it.
		SameSite: http.SameSiteLaxMode,
	})
	return ReferenceTokenHash(v)
}

// csrfCookie returns the browser's CSRF cookie if it has one of the form
// this server sets.
func (s *Server) csrfCookie(r *http.Request) (string, bool) {
	c, err := r.Cookie(s.csrfCookieName())
	if err != nil || len(c.Value) != 43 || !isBase64URL(c.Value) {
		return "", false
	}
	return c.Value, true
}

// pageData is what the page templates show.
type pageData struct {
	Kind       string // login, consent or error
	Title      string
	IssuerHost string
	CSS        template.CSS
	// login and consent
	ClientName   string
	RedirectHost string
	Action       string
	FormToken    string
	UserName     string
	Error        string
	// consent
	Scopes    []string
	Audiences []string
	Until     string
	// login: the upstream identity providers to sign in with, and
	// whether the password form is shown.
	Upstreams     []upstreamButton
	PasswordLogin bool
	// error, logout and signed out
	Message string
}

// render writes a page with the headers every page gets: no caching, no
// framing (clickjacking, RFC 9700 §4.16), no referrer (the authorization
// request's query must not leak), and a Content-Security-Policy that admits
// the inline stylesheet and form posts to this server, and, because a
// browser checks the redirect that answers a form post too, to the
// client's redirect URI.
func (s *Server) render(w http.ResponseWriter, status int, redirectURI string, d *pageData) {
	d.IssuerHost, d.CSS = s.issuerHost, template.CSS(pageCSS)
	var buf bytes.Buffer
	if err := pageTemplate.ExecuteTemplate(&buf, "page", d); err != nil {
		s.remote.Error("render page", "kind", d.Kind, "error", err)
		http.Error(w, "internal error", http.StatusInternalServerError)
		return
	}
	formAction := "'self'"
	if src := formActionSource(redirectURI); src != "" {
		formAction += " " + src
	}
	h := w.Header()
	h.Set("Content-Type", "text/html; charset=utf-8")
	h.Set("Content-Security-Policy", "default-src 'none'; style-src "+pageCSSHash+"; form-action "+formAction+"; frame-ancestors 'none'; base-uri 'none'")
	h.Set("X-Frame-Options", "DENY")
	h.Set("X-Content-Type-Options", "nosniff")
	h.Set("Cache-Control", "no-store")
	h.Set("Pragma", "no-cache")
	h.Set("Referrer-Policy", "no-referrer")
	w.WriteHeader(status)
	_, _ = w.Write(buf.Bytes())
}

// cspSourcePattern admits the CSP source expressions formActionSource may
// produce: a scheme with an optional host and port, nothing that could end
// the directive.
var cspSourcePattern = regexp.MustCompile(`^[a-z][a-z0-9+.-]*:(//([A-Za-z0-9.-]+|\[[0-9A-Fa-f:.]+\])(:[0-9]{1,5})?)?$`)

// formActionSource is the CSP source expression of a redirect URI: its
// origin, or for a private-use scheme (RFC 8252 §7.1) the scheme alone; ""
// if it cannot be written safely.
func formActionSource(redirectURI string) string {
	u, err := url.Parse(redirectURI)
	if err != nil || redirectURI == "" {
		return ""
	}
	src := u.Scheme + ":"
	if u.Host != "" {
		src += "//" + u.Host
	}
	if !cspSourcePattern.MatchString(src) {
		return ""
	}
	return src
}

// redirectHost names where a redirect URI leads, for the user to read.
func redirectHost(redirectURI string) string {
	u, err := url.Parse(redirectURI)
	if err != nil {
		return redirectURI
	}
	return cmp.Or(u.Host, u.Scheme)
}

func clientName(c *store.Client) string { return cmp.Or(c.Name, c.ID) }

// showError renders an error page.
func (s *Server) showError(w http.ResponseWriter, status int, message string) {
	title := "Sign-in failed"
	if status == http.StatusServiceUnavailable {
		title = "Temporarily unavailable"
	}
	s.render(w, status, "", &pageData{Kind: "error", Title: title, Message: message})
}

// showLogin renders the login form for req, with problem, if any, shown
// above the fields.
func (s *Server) showLogin(w http.ResponseWriter, r *http.Request, c *store.Client, req *authorizationRequest, status int, userName, problem string) {
	token, err := s.seal(purposeLogin, &formState{
		Request: *req, Binding: s.browserBinding(w, r), ExpiresAt: s.now().Add(loginFormLifetime).Unix(),
	})
	if err != nil {
		s.authorizeFailed(w, r, err)
		return
	}
	s.render(w, status, req.RedirectURI, &pageData{
		Kind: "login", Title: "Sign in to " + clientName(c), ClientName: clientName(c), RedirectHost: redirectHost(req.RedirectURI),
		Action: s.prefix + pathLogin, FormToken: token, UserName: userName, Error: problem,
		Upstreams: s.upstreamButtons(token), PasswordLogin: s.passwordLogin,
	})
}

// showConsent renders what the client asks of the signed-in user, with
// Allow and Deny.
func (s *Server) showConsent(w http.ResponseWriter, r *http.Request, c *store.Client, req *authorizationRequest, user *store.User) {
	now := s.now()
	token, err := s.seal(purposeConsent, &formState{
		Request: *req, Binding: s.browserBinding(w, r), ExpiresAt: now.Add(consentFormLifetime).Unix(),
		ID: randomID(), UserID: user.ID, UserName: user.Name,
	})
	if err != nil {
		s.authorizeFailed(w, r, err)
		return
	}
	s.render(w, http.StatusOK, req.RedirectURI, &pageData{
		Kind: "consent", Title: "Allow " + clientName(c) + "?", ClientName: clientName(c), RedirectHost: redirectHost(req.RedirectURI),
		Action: s.prefix + pathConsent, FormToken: token, UserName: user.Name,
		Scopes: req.Scope, Audiences: req.Audience,
		Until: now.Add(s.grantLifetime).UTC().Format("2 January 2006, 15:04 UTC"),
	})
}

// crossOrigin refuses form posts that a browser marks as coming from
// another site (Sec-Fetch-Site, Origin): a second guard beside the form
// binding.
var crossOrigin = http.NewCrossOriginProtection()

// submittedForm checks a login or consent form post: sent by this site's
// page, from the browser the form was shown to, not expired, for a client
// that still exists. Failures are answered here with a page, never a
// redirect to the client.
func (s *Server) submittedForm(w http.ResponseWriter, r *http.Request, purpose string) (url.Values, *formState, *store.Client, bool) {
	if crossOrigin.Check(r) != nil {
		s.showError(w, http.StatusForbidden, "This form was submitted from another site, so it was refused.")
		return nil, nil, nil, false
	}
	form, err := readForm(w, r)
	if err != nil {
		s.showError(w, http.StatusBadRequest, "The form could not be read.")
		return nil, nil, nil, false
	}
	st, c, ok := s.checkFormToken(w, r, purpose, form.Get("form_token"))
	return form, st, c, ok
}

// checkFormToken opens a form token sealed for purpose and checks that it
// was issued to this browser, has not expired, and names a client that
// still exists. Failures are answered here with a page.
func (s *Server) checkFormToken(w http.ResponseWriter, r *http.Request, purpose, token string) (*formState, *store.Client, bool) {
	fail := func(status int, msg string) (*formState, *store.Client, bool) {
		s.showError(w, status, msg)
		return nil, nil, false
	}
	cookie, ok := s.csrfCookie(r)
	if !ok {
		return fail(http.StatusForbidden, "Your browser did not send this site's cookie, which protects the form from forgery. Allow cookies for "+s.issuerHost+" and start again from the application.")
	}
	st, err := s.openForm(purpose, token)
	if err != nil {
		return fail(http.StatusBadRequest, "The form is incomplete or has been altered.")
	}
	if subtle.ConstantTimeCompare([]byte(st.Binding), []byte(ReferenceTokenHash(cookie))) != 1 {
		return fail(http.StatusForbidden, "This form was not issued to this browser, so it was refused (cross-site request forgery protection).")
	}
	if !s.now().Before(time.Unix(st.ExpiresAt, 0)) {
		return fail(http.StatusBadRequest, "The form has expired.")
	}
	c, ok := s.pendingClient(w, r, &st.Request)
	return st, c, ok
}

// pendingClient returns the client of an authorization that waited in a
// form or cookie; if it is gone, or the store fails, it answers with a page.
func (s *Server) pendingClient(w http.ResponseWriter, r *http.Request, req *authorizationRequest) (*store.Client, bool) {
	c, err := s.store.GetClient(r.Context(), req.ClientID)
	if errors.Is(err, store.ErrNotFound) {
		s.showError(w, http.StatusBadRequest, "The application is no longer registered.")
		return nil, false
	}
	if err != nil {
		s.authorizeFailed(w, r, fmt.Errorf("look up client: %w", err))
		return nil, false
	}
	return c, true
}

// handleLogin checks the user's name and password. Unknown names and wrong
// passwords get the same answer after the same work; repeated failures are
// slowed per account name and per client address.
func (s *Server) handleLogin(w http.ResponseWriter, r *http.Request) {
	form, st, c, ok := s.submittedForm(w, r, purposeLogin)
	if !ok {
		return
	}
	req := &st.Request
	switch form.Get("action") {
	case "login":
	case "cancel":
		s.redirectToClient(w, r, req, url.Values{"error": {"access_denied"}, "error_description": {"the user cancelled the sign-in"}})
		return
	default:
		s.showError(w, http.StatusBadRequest, "The form was submitted without a known action.")
		return
	}
	if !s.passwordLogin {
		s.showError(w, http.StatusForbidden, "Signing in with a password is turned off here; use one of the identity providers the sign-in page offers.")
		return
	}
	name, password := form.Get("username"), form.Get("password")
	if name == "" || password == "" {
		s.showLogin(w, r, c, req, http.StatusBadRequest, name, "Enter your user name and password.")
		return
	}
	folded := truncate(strings.ToLower(strings.TrimSpace(name)), 128)
	account, address := accountKey(folded), addressKey(r)
	// A store that fails changes nothing: the person may try again. The
	// backoff cannot be read or counted then, so no password is checked.
	unavailable := func(err error) {
		s.remote.ErrorContext(r.Context(), "login failed", "error", err)
		s.showLogin(w, r, c, req, http.StatusServiceUnavailable, name, "Signing in is temporarily unavailable. Please try again in a moment.")
	}
	wait, err := s.throttle.wait(r.Context(), s.now(), account, address)
	if err != nil {
		unavailable(err)
		return
	}
	if wait > 0 {
		secs := int((wait + time.Second - 1) / time.Second)
		w.Header().Set("Retry-After", strconv.Itoa(secs))
		s.showLogin(w, r, c, req, http.StatusTooManyRequests, name, fmt.Sprintf("Too many failed sign-in attempts. Wait %d seconds, then try again.", secs))
		return
	}
	user, err := s.checkLogin(r.Context(), name, password)
	if err != nil {
		unavailable(err)
		return
	}
	if user == nil {
		// The backoff counts from the refusal, not from the request: the
		// hash may take a while on a loaded machine. A failure that
		// cannot be counted is not answered as one.
		if err := s.throttle.fail(r.Context(), s.now(), account, address); err != nil {
			unavailable(err)
			return
		}
		s.remote.InfoContext(r.Context(), "login failed: wrong user name or password", "client_id", c.ID, "address", address)
		s.showLogin(w, r, c, req, http.StatusUnauthorized, name, "The user name or password is incorrect.")
		return
	}
	if err := s.throttle.succeed(r.Context(), account); err != nil {
		// The person proved the password; stale failures only slow their
		// next mistake.
		s.remote.WarnContext(r.Context(), "login succeeded, but its earlier failures are still counted", "error", err)
	}
	if user.Disabled {
		// Said only to someone who knows the password.
		s.remote.InfoContext(r.Context(), "login refused: the user is disabled", "client_id", c.ID, "sub", user.ID)
		s.showLogin(w, r, c, req, http.StatusForbidden, name, "This account is disabled.")
		return
	}
	si, err := s.startSession(r.Context(), w, r, user, []string{amrPassword}, "")
	if err != nil {
		unavailable(err)
		return
	}
	s.proceed(w, r, c, req, si)
}

// amrPassword is the RFC 8176 §2 authentication method of a password.
const amrPassword = "pwd"

// checkLogin returns the user whose name and password these are, or nil.
// A name that is invalid or unknown is checked against a dummy hash, so it
// takes as long as a wrong password.
func (s *Server) checkLogin(ctx context.Context, name, password string) (*store.User, error) {
	n, err := NormalizeUserName(name)
	if err != nil {
		passwordMatches(dummyPasswordHash, password)
		return nil, nil
	}
	u, err := s.store.GetUserByName(ctx, n)
	if errors.Is(err, store.ErrNotFound) {
		passwordMatches(dummyPasswordHash, password)
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("look up user: %w", err)
	}
	if u.PasswordHash == "" {
		// Signs in only through an upstream provider; this answer takes
		// as long as any other.
		passwordMatches(dummyPasswordHash, password)
		return nil, nil
	}
	if !passwordMatches(u.PasswordHash, password) {
		return nil, nil
	}
	return u, nil
}

// handleConsent answers the consent form: Allow issues an authorization
// code to the client, Deny tells it access_denied. Each consent form counts
// once.
func (s *Server) handleConsent(w http.ResponseWriter, r *http.Request) {
	form, st, c, ok := s.submittedForm(w, r, purposeConsent)
	if !ok {
		return
	}
	action := form.Get("action")
	if action != "allow" && action != "deny" {
		s.showError(w, http.StatusBadRequest, "The form was submitted without a known action.")
		return
	}
	ctx, req := r.Context(), &st.Request
	si, err := s.currentSession(ctx, r)
	if err != nil {
		s.authorizeFailed(w, r, s.storeFailure(ctx, req, err))
		return
	}
	if si == nil || si.user.ID != st.UserID {
		s.showError(w, http.StatusForbidden, "You are no longer signed in as "+st.UserName+" in this browser, so the answer was refused. Start again from the application.")
		return
	}
	err = s.store.UseOnce(ctx, "consent/"+st.ID, time.Unix(st.ExpiresAt, 0).Add(time.Minute))
	if errors.Is(err, store.ErrReplay) {
		s.showError(w, http.StatusBadRequest, "This request was already answered.")
		return
	}
	if err != nil {
		s.authorizeFailed(w, r, s.storeFailure(ctx, req, fmt.Errorf("record consent: %w", err)))
		return
	}
	if action == "deny" {
		s.redirectToClient(w, r, req, url.Values{"error": {"access_denied"}, "error_description": {"the user denied the request"}})
		return
	}
	if err := s.rememberConsent(ctx, si, req); err != nil {
		s.authorizeFailed(w, r, s.storeFailure(ctx, req, err))
		return
	}
	s.grantCode(w, r, c, req, si)
}
