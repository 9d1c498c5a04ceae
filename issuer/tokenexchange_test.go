package issuer

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"net/url"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/meshauth/meshauth/issuer/store"
	"github.com/meshauth/meshauth/token"
)

// mint signs claims with the issuer's own active key, as an access token,
// for subject tokens no grant would issue (expired, with may_act or act).
func (e *env) mint(claims map[string]any) string {
	e.t.Helper()
	return e.mintTyped("at+jwt", claims)
}

// mintTyped is mint with another typ header.
func (e *env) mintTyped(typ string, claims map[string]any) string {
	e.t.Helper()
	c := map[string]any{"iss": e.url, "sub": "alice", "aud": "orders", "exp": time.Now().Add(5 * time.Minute).Unix(),
		"iat": time.Now().Unix(), "jti": randomID(), "client_id": "web", "scope": "payments.charge"}
	for k, v := range claims {
		if v == nil {
			delete(c, k)
		} else {
			c[k] = v
		}
	}
	tok, err := e.keys.Sign(typ, mustJSON(e.t, c))
	if err != nil {
		e.t.Fatal(err)
	}
	return tok
}

// clientToken gets a client_credentials token for audience aud.
func (e *env) clientToken(id, secret, aud string) string {
	e.t.Helper()
	status, _, m := e.tokenRequest(url.Values{"grant_type": {"client_credentials"}, "audience": {aud}}, basic(id, secret))
	if status != http.StatusOK {
		e.t.Fatalf("client_credentials for %s: %d %v", id, status, m)
	}
	return m["access_token"].(string)
}

// exchangeForm is a token exchange request for subject, with extra
// parameters as name/value pairs; a value "" removes the parameter.
func exchangeForm(subject string, kv ...string) url.Values {
	f := url.Values{"grant_type": {GrantTypeTokenExchange}, "subject_token": {subject}, "subject_token_type": {tokenTypeAccessToken}}
	for i := 0; i < len(kv); i += 2 {
		if kv[i+1] == "" {
			f.Del(kv[i])
		} else {
			f.Add(kv[i], kv[i+1])
		}
	}
	return f
}

