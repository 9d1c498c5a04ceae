package issuer

import (
	"context"
	"encoding/base64"
	"encoding/json"
	"html"
	"net"
	"net/http"
	"net/url"
	"regexp"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/meshauth/meshauth/issuer/store"
	"github.com/meshauth/meshauth/issuer/store/filestore"
)

// federation is a meshauth issuer, down, whose people sign in through a
// second meshauth issuer, up, their upstream OpenID provider: real HTTP,
// real keys. What down receives from up's token endpoint passes through
// tamper, if set.
type federation struct {
	t        *testing.T
	up, down *env
	mu       sync.Mutex
	tamper   func(idToken string) string
}

// newFederation serves up and down, with provider's flags for the
// upstream provider "corp" at down, and registers the public client app
// at down.
func newFederation(t *testing.T, provider UpstreamProvider) *federation {
	f := &federation{t: t, up: newEnv(t)}
	fst, err := filestore.Open(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { fst.Close() })
	f.down = serveEnvWith(t, fst, fst, "", func(e *env, cfg *Config) {
		reg := f.up.register(ClientMetadata{ClientID: "meshauth-down", ClientName: "Down", GrantTypes: []string{GrantTypeAuthorizationCode},
			RedirectURIs: []string{e.url + "/upstream/corp/callback"}, Scope: "openid profile email"})
		provider.ID, provider.Name, provider.Issuer = "corp", "Corp", f.up.url
		provider.ClientID, provider.ClientSecret = "meshauth-down", reg.ClientSecret
		provider.HTTPClient = &http.Client{Transport: f}
		cfg.UpstreamProviders = []UpstreamProvider{provider}
	})
	f.down.publicClient("app")
	return f
}

// RoundTrip is down's transport to up: it hands the ID Token of a token
// response to tamper.
func (f *federation) RoundTrip(req *http.Request) (*http.Response, error) {
	resp, err := http.DefaultTransport.RoundTrip(req)
	f.mu.Lock()
	tamper := f.tamper
	f.mu.Unlock()
	if err != nil || tamper == nil || req.URL.Path != "/token" || resp.StatusCode != http.StatusOK {
		return resp, err
	}
	var body map[string]any
	if err := json.NewDecoder(resp.Body).Decode(&body); err != nil {
		return nil, err
	}
	resp.Body.Close()
	body["id_token"] = tamper(body["id_token"].(string))
	b, _ := json.Marshal(body)
	resp.Body = readCloser(string(b))
	resp.ContentLength = int64(len(b))
	resp.Header.Del("Content-Length")
	return resp, nil
}

func readCloser(s string) *nopCloser { return &nopCloser{strings.NewReader(s)} }

type nopCloser struct{ *strings.Reader }

func (nopCloser) Close() error { return nil }

// setTamper sets (or with nil clears) what happens to the ID Tokens down
// receives, until the test ends.
func (f *federation) setTamper(t *testing.T, tamper func(string) string) {
	f.mu.Lock()
	f.tamper = tamper
	f.mu.Unlock()
	t.Cleanup(func() { f.mu.Lock(); f.tamper = nil; f.mu.Unlock() })
}

// resign returns the claims of idToken, as change edits them, signed with
// up's key with typ.
func (f *federation) resign(idToken, typ string, change func(map[string]any)) string {
	parts := strings.Split(idToken, ".")
	payload, err := base64.RawURLEncoding.DecodeString(parts[1])
	if err != nil {
		f.t.Fatal(err)
	}
	var claims map[string]any
	if err := json.Unmarshal(payload, &claims); err != nil {
		f.t.Fatal(err)
	}
	change(claims)
	tok, err := f.up.keys.Sign(typ, mustJSON(f.t, claims))
	if err != nil {
		f.t.Fatal(err)
	}
	return tok
}

// upUser stores a person at up.
func (f *federation) upUser(name, email string, verified bool) string {
	f.t.Helper()
	u, err := CreateUserWithProfile(context.Background(), f.up.store, name, testPassword, Profile{DisplayName: "Person " + name, Email: email, EmailVerified: verified}, time.Now())
	if err != nil {
		f.t.Fatal(err)
	}
	return u.ID
}

