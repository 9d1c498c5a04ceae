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
)

// signedIn signs the test user in at e through the browser flow of the
// public client "app" and returns the browser with its session and the
// token answer (access and refresh token for audience orders).
func (e *env) signedIn() (*browser, map[string]any) {
	e.t.Helper()
	e.publicClient("app")
	b := e.browser()
	status, tok := e.redeem("app", b.code("app", "scope", "orders.read", "audience", "orders"))
	if status != http.StatusOK {
		e.t.Fatalf("token: %d %v", status, tok)
	}
	return b, tok
}

// personRevoked checks that every token and the session of the person
// signed in with b and tok are refused, or (revoked false) that none is.
func (e *env) personRevoked(b *browser, tok map[string]any, revoked bool) {
	e.t.Helper()
	if got := e.revokedJWT(tok["access_token"].(string), "orders"); got != revoked {
		e.t.Errorf("access token revoked: %v, want %v", got, revoked)
	}
	status, m := e.refresh("app", tok["refresh_token"].(string))
	if got := status != http.StatusOK; got != revoked {
		e.t.Errorf("refresh refused: %v (%d %v), want %v", got, status, m, revoked)
	}
	if status == http.StatusOK {
		tok["refresh_token"] = m["refresh_token"] // rotated
	}
	// A live session goes through to the client without a login page.
	if got := b.authorize("app", "scope", "orders.read", "audience", "orders").isLogin(); got != revoked {
		e.t.Errorf("session ended: %v, want %v", got, revoked)
	}
}

// TestRevokeUser: the README's `meshauth revoke subject alice` revokes
// nothing of alice's, whose tokens carry an opaque sub, and the answer
// says so; revoking the user alice, resolved from her name, refuses her
// tokens, ends her grants and her session.
func TestRevokeUser(t *testing.T) {
	e := newEnv(t)
	userID := e.addUser()
	b, tok := e.signedIn()
	admin := "Bearer " + testAdminToken

	status, resp, m := e.revoke(`{"kind":"subject","value":"alice"}`, admin)
	if status != http.StatusOK {
		t.Fatalf("revoke subject alice: %d %v", status, m)
	}
	if !strings.Contains(resp.Warning, "revoke user alice") || !strings.Contains(resp.Warning, userID) {
		t.Errorf("revoke subject alice warns %q, want the way to revoke the user alice", resp.Warning)
	}
	e.personRevoked(b, tok, false)

	status, resp, m = e.revoke(`{"kind":"user","value":"ALICE"}`, admin)
	if status != http.StatusOK || resp.Kind != "user" || resp.Value != "alice" || resp.Subject != userID || resp.Warning != "" {
		t.Fatalf("revoke user ALICE: %d %+v %v", status, resp, m)
	}
	e.personRevoked(b, tok, true)

	for _, tc := range []struct{ body, want string }{
		{`{"kind":"user","value":"bob"}`, `no user named 'bob'`},
		{`{"kind":"user","value":"al ice"}`, "user name must be"},
		{`{"kind":"user","token":"x.y.z"}`, `'token' goes with kind 'token'`},
	} {
		status, _, m := e.revoke(tc.body, admin)
		if desc, _ := m["error_description"].(string); status/100 != 4 || !strings.Contains(desc, tc.want) {
			t.Errorf("%s: %d %v, want an error saying %q", tc.body, status, m, tc.want)
		}
	}
}

// TestRevokeSubjectEndsGrants: revoking a person's subject also ends the
// grants their tokens descend from. Otherwise the client's refresh token
// gets a new access token, issued after the revocation and so not refused
// by it.
func TestRevokeSubjectEndsGrants(t *testing.T) {
	e := newEnv(t)
	userID := e.addUser()
	b, tok := e.signedIn()
	if status, resp, m := e.revoke(`{"kind":"subject","value":"`+userID+`"}`, "Bearer "+testAdminToken); status != http.StatusOK || resp.Warning != "" {
		t.Fatalf("revoke subject: %d %+v %v", status, resp, m)
	}
	e.personRevoked(b, tok, true)
}

