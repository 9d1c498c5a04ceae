package rp

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/sha256"
	"encoding/base64"
	"encoding/json"
	"errors"
	"net/http"
	"net/http/httptest"
	"net/url"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

// fakeProvider is an OpenID provider over loopback whose answers a test
// shapes: its metadata, the ID Token claims and header of its token
// responses, and its token endpoint's status.
type fakeProvider struct {
	t   *testing.T
	srv *httptest.Server
	key *ecdsa.PrivateKey

	mu          sync.Mutex
	metadata    map[string]any
	claims      func(nonce string) map[string]any
	header      map[string]any
	tokenStatus int
	tokenForm   url.Values // the last token request
	tokenAuth   string
	nonce       string // of the last authorization request
	discoveries atomic.Int32
}

func newFakeProvider(t *testing.T) *fakeProvider {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	p := &fakeProvider{t: t, key: key, tokenStatus: http.StatusOK, header: map[string]any{"alg": "ES256", "kid": "k1", "typ": "JWT"}}
	p.srv = httptest.NewServer(http.HandlerFunc(p.serve))
	t.Cleanup(p.srv.Close)
	iss := p.srv.URL
	p.metadata = map[string]any{"issuer": iss, "authorization_endpoint": iss + "/auth", "token_endpoint": iss + "/token",
		"jwks_uri": iss + "/jwks", "authorization_response_iss_parameter_supported": true}
	p.claims = func(nonce string) map[string]any {
		now := time.Now()
		return map[string]any{"iss": iss, "sub": "upstream-user", "aud": "client", "exp": now.Add(time.Hour).Unix(), "iat": now.Unix(),
			"nonce": nonce, "email": "A@Example.com", "email_verified": true, "name": "A. Person", "amr": []string{"pwd", "mfa"}}
	}
	return p
}

func (p *fakeProvider) serve(w http.ResponseWriter, r *http.Request) {
	p.mu.Lock()
	defer p.mu.Unlock()
	switch r.URL.Path {
	case "/.well-known/openid-configuration":
		p.discoveries.Add(1)
		json.NewEncoder(w).Encode(p.metadata)
	case "/jwks":
		pt, _ := p.key.PublicKey.Bytes()
		enc := base64.RawURLEncoding.EncodeToString
		json.NewEncoder(w).Encode(map[string]any{"keys": []any{map[string]string{
			"kty": "EC", "crv": "P-256", "kid": "k1", "alg": "ES256", "use": "sig", "x": enc(pt[1:33]), "y": enc(pt[33:])}}})
	case "/token":
		r.ParseForm()
		p.tokenForm, p.tokenAuth = r.PostForm, r.Header.Get("Authorization")
		w.Header().Set("Content-Type", "application/json")
		if p.tokenStatus != http.StatusOK {
			w.WriteHeader(p.tokenStatus)
			w.Write([]byte(`{"error":"invalid_grant"}`))
			return
		}
		at := "access-token-value"
		c := p.claims(p.nonce)
		if _, ok := c["at_hash"]; !ok {
			c["at_hash"] = AccessTokenHash("ES256", at)
		}
		json.NewEncoder(w).Encode(map[string]any{"access_token": at, "token_type": "Bearer", "id_token": p.sign(p.header, c)})
	default:
		http.NotFound(w, r)
	}
}

func (p *fakeProvider) sign(header, claims map[string]any) string {
	enc := func(v any) string { b, _ := json.Marshal(v); return base64.RawURLEncoding.EncodeToString(b) }
	in := enc(header) + "." + enc(claims)
	sum := sha256.Sum256([]byte(in))
	r, s, err := ecdsa.Sign(rand.Reader, p.key, sum[:])
	if err != nil {
		p.t.Fatal(err)
	}
	return in + "." + base64.RawURLEncoding.EncodeToString(append(r.FillBytes(make([]byte, 32)), s.FillBytes(make([]byte, 32))...))
}

func (p *fakeProvider) set(f func()) {
	p.mu.Lock()
	f()
	p.mu.Unlock()
}

func (p *fakeProvider) rp(t *testing.T, secret string) *Provider {
	pr, err := New(Config{Issuer: p.srv.URL, ClientID: "client", ClientSecret: secret, RedirectURL: "http://127.0.0.1:1/cb",
		Scopes: []string{"email", "openid"}, Timeout: time.Second})
	if err != nil {
		t.Fatal(err)
	}
	return pr
}