// at is b at another issuer, with the same cookies.
func (b *browser) at(e *env) *browser { return &browser{t: b.t, e: e, c: b.c} }

var upstreamLink = regexp.MustCompile(`href="([^"]*/authorize/upstream\?[^"]*)"`)

// leave clicks "Sign in with Corp" on down's login page and returns where
// down sends the browser: up's authorization endpoint.
func (f *federation) leave(b *browser) *url.URL {
	f.t.Helper()
	login := b.authorize("app")
	m := upstreamLink.FindStringSubmatch(login.body)
	if !login.isLogin() || m == nil || !strings.Contains(login.body, "Sign in with Corp") {
		f.t.Fatalf("down's login page offers no upstream provider: %d %s", login.status, login.body)
	}
	u, err := url.Parse(html.UnescapeString(m[1]))
	if err != nil {
		f.t.Fatal(err)
	}
	to := b.get(u.Path, u.Query()).location(f.t)
	if to.Host != strings.TrimPrefix(f.up.url, "http://") || to.Path != "/authorize" {
		f.t.Fatalf("down sent the browser to %s", to)
	}
	return to
}

// atUpstream signs in at up as name (if up asks) and allows (if up asks),
// and returns the answer up sends the browser back to down with.
func (f *federation) atUpstream(b *browser, to *url.URL, name, action string) *url.URL {
	f.t.Helper()
	ub := b.at(f.up)
	p := ub.get(to.Path, to.Query())
	if p.isLogin() {
		p = ub.login(p, name, testPassword)
	}
	if p.isConsent() {
		p = ub.consent(p, action)
	}
	back := p.location(f.t)
	if "http://"+back.Host != f.down.url || back.Path != "/upstream/corp/callback" {
		f.t.Fatalf("up sent the browser to %s", back)
	}
	return back
}

// signIn is a whole sign-in at down through up as name; it returns down's
// answer to the callback.
func (f *federation) signIn(b *browser, name string) *page {
	f.t.Helper()
	back := f.atUpstream(b, f.leave(b), name, "allow")
	return b.get(back.Path, back.Query())
}

// finish allows at down, redeems the code as app and returns the access
// token's claims.
func (f *federation) finish(b *browser, p *page) map[string]any {
	f.t.Helper()
	if p.isConsent() {
		p = b.consent(p, "allow")
	}
	code := p.location(f.t).Query().Get("code")
	status, tok := f.down.redeem("app", code)
	if status != http.StatusOK {
		f.t.Fatalf("token at down: %d %v", status, tok)
	}
	c := f.down.verifyAccessToken(tok["access_token"].(string), f.down.url)
	var claims map[string]any
	if err := json.Unmarshal(c.Raw, &claims); err != nil {
		f.t.Fatal(err)
	}
	return claims
}

// refused checks that down answered a sign-in with status and a page that
// says want, and signed nobody in.
func (f *federation) refused(b *browser, p *page, status int, want string) {
	f.t.Helper()
	if p.status != status || !strings.Contains(html.UnescapeString(p.body), want) || p.header.Get("Location") != "" {
		f.t.Errorf("down answered %d, want %d with %q:\n%s", p.status, status, want, p.body)
	}
	for _, c := range p.header.Values("Set-Cookie") {
		if strings.Contains(c, "-session=") && !strings.Contains(c, "Max-Age=0") {
			f.t.Errorf("a refused sign-in set a session cookie: %s", c)
		}
	}
	if q := b.authorize("app", "prompt", "none").location(f.t).Query(); q.Get("error") != "login_required" {
		f.t.Errorf("after a refused sign-in, prompt=none: %v", q)
	}
}