func TestTokenExchange(t *testing.T) {
	e := newEnv(t)
	web := e.register(ClientMetadata{ClientID: "web", Scope: "payments.charge profile", AllowedAudiences: []string{"orders"}})
	mobile := e.register(ClientMetadata{ClientID: "mobile", AccessTokenFormat: "reference", Scope: "payments.charge", AllowedAudiences: []string{"orders"}})
	// orders' own tokens are reference tokens: exchanged ones are still JWTs,
	// and its actor tokens exercise the reference path.
	orders := e.register(ClientMetadata{ClientID: "orders", AccessTokenFormat: "reference", GrantTypes: []string{GrantTypeTokenExchange, "client_credentials"},
		Scope: "payments.charge payments.read", AllowedAudiences: []string{"payments", "https://payments.example.com/", "orders-self"}})
	billing := e.register(ClientMetadata{ClientID: "billing", GrantTypes: []string{GrantTypeTokenExchange}, Scope: "payments.charge", AllowedAudiences: []string{"payments"}})
	plain := e.register(ClientMetadata{ClientID: "plain", Scope: "payments.charge", AllowedAudiences: []string{"payments"}})
	// capped may extend act chains to one actor only; registration does not
	// take that limit yet, so the client goes straight into the store.
	cappedSecret := newSecret()
	err := e.store.CreateClient(context.Background(), &store.Client{ID: "capped", SecretHash: hashSecret(cappedSecret), TokenEndpointAuthMethod: authSecretBasic,
		GrantTypes: []string{GrantTypeTokenExchange}, Scope: []string{"payments.charge"}, AccessTokenFormat: formatJWT,
		AllowedAudiences: []string{"payments"}, MaxDelegationDepth: 1, CreatedAt: time.Now()})
	if err != nil {
		t.Fatal(err)
	}

	webToken := e.clientToken("web", web.ClientSecret, "orders")
	mobileToken := e.clientToken("mobile", mobile.ClientSecret, "orders")
	ordersActor := e.clientToken("orders", orders.ClientSecret, "orders-self")
	foreign := newClientKey(t, "k1")
	now := time.Now()
	ordersAuth := basic("orders", orders.ClientSecret)

	tests := []struct {
		name    string
		form    url.Values
		authz   string
		errCode string
		errText string // in error_description
		sub     string
		aud     string
		scope   string
		act     string
		maxExp  time.Duration // from now, when the subject expires first
	}{
		{name: "narrowed", form: exchangeForm(webToken, "audience", "payments", "scope", "payments.charge"), authz: ordersAuth,
			sub: "web", aud: "payments", scope: "payments.charge", act: `{"sub":"orders"}`},
		{name: "all in common", form: exchangeForm(webToken, "audience", "payments"), authz: ordersAuth,
			sub: "web", aud: "payments", scope: "payments.charge", act: `{"sub":"orders"}`},
		{name: "resource", form: exchangeForm(webToken, "resource", "https://payments.example.com/"), authz: ordersAuth,
			sub: "web", aud: "https://payments.example.com/", scope: "payments.charge", act: `{"sub":"orders"}`},
		{name: "subject type jwt, requested jwt", form: exchangeForm(webToken, "subject_token_type", "", "subject_token_type", tokenTypeJWT, "requested_token_type", tokenTypeJWT, "audience", "payments"), authz: ordersAuth,
			sub: "web", aud: "payments", scope: "payments.charge", act: `{"sub":"orders"}`},
		{name: "reference subject token", form: exchangeForm(mobileToken, "audience", "payments"), authz: ordersAuth,
			sub: "mobile", aud: "payments", scope: "payments.charge", act: `{"sub":"orders"}`},
		{name: "may_act names the client", form: exchangeForm(e.mint(map[string]any{"aud": "api", "may_act": map[string]string{"sub": "orders"}}), "audience", "payments"), authz: ordersAuth,
			sub: "alice", aud: "payments", scope: "payments.charge", act: `{"sub":"orders"}`},
		{name: "may_act by client_id", form: exchangeForm(e.mint(map[string]any{"aud": "api", "may_act": map[string]string{"client_id": "orders"}}), "audience", "payments"), authz: ordersAuth,
			sub: "alice", aud: "payments", scope: "payments.charge", act: `{"sub":"orders"}`},
		{name: "short-lived subject", form: exchangeForm(e.mint(map[string]any{"exp": now.Add(time.Minute).Unix()}), "audience", "payments"), authz: ordersAuth,
			sub: "alice", aud: "payments", scope: "payments.charge", act: `{"sub":"orders"}`, maxExp: time.Minute},
		{name: "actor token of the client", form: exchangeForm(webToken, "audience", "payments", "actor_token", ordersActor, "actor_token_type", tokenTypeAccessToken), authz: ordersAuth,
			sub: "web", aud: "payments", scope: "payments.charge", act: `{"sub":"orders"}`},
		{name: "within the depth limit", form: exchangeForm(e.mint(map[string]any{"aud": "capped"}), "audience", "payments"), authz: basic("capped", cappedSecret),
			sub: "alice", aud: "payments", scope: "payments.charge", act: `{"sub":"capped"}`},

		{name: "client not in subject aud", form: exchangeForm(webToken, "audience", "payments"), authz: basic("billing", billing.ClientSecret), errCode: "invalid_grant"},
		{name: "may_act names another", form: exchangeForm(e.mint(map[string]any{"aud": "api", "may_act": map[string]string{"sub": "billing"}}), "audience", "payments"), authz: ordersAuth, errCode: "invalid_grant"},
		{name: "audience not allowed", form: exchangeForm(webToken, "audience", "ledger"), authz: ordersAuth, errCode: "invalid_target"},
		{name: "resource not absolute", form: exchangeForm(webToken, "resource", "payments"), authz: ordersAuth, errCode: "invalid_target"},
		{name: "no audience", form: exchangeForm(webToken), authz: ordersAuth, errCode: "invalid_request", errText: "audience or resource is required"},
		{name: "scope not held by subject", form: exchangeForm(webToken, "audience", "payments", "scope", "payments.read"), authz: ordersAuth, errCode: "invalid_scope", errText: "subject token's scope"},
		{name: "scope not registered for client", form: exchangeForm(webToken, "audience", "payments", "scope", "profile"), authz: ordersAuth, errCode: "invalid_scope", errText: "not registered for this client"},
		{name: "expired subject", form: exchangeForm(e.mint(map[string]any{"exp": now.Add(-time.Hour).Unix()}), "audience", "payments"), authz: ordersAuth, errCode: "invalid_grant", errText: "expired"},
		{name: "subject without aud", form: exchangeForm(e.mint(map[string]any{"aud": nil}), "audience", "payments"), authz: ordersAuth, errCode: "invalid_grant"},
		{name: "garbage subject", form: exchangeForm("not-a-token.at-all.really", "audience", "payments"), authz: ordersAuth, errCode: "invalid_grant"},
		{name: "unknown reference subject", form: exchangeForm(referenceToken(), "audience", "payments"), authz: ordersAuth, errCode: "invalid_grant"},
		{name: "reference subject as jwt", form: exchangeForm(mobileToken, "subject_token_type", "", "subject_token_type", tokenTypeJWT, "audience", "payments"), authz: ordersAuth, errCode: "invalid_grant"},
		{name: "subject signed by a foreign key", form: exchangeForm(foreign.sign(t, map[string]any{"typ": "at+jwt"}, map[string]any{"iss": e.url, "sub": "alice", "aud": "orders", "exp": now.Add(time.Minute).Unix(), "scope": "payments.charge"}), "audience", "payments"), authz: ordersAuth, errCode: "invalid_grant"},
		{name: "subject of a foreign issuer", form: exchangeForm(foreign.sign(t, map[string]any{"typ": "at+jwt"}, map[string]any{"iss": "https://other.example", "sub": "alice", "aud": "orders", "exp": now.Add(time.Minute).Unix()}), "audience", "payments"), authz: ordersAuth, errCode: "invalid_grant", errText: "issuer is not trusted"},
		{name: "client assertion as subject", form: exchangeForm(e.mintTyped("JWT", map[string]any{"aud": "orders"}), "audience", "payments"), authz: ordersAuth, errCode: "invalid_grant"},
		{name: "wrong subject_token_type", form: exchangeForm(webToken, "subject_token_type", "", "subject_token_type", "urn:ietf:params:oauth:token-type:id_token", "audience", "payments"), authz: ordersAuth, errCode: "invalid_request"},
		{name: "missing subject_token_type", form: exchangeForm(webToken, "subject_token_type", "", "audience", "payments"), authz: ordersAuth, errCode: "invalid_request"},
		{name: "missing subject_token", form: exchangeForm("", "subject_token", "", "audience", "payments"), authz: ordersAuth, errCode: "invalid_request"},
		{name: "unsupported requested_token_type", form: exchangeForm(webToken, "audience", "payments", "requested_token_type", "urn:ietf:params:oauth:token-type:refresh_token"), authz: ordersAuth, errCode: "invalid_request"},
		{name: "actor token of another client", form: exchangeForm(webToken, "audience", "payments", "actor_token", webToken, "actor_token_type", tokenTypeJWT), authz: ordersAuth, errCode: "invalid_request"},
		{name: "invalid actor token", form: exchangeForm(webToken, "audience", "payments", "actor_token", referenceToken(), "actor_token_type", tokenTypeAccessToken), authz: ordersAuth, errCode: "invalid_request"},
		{name: "actor token without type", form: exchangeForm(webToken, "audience", "payments", "actor_token", ordersActor), authz: ordersAuth, errCode: "invalid_request"},
		{name: "actor_token_type alone", form: exchangeForm(webToken, "audience", "payments", "actor_token_type", tokenTypeJWT), authz: ordersAuth, errCode: "invalid_request"},
		{name: "client not registered for the grant", form: exchangeForm(webToken, "audience", "payments"), authz: basic("plain", plain.ClientSecret), errCode: "unauthorized_client"},
		{name: "unauthenticated", form: exchangeForm(webToken, "audience", "payments"), errCode: "invalid_client"},
		{name: "depth exceeded", form: exchangeForm(e.mint(map[string]any{"aud": "capped", "act": map[string]string{"sub": "edge"}}), "audience", "payments"), authz: basic("capped", cappedSecret), errCode: "invalid_grant", errText: "delegation chain too long"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			status, h, m := e.tokenRequest(tc.form, tc.authz)
			if h.Get("Cache-Control") != "no-store" {
				t.Errorf("Cache-Control = %q", h.Get("Cache-Control"))
			}
			if tc.errCode != "" {
				desc, _ := m["error_description"].(string)
				if m["error"] != tc.errCode || !strings.Contains(desc, tc.errText) {
					t.Fatalf("%d %v, want %s containing %q", status, m, tc.errCode, tc.errText)
				}
				if want := map[string]int{"invalid_client": 401}[tc.errCode]; want == 0 && status != 400 || want != 0 && status != want {
					t.Errorf("status %d for %s", status, tc.errCode)
				}
				if subj := tc.form.Get("subject_token"); len(subj) > 20 && strings.Contains(desc, subj) {
					t.Error("the error description quotes the subject token")
				}
				return
			}
			if status != http.StatusOK {
				t.Fatalf("status %d: %v", status, m)
			}
			if m["issued_token_type"] != tokenTypeAccessToken || m["token_type"] != "Bearer" || m["scope"] != tc.scope {
				t.Errorf("answer = %v", m)
			}
			expiresIn := m["expires_in"].(float64)
			if expiresIn <= 0 || expiresIn > 300 || tc.maxExp != 0 && expiresIn > tc.maxExp.Seconds() {
				t.Errorf("expires_in = %v", expiresIn)
			}
			c := e.verifyAccessToken(m["access_token"].(string), tc.aud)
			if c.Subject != tc.sub || c.ClientID != clientOf(tc.authz) || c.Scope != tc.scope || string(c.Act) != tc.act ||
				len(c.Audience) != 1 || c.ID == "" || c.IssuedAt.IsZero() {
				t.Errorf("claims = %+v act %s", c, c.Act)
			}
			if subj := subjectExpiry(t, e, tc.form); !subj.IsZero() && c.ExpiresAt.After(subj) {
				t.Errorf("exp %v after the subject token's %v", c.ExpiresAt, subj)
			}
		})
	}
	for _, tok := range []string{webToken, mobileToken, ordersActor} {
		if strings.Contains(e.logs.String(), tok) {
			t.Error("a token appeared in the logs")
		}
	}
}

