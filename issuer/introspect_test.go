package issuer

import (
	"bytes"
	"context"
	"encoding/json"
	"net/http"
	"net/url"
	"os"
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/meshauth/meshauth/issuer/store"
	"github.com/meshauth/meshauth/token"
)

// postForm posts form to path as authz (an Authorization header value, or
// none), with an Accept header if accept is not empty.
func (e *env) postForm(path string, form url.Values, authz, accept string) (int, http.Header, []byte) {
	e.t.Helper()
	h := http.Header{"Content-Type": {"application/x-www-form-urlencoded"}}
	if authz != "" {
		h.Set("Authorization", authz)
	}
	if accept != "" {
		h.Set("Accept", accept)
	}
	return e.send(http.MethodPost, path, []byte(form.Encode()), h)
}

// introspect asks the introspection endpoint about tok as authz and
// returns the JSON answer, failing unless it is 200.
func (e *env) introspect(tok, authz string) map[string]any {
	e.t.Helper()
	status, h, body := e.postForm(pathIntrospect, url.Values{"token": {tok}}, authz, "")
	if status != http.StatusOK || h.Get("Content-Type") != "application/json" || h.Get("Cache-Control") != "no-store" {
		e.t.Fatalf("introspect: %d %v %s", status, h, body)
	}
	var m map[string]any
	if err := json.Unmarshal(body, &m); err != nil {
		e.t.Fatal(err)
	}
	return m
}

// active reports whether introspection as authz says tok is active; an
// inactive answer must carry nothing but "active".
func (e *env) active(tok, authz string) bool {
	e.t.Helper()
	m := e.introspect(tok, authz)
	if m["active"] != true && len(m) != 1 {
		e.t.Errorf("an inactive answer says more than active: %v", m)
	}
	return m["active"] == true
}

// introspectionSetup registers the clients of the introspection tests:
// web (JWT tokens for orders), app (reference tokens for orders), orders
// (the resource server), edge (registered with the introspect scope),
// other (unrelated), and pub, a public client. It returns their
// Authorization headers (pub's is empty: it has no credentials).
func introspectionSetup(e *env) map[string]string {
	e.t.Helper()
	auth := map[string]string{}
	for _, md := range []ClientMetadata{
		{ClientID: "web", Scope: "read write", AllowedAudiences: []string{"orders", "payments"}},
		{ClientID: "app", Scope: "read", AllowedAudiences: []string{"orders"}, AccessTokenFormat: "reference"},
		{ClientID: "orders"},
		{ClientID: "edge", Scope: introspectScope},
		{ClientID: "other"},
	} {
		auth[md.ClientID] = basic(md.ClientID, e.register(md).ClientSecret)
	}
	err := e.store.CreateClient(context.Background(), &store.Client{ID: "pub", TokenEndpointAuthMethod: authNone,
		GrantTypes: []string{}, Scope: []string{"read"}, AllowedAudiences: []string{"orders"}, AccessTokenFormat: formatReference,
		RedirectURIs: []string{"http://127.0.0.1/cb"}, CreatedAt: time.Now()})
	if err != nil {
		e.t.Fatal(err)
	}
	return auth
}

// referenceToken stores a reference token with the given record fields
// and returns its value.
func (e *env) putReference(rec store.AccessToken) string {
	e.t.Helper()
	value := referenceToken()
	rec.Hash = ReferenceTokenHash(value)
	if rec.ID == "" {
		rec.ID = randomID()
	}
	if rec.IssuedAt.IsZero() {
		rec.IssuedAt = time.Now()
	}
	if rec.ExpiresAt.IsZero() {
		rec.ExpiresAt = time.Now().Add(5 * time.Minute)
	}
	if err := e.store.PutAccessToken(context.Background(), &rec); err != nil {
		e.t.Fatal(err)
	}
	return value
}

