package issuer

import (
	"context"
	"errors"
	"net/http"
	"net/url"
	"strings"
	"testing"
	"time"

	"golang.org/x/oauth2"

	"github.com/meshauth/meshauth/issuer/store"
	"github.com/meshauth/meshauth/issuer/store/filestore"
)

// Options of the test's authorization requests: its PKCE pair, a nonce, a
// prompt.
func oauth2S256() oauth2.AuthCodeOption           { return oauth2.S256ChallengeOption(testVerifier) }
func oauth2Nonce() oauth2.AuthCodeOption          { return oauth2.SetAuthURLParam("nonce", "n-0S6_WzA2Mj") }
func oauth2Prompt(p string) oauth2.AuthCodeOption { return oauth2.SetAuthURLParam("prompt", p) }

// newEnvWith serves an issuer on a new embedded store, its Config changed
// by configure.
func newEnvWith(t *testing.T, configure func(*env, *Config)) *env {
	t.Helper()
	fst, err := filestore.Open(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { fst.Close() })
	return serveEnvWith(t, fst, fst, "", configure)
}

// sessionCookie returns the value of the browser's session cookie at e.
func (b *browser) sessionCookie() string {
	u, _ := url.Parse(b.e.url)
	for _, c := range b.c.Jar.Cookies(u) {
		if c.Name == b.e.srv.cookieName("session") {
			return c.Value
		}
	}
	return ""
}

// signedIn reports whether the browser's authorization for app needs no
// password: prompt=none answers with a code.
func (b *browser) signedIn() bool {
	b.t.Helper()
	q := b.authorize("app", "prompt", "none").location(b.t).Query()
	return q.Get("code") != ""
}

// TestSessionCookie: a second authorization needs no password; the cookie
// is bound as it must be, holds a new value at every sign-in, and only its
// hash is stored.
func TestSessionCookie(t *testing.T) {
	e := newEnv(t)
	e.addUser()
	e.publicClient("app")
	b := e.browser()
	login := b.authorize("app")
	consent := b.login(login, testUser, testPassword)
	var set *http.Cookie
	for _, c := range (&http.Response{Header: consent.header}).Cookies() {
		if c.Name == e.srv.cookieName("session") {
			set = c
		}
	}
	if set == nil || !set.HttpOnly || set.SameSite != http.SameSiteLaxMode || set.Path != "/" || set.MaxAge != int(DefaultSessionLifetime/time.Second) || set.Domain != "" {
		t.Fatalf("session cookie %+v", set)
	}
	b.consent(consent, "allow")
	if !b.signedIn() {
		t.Fatal("the second authorization asked for the password")
	}
	ctx := context.Background()
	first := b.sessionCookie()
	if _, err := e.store.GetSession(ctx, first); !errors.Is(err, store.ErrNotFound) {
		t.Errorf("the cookie's value is a store key: %v", err)
	}
	if _, err := e.store.GetSession(ctx, ReferenceTokenHash(first)); err != nil {
		t.Errorf("the session is not stored under the value's hash: %v", err)
	}
	// Signing in again replaces the session: a value seen before
	// sign-in is worth nothing after it.
	b.login(b.authorize("app", "prompt", "login"), testUser, testPassword)
	if second := b.sessionCookie(); second == first || second == "" {
		t.Error("signing in again kept the session cookie's value")
	}
	if _, err := e.store.GetSession(ctx, ReferenceTokenHash(first)); !errors.Is(err, store.ErrNotFound) {
		t.Errorf("the replaced session still exists: %v", err)
	}
	// A cookie of another form is not even looked up.
	jar := e.browser()
	u, _ := url.Parse(e.url)
	jar.c.Jar.SetCookies(u, []*http.Cookie{{Name: e.srv.cookieName("session"), Value: "short"}})
	if jar.signedIn() {
		t.Error("a malformed session cookie signed in")
	}

	https := &Server{secureCookies: true, issuerPort: "443"}
	if got := https.cookieName("session"); got != "__Host-meshauth-session" {
		t.Errorf("session cookie over https: %q", got)
	}
}

// TestSessionLifetime: a session ends after the idle timeout without use,
// and after its lifetime however much it is used.
func TestSessionLifetime(t *testing.T) {
	e := newEnvWith(t, func(_ *env, cfg *Config) { cfg.SessionLifetime, cfg.SessionIdleTimeout = 3*time.Hour, time.Hour })
	e.addUser()
	e.publicClient("app")
	b := e.browser()
	b.code("app")
	// Used every 50 minutes, the session lives on...
	for _, at := range []time.Duration{50 * time.Minute, 100 * time.Minute, 150 * time.Minute} {
		e.advance(t, at)
		if !b.signedIn() {
			t.Fatalf("the session ended after %v with use every 50 minutes", at)
		}
	}
	// ...until its lifetime is over.
	e.advance(t, 3*time.Hour)
	if b.signedIn() {
		t.Error("the session outlived its lifetime")
	}

	b = e.browser()
	e.advance(t, 0)
	b.code("app")
	e.advance(t, time.Hour+time.Second)
	if b.signedIn() {
		t.Error("the session outlived its idle timeout")
	}
	if p := b.authorize("app"); !p.isLogin() {
		t.Errorf("after the idle timeout: %d, want the login page", p.status)
	}
}

