package issuer

import (
	"bytes"
	"context"
	"crypto/rand"
	"crypto/sha256"
	"encoding/base64"
	"errors"
	"io"
	"log/slog"
	"net/http"
	"net/http/cookiejar"
	"net/http/httptest"
	"net/url"
	"os"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/meshauth/meshauth/issuer/store"
	"github.com/meshauth/meshauth/issuer/store/pgstore"
)

const (
	testUser      = "alice"
	testPassword  = "correct horse battery staple"
	testRedirect  = "http://127.0.0.1:9876/callback"
	testVerifier  = "dBjftJeZ4CVP-mB92K27uhbUJU1p1r_wW1gFWFOEjXk" // RFC 7636 Appendix B
	testChallenge = "E9Melhoa2OwvFrEMTJguCHaoeK1t8URWbuGJSstw-cM" // its S256
)

// browser is a user agent over loopback: a cookie jar, and redirects are
// not followed, so that the test sees where the issuer sends it.
type browser struct {
	t *testing.T
	e *env
	c *http.Client
}

func (e *env) browser() *browser {
	jar, err := cookiejar.New(nil)
	if err != nil {
		e.t.Fatal(err)
	}
	return &browser{t: e.t, e: e, c: &http.Client{Jar: jar, CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }}}
}

// page is one answer the browser got.
type page struct {
	status int
	header http.Header
	body   string
}

func (p *page) location(t *testing.T) *url.URL {
	t.Helper()
	loc := p.header.Get("Location")
	if loc == "" {
		t.Fatalf("no redirect: %d %s", p.status, p.body)
	}
	u, err := url.Parse(loc)
	if err != nil {
		t.Fatal(err)
	}
	return u
}

var formTokenPattern = regexp.MustCompile(`name="form_token" value="([^"]+)"`)

// formToken returns the CSRF-bound form token of a login or consent page.
func (p *page) formToken(t *testing.T) string {
	t.Helper()
	m := formTokenPattern.FindStringSubmatch(p.body)
	if m == nil {
		t.Fatalf("no form_token in page %d:\n%s", p.status, p.body)
	}
	return m[1]
}

// isLogin and isConsent tell the login and the consent page.
func (p *page) isLogin() bool {
	return p.status == http.StatusOK && strings.Contains(p.body, `action="/authorize/login"`)
}

func (p *page) isConsent() bool {
	return p.status == http.StatusOK && strings.Contains(p.body, `action="/authorize/consent"`)
}