func TestIntrospection(t *testing.T) {
	e := newEnv(t)
	auth := introspectionSetup(e)
	jwt := e.clientToken("web", secretOf(t, auth["web"]), "orders")
	ref := e.clientToken("app", secretOf(t, auth["app"]), "orders")
	now := time.Now()

	tests := []struct {
		name   string
		token  string
		caller string
		active bool
	}{
		{"JWT, audience asks", jwt, "orders", true},
		{"JWT, its client asks", jwt, "web", true},
		{"JWT, introspect scope", jwt, "edge", true},
		{"JWT, unrelated client", jwt, "other", false},
		{"reference, audience asks", ref, "orders", true},
		{"reference, its client asks", ref, "app", true},
		{"reference, introspect scope", ref, "edge", true},
		{"reference, unrelated client", ref, "other", false},
		{"unknown reference", referenceToken(), "edge", false},
		{"garbage", "not a token at all", "edge", false},
		{"three garbage segments", "a.b.c", "edge", false},
		{"JWT expired", e.mint(map[string]any{"aud": "orders", "exp": now.Add(-time.Hour).Unix(), "iat": now.Add(-2 * time.Hour).Unix()}), "edge", false},
		{"JWT expired within the verifier's leeway", e.mint(map[string]any{"aud": "orders", "exp": now.Add(-5 * time.Second).Unix()}), "edge", false},
		{"JWT not yet valid", e.mint(map[string]any{"aud": "orders", "nbf": now.Add(time.Hour).Unix()}), "edge", false},
		{"JWT of another issuer", e.mint(map[string]any{"iss": "https://elsewhere.example"}), "edge", false},
		{"JWT with another typ", e.mintTyped("JWT", map[string]any{"aud": "orders"}), "edge", false},
		{"JWT signed by another key", jwtWithForeignKey(t), "edge", false},
		{"reference expired", e.putReference(store.AccessToken{ClientID: "app", Subject: "app", Audience: []string{"orders"}, IssuedAt: now.Add(-time.Hour), ExpiresAt: now.Add(-time.Minute)}), "edge", false},
		{"refresh-looking token", referenceToken(), "web", false},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			if got := e.active(tc.token, auth[tc.caller]); got != tc.active {
				t.Errorf("active = %v, want %v", got, tc.active)
			}
		})
	}
}

// secretOf recovers the secret from a Basic Authorization header built by
// basic.
func secretOf(t *testing.T, authz string) string {
	t.Helper()
	_, secret, err := parseBasic(authz)
	if err != nil {
		t.Fatal(err)
	}
	return secret
}

// jwtWithForeignKey is an access token signed by a key the issuer never
// published, with a kid it does not know.
func jwtWithForeignKey(t *testing.T) string {
	k := newClientKey(t, "foreign")
	return k.sign(t, map[string]any{"typ": "at+jwt"}, map[string]any{"iss": "x", "aud": "orders", "exp": time.Now().Add(time.Minute).Unix()})
}

func TestIntrospectionAnswer(t *testing.T) {
	e := newEnv(t)
	auth := introspectionSetup(e)
	now := time.Now().Truncate(time.Second)
	act := map[string]any{"sub": "orders", "act": map[string]any{"sub": "gateway"}}
	jwt := e.mint(map[string]any{"sub": "alice", "aud": []string{"orders", "payments"}, "client_id": "web", "scope": "read write",
		"iat": now.Unix(), "nbf": now.Unix(), "exp": now.Add(time.Minute).Unix(), "jti": "jti-1", "act": act})
	ref := e.putReference(store.AccessToken{ID: "jti-2", ClientID: "app", Subject: "bob", Audience: []string{"orders"},
		Scope: []string{"read"}, IssuedAt: now, ExpiresAt: now.Add(time.Minute)})

	tests := []struct {
		name  string
		token string
		want  map[string]any
	}{
		{"JWT", jwt, map[string]any{"active": true, "scope": "read write", "client_id": "web", "token_type": "Bearer",
			"exp": float64(now.Add(time.Minute).Unix()), "iat": float64(now.Unix()), "nbf": float64(now.Unix()),
			"sub": "alice", "aud": []any{"orders", "payments"}, "iss": e.url, "jti": "jti-1",
			"act": map[string]any{"sub": "orders", "act": map[string]any{"sub": "gateway"}}}},
		{"reference", ref, map[string]any{"active": true, "scope": "read", "client_id": "app", "token_type": "Bearer",
			"exp": float64(now.Add(time.Minute).Unix()), "iat": float64(now.Unix()),
			"sub": "bob", "aud": "orders", "iss": e.url, "jti": "jti-2"}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			if got := e.introspect(tc.token, auth["orders"]); !reflect.DeepEqual(got, tc.want) {
				t.Errorf("answer\n got %v\nwant %v", got, tc.want)
			}
		})
	}
}