// TestSessionEnds: revoking a user's tokens (revoke subject) or disabling
// the user ends their sessions.
func TestSessionEnds(t *testing.T) {
	e := newEnv(t)
	userID := e.addUser()
	e.publicClient("app")
	b := e.browser()
	b.code("app")
	if !b.signedIn() {
		t.Fatal("not signed in")
	}
	if status, _, m := e.revoke(`{"kind":"subject","value":"`+userID+`"}`, "Bearer "+testAdminToken); status != http.StatusOK {
		t.Fatalf("revoke subject: %d %v", status, m)
	}
	if b.signedIn() {
		t.Error("the session survived the revocation of its user")
	}
	if _, err := e.store.GetSession(context.Background(), ReferenceTokenHash(b.sessionCookie())); !errors.Is(err, store.ErrNotFound) {
		t.Errorf("the session is still stored: %v", err)
	}

	b.code("app")
	if err := e.store.SetUserDisabled(context.Background(), userID, true); err != nil {
		t.Fatal(err)
	}
	if b.signedIn() {
		t.Error("a disabled user's session signs in")
	}
	p := b.login(b.authorize("app"), testUser, testPassword)
	if p.status != http.StatusForbidden || !strings.Contains(p.body, "This account is disabled") {
		t.Errorf("password sign-in of a disabled user: %d", p.status)
	}
}

// TestConsentRemembered: a session remembers what the person allowed each
// client; a wider request, or prompt=consent, asks again.
func TestConsentRemembered(t *testing.T) {
	e := newEnv(t)
	e.addUser()
	e.publicClient("app")
	e.publicClient("other")
	b := e.browser()
	b.code("app", "scope", "orders.read")
	for _, tc := range []struct {
		name    string
		client  string
		kv      []string
		consent bool
	}{
		{"the same request", "app", []string{"scope", "orders.read"}, false},
		{"a wider scope", "app", []string{"scope", "orders.read orders.write"}, true},
		{"the wider scope again", "app", []string{"scope", "orders.write"}, false},
		{"another audience", "app", []string{"scope", "orders.read", "audience", "orders"}, true},
		{"prompt=consent", "app", []string{"scope", "orders.read", "prompt", "consent"}, true},
		{"another client", "other", []string{"scope", "orders.read"}, true},
	} {
		p := b.authorize(tc.client, tc.kv...)
		if p.isConsent() != tc.consent || (!tc.consent && p.status != http.StatusFound) {
			t.Errorf("%s: %d, consent page %v, want %v", tc.name, p.status, p.isConsent(), tc.consent)
		}
		if p.isConsent() {
			b.consent(p, "allow")
		}
	}
}

