package issuer

import (
	"context"
	"crypto/sha256"
	"encoding/base64"
	"encoding/json"
	"errors"
	"net/http"
	"net/url"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/lestrrat-go/jwx/v2/jwk"
	"github.com/lestrrat-go/jwx/v2/jws"
	"github.com/lestrrat-go/jwx/v2/jwt"
	"golang.org/x/oauth2"

	"github.com/meshauth/meshauth/token"
)

const testLogoutRedirect = "http://127.0.0.1:9876/signed-out"

// oidcDiscovery is what a strict relying party reads of the OpenID Connect
// Discovery document.
type oidcDiscovery struct {
	Issuer                string   `json:"issuer"`
	AuthorizationEndpoint string   `json:"authorization_endpoint"`
	TokenEndpoint         string   `json:"token_endpoint"`
	UserinfoEndpoint      string   `json:"userinfo_endpoint"`
	EndSessionEndpoint    string   `json:"end_session_endpoint"`
	JWKSURI               string   `json:"jwks_uri"`
	ResponseTypes         []string `json:"response_types_supported"`
	SubjectTypes          []string `json:"subject_types_supported"`
	IDTokenAlgs           []string `json:"id_token_signing_alg_values_supported"`
	Scopes                []string `json:"scopes_supported"`
	Claims                []string `json:"claims_supported"`
	RequestURIParameter   *bool    `json:"request_uri_parameter_supported"`
	IssParameter          bool     `json:"authorization_response_iss_parameter_supported"`
}

// discover reads the discovery document and checks what OpenID Connect
// Discovery 1.0 §3 requires of it.
func (e *env) discover() *oidcDiscovery {
	e.t.Helper()
	status, body := e.do(http.MethodGet, "/.well-known/openid-configuration", "", nil, "")
	var md oidcDiscovery
	if status != http.StatusOK || json.Unmarshal(body, &md) != nil {
		e.t.Fatalf("discovery: %d %s", status, body)
	}
	switch {
	case md.Issuer != e.url, md.AuthorizationEndpoint != e.url+"/authorize", md.TokenEndpoint != e.url+"/token",
		md.UserinfoEndpoint != e.url+"/userinfo", md.EndSessionEndpoint != e.url+"/logout", md.JWKSURI != e.url+"/jwks.json":
		e.t.Errorf("discovery endpoints: %+v", md)
	case !slices.Equal(md.ResponseTypes, []string{"code"}), !slices.Equal(md.SubjectTypes, []string{"public"}),
		!slices.Contains(md.IDTokenAlgs, "RS256"), !slices.Contains(md.Scopes, "openid"),
		!slices.Contains(md.Claims, "email_verified"), md.RequestURIParameter == nil || *md.RequestURIParameter, !md.IssParameter:
		e.t.Errorf("discovery capabilities: %+v", md)
	}
	return &md
}

// oidcUser stores the test user with a profile and returns its id.
func (e *env) oidcUser() string {
	e.t.Helper()
	u, err := CreateUserWithProfile(context.Background(), e.store, testUser, testPassword,
		Profile{DisplayName: "Alice Liddell", Email: "Alice@Example.COM", EmailVerified: true}, time.Now())
	if err != nil {
		e.t.Fatal(err)
	}
	return u.ID
}

// relyingParty registers a confidential OpenID Connect client and returns
// its golang.org/x/oauth2 configuration, from discovery.
func (e *env) relyingParty(id string, md *oidcDiscovery) *oauth2.Config {
	e.t.Helper()
	reg := e.register(ClientMetadata{ClientID: id, ClientName: "Web App", GrantTypes: []string{GrantTypeAuthorizationCode, GrantTypeRefreshToken},
		RedirectURIs: []string{testRedirect}, PostLogoutRedirectURIs: []string{testLogoutRedirect}, Scope: "openid profile email"})
	return &oauth2.Config{
		ClientID: id, ClientSecret: reg.ClientSecret, RedirectURL: testRedirect, Scopes: []string{"openid", "profile", "email"},
		Endpoint: oauth2.Endpoint{AuthURL: md.AuthorizationEndpoint, TokenURL: md.TokenEndpoint, AuthStyle: oauth2.AuthStyleInHeader},
	}
}