func (b *browser) do(req *http.Request) *page {
	b.t.Helper()
	resp, err := b.c.Do(req)
	if err != nil {
		b.t.Fatal(err)
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(resp.Body)
	return &page{status: resp.StatusCode, header: resp.Header, body: string(body)}
}

func (b *browser) get(path string, q url.Values) *page {
	b.t.Helper()
	req, err := http.NewRequest(http.MethodGet, b.e.url+path+"?"+q.Encode(), nil)
	if err != nil {
		b.t.Fatal(err)
	}
	return b.do(req)
}

func (b *browser) post(path string, form url.Values, header ...string) *page {
	b.t.Helper()
	req, err := http.NewRequest(http.MethodPost, b.e.url+path, strings.NewReader(form.Encode()))
	if err != nil {
		b.t.Fatal(err)
	}
	req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	for i := 0; i+1 < len(header); i += 2 {
		req.Header.Set(header[i], header[i+1])
	}
	return b.do(req)
}

// authorize starts an authorization with the test's PKCE pair; kv override
// or add parameters ("" deletes one).
func (b *browser) authorize(clientID string, kv ...string) *page {
	b.t.Helper()
	q := url.Values{
		"response_type": {"code"}, "client_id": {clientID}, "redirect_uri": {testRedirect}, "state": {"st-123"},
		"code_challenge": {testChallenge}, "code_challenge_method": {"S256"},
	}
	for i := 0; i+1 < len(kv); i += 2 {
		if kv[i+1] == "" {
			q.Del(kv[i])
		} else {
			q.Set(kv[i], kv[i+1])
		}
	}
	return b.get("/authorize", q)
}

func (b *browser) login(p *page, user, password string) *page {
	b.t.Helper()
	return b.post("/authorize/login", url.Values{"form_token": {p.formToken(b.t)}, "username": {user}, "password": {password}, "action": {"login"}})
}

func (b *browser) consent(p *page, action string) *page {
	b.t.Helper()
	return b.post("/authorize/consent", url.Values{"form_token": {p.formToken(b.t)}, "action": {action}})
}

// code runs the whole browser part for clientID as the test user and
// returns the authorization code from the redirect. The browser signs in
// on the login page, and allows on the consent page, when it is shown
// them: once signed in it is not asked for the password again, and once
// it allowed a request, not asked again for the same.
func (b *browser) code(clientID string, kv ...string) string {
	b.t.Helper()
	p := b.authorize(clientID, kv...)
	if p.isLogin() {
		p = b.login(p, testUser, testPassword)
	}
	if p.isConsent() {
		p = b.consent(p, "allow")
	}
	if p.status != http.StatusFound && p.status != http.StatusSeeOther {
		b.t.Fatalf("authorization did not end in a redirect: %d %s", p.status, p.body)
	}
	code := p.location(b.t).Query().Get("code")
	if code == "" {
		b.t.Fatalf("no code in %s", p.header.Get("Location"))
	}
	return code
}

// addUser stores the test user and returns its id.
func (e *env) addUser() string {
	e.t.Helper()
	u, err := CreateUser(context.Background(), e.store, testUser, testPassword, time.Now())
	if err != nil {
		e.t.Fatal(err)
	}
	return u.ID
}

// publicClient registers a public client of the browser flow.
func (e *env) publicClient(id string, redirects ...string) {
	e.t.Helper()
	if len(redirects) == 0 {
		redirects = []string{testRedirect}
	}
	e.register(ClientMetadata{
		ClientID: id, ClientName: "Orders App", TokenEndpointAuthMethod: "none",
		GrantTypes:   []string{GrantTypeAuthorizationCode, GrantTypeRefreshToken},
		RedirectURIs: redirects, Scope: "orders.read orders.write", AllowedAudiences: []string{"orders"},
	})
}

// redeem posts a code to the token endpoint as public client clientID.
func (e *env) redeem(clientID, code string, kv ...string) (int, map[string]any) {
	e.t.Helper()
	form := url.Values{"grant_type": {GrantTypeAuthorizationCode}, "code": {code}, "client_id": {clientID},
		"redirect_uri": {testRedirect}, "code_verifier": {testVerifier}}
	for i := 0; i+1 < len(kv); i += 2 {
		if kv[i+1] == "" {
			form.Del(kv[i])
		} else {
			form.Set(kv[i], kv[i+1])
		}
	}
	status, _, m := e.tokenRequest(form, "")
	return status, m
}

func (e *env) refresh(clientID, refreshToken string, kv ...string) (int, map[string]any) {
	e.t.Helper()
	form := url.Values{"grant_type": {GrantTypeRefreshToken}, "refresh_token": {refreshToken}, "client_id": {clientID}}
	for i := 0; i+1 < len(kv); i += 2 {
		form.Set(kv[i], kv[i+1])
	}
	status, _, m := e.tokenRequest(form, "")
	return status, m
}

// revokedJWT reports whether the issuer's stored revocations refuse the
// JWT access token tok (for audience aud).
func (e *env) revokedJWT(tok, aud string) bool {
	e.t.Helper()
	c := e.verifyAccessToken(tok, aud)
	r, err := e.srv.revoked(context.Background(), c)
	if err != nil {
		e.t.Fatal(err)
	}
	return r
}

// TestAuthorizationCodeFlow is the whole browser flow over loopback:
// authorize, login form (with its CSRF-bound token), consent, redirect
// with code, state and iss, token with PKCE, refresh with rotation, and
// reuse of a rotated refresh token revoking the family; on the embedded
// store, and on PostgreSQL when MESHAUTH_TEST_POSTGRES_URL is set.
func TestAuthorizationCodeFlow(t *testing.T) {
	t.Run("store=file", func(t *testing.T) { testAuthorizationCodeFlow(t, newEnv(t)) })
	t.Run("store=postgres", func(t *testing.T) { testAuthorizationCodeFlow(t, newPostgresEnv(t)) })
}

// newPostgresEnv serves an issuer on a fresh schema, dropped at the end of
// the test, of the database MESHAUTH_TEST_POSTGRES_URL names.
func newPostgresEnv(t *testing.T) *env {
	base := os.Getenv("MESHAUTH_TEST_POSTGRES_URL")
	if base == "" {
		t.Skip("MESHAUTH_TEST_POSTGRES_URL not set; skipping the PostgreSQL variant")
	}
	schema := "t_" + strings.ToLower(rand.Text())
	execSQL := func(sql string) {
		conn, err := pgx.Connect(context.Background(), base)
		if err != nil {
			t.Fatal(err)
		}
		defer conn.Close(context.Background())
		if _, err := conn.Exec(context.Background(), sql); err != nil {
			t.Fatalf("%s: %v", sql, err)
		}
	}
	execSQL("CREATE SCHEMA " + schema)
	t.Cleanup(func() { execSQL("DROP SCHEMA " + schema + " CASCADE") })
	u, err := url.Parse(base)
	if err != nil {
		t.Fatal(err)
	}
	q := u.Query()
	q.Set("search_path", schema)
	q.Set("pool_max_conns", "4")
	u.RawQuery = q.Encode()
	st, err := pgstore.Open(context.Background(), u.String())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { st.Close() })
	return serveEnv(t, st, st, "")
}

