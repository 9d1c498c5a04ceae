package issuer

import (
	"context"
	"encoding/json"
	"net/http"
	"net/url"
	"strings"
	"testing"
	"time"

	"github.com/meshauth/meshauth/issuer/store"
	"github.com/meshauth/meshauth/token"
)

func TestMetadata(t *testing.T) {
	e := newEnv(t)
	for _, path := range []string{"/.well-known/oauth-authorization-server", "/.well-known/openid-configuration"} {
		status, body := e.do(http.MethodGet, path, "", nil, "")
		if status != http.StatusOK {
			t.Fatalf("%s: %d", path, status)
		}
		var md map[string]any
		if err := json.Unmarshal(body, &md); err != nil {
			t.Fatal(err)
		}
		want := map[string]string{
			"issuer":                e.url,
			"token_endpoint":        e.url + "/token",
			"jwks_uri":              e.url + "/jwks.json",
			"registration_endpoint": e.url + "/register",
		}
		for k, v := range want {
			if md[k] != v {
				t.Errorf("%s: %s = %v, want %s", path, k, md[k], v)
			}
		}
		if !strings.Contains(string(body), "private_key_jwt") || !strings.Contains(string(body), "client_credentials") {
			t.Errorf("%s: metadata lacks grants or auth methods: %s", path, body)
		}
	}
}

func TestJWKSAndHealth(t *testing.T) {
	e := newEnv(t)
	status, h, body := e.doHeader(http.MethodGet, "/jwks.json", "", nil, "")
	if status != http.StatusOK || h.Get("Content-Type") != "application/jwk-set+json" || !strings.HasPrefix(h.Get("Cache-Control"), "public, max-age=") {
		t.Fatalf("jwks: %d %v", status, h)
	}
	keys, err := token.ParseJWKS(body)
	if err != nil || len(keys) != 1 || keys[0].Algorithm != "ES256" {
		t.Fatalf("jwks: %v %v %s", keys, err, body)
	}
	if strings.Contains(string(body), `"d"`) {
		t.Fatal("jwks leaks private key material")
	}
	for _, path := range []string{"/healthz", "/readyz"} {
		if status, body := e.do(http.MethodGet, path, "", nil, ""); status != http.StatusOK {
			t.Errorf("%s: %d %s", path, status, body)
		}
	}
}