// adminGet gets path of the admin API and decodes a 200 answer into out.
func (e *env) adminGet(path string, out any) (int, map[string]any) {
	e.t.Helper()
	status, body := e.do(http.MethodGet, path, "", nil, "Bearer "+testAdminToken)
	var m map[string]any
	if status != http.StatusOK {
		if err := json.Unmarshal(body, &m); err != nil {
			e.t.Fatalf("answer is not JSON: %d %q", status, body)
		}
		return status, m
	}
	if strings.Contains(string(body), "argon2") {
		e.t.Errorf("%s shows a password hash: %s", path, body)
	}
	if err := json.Unmarshal(body, out); err != nil {
		e.t.Fatalf("%s: %v: %s", path, err, body)
	}
	return status, nil
}

func TestAdminUsers(t *testing.T) {
	e := newEnv(t)
	ctx := context.Background()
	aliceID := e.addUser()
	if _, err := LinkUpstreamIdentity(ctx, e.store, "alice", "https://idp.example", "alice-at-idp", time.Now()); err != nil {
		t.Fatal(err)
	}
	names := []string{"carol", "bob", "dave"}
	for _, name := range names {
		if _, err := CreateUserWithProfile(ctx, e.store, name, testPassword, Profile{DisplayName: "Person " + name, Email: name + "@example.com", EmailVerified: true}, time.Now()); err != nil {
			t.Fatal(err)
		}
	}
	if _, err := SetUserDisabled(ctx, e.store, "bob", true); err != nil {
		t.Fatal(err)
	}

	var page UserList
	if status, m := e.adminGet(pathAdminUsers+"?limit=3", &page); status != http.StatusOK {
		t.Fatalf("list: %d %v", status, m)
	}
	if got := userInfoNames(page.Users); strings.Join(got, " ") != "alice bob carol" || page.Next != "carol" {
		t.Fatalf("first page %v, next %q", got, page.Next)
	}
	if a := page.Users[0]; a.ID != aliceID || !a.Password || len(a.Identities) != 1 || a.Identities[0].Issuer != "https://idp.example" ||
		a.Identities[0].Subject != "alice-at-idp" || a.CreatedAt.IsZero() {
		t.Errorf("alice listed as %+v", a)
	}
	if bob := page.Users[1]; !bob.Disabled || bob.DisplayName != "Person bob" || bob.Email != "bob@example.com" || !bob.EmailVerified || bob.Identities == nil {
		t.Errorf("bob listed as %+v", bob)
	}
	after := page.Next
	page = UserList{}
	if status, m := e.adminGet(pathAdminUsers+"?limit=3&after="+after, &page); status != http.StatusOK {
		t.Fatalf("second page: %d %v", status, m)
	}
	if got := userInfoNames(page.Users); strings.Join(got, " ") != "dave" || page.Next != "" {
		t.Errorf("second page %v, next %q", got, page.Next)
	}

	var alice UserInfo
	if status, m := e.adminGet(pathAdminUsers+"/ALICE", &alice); status != http.StatusOK || alice.ID != aliceID || len(alice.Identities) != 1 {
		t.Errorf("show ALICE: %d %v %+v", status, m, alice)
	}

	b, tok := e.signedIn()
	status, body := e.do(http.MethodDelete, pathAdminUsers+"/alice", "", nil, "Bearer "+testAdminToken)
	var deleted RevokeResponse
	if status != http.StatusOK || json.Unmarshal(body, &deleted) != nil || deleted.Kind != "user" || deleted.Value != "alice" || deleted.Subject != aliceID {
		t.Fatalf("delete alice: %d %s", status, body)
	}
	e.personRevoked(b, tok, true)
	if _, err := e.store.GetUser(ctx, aliceID); err == nil {
		t.Error("alice is still stored")
	}
	if _, err := e.store.GetIdentity(ctx, "https://idp.example", "alice-at-idp"); err == nil {
		t.Error("alice's upstream identity is still linked")
	}

	for _, tc := range []struct {
		method, path string
		authz        string
		status       int
		want         string
	}{
		{http.MethodGet, pathAdminUsers + "/alice", testAdminToken, http.StatusNotFound, `no user named 'alice'`},
		{http.MethodDelete, pathAdminUsers + "/alice", testAdminToken, http.StatusNotFound, `no user named 'alice'`},
		{http.MethodGet, pathAdminUsers + "/" + url.PathEscape("al ice"), testAdminToken, http.StatusBadRequest, "user name must be"},
		{http.MethodGet, pathAdminUsers + "?limit=0", testAdminToken, http.StatusBadRequest, "limit"},
		{http.MethodGet, pathAdminUsers + "?limit=x", testAdminToken, http.StatusBadRequest, "limit"},
		{http.MethodGet, pathAdminUsers, "", http.StatusUnauthorized, "admin token"},
		{http.MethodGet, pathAdminUsers + "/bob", "wrong", http.StatusUnauthorized, "admin token"},
		{http.MethodDelete, pathAdminUsers + "/bob", "", http.StatusUnauthorized, "admin token"},
	} {
		authz := ""
		if tc.authz != "" {
			authz = "Bearer " + tc.authz
		}
		status, body := e.do(tc.method, tc.path, "", nil, authz)
		if status != tc.status || !strings.Contains(string(body), tc.want) {
			t.Errorf("%s %s: %d %s, want %d and %q", tc.method, tc.path, status, body, tc.status, tc.want)
		}
	}
	if _, err := e.store.GetUserByName(ctx, "bob"); err != nil {
		t.Errorf("bob after refused deletions: %v", err)
	}
}