// TestIntrospectionRevoked checks that every kind of stored revocation
// turns a token inactive at once, JWT and reference alike.
func TestIntrospectionRevoked(t *testing.T) {
	e := newEnv(t)
	auth := introspectionSetup(e)
	ctx := context.Background()
	tests := []struct {
		name   string
		revoke func(c *token.Claims) (kind, value string)
	}{
		{"by jti", func(c *token.Claims) (string, string) { return store.RevokeToken, c.ID }},
		{"by client", func(c *token.Claims) (string, string) { return store.RevokeClient, c.ClientID }},
		{"by subject", func(c *token.Claims) (string, string) { return store.RevokeSubject, c.Subject }},
	}
	for _, tc := range tests {
		for _, format := range []string{formatJWT, formatReference} {
			t.Run(tc.name+"/"+format, func(t *testing.T) {
				id := randomID()
				reg := e.register(ClientMetadata{ClientID: id, AllowedAudiences: []string{"orders"}, AccessTokenFormat: format})
				tok := e.clientToken(id, reg.ClientSecret, "orders")
				claims, err := e.srv.ownToken(ctx, tok, false)
				if err != nil {
					t.Fatal(err)
				}
				if !e.active(tok, auth["orders"]) {
					t.Fatal("inactive before revocation")
				}
				kind, value := tc.revoke(claims)
				if _, err := e.srv.recordRevocation(ctx, kind, value); err != nil {
					t.Fatal(err)
				}
				if e.active(tok, auth["orders"]) {
					t.Error("active after revocation")
				}
			})
		}
	}
}

// TestIntrospectionGrant checks tokens of a user grant: active while the
// grant lives, inactive once it is revoked, even when only the grant's
// RevokedAt was stored and the revocation by sid was not.
func TestIntrospectionGrant(t *testing.T) {
	e := newEnv(t)
	auth := introspectionSetup(e)
	ctx := context.Background()
	newGrant := func() string {
		g := &store.Grant{ID: randomID(), ClientID: "web", Subject: "alice", Scope: []string{"read"}, Audience: []string{"orders"},
			CreatedAt: time.Now(), ExpiresAt: time.Now().Add(time.Hour)}
		if err := e.store.CreateGrant(ctx, g); err != nil {
			t.Fatal(err)
		}
		return g.ID
	}
	tokensOf := func(grant string) map[string]string {
		return map[string]string{
			"JWT":       e.mint(map[string]any{"sub": "alice", "sid": grant}),
			"reference": e.putReference(store.AccessToken{GrantID: grant, ClientID: "web", Subject: "alice", Audience: []string{"orders"}}),
		}
	}
	for _, tc := range []struct {
		name   string
		revoke func(id string) error
	}{
		{"revokeGrant", func(id string) error { _, err := e.srv.revokeGrant(ctx, id); return err }},
		{"store only", func(id string) error { return e.store.RevokeGrant(ctx, id, time.Now()) }},
	} {
		t.Run(tc.name, func(t *testing.T) {
			grant := newGrant()
			toks := tokensOf(grant)
			for kind, tok := range toks {
				if m := e.introspect(tok, auth["orders"]); m["active"] != true || m["sid"] != grant {
					t.Fatalf("%s before revocation: %v", kind, m)
				}
			}
			if err := tc.revoke(grant); err != nil {
				t.Fatal(err)
			}
			for kind, tok := range toks {
				if e.active(tok, auth["orders"]) {
					t.Errorf("%s active after its grant was revoked", kind)
				}
			}
		})
	}
	t.Run("unknown grant", func(t *testing.T) {
		if e.active(e.mint(map[string]any{"sid": "no-such-grant"}), auth["orders"]) {
			t.Error("a token of an unknown grant is active")
		}
	})
}

// refusal is a request an endpoint must refuse, and the error it must
// answer.
type refusal struct {
	name    string
	form    url.Values
	authz   string
	status  int
	errCode string
	// challenge: a WWW-Authenticate header is due (RFC 6749 §5.2).
	challenge bool
}