func testAuthorizationCodeFlow(t *testing.T, e *env) {
	userID := e.addUser()
	e.publicClient("orders-app")
	b := e.browser()

	login := b.authorize("orders-app", "scope", "orders.read", "audience", "orders")
	if login.status != http.StatusOK || !strings.Contains(login.body, "Orders App") || !strings.Contains(login.body, `autocomplete="current-password"`) {
		t.Fatalf("login page: %d %s", login.status, login.body)
	}
	h := login.header
	csp := h.Get("Content-Security-Policy")
	for _, want := range []string{"default-src 'none'", "frame-ancestors 'none'", "form-action 'self' http://127.0.0.1:9876", "style-src 'sha256-"} {
		if !strings.Contains(csp, want) {
			t.Errorf("CSP %q lacks %q", csp, want)
		}
	}
	if h.Get("X-Frame-Options") != "DENY" || h.Get("Cache-Control") != "no-store" || h.Get("Referrer-Policy") != "no-referrer" {
		t.Errorf("page headers: %v", h)
	}
	// The inline stylesheet is the one the CSP admits.
	style := regexp.MustCompile(`(?s)<style>(.*?)</style>`).FindStringSubmatch(login.body)
	if sum := sha256.Sum256([]byte(style[1])); !strings.Contains(csp, base64.StdEncoding.EncodeToString(sum[:])) {
		t.Error("the CSP hash does not match the inline stylesheet")
	}

	consent := b.login(login, "Alice", testPassword) // names are case-folded
	if consent.status != http.StatusOK || !strings.Contains(consent.body, "orders.read") || strings.Contains(consent.body, "orders.write") ||
		!strings.Contains(consent.body, "<code>orders</code>") || !strings.Contains(consent.body, "Allow") {
		t.Fatalf("consent page: %d %s", consent.status, consent.body)
	}
	done := b.consent(consent, "allow")
	if done.status != http.StatusSeeOther {
		t.Fatalf("consent answer: %d %s", done.status, done.body)
	}
	loc := done.location(t)
	q := loc.Query()
	if loc.Scheme+"://"+loc.Host+loc.Path != testRedirect || q.Get("state") != "st-123" || q.Get("iss") != e.url || len(q.Get("code")) < 43 {
		t.Fatalf("redirect %s", loc)
	}

	status, tok := e.redeem("orders-app", q.Get("code"))
	if status != http.StatusOK {
		t.Fatalf("token: %d %v", status, tok)
	}
	claims := e.verifyAccessToken(tok["access_token"].(string), "orders")
	if claims.Subject != userID || claims.ClientID != "orders-app" || claims.Scope != "orders.read" || claims.SessionID == "" {
		t.Errorf("access token claims: %+v", claims)
	}
	if tok["scope"] != "orders.read" || tok["token_type"] != "Bearer" {
		t.Errorf("token answer: %v", tok)
	}
	refresh1, _ := tok["refresh_token"].(string)
	if len(refresh1) < 43 {
		t.Fatalf("no refresh token: %v", tok)
	}
	rt, err := e.store.GetRefreshToken(context.Background(), ReferenceTokenHash(refresh1))
	if err != nil || rt.GrantID != claims.SessionID || rt.Hash == refresh1 {
		t.Fatalf("stored refresh token %+v: %v", rt, err)
	}

	status, tok2 := e.refresh("orders-app", refresh1)
	if status != http.StatusOK {
		t.Fatalf("refresh: %d %v", status, tok2)
	}
	refresh2 := tok2["refresh_token"].(string)
	if refresh2 == "" || refresh2 == refresh1 {
		t.Fatal("the refresh token was not rotated")
	}
	access2 := tok2["access_token"].(string)
	if c := e.verifyAccessToken(access2, "orders"); c.SessionID != claims.SessionID || c.Subject != userID {
		t.Errorf("refreshed token claims: %+v", c)
	}
	if e.revokedJWT(access2, "orders") {
		t.Fatal("a fresh token is revoked")
	}

	// Reuse of the rotated token: refused, and the family is revoked.
	if status, m := e.refresh("orders-app", refresh1); status != http.StatusBadRequest || m["error"] != "invalid_grant" {
		t.Fatalf("reused refresh token: %d %v", status, m)
	}
	if status, m := e.refresh("orders-app", refresh2); status != http.StatusBadRequest || m["error"] != "invalid_grant" {
		t.Errorf("newest refresh token after reuse: %d %v", status, m)
	}
	if !e.revokedJWT(access2, "orders") {
		t.Error("access token of the revoked family is not revoked")
	}
	g, err := e.store.GetGrant(context.Background(), claims.SessionID)
	if err != nil || g.RevokedAt.IsZero() {
		t.Errorf("grant after reuse: %+v %v", g, err)
	}
	if status, m := e.redeem("orders-app", q.Get("code")); status != http.StatusBadRequest || !strings.Contains(m["error_description"].(string), "already used") {
		t.Errorf("the code a second time: %d %v", status, m)
	}
}

// TestAuthorizationCodeReference: a client with reference access tokens
// gets an opaque token that names its grant.
func TestAuthorizationCodeReference(t *testing.T) {
	e := newEnv(t)
	e.addUser()
	e.register(ClientMetadata{ClientID: "ref-app", TokenEndpointAuthMethod: "none", AccessTokenFormat: "reference",
		GrantTypes: []string{GrantTypeAuthorizationCode}, RedirectURIs: []string{testRedirect}, Scope: "a"})
	status, tok := e.redeem("ref-app", e.browser().code("ref-app"))
	if status != http.StatusOK || tok["refresh_token"] != nil {
		t.Fatalf("token: %d %v (no refresh token without the refresh_token grant)", status, tok)
	}
	access := tok["access_token"].(string)
	rec, err := e.store.GetAccessToken(context.Background(), ReferenceTokenHash(access))
	if err != nil || rec.GrantID == "" || rec.ClientID != "ref-app" || strings.Contains(access, ".") {
		t.Fatalf("reference token %+v: %v", rec, err)
	}
	if _, err := e.srv.revokeGrant(context.Background(), rec.GrantID); err != nil {
		t.Fatal(err)
	}
	if _, err := e.store.GetAccessToken(context.Background(), ReferenceTokenHash(access)); err == nil {
		t.Error("revoking the grant left its reference token")
	}
}