// getURL is get for an absolute URL of the issuer.
func (b *browser) getURL(raw string) *page {
	b.t.Helper()
	u, err := url.Parse(raw)
	if err != nil {
		b.t.Fatal(err)
	}
	return b.get(u.Path, u.Query())
}

// idTokenOracle verifies an ID Token with the independent JOSE library
// jwx against the published keys, as any relying party would (OpenID
// Connect Core §3.1.3.7), and checks at_hash by its own computation.
func idTokenOracle(t *testing.T, md *oidcDiscovery, raw, clientID, nonce, accessToken string) jwt.Token {
	t.Helper()
	set, err := jwk.Fetch(context.Background(), md.JWKSURI)
	if err != nil {
		t.Fatal(err)
	}
	msg, err := jws.Parse([]byte(raw))
	if err != nil {
		t.Fatal(err)
	}
	hdr := msg.Signatures()[0].ProtectedHeaders()
	if hdr.Type() != "JWT" {
		t.Errorf("ID Token typ %q, want JWT", hdr.Type())
	}
	opts := []jwt.ParseOption{jwt.WithKeySet(set), jwt.WithValidate(true), jwt.WithIssuer(md.Issuer), jwt.WithAudience(clientID),
		jwt.WithRequiredClaim("iat"), jwt.WithRequiredClaim("auth_time"), jwt.WithRequiredClaim("sub")}
	if nonce != "" {
		opts = append(opts, jwt.WithClaimValue("nonce", nonce))
	}
	tok, err := jwt.Parse([]byte(raw), opts...)
	if err != nil {
		t.Fatalf("the ID Token does not verify with jwx: %v", err)
	}
	if aud := tok.Audience(); len(aud) != 1 {
		t.Errorf("aud %q: one audience, so no azp is needed", aud)
	}
	atHash, _ := tok.Get("at_hash")
	if string(hdr.Algorithm().String()) != "ES256" {
		t.Fatalf("alg %s: the test computes at_hash for ES256", hdr.Algorithm())
	}
	sum := sha256.Sum256([]byte(accessToken))
	if want := base64.RawURLEncoding.EncodeToString(sum[:16]); atHash != want {
		t.Errorf("at_hash %v, want %s", atHash, want)
	}
	return tok
}

func claim(tok jwt.Token, name string) any {
	v, _ := tok.Get(name)
	return v
}