// clientOf returns the client id of a Basic Authorization header.
func clientOf(authz string) string {
	id, _, _ := parseBasic(authz)
	return id
}

// subjectExpiry returns the exp of the form's subject token if it is a JWT.
func subjectExpiry(t *testing.T, e *env, form url.Values) time.Time {
	parts := strings.Split(form.Get("subject_token"), ".")
	if len(parts) != 3 {
		rec, err := e.store.GetAccessToken(context.Background(), ReferenceTokenHash(form.Get("subject_token")))
		if err != nil {
			t.Fatal(err)
		}
		return rec.ExpiresAt
	}
	var c struct{ Exp int64 }
	if err := json.Unmarshal(mustDecode(t, parts[1]), &c); err != nil {
		t.Fatal(err)
	}
	return time.Unix(c.Exp, 0)
}

// TestTokenExchangeChain follows one request through a chain of services,
// each exchanging the token it received for one to call the next: act
// nests hop by hop until the default depth limit refuses the sixth actor.
func TestTokenExchangeChain(t *testing.T) {
	e := newEnv(t)
	web := e.register(ClientMetadata{ClientID: "web", Scope: "payments.charge", AllowedAudiences: []string{"svc1"}})
	secrets := map[string]string{}
	for i := 1; i <= 7; i++ {
		id := fmt.Sprintf("svc%d", i)
		reg := e.register(ClientMetadata{ClientID: id, GrantTypes: []string{GrantTypeTokenExchange}, Scope: "payments.charge",
			AllowedAudiences: []string{fmt.Sprintf("svc%d", i+1)}})
		secrets[id] = reg.ClientSecret
	}
	tok := e.clientToken("web", web.ClientSecret, "svc1")
	wantAct := ""
	for i := 1; i <= 6; i++ {
		id, next := fmt.Sprintf("svc%d", i), fmt.Sprintf("svc%d", i+1)
		status, _, m := e.tokenRequest(exchangeForm(tok, "audience", next), basic(id, secrets[id]))
		if i == 6 {
			if status != 400 || m["error"] != "invalid_grant" {
				t.Fatalf("hop 6 past the default depth: %d %v", status, m)
			}
			return
		}
		if status != http.StatusOK {
			t.Fatalf("hop %d: %d %v", i, status, m)
		}
		prev := tok
		tok = m["access_token"].(string)
		if wantAct == "" {
			wantAct = `{"sub":"` + id + `"}`
		} else {
			wantAct = `{"sub":"` + id + `","act":` + wantAct + `}`
		}
		c := e.verifyAccessToken(tok, next)
		if c.Subject != "web" || c.ClientID != id || string(c.Act) != wantAct {
			t.Errorf("hop %d: sub %q client_id %q act %s, want act %s", i, c.Subject, c.ClientID, c.Act, wantAct)
		}
		// The token this hop received is useless at the next one.
		if _, err := verifierFor(t, e, next).Verify([]byte(prev)); !errors.Is(err, token.ErrBadAudience) {
			t.Errorf("hop %d: the inbound token at the next hop: %v", i, err)
		}
	}
}