// TestConfidentialClientCode: a client with a secret may skip PKCE, but
// may not then send a verifier (RFC 9700 §4.8.2), and must authenticate.
func TestConfidentialClientCode(t *testing.T) {
	e := newEnv(t)
	e.addUser()
	reg := e.register(ClientMetadata{ClientID: "web", GrantTypes: []string{GrantTypeAuthorizationCode, GrantTypeRefreshToken},
		RedirectURIs: []string{testRedirect}, Scope: "a"})
	b := e.browser()
	tokenForm := func(code string) url.Values {
		return url.Values{"grant_type": {GrantTypeAuthorizationCode}, "code": {code}, "redirect_uri": {testRedirect}}
	}

	code := b.code("web", "code_challenge", "", "code_challenge_method", "")
	if status, _, m := e.tokenRequest(tokenForm(code), ""); status != http.StatusUnauthorized || m["error"] != "invalid_client" {
		t.Errorf("confidential client without its secret: %d %v", status, m)
	}
	if status, _, m := e.tokenRequest(tokenForm(code), basic("web", reg.ClientSecret)); status != http.StatusOK || m["refresh_token"] == nil {
		t.Errorf("confidential client without PKCE: %d %v", status, m)
	}

	code = b.code("web", "code_challenge", "", "code_challenge_method", "")
	form := tokenForm(code)
	form.Set("code_verifier", testVerifier)
	if status, _, m := e.tokenRequest(form, basic("web", reg.ClientSecret)); status != http.StatusBadRequest || m["error"] != "invalid_grant" {
		t.Errorf("verifier without challenge: %d %v", status, m)
	}

	code = b.code("web")
	form = tokenForm(code)
	form.Set("code_verifier", testVerifier)
	if status, _, m := e.tokenRequest(form, basic("web", reg.ClientSecret)); status != http.StatusOK {
		t.Errorf("confidential client with PKCE: %d %v", status, m)
	}
}

// TestAuthorizeErrors: before the redirect URI is verified, errors are
// pages (never a redirect); after, they go to the client with state and
// iss (RFC 6749 §4.1.2.1, RFC 9207).
func TestAuthorizeErrors(t *testing.T) {
	e := newEnv(t)
	e.publicClient("app", testRedirect, "https://app.example.com/cb")
	e.register(ClientMetadata{ClientID: "one", TokenEndpointAuthMethod: "none", GrantTypes: []string{GrantTypeAuthorizationCode},
		RedirectURIs: []string{"https://one.example.com/cb?x=1"}})
	e.register(ClientMetadata{ClientID: "svc", RedirectURIs: []string{testRedirect}})
	e.register(ClientMetadata{ClientID: "loopback", TokenEndpointAuthMethod: "none", GrantTypes: []string{GrantTypeAuthorizationCode},
		RedirectURIs: []string{"http://127.0.0.1/cb", "http://[::1]:8080/cb"}})
	tests := []struct {
		name   string
		client string
		kv     []string
		raw    string // a query built by hand, instead of client and kv
		// page: the status of an error page; else the error code the
		// client receives at its redirect URI ("" for the login page).
		page    int
		errCode string
	}{
		{name: "unknown client", client: "nobody", page: 400},
		{name: "no client_id", raw: "response_type=code&redirect_uri=" + url.QueryEscape(testRedirect), page: 400},
		{name: "redirect mismatch", client: "app", kv: []string{"redirect_uri", "https://evil.example.com/cb"}, page: 400},
		{name: "redirect prefix", client: "app", kv: []string{"redirect_uri", "https://app.example.com/cb/x"}, page: 400},
		{name: "redirect with extra query", client: "app", kv: []string{"redirect_uri", "https://app.example.com/cb?a=b"}, page: 400},
		{name: "redirect missing, two registered", client: "app", kv: []string{"redirect_uri", ""}, page: 400},
		{name: "repeated parameter", raw: "response_type=code&client_id=app&redirect_uri=" + url.QueryEscape(testRedirect) + "&redirect_uri=" + url.QueryEscape("https://app.example.com/cb"), page: 400},
		{name: "loopback other port", client: "loopback", kv: []string{"redirect_uri", "http://127.0.0.1:51234/cb"}},
		{name: "loopback v6 other port", client: "loopback", kv: []string{"redirect_uri", "http://[::1]:4711/cb"}},
		{name: "loopback other path", client: "loopback", kv: []string{"redirect_uri", "http://127.0.0.1:51234/cbx"}, page: 400},
		{name: "loopback other host", client: "loopback", kv: []string{"redirect_uri", "http://localhost:51234/cb"}, page: 400},
		{name: "loopback bad port", client: "loopback", kv: []string{"redirect_uri", "http://127.0.0.1:99999/cb"}, page: 400},
		{name: "redirect omitted, one registered", client: "one", kv: []string{"redirect_uri", ""}},
		{name: "no response_type", client: "app", kv: []string{"response_type", ""}, errCode: "invalid_request"},
		{name: "implicit", client: "app", kv: []string{"response_type", "token"}, errCode: "unsupported_response_type"},
		{name: "response_mode fragment", client: "app", kv: []string{"response_mode", "fragment"}, errCode: "invalid_request"},
		{name: "no PKCE for public client", client: "app", kv: []string{"code_challenge", "", "code_challenge_method", ""}, errCode: "invalid_request"},
		{name: "plain PKCE", client: "app", kv: []string{"code_challenge", testVerifier, "code_challenge_method", "plain"}, errCode: "invalid_request"},
		{name: "PKCE method missing", client: "app", kv: []string{"code_challenge_method", ""}, errCode: "invalid_request"},
		{name: "PKCE method alone", client: "app", kv: []string{"code_challenge", ""}, errCode: "invalid_request"},
		{name: "malformed challenge", client: "app", kv: []string{"code_challenge", "short"}, errCode: "invalid_request"},
		{name: "scope not registered", client: "app", kv: []string{"scope", "orders.read admin"}, errCode: "invalid_scope"},
		{name: "audience not allowed", client: "app", kv: []string{"audience", "payments"}, errCode: "invalid_target"},
		{name: "resource not absolute", client: "app", kv: []string{"resource", "orders"}, errCode: "invalid_target"},
		{name: "client without the grant", client: "svc", errCode: "unauthorized_client"},
		{name: "state too long", client: "app", kv: []string{"state", strings.Repeat("s", maxStateBytes+1)}, errCode: "invalid_request"},
		{name: "valid", client: "app"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			var p *page
			if tc.raw != "" {
				req, err := http.NewRequest(http.MethodGet, e.url+"/authorize?"+tc.raw, nil)
				if err != nil {
					t.Fatal(err)
				}
				p = e.browser().do(req)
			} else {
				p = e.browser().authorize(tc.client, tc.kv...)
			}
			switch {
			case tc.page != 0:
				if p.status != tc.page || p.header.Get("Location") != "" || !strings.Contains(p.header.Get("Content-Type"), "text/html") {
					t.Fatalf("want an error page %d and no redirect, got %d Location=%q", tc.page, p.status, p.header.Get("Location"))
				}
			case tc.errCode != "":
				if p.status != http.StatusFound {
					t.Fatalf("want a redirect with %s, got %d %s", tc.errCode, p.status, p.body)
				}
				q := p.location(t).Query()
				if q.Get("error") != tc.errCode || q.Get("iss") != e.url || q.Get("error_description") == "" {
					t.Errorf("redirect %s", p.header.Get("Location"))
				}
				if tc.name != "state too long" && q.Get("state") != "st-123" {
					t.Errorf("state not passed back: %s", p.header.Get("Location"))
				}
			default:
				if p.status != http.StatusOK || !strings.Contains(p.body, `name="form_token"`) {
					t.Fatalf("want the login page, got %d %s", p.status, p.body)
				}
			}
		})
	}
}