func userInfoNames(users []UserInfo) []string {
	var names []string
	for _, u := range users {
		names = append(names, u.Name)
	}
	return names
}

// TestDeleteUserStoreDown: a deletion that cannot finish leaves the user
// disabled, and says to run it again, which then finishes it.
func TestDeleteUserStoreDown(t *testing.T) {
	var ds *deleteStore
	e := newEnvOn(t, t.TempDir(), func(s store.Store) store.Store { ds = &deleteStore{Store: s}; return ds })
	userID := e.addUser()
	b, tok := e.signedIn()
	for _, down := range []string{"revoke", "delete"} {
		ds.down = down
		status, body := e.do(http.MethodDelete, pathAdminUsers+"/alice", "", nil, "Bearer "+testAdminToken)
		if status != http.StatusServiceUnavailable || !strings.Contains(string(body), "again") {
			t.Errorf("%s down: %d %s, want 503 saying to run it again", down, status, body)
		}
		u, err := e.store.GetUser(context.Background(), userID)
		if err != nil || !u.Disabled {
			t.Errorf("%s down: user %+v %v, want kept and disabled", down, u, err)
		}
	}
	ds.down = ""
	if status, body := e.do(http.MethodDelete, pathAdminUsers+"/alice", "", nil, "Bearer "+testAdminToken); status != http.StatusOK {
		t.Fatalf("delete again: %d %s", status, body)
	}
	e.personRevoked(b, tok, true)
}

// deleteStore fails a user's deletion at the step named by down.
type deleteStore struct {
	store.Store
	down string
}

func (s *deleteStore) RevokeUserGrants(ctx context.Context, subject string, at time.Time) (int, error) {
	if s.down == "revoke" {
		return 0, errDown
	}
	return s.Store.RevokeUserGrants(ctx, subject, at)
}

func (s *deleteStore) DeleteUser(ctx context.Context, id string) error {
	if s.down == "delete" {
		return errDown
	}
	return s.Store.DeleteUser(ctx, id)
}