func TestRegister(t *testing.T) {
	e := newEnv(t)
	key := newClientKey(t, "k1")
	tests := []struct {
		name    string
		authz   string
		body    string
		status  int
		errCode string
		check   func(t *testing.T, reg *Registration)
	}{
		{name: "no admin token", body: `{}`, status: 401, errCode: "invalid_token"},
		{name: "wrong admin token", authz: "Bearer nope", body: `{}`, status: 401, errCode: "invalid_token"},
		{name: "basic scheme", authz: basic("a", "b"), body: `{}`, status: 401, errCode: "invalid_token"},
		{name: "defaults", authz: "Bearer " + testAdminToken, body: `{"scope":"a b a"}`, status: 201, check: func(t *testing.T, r *Registration) {
			if r.ClientID == "" || len(r.ClientSecret) < 43 || r.TokenEndpointAuthMethod != "client_secret_basic" ||
				r.AccessTokenFormat != "jwt" || r.Scope != "a b" || len(r.GrantTypes) != 1 || r.GrantTypes[0] != "client_credentials" {
				t.Errorf("registration = %+v", r)
			}
		}},
		{name: "chosen id", authz: "Bearer " + testAdminToken, body: `{"client_id":"orders","allowed_audiences":["payments"]}`, status: 201, check: func(t *testing.T, r *Registration) {
			if r.ClientID != "orders" || r.AllowedAudiences[0] != "payments" {
				t.Errorf("registration = %+v", r)
			}
		}},
		{name: "duplicate id", authz: "Bearer " + testAdminToken, body: `{"client_id":"orders"}`, status: 400, errCode: "invalid_client_metadata"},
		{name: "bad id", authz: "Bearer " + testAdminToken, body: `{"client_id":"a b"}`, status: 400, errCode: "invalid_client_metadata"},
		{name: "unsupported grant", authz: "Bearer " + testAdminToken, body: `{"grant_types":["password"]}`, status: 400, errCode: "invalid_client_metadata"},
		{name: "unsupported auth method", authz: "Bearer " + testAdminToken, body: `{"token_endpoint_auth_method":"none"}`, status: 400, errCode: "invalid_client_metadata"},
		{name: "private_key_jwt without jwks", authz: "Bearer " + testAdminToken, body: `{"token_endpoint_auth_method":"private_key_jwt"}`, status: 400, errCode: "invalid_client_metadata"},
		{name: "jwks_uri", authz: "Bearer " + testAdminToken, body: `{"token_endpoint_auth_method":"private_key_jwt","jwks_uri":"https://x/jwks"}`, status: 400, errCode: "invalid_client_metadata"},
		{name: "symmetric jwks", authz: "Bearer " + testAdminToken, body: `{"token_endpoint_auth_method":"private_key_jwt","jwks":{"keys":[{"kty":"oct","k":"c2VjcmV0"}]}}`, status: 400, errCode: "invalid_client_metadata"},
		{name: "jwks with secret method", authz: "Bearer " + testAdminToken, body: `{"jwks":` + string(key.jwks()) + `}`, status: 400, errCode: "invalid_client_metadata"},
		{name: "private_key_jwt", authz: "Bearer " + testAdminToken, body: `{"token_endpoint_auth_method":"private_key_jwt","jwks":` + string(key.jwks()) + `}`, status: 201, check: func(t *testing.T, r *Registration) {
			if r.ClientSecret != "" {
				t.Error("private_key_jwt client got a secret")
			}
		}},
		{name: "bad scope char", authz: "Bearer " + testAdminToken, body: `{"scope":"a\"b"}`, status: 400, errCode: "invalid_client_metadata"},
		{name: "bad format", authz: "Bearer " + testAdminToken, body: `{"access_token_format":"paseto"}`, status: 400, errCode: "invalid_client_metadata"},
		{name: "bad redirect", authz: "Bearer " + testAdminToken, body: `{"redirect_uris":["/relative"]}`, status: 400, errCode: "invalid_redirect_uri"},
		{name: "exchange policy", authz: "Bearer " + testAdminToken, body: `{"client_id":"gw","allowed_audiences":["payments"],"exchange_scopes":{"payments":"charge read"},"max_delegation_depth":2}`, status: 201, check: func(t *testing.T, r *Registration) {
			if r.ExchangeScopes["payments"] != "charge read" || r.MaxDelegationDepth != 2 {
				t.Errorf("registration = %+v", r)
			}
			c, err := e.store.GetClient(context.Background(), "gw")
			if err != nil || strings.Join(c.ExchangeScopes["payments"], " ") != "charge read" || c.MaxDelegationDepth != 2 {
				t.Errorf("stored = %+v, %v", c, err)
			}
		}},
		{name: "exchange scopes for unknown audience", authz: "Bearer " + testAdminToken, body: `{"allowed_audiences":["a"],"exchange_scopes":{"b":"x"}}`, status: 400, errCode: "invalid_client_metadata"},
		{name: "negative depth", authz: "Bearer " + testAdminToken, body: `{"max_delegation_depth":-1}`, status: 400, errCode: "invalid_client_metadata"},
		{name: "not json", authz: "Bearer " + testAdminToken, body: `client_id=x`, status: 400, errCode: "invalid_client_metadata"},
		{name: "oversized", authz: "Bearer " + testAdminToken, body: `{"client_name":"` + strings.Repeat("x", 70<<10) + `"}`, status: 413, errCode: "invalid_request"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			status, h, body := e.doHeader(http.MethodPost, "/register", "application/json", []byte(tc.body), tc.authz)
			if status != tc.status {
				t.Fatalf("status %d, want %d: %s", status, tc.status, body)
			}
			if status == 401 && !strings.HasPrefix(h.Get("WWW-Authenticate"), "Bearer") {
				t.Errorf("401 without a Bearer challenge: %v", h)
			}
			if tc.errCode != "" {
				var oe struct{ Error string }
				_ = json.Unmarshal(body, &oe)
				if oe.Error != tc.errCode {
					t.Errorf("error %q, want %q: %s", oe.Error, tc.errCode, body)
				}
				return
			}
			var reg Registration
			if err := json.Unmarshal(body, &reg); err != nil {
				t.Fatal(err)
			}
			tc.check(t, &reg)
		})
	}
}