// TestAuthorizeRedirectKeepsQuery: a registered redirect URI's own query
// is kept (RFC 6749 §3.1.2), and POSTed authorization requests work too.
func TestAuthorizeRedirectKeepsQuery(t *testing.T) {
	e := newEnv(t)
	e.register(ClientMetadata{ClientID: "one", TokenEndpointAuthMethod: "none", GrantTypes: []string{GrantTypeAuthorizationCode},
		RedirectURIs: []string{"https://one.example.com/cb?x=1"}})
	p := e.browser().post("/authorize", url.Values{"client_id": {"one"}, "response_type": {"token"}, "state": {"s"}})
	if p.status != http.StatusSeeOther {
		t.Fatalf("%d %s", p.status, p.body)
	}
	loc := p.location(t)
	if q := loc.Query(); q.Get("x") != "1" || q.Get("error") != "unsupported_response_type" || q.Get("state") != "s" || loc.Host != "one.example.com" {
		t.Errorf("redirect %s", loc)
	}
}

// TestTokenEndpointCodeErrors covers every way a code redemption fails.
func TestTokenEndpointCodeErrors(t *testing.T) {
	e := newEnv(t)
	e.addUser()
	e.publicClient("app")
	e.publicClient("other")
	b := e.browser()

	t.Run("malformed verifier keeps the code", func(t *testing.T) {
		code := b.code("app")
		if status, m := e.redeem("app", code, "code_verifier", "too-short"); status != 400 || m["error"] != "invalid_request" {
			t.Fatalf("%d %v", status, m)
		}
		if status, m := e.redeem("app", code); status != 200 {
			t.Errorf("the code was spent by a malformed request: %d %v", status, m)
		}
	})
	simple := []struct {
		name string
		kv   []string
		code string
	}{
		{name: "wrong verifier", kv: []string{"code_verifier", strings.Repeat("a", 43)}},
		{name: "no verifier", kv: []string{"code_verifier", ""}},
		{name: "redirect_uri differs", kv: []string{"redirect_uri", "http://127.0.0.1:9876/other"}},
		{name: "redirect_uri missing", kv: []string{"redirect_uri", ""}},
		{name: "code of another client", kv: []string{"client_id", "other"}},
		{name: "unknown code", code: referenceToken()},
	}
	for _, tc := range simple {
		t.Run(tc.name, func(t *testing.T) {
			code := tc.code
			if code == "" {
				code = b.code("app")
			}
			if status, m := e.redeem("app", code, tc.kv...); status != 400 || m["error"] != "invalid_grant" {
				t.Errorf("%d %v", status, m)
			}
		})
	}
	t.Run("no code", func(t *testing.T) {
		if status, m := e.redeem("app", "", "code", ""); status != 400 || m["error"] != "invalid_request" {
			t.Errorf("%d %v", status, m)
		}
	})
	t.Run("expired code", func(t *testing.T) {
		code := b.code("app")
		e.advance(t, authorizationCodeLifetime+time.Second)
		if status, m := e.redeem("app", code); status != 400 || m["error"] != "invalid_grant" {
			t.Errorf("%d %v", status, m)
		}
	})
	t.Run("reuse revokes the first use's tokens", func(t *testing.T) {
		code := b.code("app", "audience", "orders")
		status, first := e.redeem("app", code)
		if status != 200 {
			t.Fatalf("%d %v", status, first)
		}
		if status, m := e.redeem("app", code); status != 400 || m["error"] != "invalid_grant" || !strings.Contains(m["error_description"].(string), "already used") {
			t.Fatalf("second use: %d %v", status, m)
		}
		if status, m := e.refresh("app", first["refresh_token"].(string)); status != 400 || m["error"] != "invalid_grant" {
			t.Errorf("refresh token of a reused code: %d %v", status, m)
		}
		if !e.revokedJWT(first["access_token"].(string), "orders") {
			t.Error("access token of a reused code is not revoked")
		}
	})
	t.Run("public client may not use client_credentials", func(t *testing.T) {
		status, _, m := e.tokenRequest(url.Values{"grant_type": {"client_credentials"}, "client_id": {"app"}}, "")
		if status != 400 || m["error"] != "unauthorized_client" {
			t.Errorf("%d %v", status, m)
		}
	})
	t.Run("public client with a secret", func(t *testing.T) {
		status, _, m := e.tokenRequest(url.Values{"grant_type": {GrantTypeAuthorizationCode}, "code": {"x"}}, basic("app", "guess"))
		if status != 401 || m["error"] != "invalid_client" {
			t.Errorf("%d %v", status, m)
		}
	})
}

