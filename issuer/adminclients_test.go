package issuer

import (
	"encoding/json"
	"net/http"
	"net/url"
	"slices"
	"strings"
	"testing"

	"github.com/meshauth/meshauth/issuer/store"
)

func TestAdminClients(t *testing.T) {
	e := newEnv(t)
	auth := introspectionSetup(e)
	web := secretOf(t, auth["web"])
	tok := e.clientToken("web", web, "orders")
	admin := "Bearer " + testAdminToken

	status, body := e.do(http.MethodGet, pathAdminClients, "", nil, admin)
	var list []ClientInfo
	if status != http.StatusOK || json.Unmarshal(body, &list) != nil {
		t.Fatalf("list: %d %s", status, body)
	}
	var ids []string
	for _, c := range list {
		ids = append(ids, c.ClientID)
	}
	if want := []string{"app", "edge", "orders", "other", "pub", "web"}; !slices.Equal(ids, want) {
		t.Errorf("listed %v, want %v", ids, want)
	}
	if strings.Contains(string(body), web) || strings.Contains(string(body), `"client_secret"`) {
		t.Errorf("the list shows a secret: %s", body)
	}

	status, body = e.do(http.MethodGet, pathAdminClients+"/web", "", nil, admin)
	var info ClientInfo
	if status != http.StatusOK || json.Unmarshal(body, &info) != nil {
		t.Fatalf("get: %d %s", status, body)
	}
	if info.Scope != "read write" || !slices.Equal(info.AllowedAudiences, []string{"orders", "payments"}) || info.ClientIDIssuedAt == 0 {
		t.Errorf("get web: %+v", info)
	}

	for _, tc := range []struct {
		name, method, path, authz string
		want                      int
	}{
		{"list without the admin token", http.MethodGet, pathAdminClients, "", http.StatusUnauthorized},
		{"get without the admin token", http.MethodGet, pathAdminClients + "/web", "Bearer wrong", http.StatusUnauthorized},
		{"delete without the admin token", http.MethodDelete, pathAdminClients + "/web", auth["web"], http.StatusUnauthorized},
		{"get of an unknown client", http.MethodGet, pathAdminClients + "/nobody", admin, http.StatusNotFound},
		{"delete of an unknown client", http.MethodDelete, pathAdminClients + "/nobody", admin, http.StatusNotFound},
	} {
		if status, body := e.do(tc.method, tc.path, "", nil, tc.authz); status != tc.want {
			t.Errorf("%s: %d %s, want %d", tc.name, status, body, tc.want)
		}
	}
	if !e.active(tok, auth["edge"]) {
		t.Fatal("web's token is not active before the deletion")
	}

	status, body = e.do(http.MethodDelete, pathAdminClients+"/web", "", nil, admin)
	if status != http.StatusOK {
		t.Fatalf("delete: %d %s", status, body)
	}
	if e.active(tok, auth["edge"]) {
		t.Error("a deleted client's token is still active")
	}
	if got := e.revocations(store.RevokeClient); !slices.Equal(got, []string{"web"}) {
		t.Errorf("client revocations: %v", got)
	}
	if status, _, m := e.tokenRequest(url.Values{"grant_type": {"client_credentials"}, "audience": {"orders"}}, auth["web"]); status != http.StatusUnauthorized || m["error"] != "invalid_client" {
		t.Errorf("token request of the deleted client: %d %v", status, m)
	}
}

// TestAdminDeleteClientRevocationFails checks that a deletion whose
// revocation cannot be stored answers 503 and says how to finish, and that
// revoking the client then does.
func TestAdminDeleteClientRevocationFails(t *testing.T) {
	var fs *faultyStore
	e := newEnvOn(t, t.TempDir(), func(s store.Store) store.Store { fs = &faultyStore{Store: s}; return fs })
	auth := introspectionSetup(e)
	tok := e.clientToken("web", secretOf(t, auth["web"]), "orders")
	admin := "Bearer " + testAdminToken

	fs.fail("AddRevocation")
	status, body := e.do(http.MethodDelete, pathAdminClients+"/web", "", nil, admin)
	fs.fail()
	if status != http.StatusServiceUnavailable || !strings.Contains(string(body), "revoke the client") {
		t.Fatalf("delete with the revocation failing: %d %s", status, body)
	}
	if status, _ := e.do(http.MethodGet, pathAdminClients+"/web", "", nil, admin); status != http.StatusNotFound {
		t.Errorf("the client is still there: %d", status)
	}
	status, body = e.do(http.MethodPost, pathAdminRevoke, "application/json", []byte(`{"kind":"client","value":"web"}`), admin)
	if status != http.StatusOK {
		t.Fatalf("revoke the client: %d %s", status, body)
	}
	if e.active(tok, auth["edge"]) {
		t.Error("the deleted client's token is active after its revocation")
	}
}