// verifyAccessToken checks tok against the issuer's published JWKS with the
// verification core, as a sidecar for audience aud would.
func (e *env) verifyAccessToken(tok, aud string) *token.Claims {
	e.t.Helper()
	_, body := e.do(http.MethodGet, "/jwks.json", "", nil, "")
	keys, err := token.ParseJWKS(body)
	if err != nil {
		e.t.Fatal(err)
	}
	v, err := token.NewVerifier(token.Policy{Issuer: e.url, Audiences: []string{aud}}, token.NewKeySet(keys))
	if err != nil {
		e.t.Fatal(err)
	}
	c, err := v.Verify([]byte(tok))
	if err != nil {
		e.t.Fatalf("access token does not verify: %v", err)
	}
	return c
}

func TestClientCredentials(t *testing.T) {
	e := newEnv(t)
	orders := e.register(ClientMetadata{ClientID: "orders", Scope: "payments.charge payments.read", AllowedAudiences: []string{"payments", "ledger", "https://api.example.com/"}})
	post := e.register(ClientMetadata{ClientID: "poster", TokenEndpointAuthMethod: "client_secret_post", Scope: "x", AllowedAudiences: []string{"payments"}})

	form := func(kv ...string) url.Values {
		v := url.Values{}
		for i := 0; i < len(kv); i += 2 {
			v.Add(kv[i], kv[i+1])
		}
		return v
	}
	ordersAuth := basic("orders", orders.ClientSecret)
	tests := []struct {
		name    string
		form    url.Values
		authz   string
		status  int
		errCode string
		aud     []string
		scope   string
	}{
		{name: "basic", form: form("grant_type", "client_credentials", "audience", "payments"), authz: ordersAuth, status: 200, aud: []string{"payments"}, scope: "payments.charge payments.read"},
		{name: "narrowed scope", form: form("grant_type", "client_credentials", "audience", "payments", "scope", "payments.read"), authz: ordersAuth, status: 200, aud: []string{"payments"}, scope: "payments.read"},
		{name: "two audiences", form: form("grant_type", "client_credentials", "audience", "payments", "audience", "ledger"), authz: ordersAuth, status: 200, aud: []string{"payments", "ledger"}},
		{name: "resource", form: form("grant_type", "client_credentials", "resource", "https://api.example.com/"), authz: ordersAuth, status: 200, aud: []string{"https://api.example.com/"}},
		{name: "default audience", form: form("grant_type", "client_credentials"), authz: ordersAuth, status: 200, aud: []string{e.url}},
		{name: "post", form: form("grant_type", "client_credentials", "client_id", "poster", "client_secret", post.ClientSecret, "audience", "payments"), status: 200, aud: []string{"payments"}, scope: "x"},
		{name: "wrong secret", form: form("grant_type", "client_credentials"), authz: basic("orders", "wrong"), status: 401, errCode: "invalid_client"},
		{name: "unknown client", form: form("grant_type", "client_credentials"), authz: basic("nobody", "x"), status: 401, errCode: "invalid_client"},
		{name: "malformed basic", form: form("grant_type", "client_credentials"), authz: "Basic !!!", status: 401, errCode: "invalid_client"},
		{name: "no authentication", form: form("grant_type", "client_credentials"), status: 401, errCode: "invalid_client"},
		{name: "post secret for basic client", form: form("grant_type", "client_credentials", "client_id", "orders", "client_secret", orders.ClientSecret), status: 401, errCode: "invalid_client"},
		{name: "two auth methods", form: form("grant_type", "client_credentials", "client_id", "poster", "client_secret", post.ClientSecret), authz: ordersAuth, status: 400, errCode: "invalid_request"},
		{name: "client_id mismatch", form: form("grant_type", "client_credentials", "client_id", "poster"), authz: ordersAuth, status: 400, errCode: "invalid_request"},
		{name: "no grant type", form: form("scope", "x"), authz: ordersAuth, status: 400, errCode: "invalid_request"},
		{name: "unsupported grant", form: form("grant_type", "password"), authz: ordersAuth, status: 400, errCode: "unsupported_grant_type"},
		{name: "repeated parameter", form: form("grant_type", "client_credentials", "scope", "a", "scope", "b"), authz: ordersAuth, status: 400, errCode: "invalid_request"},
		{name: "scope not registered", form: form("grant_type", "client_credentials", "scope", "admin"), authz: ordersAuth, status: 400, errCode: "invalid_scope"},
		{name: "audience not allowed", form: form("grant_type", "client_credentials", "audience", "admin-api"), authz: ordersAuth, status: 400, errCode: "invalid_target"},
		{name: "resource not absolute", form: form("grant_type", "client_credentials", "resource", "payments"), authz: ordersAuth, status: 400, errCode: "invalid_target"},
		{name: "resource with fragment", form: form("grant_type", "client_credentials", "resource", "https://api.example.com/#x"), authz: ordersAuth, status: 400, errCode: "invalid_target"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			status, h, m := e.tokenRequest(tc.form, tc.authz)
			if status != tc.status {
				t.Fatalf("status %d, want %d: %v", status, tc.status, m)
			}
			if h.Get("Cache-Control") != "no-store" {
				t.Errorf("Cache-Control = %q", h.Get("Cache-Control"))
			}
			if tc.errCode != "" {
				if m["error"] != tc.errCode {
					t.Errorf("error %v, want %s (%v)", m["error"], tc.errCode, m["error_description"])
				}
				if status == 401 && tc.authz != "" && h.Get("WWW-Authenticate") != `Basic realm="meshauth"` {
					t.Errorf("401 after Basic without a Basic challenge: %q", h.Get("WWW-Authenticate"))
				}
				return
			}
			if m["token_type"] != "Bearer" || m["expires_in"].(float64) != 300 {
				t.Errorf("answer = %v", m)
			}
			tok := m["access_token"].(string)
			c := e.verifyAccessToken(tok, tc.aud[0])
			if strings.Join(c.Audience, ",") != strings.Join(tc.aud, ",") {
				t.Errorf("aud = %v, want %v", c.Audience, tc.aud)
			}
			if tc.scope != "" && (c.Scope != tc.scope || m["scope"] != tc.scope) {
				t.Errorf("scope = %q / %v, want %q", c.Scope, m["scope"], tc.scope)
			}
			if c.Subject == "" || c.Subject != c.ClientID || c.ID == "" || c.IssuedAt.IsZero() {
				t.Errorf("claims = %+v", c)
			}
			if got := c.ExpiresAt.Sub(c.IssuedAt); got != 5*time.Minute {
				t.Errorf("lifetime = %v", got)
			}
		})
	}
}