// TestRefreshErrors: a refused refresh leaves the token usable; scope and
// audience narrow, never widen.
func TestRefreshErrors(t *testing.T) {
	e := newEnv(t)
	e.addUser()
	e.publicClient("app")
	e.publicClient("other")
	_, tok := e.redeem("app", e.browser().code("app", "scope", "orders.read orders.write", "audience", "orders"))
	rt := tok["refresh_token"].(string)
	for _, tc := range []struct {
		name, client string
		kv           []string
		code         string
	}{
		{name: "wider scope", client: "app", kv: []string{"scope", "orders.read admin"}, code: "invalid_scope"},
		{name: "other audience", client: "app", kv: []string{"audience", "payments"}, code: "invalid_target"},
		{name: "other client", client: "other", code: "invalid_grant"},
		{name: "bad scope syntax", client: "app", kv: []string{"scope", `"`}, code: "invalid_scope"},
	} {
		if status, m := e.refresh(tc.client, rt, tc.kv...); status != 400 || m["error"] != tc.code {
			t.Errorf("%s: %d %v", tc.name, status, m)
		}
	}
	if status, m := e.refresh("app", referenceToken()); status != 400 || m["error"] != "invalid_grant" {
		t.Errorf("unknown refresh token: %d %v", status, m)
	}
	if status, m := e.refresh("app", ""); status != 400 || m["error"] != "invalid_request" {
		t.Errorf("no refresh token: %d %v", status, m)
	}
	status, m := e.refresh("app", rt, "scope", "orders.read")
	if status != 200 || m["scope"] != "orders.read" {
		t.Fatalf("narrowed refresh: %d %v", status, m)
	}
	// The new refresh token keeps the original scope (RFC 6749 §6).
	status, m = e.refresh("app", m["refresh_token"].(string))
	if status != 200 || m["scope"] != "orders.read orders.write" {
		t.Fatalf("refresh after narrowing: %d %v", status, m)
	}
	// Past the grant's absolute lifetime nothing refreshes.
	e.advance(t, 25*time.Hour)
	if status, m := e.refresh("app", m["refresh_token"].(string)); status != 400 || m["error"] != "invalid_grant" {
		t.Errorf("refresh past the grant's lifetime: %d %v", status, m)
	}
}

// TestLoginForms: the forms are bound to the browser they were shown to,
// cannot be altered or reused, and failures never redirect.
func TestLoginForms(t *testing.T) {
	e := newEnv(t)
	e.addUser()
	e.publicClient("app")
	b := e.browser()
	login := b.authorize("app")
	token := login.formToken(t)
	creds := url.Values{"username": {testUser}, "password": {testPassword}, "action": {"login"}}
	with := func(kv ...string) url.Values {
		f := url.Values{}
		for k, v := range creds {
			f[k] = v
		}
		f.Set("form_token", token)
		for i := 0; i+1 < len(kv); i += 2 {
			if kv[i+1] == "" {
				f.Del(kv[i])
			} else {
				f.Set(kv[i], kv[i+1])
			}
		}
		return f
	}
	other := e.browser()
	other.authorize("app") // has a cookie of its own
	tampered := []byte(token)
	tampered[len(tampered)/2] ^= 1

	consent := b.login(login, testUser, testPassword)
	for _, tc := range []struct {
		name   string
		b      *browser
		path   string
		form   url.Values
		header []string
		status int
	}{
		{name: "no cookie", b: &browser{t: t, e: e, c: http.DefaultClient}, path: "/authorize/login", form: with(), status: 403},
		{name: "another browser's cookie", b: other, path: "/authorize/login", form: with(), status: 403},
		{name: "no form token", b: b, path: "/authorize/login", form: with("form_token", ""), status: 400},
		{name: "altered form token", b: b, path: "/authorize/login", form: with("form_token", string(tampered)), status: 400},
		{name: "login token at consent", b: b, path: "/authorize/consent", form: with("action", "allow"), status: 400},
		{name: "consent token at login", b: b, path: "/authorize/login", form: with("form_token", consent.formToken(t)), status: 400},
		{name: "cross-site post", b: b, path: "/authorize/login", form: with(), header: []string{"Sec-Fetch-Site", "cross-site"}, status: 403},
		{name: "unknown action", b: b, path: "/authorize/login", form: with("action", "x"), status: 400},
	} {
		p := tc.b.post(tc.path, tc.form, tc.header...)
		if p.status != tc.status || p.header.Get("Location") != "" || !strings.Contains(p.body, `role="alert"`) {
			t.Errorf("%s: %d Location=%q", tc.name, p.status, p.header.Get("Location"))
		}
	}

	// The browser is signed in since its first login above; prompt=login
	// shows the login page all the same.
	t.Run("consent answered twice", func(t *testing.T) {
		consent := b.login(b.authorize("app", "prompt", "login"), testUser, testPassword)
		if p := b.consent(consent, "allow"); p.status != http.StatusSeeOther {
			t.Fatalf("%d", p.status)
		}
		if p := b.consent(consent, "allow"); p.status != 400 || p.header.Get("Location") != "" {
			t.Errorf("second answer: %d %s", p.status, p.header.Get("Location"))
		}
	})
	t.Run("expired form", func(t *testing.T) {
		login := b.authorize("app", "prompt", "login")
		e.advance(t, loginFormLifetime+time.Second)
		if p := b.login(login, testUser, testPassword); p.status != 400 {
			t.Errorf("%d", p.status)
		}
	})
	t.Run("deny", func(t *testing.T) {
		consent := b.login(b.authorize("app", "prompt", "login"), testUser, testPassword)
		q := b.consent(consent, "deny").location(t).Query()
		if q.Get("error") != "access_denied" || q.Get("state") != "st-123" || q.Get("iss") != e.url || q.Get("code") != "" {
			t.Errorf("deny: %v", q)
		}
	})
	t.Run("cancel", func(t *testing.T) {
		p := b.post("/authorize/login", url.Values{"form_token": {b.authorize("app", "prompt", "login").formToken(t)}, "action": {"cancel"}})
		if q := p.location(t).Query(); q.Get("error") != "access_denied" || q.Get("state") != "st-123" {
			t.Errorf("cancel: %v", q)
		}
	})
	t.Run("empty password", func(t *testing.T) {
		p := b.post("/authorize/login", with("password", ""))
		if p.status != 400 || !strings.Contains(p.body, "Enter your user name and password") {
			t.Errorf("%d", p.status)
		}
	})
}