// TestUpstreamSignIn: meshauth as a relying party of a second meshauth
// issuer. The first sign-in creates a local user linked to the upstream
// identity; the second signs in as that user again; tokens carry the local
// subject, the provider as idp and fed in amr. A tampered, re-signed,
// expired, foreign-audience or wrong-nonce ID Token, a replayed or
// foreign state and a wrong iss are each refused.
func TestUpstreamSignIn(t *testing.T) {
	f := newFederation(t, UpstreamProvider{CreateUsers: true})
	upAlice := f.upUser("alice", "Alice@Example.com", true)
	localAlice := f.down.addUser() // a local alice, whom the upstream one must never become
	ctx := context.Background()

	b := f.down.browser()
	claims := f.finish(b, f.signIn(b, "alice"))
	sub, _ := claims["sub"].(string)
	link, err := f.down.store.GetIdentity(ctx, f.up.url, upAlice)
	if err != nil || link.UserID != sub || sub == localAlice {
		t.Fatalf("first sign-in: sub %q, link %+v %v (local alice %s)", sub, link, err, localAlice)
	}
	u, err := f.down.store.GetUser(ctx, sub)
	if err != nil || u.Name != "corp.alice" || u.Email != "alice@example.com" || !u.EmailVerified || u.PasswordHash != "" || u.DisplayName != "Person alice" {
		t.Errorf("user created for the upstream identity: %+v %v", u, err)
	}
	if claims["idp"] != f.up.url || !slices.Equal(toStrings(claims["amr"]), []string{"fed", "pwd"}) {
		t.Errorf("access token of an upstream sign-in: %v", claims)
	}

	t.Run("second sign-in reuses the link", func(t *testing.T) {
		b := f.down.browser()
		if c := f.finish(b, f.signIn(b, "alice")); c["sub"] != sub {
			t.Errorf("second sign-in: sub %v, want %s", c["sub"], sub)
		}
	})

	idTokenCases := []struct {
		name   string
		tamper func(string) string
	}{
		{"tampered", func(tok string) string {
			parts := strings.Split(tok, ".")
			payload, _ := base64.RawURLEncoding.DecodeString(parts[1])
			payload = []byte(strings.Replace(string(payload), `"sub":"`+upAlice, `"sub":"`+f.upUser("victim", "", false), 1))
			return parts[0] + "." + base64.RawURLEncoding.EncodeToString(payload) + "." + parts[2]
		}},
		{"foreign audience", func(tok string) string {
			return f.resign(tok, "JWT", func(c map[string]any) { c["aud"] = "another-client" })
		}},
		{"several audiences without azp", func(tok string) string {
			return f.resign(tok, "JWT", func(c map[string]any) { c["aud"] = []string{"meshauth-down", "another-client"} })
		}},
		{"azp of another client", func(tok string) string {
			return f.resign(tok, "JWT", func(c map[string]any) {
				c["aud"], c["azp"] = []string{"meshauth-down", "another-client"}, "another-client"
			})
		}},
		{"expired", func(tok string) string {
			return f.resign(tok, "JWT", func(c map[string]any) { c["exp"] = time.Now().Add(-time.Hour).Unix() })
		}},
		{"replayed nonce", func(tok string) string {
			return f.resign(tok, "JWT", func(c map[string]any) { c["nonce"] = "the nonce of an earlier sign-in" })
		}},
		{"another issuer", func(tok string) string {
			return f.resign(tok, "JWT", func(c map[string]any) { c["iss"] = f.down.url })
		}},
		{"an access token", func(tok string) string { return f.resign(tok, "at+jwt", func(map[string]any) {}) }},
		{"at_hash of another access token", func(tok string) string {
			return f.resign(tok, "JWT", func(c map[string]any) { c["at_hash"] = "AAAAAAAAAAAAAAAAAAAAAA" })
		}},
		{"forged signature", func(tok string) string { return tok[:len(tok)-4] + "AAAA" }},
		{"none", func(string) string { return "" }},
	}
	for _, tc := range idTokenCases {
		t.Run("ID Token "+tc.name, func(t *testing.T) {
			f.setTamper(t, tc.tamper)
			b := f.down.browser()
			f.refused(b, f.signIn(b, "alice"), http.StatusUnauthorized, "could not be verified")
		})
	}

	t.Run("wrong nonce", func(t *testing.T) {
		b := f.down.browser()
		to := f.leave(b)
		q := to.Query()
		q.Set("nonce", "not-the-nonce-down-chose")
		to.RawQuery = q.Encode()
		back := f.atUpstream(b, to, "alice", "allow")
		f.refused(b, b.get(back.Path, back.Query()), http.StatusUnauthorized, "could not be verified")
	})

	t.Run("replayed state", func(t *testing.T) {
		b := f.down.browser()
		back := f.atUpstream(b, f.leave(b), "alice", "allow")
		downURL, _ := url.Parse(f.down.url)
		pending := b.c.Jar.Cookies(downURL)
		f.finish(b, b.get(back.Path, back.Query()))
		// The same answer again, in the same browser, even with the
		// cookie of the sign-in put back.
		b.c.Jar.SetCookies(downURL, pending)
		f.refused(f.down.browser(), b.get(back.Path, back.Query()), http.StatusBadRequest, "completed already")
		// In another browser, which never started it.
		other := f.down.browser()
		f.refused(other, other.get(back.Path, back.Query()), http.StatusBadRequest, "not started in this browser")
	})

	t.Run("wrong iss", func(t *testing.T) {
		b := f.down.browser()
		back := f.atUpstream(b, f.leave(b), "alice", "allow")
		q := back.Query()
		q.Set("iss", "https://mix-up.example")
		f.refused(b, b.get(back.Path, q), http.StatusBadRequest, "does not belong to this sign-in")
		// Without iss, which up promises in its metadata (RFC 9207).
		b = f.down.browser()
		back = f.atUpstream(b, f.leave(b), "alice", "allow")
		q = back.Query()
		q.Del("iss")
		f.refused(b, b.get(back.Path, q), http.StatusBadRequest, "does not belong to this sign-in")
	})

	t.Run("state of another sign-in", func(t *testing.T) {
		b := f.down.browser()
		back := f.atUpstream(b, f.leave(b), "alice", "allow")
		q := back.Query()
		q.Set("state", referenceToken())
		f.refused(b, b.get(back.Path, q), http.StatusBadRequest, "does not belong to this sign-in")
	})

	t.Run("the person says no upstream", func(t *testing.T) {
		b := f.down.browser()
		back := f.atUpstream(b, f.leave(b), "alice", "deny")
		f.refused(b, b.get(back.Path, back.Query()), http.StatusUnauthorized, "Corp did not sign you in (access_denied)")
	})

	t.Run("unknown provider", func(t *testing.T) {
		b := f.down.browser()
		if p := b.get("/upstream/nobody/callback", url.Values{"code": {"x"}, "state": {"y"}}); p.status != http.StatusNotFound {
			t.Errorf("callback of an unknown provider: %d", p.status)
		}
	})

	for _, secret := range []string{testPassword} {
		if strings.Contains(f.down.logs.String(), secret) || strings.Contains(f.up.logs.String(), secret) {
			t.Error("a password reached the logs")
		}
	}
}