// checkRefusals sends each request to path and checks the error answer,
// which must not quote the token; then that GET and a JSON body are
// refused too.
func (e *env) checkRefusals(t *testing.T, path string, tests []refusal) {
	t.Helper()
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			status, h, body := e.postForm(path, tc.form, tc.authz, "")
			if status != tc.status {
				t.Fatalf("status %d, want %d: %s", status, tc.status, body)
			}
			if tc.challenge != (h.Get("WWW-Authenticate") != "") {
				t.Errorf("WWW-Authenticate = %q", h.Get("WWW-Authenticate"))
			}
			var m map[string]any
			if err := json.Unmarshal(body, &m); err != nil || m["error"] != tc.errCode {
				t.Errorf("answer %s, want error %s", body, tc.errCode)
			}
			if tok := tc.form.Get("token"); tok != "" && bytes.Contains(body, []byte(tok)) {
				t.Error("the answer quotes the token")
			}
		})
	}
	if status, _ := e.do(http.MethodGet, path+"?token=x", "", nil, ""); status != http.StatusMethodNotAllowed {
		t.Errorf("GET: %d", status)
	}
	if status, _ := e.do(http.MethodPost, path, "application/json", []byte(`{"token":"x"}`), ""); status != http.StatusBadRequest {
		t.Errorf("JSON body: %d", status)
	}
}

func TestIntrospectionRequest(t *testing.T) {
	e := newEnv(t)
	auth := introspectionSetup(e)
	jwt := e.clientToken("web", secretOf(t, auth["web"]), "orders")
	e.checkRefusals(t, pathIntrospect, []refusal{
		{name: "no client authentication", form: url.Values{"token": {jwt}}, status: 401, errCode: "invalid_client", challenge: true},
		{name: "wrong secret", form: url.Values{"token": {jwt}}, authz: basic("orders", "wrong"), status: 401, errCode: "invalid_client", challenge: true},
		{name: "unknown client", form: url.Values{"token": {jwt}}, authz: basic("nobody", "x"), status: 401, errCode: "invalid_client", challenge: true},
		{name: "public client", form: url.Values{"token": {jwt}, "client_id": {"pub"}}, status: 401, errCode: "invalid_client", challenge: true},
		{name: "no token", form: url.Values{"token_type_hint": {"access_token"}}, authz: auth["orders"], status: 400, errCode: "invalid_request"},
		{name: "repeated token", form: url.Values{"token": {jwt, jwt}}, authz: auth["orders"], status: 400, errCode: "invalid_request"},
		{name: "secret of a Basic client in the form", form: url.Values{"token": {jwt}, "client_id": {"orders"}, "client_secret": {secretOf(t, auth["orders"])}}, status: 401, errCode: "invalid_client"},
	})
	for _, hint := range []string{"access_token", "refresh_token", "id_token"} {
		status, _, body := e.postForm(pathIntrospect, url.Values{"token": {jwt}, "token_type_hint": {hint}}, auth["orders"], "")
		if status != 200 || !bytes.Contains(body, []byte(`"active":true`)) {
			t.Errorf("hint %s: %d %s", hint, status, body)
		}
	}
}