// TestLoginBackoff: unknown users and wrong passwords get one answer;
// repeated failures block an account, then an address, for a while.
func TestLoginBackoff(t *testing.T) {
	e := newEnv(t)
	e.addUser()
	e.publicClient("app")
	b := e.browser()
	login := b.authorize("app")

	unknown := b.login(login, "mallory", testPassword)
	wrong := b.login(login, testUser, "not the password at all")
	if unknown.status != http.StatusUnauthorized || wrong.status != http.StatusUnauthorized {
		t.Fatalf("failed logins: %d %d", unknown.status, wrong.status)
	}
	msg := regexp.MustCompile(`<p class="alert"[^>]*>([^<]*)</p>`)
	if a, b := msg.FindStringSubmatch(unknown.body), msg.FindStringSubmatch(wrong.body); a == nil || b == nil || a[1] != b[1] {
		t.Errorf("unknown user and wrong password answer differently: %q vs %q", a, b)
	}
	// The free failures, and one more, which blocks the account.
	for range accountFreeFailures {
		if p := b.login(login, testUser, "still not the password"); p.status != http.StatusUnauthorized {
			t.Fatalf("failure before the block: %d", p.status)
		}
	}
	p := b.login(login, testUser, testPassword)
	if p.status != http.StatusTooManyRequests || p.header.Get("Retry-After") == "" {
		t.Fatalf("right password on a blocked account: %d %v", p.status, p.header)
	}
	// Once the block has passed the right password works and clears it.
	e.advance(t, 2*time.Second)
	if p := b.login(login, testUser, testPassword); p.status != http.StatusOK {
		t.Fatalf("after the backoff: %d %s", p.status, p.body)
	}

	// Failures across many names block the address: so far it has
	// 2+accountFreeFailures, and one over the free ones blocks it.
	for i := range addressFreeFailures - accountFreeFailures - 1 {
		if p := b.login(login, "guess"+string(rune('a'+i)), "wrong password 123"); p.status != http.StatusUnauthorized {
			t.Fatalf("address failure %d: %d", i, p.status)
		}
	}
	if p := b.login(login, "someone-new", "wrong password 123"); p.status != http.StatusTooManyRequests {
		t.Errorf("address after %d failures: %d", addressFreeFailures+1, p.status)
	}
}

// TestUsersAndPasswords covers the user store helpers.
func TestUsersAndPasswords(t *testing.T) {
	e := newEnv(t)
	ctx := context.Background()
	if _, err := CreateUser(ctx, e.store, "bob", "short", time.Now()); err == nil || !strings.Contains(err.Error(), "at least 12") {
		t.Errorf("weak password: %v", err)
	}
	if _, err := CreateUser(ctx, e.store, "bad name!", testPassword, time.Now()); err == nil {
		t.Error("invalid name accepted")
	}
	u, err := CreateUser(ctx, e.store, " Bob ", testPassword, time.Now())
	if err != nil || u.Name != "bob" || !strings.HasPrefix(u.PasswordHash, "$argon2id$v=19$m=19456,t=2,p=1$") {
		t.Fatalf("%+v %v", u, err)
	}
	if _, err := CreateUser(ctx, e.store, "BOB", testPassword, time.Now()); !errors.Is(err, store.ErrExists) {
		t.Errorf("duplicate: %v", err)
	}
	if _, err := SetUserPassword(ctx, e.store, "bob", "a new long password"); err != nil {
		t.Fatal(err)
	}
	got, err := e.store.GetUser(ctx, u.ID)
	if err != nil || !passwordMatches(got.PasswordHash, "a new long password") || passwordMatches(got.PasswordHash, testPassword) {
		t.Errorf("password change: %v", err)
	}
	if _, err := SetUserPassword(ctx, e.store, "nobody", testPassword); err == nil {
		t.Error("password set for a missing user")
	}
}