// TestLogout: RP-initiated logout asks the person unless the request
// carries their ID Token, and redirects only to an address the client
// registered.
func TestLogout(t *testing.T) {
	e := newEnv(t)
	e.oidcUser()
	md := e.discover()
	cfg := e.relyingParty("webapp", md)
	e.relyingParty("otherapp", md)
	if _, err := CreateUser(context.Background(), e.store, "bob", testPassword, time.Now()); err != nil {
		t.Fatal(err)
	}
	signInAs := func(name string) (*browser, string) {
		b := e.browser()
		p := b.getURL(cfg.AuthCodeURL("s", oauth2S256(), oauth2Nonce()))
		if p.isLogin() {
			p = b.login(p, name, testPassword)
		}
		if p.isConsent() {
			p = b.consent(p, "allow")
		}
		status, _, m := e.tokenRequest(url.Values{"grant_type": {GrantTypeAuthorizationCode}, "code": {p.location(t).Query().Get("code")},
			"redirect_uri": {testRedirect}, "code_verifier": {testVerifier}}, basic(cfg.ClientID, cfg.ClientSecret))
		if status != http.StatusOK {
			t.Fatalf("token: %d %v", status, m)
		}
		return b, m["id_token"].(string)
	}
	signIn := func() (*browser, string) { return signInAs(testUser) }
	logout := func(b *browser, kv ...string) *page {
		q := url.Values{}
		for i := 0; i+1 < len(kv); i += 2 {
			q.Set(kv[i], kv[i+1])
		}
		return b.get("/logout", q)
	}
	oidcSignedIn := func(b *browser) bool {
		q := b.getURL(cfg.AuthCodeURL("s", oauth2S256(), oauth2Prompt("none"))).location(t).Query()
		return q.Get("code") != ""
	}

	t.Run("expired hint of the signed-in user", func(t *testing.T) {
		b, hint := signIn()
		// The ID Token expired long ago; the session is still live.
		e.advance(t, 50*time.Minute)
		p := logout(b, "id_token_hint", hint, "post_logout_redirect_uri", testLogoutRedirect, "state", "st")
		if loc := p.location(t); loc.Query().Get("state") != "st" || !strings.HasPrefix(loc.String(), testLogoutRedirect) {
			t.Errorf("logout: %s", loc)
		}
		if oidcSignedIn(b) {
			t.Error("still signed in")
		}
	})

	t.Run("without a hint the person confirms", func(t *testing.T) {
		b, _ := signIn()
		p := logout(b, "client_id", "webapp", "post_logout_redirect_uri", testLogoutRedirect, "state", "st")
		if p.status != http.StatusOK || !strings.Contains(p.body, "Sign out?") || p.header.Get("Location") != "" {
			t.Fatalf("logout without a hint: %d %s", p.status, p.body)
		}
		if !strings.Contains(p.header.Get("Content-Security-Policy"), "form-action 'self' http://127.0.0.1:9876") {
			t.Errorf("CSP %q does not admit the redirect after the post", p.header.Get("Content-Security-Policy"))
		}
		token := p.formToken(t)
		// Another browser cannot answer it, nor another site.
		other, _ := signIn()
		if q := other.post("/logout/confirm", url.Values{"form_token": {token}}); q.status != http.StatusForbidden {
			t.Errorf("confirmation from another browser: %d", q.status)
		}
		if q := b.post("/logout/confirm", url.Values{"form_token": {token}}, "Sec-Fetch-Site", "cross-site"); q.status != http.StatusForbidden {
			t.Errorf("cross-site confirmation: %d", q.status)
		}
		if !oidcSignedIn(b) || !oidcSignedIn(other) {
			t.Fatal("a refused confirmation signed someone out")
		}
		done := b.post("/logout/confirm", url.Values{"form_token": {token}})
		if done.status != http.StatusSeeOther || done.location(t).Query().Get("state") != "st" {
			t.Errorf("confirmation: %d %s", done.status, done.header.Get("Location"))
		}
		if oidcSignedIn(b) || !oidcSignedIn(other) {
			t.Error("the confirmation did not sign out exactly its browser")
		}
	})

	t.Run("a hint of someone else asks too", func(t *testing.T) {
		_, hint := signInAs("bob")
		b, _ := signIn()
		if p := logout(b, "id_token_hint", hint); !strings.Contains(p.body, "Sign out?") || p.header.Get("Location") != "" {
			t.Errorf("%d %s", p.status, p.header.Get("Location"))
		}
	})

	t.Run("refused requests", func(t *testing.T) {
		b, hint := signIn()
		for _, tc := range []struct {
			name string
			kv   []string
		}{
			{"unregistered redirect", []string{"id_token_hint", hint, "post_logout_redirect_uri", "https://evil.example/"}},
			{"the login redirect URI", []string{"id_token_hint", hint, "post_logout_redirect_uri", testRedirect}},
			{"redirect without a client", []string{"post_logout_redirect_uri", testLogoutRedirect}},
			{"unknown client", []string{"client_id", "nobody", "post_logout_redirect_uri", testLogoutRedirect}},
			{"forged hint", []string{"id_token_hint", hint[:len(hint)-4] + "AAAA"}},
			{"an access token as hint", []string{"id_token_hint", e.mint(map[string]any{"aud": "webapp"})}},
			{"client_id other than the hint's", []string{"id_token_hint", hint, "client_id", "otherapp", "post_logout_redirect_uri", testLogoutRedirect}},
		} {
			p := logout(b, tc.kv...)
			if p.status != http.StatusBadRequest || p.header.Get("Location") != "" {
				t.Errorf("%s: %d Location=%q", tc.name, p.status, p.header.Get("Location"))
			}
		}
		if !oidcSignedIn(b) {
			t.Error("a refused logout signed the person out")
		}
	})

	t.Run("nobody signed in", func(t *testing.T) {
		b := e.browser()
		if p := logout(b, "client_id", "webapp", "post_logout_redirect_uri", testLogoutRedirect); p.status != http.StatusFound {
			t.Errorf("logout without a session: %d", p.status)
		}
		if p := logout(b); p.status != http.StatusOK || !strings.Contains(p.body, "Signed out") {
			t.Errorf("logout without a session or redirect: %d", p.status)
		}
	})
}