func verifierFor(t *testing.T, e *env, aud string) *token.Verifier {
	t.Helper()
	_, body := e.do(http.MethodGet, "/jwks.json", "", nil, "")
	keys, err := token.ParseJWKS(body)
	if err != nil {
		t.Fatal(err)
	}
	v, err := token.NewVerifier(token.Policy{Issuer: e.url, Audiences: []string{aud}}, token.NewKeySet(keys))
	if err != nil {
		t.Fatal(err)
	}
	return v
}

// TestTokenExchangeAfterRotation checks that subject tokens signed before an
// immediate key rotation still exchange (the old key stays published) and
// that the cached key set follows the JWKS.
func TestTokenExchangeAfterRotation(t *testing.T) {
	e := newEnv(t)
	web := e.register(ClientMetadata{ClientID: "web", Scope: "a", AllowedAudiences: []string{"orders"}})
	orders := e.register(ClientMetadata{ClientID: "orders", GrantTypes: []string{GrantTypeTokenExchange}, Scope: "a", AllowedAudiences: []string{"payments"}})
	before := e.clientToken("web", web.ClientSecret, "orders")
	if status, _, m := e.tokenRequest(exchangeForm(before, "audience", "payments"), basic("orders", orders.ClientSecret)); status != 200 {
		t.Fatalf("before rotation: %d %v", status, m)
	}
	if status, body := e.do(http.MethodPost, "/admin/keys/rotate?immediate=true", "", nil, "Bearer "+testAdminToken); status != 200 {
		t.Fatalf("rotate: %d %s", status, body)
	}
	after := e.clientToken("web", web.ClientSecret, "orders")
	for name, tok := range map[string]string{"old key": before, "new key": after} {
		if status, _, m := e.tokenRequest(exchangeForm(tok, "audience", "payments"), basic("orders", orders.ClientSecret)); status != 200 {
			t.Errorf("%s after rotation: %d %v", name, status, m)
		}
	}
}