// TestUpstreamLinking: an upstream identity becomes a local user only by
// its link, by a verified email the operator lets match, or by creation;
// never by a name, never onto a user linked to another identity of the
// provider, and never onto a disabled user.
func TestUpstreamLinking(t *testing.T) {
	ctx := context.Background()
	localUser := func(e *env, name, email string, verified bool) *store.User {
		u, err := CreateUserWithProfile(ctx, e.store, name, testPassword, Profile{Email: email, EmailVerified: verified}, time.Now())
		if err != nil {
			t.Fatal(err)
		}
		return u
	}

	t.Run("no link, no creation", func(t *testing.T) {
		f := newFederation(t, UpstreamProvider{})
		f.upUser("alice", "alice@example.com", true)
		localUser(f.down, "alice", "alice@example.com", true) // same name and email, but email linking is off
		b := f.down.browser()
		f.refused(b, f.signIn(b, "alice"), http.StatusForbidden, "is not linked to an account")
	})

	t.Run("verified email", func(t *testing.T) {
		f := newFederation(t, UpstreamProvider{LinkVerifiedEmail: true})
		upBob := f.upUser("bob", "bob@example.com", true)
		bob := localUser(f.down, "robert", "bob@example.com", true)
		b := f.down.browser()
		if c := f.finish(b, f.signIn(b, "bob")); c["sub"] != bob.ID {
			t.Fatalf("sign-in by verified email: sub %v, want %s", c["sub"], bob.ID)
		}
		if link, err := f.down.store.GetIdentity(ctx, f.up.url, upBob); err != nil || link.UserID != bob.ID {
			t.Errorf("link %+v %v", link, err)
		}

		// Another upstream identity with the same verified email: bob has
		// an identity at the provider already, so it is refused.
		f.upUser("bob2", "bob@example.com", true)
		b = f.down.browser()
		f.refused(b, f.signIn(b, "bob2"), http.StatusForbidden, "cannot be linked")

		// An unverified upstream email finds nobody.
		localUser(f.down, "carol", "carol@example.com", true)
		f.upUser("carol", "carol@example.com", false)
		b = f.down.browser()
		f.refused(b, f.signIn(b, "carol"), http.StatusForbidden, "is not linked")

		// Nor does an upstream email that the local record has unverified.
		localUser(f.down, "dave", "dave@example.com", false)
		f.upUser("dave", "dave@example.com", true)
		b = f.down.browser()
		f.refused(b, f.signIn(b, "dave"), http.StatusForbidden, "is not linked")

		// Two local users with the email: ambiguous, refused.
		localUser(f.down, "erin", "erin@example.com", true)
		localUser(f.down, "erin2", "erin@example.com", true)
		f.upUser("erin", "erin@example.com", true)
		b = f.down.browser()
		f.refused(b, f.signIn(b, "erin"), http.StatusForbidden, "cannot be linked")

		// A disabled user stays out, linked or not.
		if err := f.down.store.SetUserDisabled(ctx, bob.ID, true); err != nil {
			t.Fatal(err)
		}
		b = f.down.browser()
		f.refused(b, f.signIn(b, "bob"), http.StatusForbidden, "This account is disabled")
	})

	t.Run("disabled user with a session", func(t *testing.T) {
		f := newFederation(t, UpstreamProvider{CreateUsers: true})
		f.upUser("alice", "", false)
		b := f.down.browser()
		sub := f.finish(b, f.signIn(b, "alice"))["sub"].(string)
		if err := f.down.store.SetUserDisabled(ctx, sub, true); err != nil {
			t.Fatal(err)
		}
		if q := b.authorize("app", "prompt", "none").location(t).Query(); q.Get("error") != "login_required" {
			t.Errorf("a disabled user's session still signs in: %v", q)
		}
		f.refused(b, f.signIn(b, "alice"), http.StatusForbidden, "This account is disabled")
	})
}