// signIn runs a sign-in: the authorization URL (whose nonce the provider
// records) and the exchange of response, filled with code, state and iss
// unless response overrides them.
func (p *fakeProvider) signIn(t *testing.T, pr *Provider, response url.Values) (*IDToken, error) {
	t.Helper()
	l := NewLogin()
	target, err := pr.AuthCodeURL(context.Background(), l, url.Values{"prompt": {"login"}, "state": {"overridden?"}})
	if err != nil {
		return nil, err
	}
	u, _ := url.Parse(target)
	q := u.Query()
	sum := sha256.Sum256([]byte(l.CodeVerifier))
	if q.Get("state") != l.State || q.Get("scope") != "openid email" || q.Get("prompt") != "login" || q.Get("code_challenge_method") != "S256" ||
		q.Get("code_challenge") != base64.RawURLEncoding.EncodeToString(sum[:]) || q.Get("redirect_uri") != "http://127.0.0.1:1/cb" {
		t.Fatalf("authorization request %v", q)
	}
	p.set(func() { p.nonce = q.Get("nonce") })
	resp := url.Values{"code": {"the-code"}, "state": {l.State}, "iss": {p.srv.URL}}
	for k, v := range response {
		if v[0] == "" {
			resp.Del(k)
		} else {
			resp[k] = v
		}
	}
	return pr.Exchange(context.Background(), l, resp, nil)
}

func TestExchange(t *testing.T) {
	p := newFakeProvider(t)
	pr := p.rp(t, "s3cret:&")
	id, err := p.signIn(t, pr, nil)
	if err != nil {
		t.Fatal(err)
	}
	if id.Subject != "upstream-user" || id.Issuer != p.srv.URL || id.Email != "A@Example.com" || !id.EmailVerified ||
		id.Name != "A. Person" || strings.Join(id.AMR, ",") != "pwd,mfa" || id.AccessToken != "access-token-value" {
		t.Errorf("ID Token %+v", id)
	}
	// client_secret_basic, with the credentials form-encoded first (RFC
	// 6749 §2.3.1), and PKCE.
	want := "Basic " + base64.StdEncoding.EncodeToString([]byte("client:s3cret%3A%26"))
	if p.tokenAuth != want || p.tokenForm.Get("code_verifier") == "" || p.tokenForm.Get("client_secret") != "" || p.tokenForm.Get("grant_type") != "authorization_code" {
		t.Errorf("token request: %q %v", p.tokenAuth, p.tokenForm)
	}
	if n := p.discoveries.Load(); n != 1 {
		t.Errorf("%d discoveries for two uses", n)
	}

	// A provider that takes only client_secret_post.
	p.set(func() { p.metadata["token_endpoint_auth_methods_supported"] = []string{"client_secret_post"} })
	pr = p.rp(t, "s3cret")
	if _, err := p.signIn(t, pr, nil); err != nil || p.tokenAuth != "" || p.tokenForm.Get("client_secret") != "s3cret" {
		t.Errorf("client_secret_post: %v %q %v", err, p.tokenAuth, p.tokenForm)
	}
	// A public client.
	pr = p.rp(t, "")
	if _, err := p.signIn(t, pr, nil); err != nil || p.tokenAuth != "" || p.tokenForm.Get("client_id") != "client" {
		t.Errorf("public client: %v %q %v", err, p.tokenAuth, p.tokenForm)
	}
}