func TestMetadataTokenExchange(t *testing.T) {
	e := newEnv(t)
	_, body := e.do(http.MethodGet, "/.well-known/oauth-authorization-server", "", nil, "")
	var md struct {
		Grants []string `json:"grant_types_supported"`
	}
	if err := json.Unmarshal(body, &md); err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(strings.Join(md.Grants, " "), GrantTypeTokenExchange) {
		t.Errorf("grant_types_supported = %v", md.Grants)
	}
}

// TestTokenExchangeKeepsGrant checks that a token exchanged from a user's
// token carries the user's grant as sid, so that revoking the grant
// (a refresh token revoked, a reused code) reaches every hop.
func TestTokenExchangeKeepsGrant(t *testing.T) {
	e := newEnv(t)
	e.register(ClientMetadata{ClientID: "web", Scope: "read", AllowedAudiences: []string{"orders"}})
	orders := e.register(ClientMetadata{ClientID: "orders", GrantTypes: []string{GrantTypeTokenExchange}, Scope: "read", AllowedAudiences: []string{"payments"}})
	payments := e.register(ClientMetadata{ClientID: "payments", GrantTypes: []string{GrantTypeTokenExchange}, Scope: "read", AllowedAudiences: []string{"ledger"}})
	grant, _, _, _ := e.userGrant("web")
	user := e.mint(map[string]any{"sub": "alice", "client_id": "web", "sid": grant, "scope": "read"})
	status, _, m := e.tokenRequest(exchangeForm(user, "audience", "payments"), basic("orders", orders.ClientSecret))
	if status != http.StatusOK {
		t.Fatalf("exchange: %d %v", status, m)
	}
	exchanged := m["access_token"].(string)
	if c := e.verifyAccessToken(exchanged, "payments"); c.SessionID != grant {
		t.Fatalf("exchanged token sid = %q, want the grant %q", c.SessionID, grant)
	}
	nextHop := func() (int, map[string]any) {
		status, _, m := e.tokenRequest(exchangeForm(exchanged, "audience", "ledger"), basic("payments", payments.ClientSecret))
		return status, m
	}
	if status, m := nextHop(); status != http.StatusOK {
		t.Fatalf("next hop before the grant is revoked: %d %v", status, m)
	}
	if _, err := e.srv.revokeGrant(context.Background(), grant); err != nil {
		t.Fatal(err)
	}
	if got := e.revocations(store.RevokeGrant); !slices.Contains(got, grant) {
		t.Fatalf("revocations by sid: %v", got)
	}
	if status, m := nextHop(); status != http.StatusBadRequest || m["error"] != "invalid_grant" {
		t.Errorf("next hop after the grant is revoked: %d %v", status, m)
	}
}