// TestLoginAcrossReplicas: replicas sharing the form key answer each
// other's forms; a replica with another key refuses them.
func TestLoginAcrossReplicas(t *testing.T) {
	e := newEnv(t)
	e.addUser()
	e.publicClient("app")
	replica := func(key []byte) *env {
		hs := httptest.NewUnstartedServer(nil)
		r := &env{t: t, url: "http://" + hs.Listener.Addr().String(), store: e.store, keys: e.keys, logs: e.logs}
		srv, err := New(Config{IssuerURL: e.url, Store: e.store, Keys: e.keys, FormKey: key, Logger: slog.New(slog.NewTextHandler(e.logs, nil))})
		if err != nil {
			t.Fatal(err)
		}
		hs.Config.Handler = srv
		hs.Start()
		t.Cleanup(hs.Close)
		return r
	}
	key := bytes.Repeat([]byte{9}, formKeySize)
	a, b, other := replica(key), replica(key), replica(bytes.Repeat([]byte{8}, formKeySize))
	if _, err := New(Config{IssuerURL: e.url, Store: e.store, Keys: e.keys, FormKey: key[:16]}); err == nil {
		t.Error("a 16-byte form key was accepted")
	}

	browserA := a.browser()
	login := browserA.authorize("app")
	// The cookie was set for host 127.0.0.1, which every replica shares.
	browserA.e = b
	consent := browserA.login(login, testUser, testPassword)
	if consent.status != http.StatusOK {
		t.Fatalf("login form of replica a at replica b: %d %s", consent.status, consent.body)
	}
	browserA.e = other
	if p := browserA.consent(consent, "allow"); p.status != http.StatusBadRequest {
		t.Errorf("consent form at a replica with another key: %d", p.status)
	}
	browserA.e = a
	if p := browserA.consent(consent, "allow"); p.status != http.StatusSeeOther || p.location(t).Query().Get("code") == "" {
		t.Errorf("consent at replica a: %d %s", p.status, p.body)
	}
}

// The store calls of the browser flow, failing while the failingStore is
// broken.

func (f *failingStore) GetUserByName(ctx context.Context, name string) (*store.User, error) {
	if f.fail() {
		return nil, errDown
	}
	return f.Store.GetUserByName(ctx, name)
}

func (f *failingStore) CreateGrant(ctx context.Context, g *store.Grant) error {
	if f.fail() {
		return errDown
	}
	return f.Store.CreateGrant(ctx, g)
}

func (f *failingStore) RedeemAuthorizationCode(ctx context.Context, hash string, at time.Time) (*store.AuthorizationCode, error) {
	if f.fail() {
		return nil, errDown
	}
	return f.Store.RedeemAuthorizationCode(ctx, hash, at)
}

func (f *failingStore) GetRefreshToken(ctx context.Context, hash string) (*store.RefreshToken, error) {
	if f.fail() {
		return nil, errDown
	}
	return f.Store.GetRefreshToken(ctx, hash)
}

// TestBrowserFlowStoreDown: with the store unreachable every step answers
// "temporarily unavailable" (to the person as a page, to the client as
// JSON) and loses nothing: the same steps work once the store is back.
func TestBrowserFlowStoreDown(t *testing.T) {
	var fs *failingStore
	e := newEnvOn(t, t.TempDir(), func(s store.Store) store.Store { fs = &failingStore{Store: s}; return fs })
	e.addUser()
	e.publicClient("app")
	b := e.browser()

	fs.set(true)
	if p := b.authorize("app"); p.status != http.StatusServiceUnavailable || p.header.Get("Location") != "" {
		t.Errorf("authorize: %d", p.status)
	}
	fs.set(false)
	login := b.authorize("app")
	fs.set(true)
	if p := b.login(login, testUser, testPassword); p.status != http.StatusServiceUnavailable {
		t.Errorf("login: %d", p.status)
	}
	fs.set(false)
	consent := b.login(login, testUser, testPassword)
	fs.set(true)
	if p := b.consent(consent, "allow"); p.status != http.StatusServiceUnavailable || p.header.Get("Location") != "" {
		t.Errorf("consent: %d", p.status)
	}
	fs.set(false)
	// The consent form is still good: the user can send it again.
	if p := b.consent(consent, "allow"); p.status != http.StatusSeeOther {
		t.Errorf("consent after the outage: %d", p.status)
	}
	code := b.code("app")
	fs.set(true)
	if status, m := e.redeem("app", code); status != http.StatusServiceUnavailable || m["error"] != "temporarily_unavailable" {
		t.Errorf("token: %d %v", status, m)
	}
	fs.set(false)
	status, tok := e.redeem("app", code)
	if status != http.StatusOK {
		t.Fatalf("the code did not survive the outage: %d %v", status, tok)
	}
	fs.set(true)
	if status, m := e.refresh("app", tok["refresh_token"].(string)); status != http.StatusServiceUnavailable {
		t.Errorf("refresh: %d %v", status, m)
	}
	fs.set(false)
	if status, m := e.refresh("app", tok["refresh_token"].(string)); status != http.StatusOK {
		t.Errorf("the refresh token did not survive the outage: %d %v", status, m)
	}
	for _, secret := range []string{testPassword, code, tok["refresh_token"].(string), tok["access_token"].(string)} {
		if strings.Contains(e.logs.String(), secret) {
			t.Errorf("a secret reached the logs: %.12s...", secret)
		}
	}
}