// TestExchangeRefusals: every way a response or ID Token can be wrong is
// refused with its error.
func TestExchangeRefusals(t *testing.T) {
	for _, tc := range []struct {
		name     string
		response url.Values
		setup    func(p *fakeProvider)
		want     error
	}{
		{name: "state of another sign-in", response: url.Values{"state": {"other"}}, want: ErrState},
		{name: "no state", response: url.Values{"state": {""}}, want: ErrState},
		{name: "another iss", response: url.Values{"iss": {"https://evil.example"}}, want: ErrIssuer},
		{name: "no iss though promised", response: url.Values{"iss": {""}}, want: ErrIssuer},
		{name: "provider error", response: url.Values{"code": {""}, "error": {"access_denied"}}, want: &ProviderError{}},
		{name: "token endpoint refuses", setup: func(p *fakeProvider) { p.tokenStatus = http.StatusBadRequest }, want: &ProviderError{}},
		{name: "token endpoint down", setup: func(p *fakeProvider) { p.tokenStatus = http.StatusBadGateway }, want: ErrUnavailable},
		{name: "wrong nonce", setup: func(p *fakeProvider) {
			c := p.claims
			p.claims = func(string) map[string]any { return c("not-the-nonce") }
		}, want: ErrIDToken},
		{name: "no nonce", setup: func(p *fakeProvider) { p.editClaims(func(m map[string]any) { delete(m, "nonce") }) }, want: ErrIDToken},
		{name: "another audience", setup: func(p *fakeProvider) { p.editClaims(func(m map[string]any) { m["aud"] = "other" }) }, want: ErrIDToken},
		{name: "several audiences, no azp", setup: func(p *fakeProvider) {
			p.editClaims(func(m map[string]any) { m["aud"] = []string{"client", "other"} })
		}, want: ErrIDToken},
		{name: "azp of another", setup: func(p *fakeProvider) {
			p.editClaims(func(m map[string]any) { m["aud"], m["azp"] = []string{"client", "other"}, "other" })
		}, want: ErrIDToken},
		{name: "expired", setup: func(p *fakeProvider) {
			p.editClaims(func(m map[string]any) { m["exp"] = time.Now().Add(-time.Hour).Unix() })
		}, want: ErrIDToken},
		{name: "no iat", setup: func(p *fakeProvider) { p.editClaims(func(m map[string]any) { delete(m, "iat") }) }, want: ErrIDToken},
		{name: "no sub", setup: func(p *fakeProvider) { p.editClaims(func(m map[string]any) { delete(m, "sub") }) }, want: ErrIDToken},
		{name: "sub too long", setup: func(p *fakeProvider) {
			p.editClaims(func(m map[string]any) { m["sub"] = strings.Repeat("s", 256) })
		}, want: ErrIDToken},
		{name: "another issuer", setup: func(p *fakeProvider) { p.editClaims(func(m map[string]any) { m["iss"] = "https://evil.example" }) }, want: ErrIDToken},
		{name: "wrong at_hash", setup: func(p *fakeProvider) {
			p.editClaims(func(m map[string]any) { m["at_hash"] = "AAAAAAAAAAAAAAAAAAAAAA" })
		}, want: ErrIDToken},
		{name: "nonce of the wrong type", setup: func(p *fakeProvider) { p.editClaims(func(m map[string]any) { m["nonce"] = 7 }) }, want: ErrIDToken},
		{name: "an access token's typ", setup: func(p *fakeProvider) { p.header["typ"] = "at+jwt" }, want: ErrIDToken},
		{name: "HMAC", setup: func(p *fakeProvider) { p.header["alg"] = "HS256" }, want: ErrIDToken},
		{name: "unknown key", setup: func(p *fakeProvider) { p.header["kid"] = "k2" }, want: ErrIDToken},
		{name: "key in the header", setup: func(p *fakeProvider) { p.header["jku"] = "https://evil.example/jwks" }, want: ErrIDToken},
	} {
		t.Run(tc.name, func(t *testing.T) {
			p := newFakeProvider(t)
			if tc.setup != nil {
				p.set(func() { tc.setup(p) })
			}
			_, err := p.signIn(t, p.rp(t, "secret"), tc.response)
			var pe *ProviderError
			if _, wantPE := tc.want.(*ProviderError); wantPE {
				if !errors.As(err, &pe) || pe.Code == "" {
					t.Errorf("err = %v, want a ProviderError", err)
				}
				return
			}
			if !errors.Is(err, tc.want) {
				t.Errorf("err = %v, want %v", err, tc.want)
			}
		})
	}
}

// editClaims changes the claims of the provider's next ID Tokens.
func (p *fakeProvider) editClaims(edit func(map[string]any)) {
	c := p.claims
	p.claims = func(nonce string) map[string]any { m := c(nonce); edit(m); return m }
}

// TestIssOptional: a provider that does not promise iss may leave it out,
// but not send another.
func TestIssOptional(t *testing.T) {
	p := newFakeProvider(t)
	p.set(func() { delete(p.metadata, "authorization_response_iss_parameter_supported") })
	if _, err := p.signIn(t, p.rp(t, "s"), url.Values{"iss": {""}}); err != nil {
		t.Errorf("no iss from a provider that does not promise it: %v", err)
	}
	if _, err := p.signIn(t, p.rp(t, "s"), url.Values{"iss": {"https://evil.example"}}); !errors.Is(err, ErrIssuer) {
		t.Errorf("another iss: %v", err)
	}
}

