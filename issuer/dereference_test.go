package issuer

import (
	"context"
	"net/http"
	"net/url"
	"strings"
	"testing"

	"github.com/meshauth/meshauth/issuer/exchangepolicy"
)

// TestDereference covers the edge's token exchange: a reference token of
// an Internet client becomes a JWT of the same authorization for the
// service behind the edge (exchangepolicy.Dereference).
func TestDereference(t *testing.T) {
	e := newEnv(t)
	mobile := e.register(ClientMetadata{ClientID: "mobile", AccessTokenFormat: "reference", Scope: "orders.read profile", AllowedAudiences: []string{"orders", "ledger"}})
	edge := e.register(ClientMetadata{ClientID: "edge", GrantTypes: []string{GrantTypeTokenExchange}, Scope: exchangepolicy.DereferenceScope,
		AllowedAudiences: []string{"orders", "ledger"}, ExchangeScopes: map[string]string{"ledger": "ledger.read"}})
	// An introspecting client may read any token but not mint from one.
	auditor := e.register(ClientMetadata{ClientID: "auditor", GrantTypes: []string{GrantTypeTokenExchange}, Scope: introspectScope, AllowedAudiences: []string{"orders"}})
	edgeAuth := basic("edge", edge.ClientSecret)

	ref := e.clientToken("mobile", mobile.ClientSecret, "orders")
	rec, err := e.store.GetAccessToken(context.Background(), ReferenceTokenHash(ref))
	if err != nil {
		t.Fatal(err)
	}

	status, _, m := e.tokenRequest(exchangeForm(ref, "audience", "orders"), edgeAuth)
	if status != http.StatusOK {
		t.Fatalf("dereference: %d %v", status, m)
	}
	c := e.verifyAccessToken(m["access_token"].(string), "orders")
	if c.Subject != "mobile" || c.ClientID != "mobile" || c.Scope != "orders.read profile" || c.Act != nil ||
		c.ID != rec.ID || c.SessionID != rec.GrantID || c.ExpiresAt.After(rec.ExpiresAt) {
		t.Errorf("claims = %+v act %s; reference record %+v", c, c.Act, rec)
	}
	if m["issued_token_type"] != tokenTypeAccessToken {
		t.Errorf("answer = %v", m)
	}

	refused := []struct {
		name    string
		form    url.Values
		authz   string
		errCode string
	}{
		{"audience the reference token was not issued for", exchangeForm(ref, "audience", "ledger"), edgeAuth, "invalid_target"},
		{"no audience", exchangeForm(ref), edgeAuth, "invalid_request"},
		{"introspect is not dereference", exchangeForm(ref, "audience", "orders"), basic("auditor", auditor.ClientSecret), "invalid_grant"},
		{"unknown reference token", exchangeForm(referenceToken(), "audience", "orders"), edgeAuth, "invalid_grant"},
		{"garbage", exchangeForm("!!", "audience", "orders"), edgeAuth, "invalid_grant"},
		// A JWT subject token follows the exchange rules: the edge is not
		// in its aud.
		{"jwt subject", exchangeForm(e.mint(map[string]any{"aud": "orders"}), "audience", "orders"), edgeAuth, "invalid_grant"},
	}
	for _, tc := range refused {
		t.Run(tc.name, func(t *testing.T) {
			status, _, m := e.tokenRequest(tc.form, tc.authz)
			if status != http.StatusBadRequest || m["error"] != tc.errCode {
				t.Fatalf("%d %v, want 400 %s", status, m, tc.errCode)
			}
			if desc, _ := m["error_description"].(string); strings.Contains(desc, ref) {
				t.Error("the error description quotes the token")
			}
		})
	}

	// RFC 7009 revocation of the reference token ends its dereferences.
	if status, _ := e.do(http.MethodPost, "/revoke", "application/x-www-form-urlencoded", []byte(url.Values{"token": {ref}}.Encode()), basic("mobile", mobile.ClientSecret)); status != http.StatusOK {
		t.Fatalf("revoke: %d", status)
	}
	if status, _, m := e.tokenRequest(exchangeForm(ref, "audience", "orders"), edgeAuth); status != http.StatusBadRequest || m["error"] != "invalid_grant" {
		t.Fatalf("after revocation: %d %v", status, m)
	}
}