// TestOpenIDConnect is a strict relying party (golang.org/x/oauth2 for the
// flow, jwx to verify the ID Token) signing in through meshauth over
// loopback: discovery, code flow with PKCE and nonce, ID Token, userinfo,
// refresh, prompt=none with and without a session, max_age, and
// RP-initiated logout.
func TestOpenIDConnect(t *testing.T) {
	e := newEnv(t)
	userID := e.oidcUser()
	md := e.discover()
	cfg := e.relyingParty("webapp", md)
	ctx := context.Background()
	b := e.browser()

	// authorize starts a sign-in; it returns the first page and the
	// request's verifier and nonce.
	authorize := func(b *browser, opts ...oauth2.AuthCodeOption) (*page, string, string) {
		verifier, nonce := oauth2.GenerateVerifier(), referenceToken()
		opts = append(opts, oauth2.S256ChallengeOption(verifier), oauth2.SetAuthURLParam("nonce", nonce))
		return b.getURL(cfg.AuthCodeURL("st-oidc", opts...)), verifier, nonce
	}
	// redeem takes the code of a redirect to the client.
	redeem := func(p *page, verifier string) *oauth2.Token {
		t.Helper()
		q := p.location(t).Query()
		if q.Get("state") != "st-oidc" || q.Get("iss") != e.url || q.Get("code") == "" {
			t.Fatalf("authorization response %v", q)
		}
		tok, err := cfg.Exchange(ctx, q.Get("code"), oauth2.VerifierOption(verifier))
		if err != nil {
			t.Fatal(err)
		}
		return tok
	}
	idToken := func(tok *oauth2.Token) string {
		t.Helper()
		raw, _ := tok.Extra("id_token").(string)
		if raw == "" {
			t.Fatalf("no id_token in the token response")
		}
		return raw
	}

	p, verifier, nonce := authorize(b)
	if !p.isLogin() {
		t.Fatalf("first authorization: %d %s", p.status, p.body)
	}
	p = b.consent(b.login(p, testUser, testPassword), "allow")
	tok := redeem(p, verifier)
	rawID := idToken(tok)
	id := idTokenOracle(t, md, rawID, "webapp", nonce, tok.AccessToken)
	authTime, _ := claim(id, "auth_time").(float64)
	if id.Subject() != userID || time.Since(time.Unix(int64(authTime), 0)) > time.Minute ||
		!slices.Equal(toStrings(claim(id, "amr")), []string{"pwd"}) || claim(id, "preferred_username") != testUser ||
		claim(id, "name") != "Alice Liddell" || claim(id, "email") != "alice@example.com" || claim(id, "email_verified") != true {
		t.Errorf("ID Token claims: %v", mustJSONString(t, id))
	}
	// The access token is an RFC 9068 JWT for the userinfo endpoint, and
	// records the sign-in.
	at := e.verifyAccessToken(tok.AccessToken, e.url)
	if at.Subject != userID || !at.HasScope("openid") {
		t.Errorf("access token claims: %+v", at)
	}
	if !strings.Contains(string(at.Raw), `"amr":["pwd"]`) || !strings.Contains(string(at.Raw), `"auth_time":`) {
		t.Errorf("access token lacks amr or auth_time: %s", at.Raw)
	}

	t.Run("userinfo", func(t *testing.T) {
		info := e.userinfo(t, tok.AccessToken, http.StatusOK)
		want := map[string]any{"sub": userID, "preferred_username": testUser, "name": "Alice Liddell", "email": "alice@example.com", "email_verified": true}
		if mustJSONString(t, info) != mustJSONString(t, want) {
			t.Errorf("userinfo %v, want %v", info, want)
		}
		// A narrower token releases less: refreshed with openid alone.
		status, m := e.refreshConfidential(cfg, tok.RefreshToken, "scope", "openid")
		if status != http.StatusOK {
			t.Fatalf("refresh: %d %v", status, m)
		}
		if info := e.userinfo(t, m["access_token"].(string), http.StatusOK); len(info) != 1 || info["sub"] != userID {
			t.Errorf("userinfo of an openid-only token: %v", info)
		}
		// The refreshed ID Token: same sub and auth_time, no nonce
		// (OpenID Connect Core §12.2), no profile claims.
		rid := idTokenOracle(t, md, m["id_token"].(string), "webapp", "", m["access_token"].(string))
		if rid.Subject() != userID || claim(rid, "auth_time") != authTime || claim(rid, "nonce") != nil || claim(rid, "email") != nil {
			t.Errorf("refreshed ID Token: %s", mustJSONString(t, rid))
		}
	})

	t.Run("userinfo refusals", func(t *testing.T) {
		e.userinfo(t, "", http.StatusUnauthorized)
		e.userinfo(t, rawID, http.StatusUnauthorized) // the ID Token is no access token
		e.userinfo(t, tok.AccessToken+"x", http.StatusUnauthorized)
		// An access token without openid.
		e.register(ClientMetadata{ClientID: "svc", Scope: "read", AllowedAudiences: []string{e.url}})
		plain := e.mint(map[string]any{"aud": e.url, "sub": userID, "scope": "read"})
		if h := e.userinfoHeader(t, plain, http.StatusForbidden); !strings.Contains(h, `error="insufficient_scope"`) {
			t.Errorf("challenge %q", h)
		}
		// An access token for another audience.
		other := e.mint(map[string]any{"aud": "orders", "sub": userID, "scope": "openid"})
		e.userinfo(t, other, http.StatusUnauthorized)
	})

	t.Run("ID Token never passes for an access token", func(t *testing.T) {
		// A sidecar guarding a service whose audience is the client's id
		// refuses it for its typ, before anything else.
		sidecar, err := token.NewAuthenticator([]token.Issuer{{Policy: token.Policy{Issuer: e.url, Audiences: []string{"webapp"}}, Keys: e.keys}}, token.AuthenticatorOptions{})
		if err != nil {
			t.Fatal(err)
		}
		var c token.Claims
		if err := sidecar.VerifyInto([]byte(rawID), &c); !errors.Is(err, token.ErrBadType) {
			t.Errorf("sidecar verifying the ID Token: %v, want %v", err, token.ErrBadType)
		}
		// Nor at the issuer: introspection calls it inactive.
		if claims, err := e.srv.activeToken(ctx, rawID); err != nil || claims != nil {
			t.Errorf("introspection of the ID Token: %+v %v", claims, err)
		}
	})

	t.Run("prompt=none with a session", func(t *testing.T) {
		p, verifier, nonce := authorize(b, oauth2.SetAuthURLParam("prompt", "none"))
		if p.status != http.StatusFound {
			t.Fatalf("prompt=none with a session: %d %s", p.status, p.body)
		}
		tok := redeem(p, verifier)
		id := idTokenOracle(t, md, idToken(tok), "webapp", nonce, tok.AccessToken)
		if claim(id, "auth_time") != authTime {
			t.Errorf("auth_time %v, want the session's %v", claim(id, "auth_time"), authTime)
		}
	})

	t.Run("prompt=none without a session", func(t *testing.T) {
		p, _, _ := authorize(e.browser(), oauth2.SetAuthURLParam("prompt", "none"))
		if q := p.location(t).Query(); q.Get("error") != "login_required" || q.Get("state") != "st-oidc" || q.Get("iss") != e.url {
			t.Errorf("prompt=none without a session: %v", q)
		}
	})

	t.Run("prompt=none without consent", func(t *testing.T) {
		other := e.relyingParty("otherapp", md)
		p := b.getURL(other.AuthCodeURL("st-oidc", oauth2.S256ChallengeOption(oauth2.GenerateVerifier()), oauth2.SetAuthURLParam("prompt", "none")))
		if q := p.location(t).Query(); q.Get("error") != "consent_required" {
			t.Errorf("prompt=none for a client not allowed yet: %v", q)
		}
	})

	t.Run("prompt=login and max_age ask for the password", func(t *testing.T) {
		for _, opt := range []oauth2.AuthCodeOption{oauth2.SetAuthURLParam("prompt", "login"), oauth2.SetAuthURLParam("max_age", "0")} {
			p, verifier, nonce := authorize(b, opt)
			if !p.isLogin() {
				t.Fatalf("%d %s", p.status, p.body)
			}
			p = b.login(p, testUser, testPassword)
			if p.isConsent() {
				p = b.consent(p, "allow")
			}
			tok := redeem(p, verifier)
			id := idTokenOracle(t, md, idToken(tok), "webapp", nonce, tok.AccessToken)
			if at, _ := claim(id, "auth_time").(float64); at < authTime {
				t.Errorf("auth_time %v after a new sign-in, before the first %v", at, authTime)
			}
		}
		// A max_age the session meets needs no password.
		if p, _, _ := authorize(b, oauth2.SetAuthURLParam("max_age", "3600")); p.status != http.StatusFound {
			t.Errorf("max_age=3600: %d", p.status)
		}
	})

	t.Run("OpenID Connect request errors", func(t *testing.T) {
		for param, code := range map[string]string{
			"request": "request_not_supported", "request_uri": "request_uri_not_supported", "registration": "registration_not_supported",
			"prompt": "invalid_request", "max_age": "invalid_request", "id_token_hint": "invalid_request",
		} {
			value := map[string]string{"prompt": "none login", "max_age": "-1", "id_token_hint": rawID + "x"}[param]
			p, _, _ := authorize(b, oauth2.SetAuthURLParam(param, value+"v"))
			if q := p.location(t).Query(); q.Get("error") != code || q.Get("state") != "st-oidc" || q.Get("iss") != e.url {
				t.Errorf("%s: %v", param, q)
			}
		}
	})

	t.Run("RP-initiated logout", func(t *testing.T) {
		q := url.Values{"id_token_hint": {rawID}, "post_logout_redirect_uri": {testLogoutRedirect}, "state": {"bye"}}
		p := b.get("/logout", q)
		loc := p.location(t)
		if loc.Scheme+"://"+loc.Host+loc.Path != testLogoutRedirect || loc.Query().Get("state") != "bye" {
			t.Fatalf("logout redirect %s", loc)
		}
		if !strings.Contains(p.header.Get("Set-Cookie"), "Max-Age=0") {
			t.Errorf("the session cookie is not deleted: %q", p.header.Values("Set-Cookie"))
		}
		if p, _, _ := authorize(b, oauth2.SetAuthURLParam("prompt", "none")); p.location(t).Query().Get("error") != "login_required" {
			t.Errorf("prompt=none after logout: %s", p.header.Get("Location"))
		}
	})
}