// TestUnavailable: a provider that cannot be reached is ErrUnavailable,
// promptly; a provider that fails after one discovery keeps serving its
// last metadata.
func TestUnavailable(t *testing.T) {
	pr, err := New(Config{Issuer: "http://127.0.0.1:1", ClientID: "c", RedirectURL: "http://127.0.0.1:1/cb", Timeout: time.Second})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := pr.AuthCodeURL(context.Background(), NewLogin(), nil); !errors.Is(err, ErrUnavailable) {
		t.Errorf("unreachable provider: %v", err)
	}

	p := newFakeProvider(t)
	var now atomic.Int64
	now.Store(time.Now().UnixNano())
	pr, err = New(Config{Issuer: p.srv.URL, ClientID: "client", RedirectURL: "http://127.0.0.1:1/cb", Now: func() time.Time { return time.Unix(0, now.Load()) }})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := pr.AuthCodeURL(context.Background(), NewLogin(), nil); err != nil {
		t.Fatal(err)
	}
	p.set(func() { p.metadata["issuer"] = "https://someone-else.example" }) // the document turns bad
	now.Add(int64(2 * metadataMaxAge))
	if _, err := pr.AuthCodeURL(context.Background(), NewLogin(), nil); err != nil {
		t.Errorf("after a failed discovery the last metadata is not kept: %v", err)
	}
	if n := p.discoveries.Load(); n != 2 {
		t.Errorf("%d discoveries, want 2", n)
	}
	// Not tried again within metadataRetry.
	if _, err := pr.AuthCodeURL(context.Background(), NewLogin(), nil); err != nil || p.discoveries.Load() != 2 {
		t.Errorf("retry within %v: %v, %d discoveries", metadataRetry, err, p.discoveries.Load())
	}
}

// TestAccessTokenHash checks at_hash against published values for RS256
// (SHA-256) and EdDSA with Ed25519 (SHA-512).
func TestAccessTokenHash(t *testing.T) {
	const at = "YmJiZTAwYmYtMzgyOC00NzhkLTkyOTItNjJjNDM3MGYzOWIy9sFhvH8K_x8UIHj1osisS57f5DduL-ar_qw5jl3lthwpMjm283aVMQXDmoqqqydDSqJfbhptzw8rUVwkuQbolw"
	for alg, want := range map[string]string{"RS256": "x7vk7f6BvQj0jQHYFIk4ag", "ES256": "x7vk7f6BvQj0jQHYFIk4ag",
		"EdDSA": "EGEAhGYyfuwDaVTifvrWSoD5MSy_5hZPy6I7Vm-7pTQ", "HS256x": "", "none": ""} {
		if got := AccessTokenHash(alg, at); got != want {
			t.Errorf("%s: %q, want %q", alg, got, want)
		}
	}
	if AccessTokenHash("ES256", "") != "" {
		t.Error("at_hash of no access token")
	}
}

func TestNewConfig(t *testing.T) {
	for _, cfg := range []Config{
		{Issuer: "http://idp.example", ClientID: "c", RedirectURL: "https://rp/cb"},
		{Issuer: "https://idp.example?x=1", ClientID: "c", RedirectURL: "https://rp/cb"},
		{Issuer: "https://user:pw@idp.example", ClientID: "c", RedirectURL: "https://rp/cb"},
		{Issuer: "https://idp.example", RedirectURL: "https://rp/cb"},
		{Issuer: "https://idp.example", ClientID: "c", RedirectURL: "/cb"},
	} {
		if _, err := New(cfg); err == nil {
			t.Errorf("%+v accepted", cfg)
		}
	}
}

// TestEndpointsOnTheWire: a provider on loopback, over plain http for
// development, whose metadata names endpoints off this host in the clear
// is refused before anything is sent there: the client secret, the code
// and the PKCE verifier would cross the network unencrypted. (Discovery
// allowed any endpoint of the issuer's scheme.)
func TestEndpointsOnTheWire(t *testing.T) {
	for _, member := range []string{"token_endpoint", "authorization_endpoint", "jwks_uri"} {
		t.Run(member, func(t *testing.T) {
			p := newFakeProvider(t)
			p.set(func() { p.metadata[member] = "http://idp.example/" + member })
			_, err := p.signIn(t, p.rp(t, "s"), nil)
			if !errors.Is(err, ErrUnavailable) || !strings.Contains(err.Error(), "no usable "+member) {
				t.Fatalf("sign-in with %s in the clear off loopback: %v", member, err)
			}
		})
	}
}