func TestTokenRequestShape(t *testing.T) {
	e := newEnv(t)
	c := e.register(ClientMetadata{ClientID: "a"})
	auth := basic("a", c.ClientSecret)
	tests := []struct {
		name        string
		method      string
		contentType string
		body        string
		status      int
	}{
		{"get", http.MethodGet, "", "", http.StatusMethodNotAllowed},
		{"json body", http.MethodPost, "application/json", `{"grant_type":"client_credentials"}`, 400},
		{"no content type", http.MethodPost, "", "grant_type=client_credentials", 400},
		{"bad encoding", http.MethodPost, "application/x-www-form-urlencoded", "grant_type=%zz", 400},
		{"oversized", http.MethodPost, "application/x-www-form-urlencoded", "grant_type=client_credentials&x=" + strings.Repeat("a", 70<<10), 413},
		{"charset param ok", http.MethodPost, "application/x-www-form-urlencoded; charset=UTF-8", "grant_type=client_credentials", 200},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			status, body := e.do(tc.method, "/token", tc.contentType, []byte(tc.body), auth)
			if status != tc.status {
				t.Fatalf("status %d, want %d: %s", status, tc.status, body)
			}
		})
	}
	status, h, _ := e.doHeader(http.MethodPost, "/token", "application/x-www-form-urlencoded", []byte("grant_type=client_credentials"), "")
	if status != 401 || h.Get("WWW-Authenticate") == "" {
		t.Errorf("unauthenticated: %d %v", status, h)
	}
}