func toStrings(v any) []string {
	var out []string
	if l, ok := v.([]any); ok {
		for _, s := range l {
			str, _ := s.(string)
			out = append(out, str)
		}
	}
	if l, ok := v.([]string); ok {
		out = l
	}
	return out
}

func mustJSONString(t *testing.T, v any) string { return string(mustJSON(t, v)) }

// userinfo calls the userinfo endpoint with an access token and checks
// the status; it returns the claims of a 200.
func (e *env) userinfo(t *testing.T, accessToken string, status int) map[string]any {
	t.Helper()
	authz := ""
	if accessToken != "" {
		authz = "Bearer " + accessToken
	}
	got, h, body := e.doHeader(http.MethodGet, "/userinfo", "", nil, authz)
	if got != status {
		t.Fatalf("userinfo: %d %s, want %d", got, body, status)
	}
	if status != http.StatusOK {
		if !strings.HasPrefix(h.Get("WWW-Authenticate"), "Bearer") {
			t.Errorf("userinfo %d without a Bearer challenge", got)
		}
		return nil
	}
	var m map[string]any
	if err := json.Unmarshal(body, &m); err != nil {
		t.Fatal(err)
	}
	return m
}

func (e *env) userinfoHeader(t *testing.T, accessToken string, status int) string {
	t.Helper()
	got, h, body := e.doHeader(http.MethodGet, "/userinfo", "", nil, "Bearer "+accessToken)
	if got != status {
		t.Fatalf("userinfo: %d %s, want %d", got, body, status)
	}
	return h.Get("WWW-Authenticate")
}

// refreshConfidential refreshes as the confidential client of cfg.
func (e *env) refreshConfidential(cfg *oauth2.Config, refreshToken string, kv ...string) (int, map[string]any) {
	e.t.Helper()
	form := url.Values{"grant_type": {GrantTypeRefreshToken}, "refresh_token": {refreshToken}}
	for i := 0; i+1 < len(kv); i += 2 {
		form.Set(kv[i], kv[i+1])
	}
	status, _, m := e.tokenRequest(form, basic(cfg.ClientID, cfg.ClientSecret))
	return status, m
}