// TestIntrospectionJWTResponse checks the RFC 9701 answer: a JWS of typ
// token-introspection+jwt, verifiable with the published JWKS, for the
// caller as audience, wrapping exactly the RFC 7662 answer.
func TestIntrospectionJWTResponse(t *testing.T) {
	e := newEnv(t)
	auth := introspectionSetup(e)
	ref := e.clientToken("app", secretOf(t, auth["app"]), "orders")
	_, jwksDoc := e.do(http.MethodGet, "/jwks.json", "", nil, "")
	keys, err := token.ParseJWKS(jwksDoc)
	if err != nil {
		t.Fatal(err)
	}
	verifier := func(aud string, types ...string) *token.Verifier {
		v, err := token.NewVerifier(token.Policy{Issuer: e.url, Audiences: []string{aud}, Types: types}, token.NewKeySet(keys))
		if err != nil {
			t.Fatal(err)
		}
		return v
	}

	for _, tc := range []struct {
		name, token, caller string
	}{
		{"active", ref, "edge"},
		{"inactive for an unrelated client", ref, "other"},
		{"unknown", referenceToken(), "edge"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			form := url.Values{"token": {tc.token}}
			before := time.Now().Truncate(time.Second)
			status, h, body := e.postForm(pathIntrospect, form, auth[tc.caller], introspectionJWTMediaType)
			if status != 200 || h.Get("Content-Type") != introspectionJWTMediaType || h.Get("Cache-Control") != "no-store" {
				t.Fatalf("%d %v %s", status, h, body)
			}
			claims, err := verifier(tc.caller, introspectionJWTType).Verify(body)
			if err != nil {
				t.Fatalf("the response does not verify: %v", err)
			}
			if _, err := verifier(tc.caller).Verify(body); err == nil {
				t.Error("the response passes as an access token (typ at+jwt)")
			}
			if _, err := verifier("someone-else", introspectionJWTType).Verify(body); err == nil {
				t.Error("the response is accepted by another audience")
			}
			var payload struct {
				Iss                string         `json:"iss"`
				Aud                string         `json:"aud"`
				Iat                int64          `json:"iat"`
				Exp                int64          `json:"exp"`
				TokenIntrospection map[string]any `json:"token_introspection"`
				Sub                *string        `json:"sub"`
			}
			if err := json.Unmarshal(claims.Raw, &payload); err != nil {
				t.Fatal(err)
			}
			if payload.Iss != e.url || payload.Aud != tc.caller || payload.Iat < before.Unix() || payload.Exp-payload.Iat != int64(introspectionJWTLifetime/time.Second) {
				t.Errorf("top-level claims %+v", payload)
			}
			if payload.Sub != nil {
				t.Error("the token's claims leak to the top level (RFC 9701 §5 nests them)")
			}
			if plain := e.introspect(tc.token, auth[tc.caller]); !reflect.DeepEqual(payload.TokenIntrospection, plain) {
				t.Errorf("token_introspection %v, plain answer %v", payload.TokenIntrospection, plain)
			}
		})
	}
	t.Run("errors stay JSON", func(t *testing.T) {
		status, h, _ := e.postForm(pathIntrospect, url.Values{"token": {ref}}, basic("edge", "wrong"), introspectionJWTMediaType)
		if status != 401 || h.Get("Content-Type") != "application/json" {
			t.Errorf("%d %v", status, h)
		}
	})
}

func TestPrefersIntrospectionJWT(t *testing.T) {
	tests := []struct {
		accept []string
		want   bool
	}{
		{nil, false},
		{[]string{"application/json"}, false},
		{[]string{"*/*"}, false},
		{[]string{"application/token-introspection+jwt"}, true},
		{[]string{"Application/Token-Introspection+JWT"}, true},
		{[]string{"application/json", "application/token-introspection+jwt"}, true},
		{[]string{"application/token-introspection+jwt, application/json"}, true},
		{[]string{"application/token-introspection+jwt;q=0.5, application/json"}, false},
		{[]string{"application/token-introspection+jwt, application/json;q=0.9"}, true},
		{[]string{"application/token-introspection+jwt;q=0"}, false},
		{[]string{"application/token-introspection+jwt;q=2"}, false},
		{[]string{"application/token-introspection+jwt;q=x"}, false},
		{[]string{"application/token-introspection+jwt;q=0.8, */*;q=0.1"}, true},
		{[]string{"application/token-introspection+jwtx"}, false},
		{[]string{",,;;, application/token-introspection+jwt"}, true},
	}
	for _, tc := range tests {
		if got := prefersIntrospectionJWT(tc.accept); got != tc.want {
			t.Errorf("%q: %v, want %v", tc.accept, got, tc.want)
		}
	}
}

func FuzzPrefersIntrospectionJWT(f *testing.F) {
	for _, s := range []string{"application/json", "application/token-introspection+jwt;q=0.5, */*", ";q=1", "a/b;q=NaN", "application/token-introspection+jwt;q=1e-3"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, accept string) {
		got := prefersIntrospectionJWT([]string{accept})
		// Only a header naming the media type can ask for it.
		if got && !strings.Contains(strings.ToLower(accept), introspectionJWTMediaType) {
			t.Fatalf("%q chose the JWT response", accept)
		}
	})
}