func TestPrivateKeyJWT(t *testing.T) {
	e := newEnv(t)
	key := newClientKey(t, "k1")
	e.register(ClientMetadata{ClientID: "svc", TokenEndpointAuthMethod: "private_key_jwt", JWKS: key.jwks(), Scope: "read", AllowedAudiences: []string{"api"}})
	other := newClientKey(t, "k1")
	now := time.Now()
	claims := func(mod map[string]any) map[string]any {
		c := map[string]any{"iss": "svc", "sub": "svc", "aud": e.url + "/token", "exp": now.Add(time.Minute).Unix(), "iat": now.Unix(), "jti": randomID()}
		for k, v := range mod {
			if v == nil {
				delete(c, k)
			} else {
				c[k] = v
			}
		}
		return c
	}
	assertionForm := func(assertion string) url.Values {
		return url.Values{"grant_type": {"client_credentials"}, "audience": {"api"},
			"client_assertion_type": {jwtBearerAssertionType}, "client_assertion": {assertion}}
	}
	replayed := key.sign(t, nil, claims(nil))
	tests := []struct {
		name      string
		assertion string
		form      url.Values
		status    int
	}{
		{name: "valid, aud token endpoint", assertion: replayed, status: 200},
		{name: "replayed jti", assertion: replayed, status: 401},
		{name: "valid, aud issuer, typ JWT", assertion: key.sign(t, map[string]any{"typ": "JWT"}, claims(map[string]any{"aud": e.url})), status: 200},
		{name: "wrong aud", assertion: key.sign(t, nil, claims(map[string]any{"aud": "https://elsewhere"})), status: 401},
		{name: "expired", assertion: key.sign(t, nil, claims(map[string]any{"exp": now.Add(-time.Hour).Unix()})), status: 401},
		{name: "no exp", assertion: key.sign(t, nil, claims(map[string]any{"exp": nil})), status: 401},
		{name: "exp too far", assertion: key.sign(t, nil, claims(map[string]any{"exp": now.Add(time.Hour).Unix()})), status: 401},
		{name: "no jti", assertion: key.sign(t, nil, claims(map[string]any{"jti": nil})), status: 401},
		{name: "sub differs from iss", assertion: key.sign(t, nil, claims(map[string]any{"iss": "other"})), status: 401},
		{name: "access token type", assertion: key.sign(t, map[string]any{"typ": "at+jwt"}, claims(nil)), status: 401},
		{name: "foreign key", assertion: other.sign(t, nil, claims(nil)), status: 401},
		{name: "alg none", assertion: strings.Join(strings.Split(key.sign(t, map[string]any{"alg": "none"}, claims(nil)), ".")[:2], ".") + ".", status: 401},
		{name: "unknown client", assertion: key.sign(t, nil, claims(map[string]any{"iss": "ghost", "sub": "ghost"})), status: 401},
		{name: "garbage", assertion: "not-a-jwt", status: 401},
		{name: "wrong assertion type", form: url.Values{"grant_type": {"client_credentials"}, "client_assertion_type": {"urn:x"}, "client_assertion": {key.sign(t, nil, claims(nil))}}, status: 401},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			f := tc.form
			if f == nil {
				f = assertionForm(tc.assertion)
			}
			status, _, m := e.tokenRequest(f, "")
			if status != tc.status {
				t.Fatalf("status %d, want %d: %v", status, tc.status, m)
			}
			if status == 200 {
				if c := e.verifyAccessToken(m["access_token"].(string), "api"); c.ClientID != "svc" {
					t.Errorf("client_id = %q", c.ClientID)
				}
			} else if m["error"] != "invalid_client" {
				t.Errorf("error = %v", m["error"])
			}
		})
	}
}

func TestReferenceTokens(t *testing.T) {
	e := newEnv(t)
	c := e.register(ClientMetadata{ClientID: "web", AccessTokenFormat: "reference", Scope: "profile", AllowedAudiences: []string{"api"}})
	status, _, m := e.tokenRequest(url.Values{"grant_type": {"client_credentials"}, "audience": {"api"}}, basic("web", c.ClientSecret))
	if status != 200 {
		t.Fatalf("%d %v", status, m)
	}
	tok := m["access_token"].(string)
	if strings.Count(tok, ".") != 0 || len(tok) < 43 {
		t.Fatalf("reference token %q is not opaque", tok)
	}
	rec, err := e.store.GetAccessToken(context.Background(), ReferenceTokenHash(tok))
	if err != nil {
		t.Fatal(err)
	}
	if rec.ClientID != "web" || rec.Subject != "web" || rec.Audience[0] != "api" || rec.Scope[0] != "profile" {
		t.Errorf("stored record = %+v", rec)
	}
	if rec.Hash == tok {
		t.Error("the token itself was stored")
	}
}