// TestUpstreamUnreachable: a provider that never answers gets a page
// saying so after the configured timeout, not a hang.
func TestUpstreamUnreachable(t *testing.T) {
	// A listener that accepts connections and never answers.
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ln.Close() })
	fst, err := filestore.Open(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { fst.Close() })
	e := serveEnvWith(t, fst, fst, "", func(_ *env, cfg *Config) {
		cfg.UpstreamProviders = []UpstreamProvider{{ID: "slow", Name: "Slow IdP", Issuer: "http://" + ln.Addr().String(),
			ClientID: "x", ClientSecret: "y", Timeout: 100 * time.Millisecond}}
	})
	e.publicClient("app")
	b := e.browser()
	login := b.authorize("app")
	m := upstreamLink.FindStringSubmatch(login.body)
	if m == nil {
		t.Fatal("no upstream button")
	}
	u, _ := url.Parse(html.UnescapeString(m[1]))
	p := b.get(u.Path, u.Query())
	if p.status != http.StatusBadGateway || !strings.Contains(p.body, "Slow IdP cannot be reached right now") || !p.isLoginForm() {
		t.Errorf("unreachable provider: %d %s", p.status, p.body)
	}
}

// isLoginForm tells the login page, whatever its status.
func (p *page) isLoginForm() bool { return strings.Contains(p.body, `action="/authorize/login"`) }