func TestMetadataIntrospection(t *testing.T) {
	e := newEnv(t)
	_, body := e.do(http.MethodGet, "/.well-known/oauth-authorization-server", "", nil, "")
	var md map[string]any
	if err := json.Unmarshal(body, &md); err != nil {
		t.Fatal(err)
	}
	for name, want := range map[string]string{"introspection_endpoint": e.url + pathIntrospect, "revocation_endpoint": e.url + pathRevoke} {
		if md[name] != want {
			t.Errorf("%s = %v, want %s", name, md[name], want)
		}
	}
	has := func(name, value string) bool {
		list, _ := md[name].([]any)
		for _, v := range list {
			if v == value {
				return true
			}
		}
		return false
	}
	for _, check := range []struct {
		name, value string
		want        bool
	}{
		{"introspection_endpoint_auth_methods_supported", authSecretBasic, true},
		{"introspection_endpoint_auth_methods_supported", authPrivateKeyJWT, true},
		{"introspection_endpoint_auth_methods_supported", authNone, false},
		{"revocation_endpoint_auth_methods_supported", authNone, true},
		{"revocation_endpoint_auth_methods_supported", authSecretPost, true},
		{"introspection_signing_alg_values_supported", "ES256", true},
		{"introspection_endpoint_auth_signing_alg_values_supported", "ES256", true},
	} {
		if has(check.name, check.value) != check.want {
			t.Errorf("%s has %s: %v, want %v", check.name, check.value, !check.want, check.want)
		}
	}
	if _, ok := md["introspection_encryption_alg_values_supported"]; ok {
		t.Error("introspection_encryption_alg_values_supported advertised, but responses are never encrypted")
	}
}

// TestRevocationAcrossReplicas revokes at one issuer replica and
// introspects at another over the same store: the answer is inactive at
// once, because the state is in the store.
func TestRevocationAcrossReplicas(t *testing.T) {
	t.Run("store=file", func(t *testing.T) {
		a := newEnv(t)
		replicas(t, a, serveEnv(t, a.store, a.store, a.url))
	})
	t.Run("store=postgres", func(t *testing.T) {
		pgURL := pgSchema(t)
		stA := openPG(t, pgURL)
		a := serveEnv(t, stA, stA, "")
		stB := openPG(t, pgURL)
		replicas(t, a, serveEnv(t, stB, stB, a.url))
	})
}

// replicas issues tokens at a, checks b sees them active, revokes each at
// one replica and checks the other sees it inactive.
func replicas(t *testing.T, a, b *env) {
	t.Helper()
	suffix := randomID()
	rs := a.register(ClientMetadata{ClientID: "rs-" + suffix})
	rsAuth := basic("rs-"+suffix, rs.ClientSecret)
	for _, format := range []string{formatJWT, formatReference} {
		id := format + "-" + suffix
		c := a.register(ClientMetadata{ClientID: id, AllowedAudiences: []string{"rs-" + suffix}, AccessTokenFormat: format})
		for _, order := range [][2]*env{{a, b}, {b, a}} {
			revoker, asker := order[0], order[1]
			tok := a.clientToken(id, c.ClientSecret, "rs-"+suffix)
			if !asker.active(tok, rsAuth) {
				t.Fatalf("%s token inactive at the other replica", format)
			}
			if status, _, body := revoker.postForm(pathRevoke, url.Values{"token": {tok}}, basic(id, c.ClientSecret), ""); status != 200 {
				t.Fatalf("revoke: %d %s", status, body)
			}
			if asker.active(tok, rsAuth) {
				t.Errorf("%s token still active at the other replica after revocation", format)
			}
		}
	}
}

// pgSchema creates an empty PostgreSQL schema in the test database,
// dropped when the test ends, and returns a URL whose connections use it:
// the issuer's keys there are sealed with this package's test key alone.
func pgSchema(t *testing.T) string {
	t.Helper()
	base := os.Getenv("MESHAUTH_TEST_POSTGRES_URL")
	if base == "" {
		t.Skip("MESHAUTH_TEST_POSTGRES_URL not set; skipping the PostgreSQL replicas")
	}
	u, err := url.Parse(base)
	if err != nil {
		t.Fatalf("MESHAUTH_TEST_POSTGRES_URL must be a URL: %v", err)
	}
	conn, err := pgx.Connect(t.Context(), base)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close(context.Background())
	schema := "issuer_" + randomID()
	if _, err := conn.Exec(t.Context(), "CREATE SCHEMA "+schema); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		conn, err := pgx.Connect(context.Background(), base)
		if err != nil {
			t.Error(err)
			return
		}
		defer conn.Close(context.Background())
		if _, err := conn.Exec(context.Background(), "DROP SCHEMA "+schema+" CASCADE"); err != nil {
			t.Error(err)
		}
	})
	q := u.Query()
	q.Set("search_path", schema)
	u.RawQuery = q.Encode()
	return u.String()
}