func TestStoreUnavailable(t *testing.T) {
	var fs *failingStore
	e := newEnvOn(t, t.TempDir(), func(s store.Store) store.Store { fs = &failingStore{Store: s}; return fs })
	c := e.register(ClientMetadata{ClientID: "a"})
	fs.set(true)

	status, h, m := e.tokenRequest(url.Values{"grant_type": {"client_credentials"}}, basic("a", c.ClientSecret))
	if status != 503 || m["error"] != "temporarily_unavailable" || h.Get("Retry-After") == "" {
		t.Errorf("token with store down: %d %v %v", status, m, h)
	}
	status, body := e.do(http.MethodPost, "/register", "application/json", []byte(`{"client_id":"b"}`), "Bearer "+testAdminToken)
	if status != 503 {
		t.Errorf("register with store down: %d %s", status, body)
	}
	if status, _ := e.do(http.MethodGet, "/readyz", "", nil, ""); status != 503 {
		t.Errorf("readyz with store down: %d", status)
	}
	if strings.Contains(string(body), errDown.Error()) {
		t.Error("the store's error leaked into the answer")
	}

	fs.set(false)
	if _, err := e.store.GetClient(context.Background(), "b"); err == nil {
		t.Error("a failed registration left a client behind")
	}
	if status, _, m := e.tokenRequest(url.Values{"grant_type": {"client_credentials"}}, basic("a", c.ClientSecret)); status != 200 {
		t.Errorf("after recovery: %d %v", status, m)
	}
}

func TestRestartKeepsClientsAndKeys(t *testing.T) {
	dir := t.TempDir()
	e1 := newEnvOn(t, dir, nil)
	c := e1.register(ClientMetadata{ClientID: "a", AllowedAudiences: []string{"api"}})
	_, jwks1 := e1.do(http.MethodGet, "/jwks.json", "", nil, "")
	e1.store.Close()

	e2 := newEnvOn(t, dir, nil)
	_, jwks2 := e2.do(http.MethodGet, "/jwks.json", "", nil, "")
	if string(jwks1) != string(jwks2) {
		t.Errorf("keys changed across restart:\n%s\n%s", jwks1, jwks2)
	}
	status, _, m := e2.tokenRequest(url.Values{"grant_type": {"client_credentials"}, "audience": {"api"}}, basic("a", c.ClientSecret))
	if status != 200 {
		t.Fatalf("after restart: %d %v", status, m)
	}
	e2.verifyAccessToken(m["access_token"].(string), "api")
}

func TestRotateEndpoint(t *testing.T) {
	e := newEnv(t)
	if status, _ := e.do(http.MethodPost, "/admin/keys/rotate", "", nil, ""); status != 401 {
		t.Fatalf("rotate without admin token: %d", status)
	}
	status, body := e.do(http.MethodPost, "/admin/keys/rotate?immediate=true", "", nil, "Bearer "+testAdminToken)
	if status != 200 {
		t.Fatalf("rotate: %d %s", status, body)
	}
	var out struct{ KID string }
	_ = json.Unmarshal(body, &out)
	_, jwksDoc := e.do(http.MethodGet, "/jwks.json", "", nil, "")
	keys, _ := token.ParseJWKS(jwksDoc)
	if len(keys) != 2 {
		t.Fatalf("after rotation the JWKS has %d keys, want the old and the new", len(keys))
	}
	c := e.register(ClientMetadata{ClientID: "a", AllowedAudiences: []string{"api"}})
	_, _, m := e.tokenRequest(url.Values{"grant_type": {"client_credentials"}, "audience": {"api"}}, basic("a", c.ClientSecret))
	header := strings.Split(m["access_token"].(string), ".")[0]
	if !strings.Contains(string(mustDecode(t, header)), out.KID) {
		t.Errorf("token not signed by the new key %s", out.KID)
	}
}
