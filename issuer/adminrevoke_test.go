package issuer

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/meshauth/meshauth/issuer/store"
)

// revoke posts body to the admin revocation endpoint with authz.
func (e *env) revoke(body, authz string) (int, RevokeResponse, map[string]any) {
	e.t.Helper()
	status, b := e.do(http.MethodPost, pathAdminRevoke, "application/json", []byte(body), authz)
	var resp RevokeResponse
	var m map[string]any
	if err := json.Unmarshal(b, &m); err != nil {
		e.t.Fatalf("answer is not JSON: %d %q", status, b)
	}
	if status == http.StatusOK {
		if err := json.Unmarshal(b, &resp); err != nil {
			e.t.Fatal(err)
		}
	}
	return status, resp, m
}

func TestAdminRevoke(t *testing.T) {
	e := newEnv(t)
	web := e.register(ClientMetadata{ClientID: "web", Scope: "profile", AllowedAudiences: []string{"api"}})
	mobile := e.register(ClientMetadata{ClientID: "mobile", AccessTokenFormat: "reference", Scope: "profile", AllowedAudiences: []string{"api"}})
	jwt := e.clientToken("web", web.ClientSecret, "api")
	jti := e.verifyAccessToken(jwt, "api").ID
	ref := e.clientToken("mobile", mobile.ClientSecret, "api")
	refRecord, err := e.store.GetAccessToken(context.Background(), ReferenceTokenHash(ref))
	if err != nil {
		t.Fatal(err)
	}
	foreign := newClientKey(t, "k1").sign(t, map[string]any{"typ": "at+jwt"},
		map[string]any{"iss": e.url, "sub": "web", "aud": "api", "exp": time.Now().Add(time.Minute).Unix(), "jti": "x"})
	admin := "Bearer " + testAdminToken

	tests := []struct {
		name      string
		body      string
		authz     string
		status    int
		errCode   string
		kind      string // stored kind, on success
		value     string
		wantError string // in error_description
	}{
		{name: "jti", body: `{"kind":"token","value":"j-123"}`, authz: admin, status: 200, kind: store.RevokeToken, value: "j-123"},
		{name: "client", body: `{"kind":"client","value":"web"}`, authz: admin, status: 200, kind: store.RevokeClient, value: "web"},
		{name: "subject", body: `{"kind":"subject","value":"alice"}`, authz: admin, status: 200, kind: store.RevokeSubject, value: "alice"},
		{name: "grant", body: `{"kind":"grant","value":"g-1"}`, authz: admin, status: 200, kind: store.RevokeGrant, value: "g-1"},
		{name: "JWT", body: `{"kind":"token","token":"` + jwt + `"}`, authz: admin, status: 200, kind: store.RevokeToken, value: jti},
		{name: "reference token", body: `{"kind":"token","token":"` + ref + `"}`, authz: admin, status: 200, kind: store.RevokeToken, value: refRecord.ID},

		{name: "no admin token", body: `{"kind":"client","value":"web"}`, status: 401, errCode: "invalid_token"},
		{name: "wrong admin token", body: `{"kind":"client","value":"web"}`, authz: "Bearer nope", status: 401, errCode: "invalid_token"},
		{name: "not JSON", body: `kind=client&value=web`, authz: admin, status: 400, errCode: "invalid_request"},
		{name: "unknown member", body: `{"kind":"client","value":"web","reason":"x"}`, authz: admin, status: 400, errCode: "invalid_request"},
		{name: "unknown kind", body: `{"kind":"audience","value":"api"}`, authz: admin, status: 400, errCode: "invalid_request", wantError: "audience"},
		{name: "claim name as kind", body: `{"kind":"jti","value":"j-123"}`, authz: admin, status: 400, errCode: "invalid_request"},
		{name: "no value", body: `{"kind":"subject"}`, authz: admin, status: 400, errCode: "invalid_request", wantError: "value"},
		{name: "empty value", body: `{"kind":"subject","value":""}`, authz: admin, status: 400, errCode: "invalid_request"},
		{name: "control character", body: `{"kind":"subject","value":"al\nice"}`, authz: admin, status: 400, errCode: "invalid_request"},
		{name: "value too long", body: `{"kind":"subject","value":"` + strings.Repeat("a", maxRevokeValueBytes+1) + `"}`, authz: admin, status: 400, errCode: "invalid_request"},
		{name: "token with another kind", body: `{"kind":"client","token":"` + jwt + `"}`, authz: admin, status: 400, errCode: "invalid_request"},
		{name: "token and value", body: `{"kind":"token","value":"j-123","token":"` + jwt + `"}`, authz: admin, status: 400, errCode: "invalid_request"},
		{name: "foreign token", body: `{"kind":"token","token":"` + foreign + `"}`, authz: admin, status: 400, errCode: "invalid_request", wantError: "token is not valid"},
		{name: "unknown reference token", body: `{"kind":"token","token":"` + referenceToken() + `"}`, authz: admin, status: 400, errCode: "invalid_request"},
		{name: "too large", body: `{"kind":"token","token":"` + strings.Repeat("a", maxRevokeBytes) + `"}`, authz: admin, status: 413, errCode: "invalid_request"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			before := time.Now()
			status, resp, m := e.revoke(tt.body, tt.authz)
			if status != tt.status {
				t.Fatalf("status %d %v, want %d", status, m, tt.status)
			}
			if tt.errCode != "" {
				desc, _ := m["error_description"].(string)
				if m["error"] != tt.errCode || !strings.Contains(desc, tt.wantError) {
					t.Errorf("answer %v, want %s containing %q", m, tt.errCode, tt.wantError)
				}
				if strings.Contains(desc, jwt) || strings.Contains(desc, ref) {
					t.Error("the answer quotes the token")
				}
				return
			}
			var req RevokeRequest
			if err := json.Unmarshal([]byte(tt.body), &req); err != nil {
				t.Fatal(err)
			}
			if resp.ID == "" || resp.Kind != req.Kind || resp.Value != tt.value || resp.RevokedAt.Before(before.Add(-time.Second)) ||
				resp.ExpiresAt.Sub(resp.RevokedAt) != e.srv.tokenLifetime+revocationLeeway {
				t.Errorf("answer %+v", resp)
			}
			if !storedRevocation(t, e.store, resp.ID, tt.kind, tt.value) {
				t.Errorf("revocation of %s %q not stored", tt.kind, tt.value)
			}
		})
	}
	if _, err := e.store.GetAccessToken(context.Background(), ReferenceTokenHash(ref)); !errors.Is(err, store.ErrNotFound) {
		t.Errorf("revoked reference token: %v, want it deleted", err)
	}
	if strings.Contains(e.logs.String(), jwt) || strings.Contains(e.logs.String(), ref) {
		t.Error("a token appeared in the logs")
	}
}

// storedRevocation reports whether the store holds the revocation id of
// kind and value.
func storedRevocation(t *testing.T, st store.Store, id, kind, value string) bool {
	t.Helper()
	revs, _, err := st.RevocationsAfter(context.Background(), 0, time.Now())
	if err != nil {
		t.Fatal(err)
	}
	for _, r := range revs {
		if r.ID == id {
			return r.Kind == kind && r.Value == value
		}
	}
	return false
}

// TestAdminRevokeGrant checks that revoking a grant ends it in the store
// too.
func TestAdminRevokeGrant(t *testing.T) {
	e := newEnv(t)
	ctx := context.Background()
	now := time.Now()
	g := &store.Grant{ID: "g-1", ClientID: "web", Subject: "alice", Scope: []string{"profile"}, CreatedAt: now, ExpiresAt: now.Add(time.Hour)}
	if err := e.store.CreateGrant(ctx, g); err != nil {
		t.Fatal(err)
	}
	if status, _, m := e.revoke(`{"kind":"grant","value":"g-1"}`, "Bearer "+testAdminToken); status != 200 {
		t.Fatalf("%d %v", status, m)
	}
	got, err := e.store.GetGrant(ctx, "g-1")
	if err != nil {
		t.Fatal(err)
	}
	if got.RevokedAt.IsZero() {
		t.Error("the grant is not revoked in the store")
	}
}

// recordingNotifier records the revocations it is told of.
type recordingNotifier struct {
	mu   sync.Mutex
	revs []*store.Revocation
}

func (n *recordingNotifier) NotifyRevocation(_ context.Context, r *store.Revocation) {
	n.mu.Lock()
	defer n.mu.Unlock()
	n.revs = append(n.revs, r)
}

// TestAdminRevokeNotifies checks that a revocation reaches the notifier
// once stored, and that a store failure answers 503 and notifies nothing.
func TestAdminRevokeNotifies(t *testing.T) {
	var fs *failingRevocations
	e := newEnvOn(t, t.TempDir(), func(s store.Store) store.Store { fs = &failingRevocations{Store: s}; return fs })
	notifier := new(recordingNotifier)
	srv, err := New(Config{IssuerURL: e.url, Store: e.store, Keys: e.keys, AdminToken: testAdminToken, Revocations: notifier, Logger: e.srv.log})
	if err != nil {
		t.Fatal(err)
	}
	post := func(body string) *httptest.ResponseRecorder {
		req := httptest.NewRequest(http.MethodPost, e.url+pathAdminRevoke, bytes.NewReader([]byte(body)))
		req.Header.Set("Authorization", "Bearer "+testAdminToken)
		w := httptest.NewRecorder()
		srv.ServeHTTP(w, req)
		return w
	}
	if w := post(`{"kind":"subject","value":"alice"}`); w.Code != 200 {
		t.Fatalf("%d %s", w.Code, w.Body)
	}
	if len(notifier.revs) != 1 || notifier.revs[0].Kind != store.RevokeSubject || notifier.revs[0].Value != "alice" {
		t.Errorf("notified %+v", notifier.revs)
	}
	fs.broken.Store(true)
	w := post(`{"kind":"subject","value":"bob"}`)
	if w.Code != 503 || !strings.Contains(w.Body.String(), "temporarily_unavailable") || strings.Contains(w.Body.String(), errDown.Error()) {
		t.Errorf("store down: %d %s", w.Code, w.Body)
	}
	if len(notifier.revs) != 1 {
		t.Errorf("a failed revocation was notified: %+v", notifier.revs[1:])
	}
}

// failingRevocations fails AddRevocation and IsRevoked once broken is
// set, as an unreachable database would.
type failingRevocations struct {
	store.Store
	broken atomic.Bool
}

func (f *failingRevocations) AddRevocation(ctx context.Context, r *store.Revocation) error {
	if f.broken.Load() {
		return errDown
	}
	return f.Store.AddRevocation(ctx, r)
}

func (f *failingRevocations) IsRevoked(ctx context.Context, keys []store.RevocationKey, issuedAt, now time.Time) (bool, error) {
	if f.broken.Load() {
		return false, errDown
	}
	return f.Store.IsRevoked(ctx, keys, issuedAt, now)
}

// TestTokenExchangeRevoked checks that the issuer refuses to exchange a
// revoked subject token, and that a store failure is not taken for "not
// revoked".
func TestTokenExchangeRevoked(t *testing.T) {
	var fs *failingRevocations
	e := newEnvOn(t, t.TempDir(), func(s store.Store) store.Store { fs = &failingRevocations{Store: s}; return fs })
	web := e.register(ClientMetadata{ClientID: "web", Scope: "payments.charge", AllowedAudiences: []string{"orders"}})
	mobile := e.register(ClientMetadata{ClientID: "mobile", AccessTokenFormat: "reference", Scope: "payments.charge", AllowedAudiences: []string{"orders"}})
	orders := e.register(ClientMetadata{ClientID: "orders", GrantTypes: []string{GrantTypeTokenExchange, "client_credentials"},
		Scope: "payments.charge", AllowedAudiences: []string{"payments", "orders-self"}})
	ordersAuth := basic("orders", orders.ClientSecret)
	admin := "Bearer " + testAdminToken
	exchange := func(subject string, kv ...string) (int, map[string]any) {
		status, _, m := e.tokenRequest(exchangeForm(subject, append([]string{"audience", "payments"}, kv...)...), ordersAuth)
		return status, m
	}

	byJTI := e.clientToken("web", web.ClientSecret, "orders")
	bySubject := e.mint(map[string]any{"sub": "carol"})
	byClient := e.clientToken("mobile", mobile.ClientSecret, "orders") // a reference token
	bySession := e.mint(map[string]any{"sid": "g-7"})
	kept := e.clientToken("web", web.ClientSecret, "orders")
	actor := e.clientToken("orders", orders.ClientSecret, "orders-self")
	for _, tok := range []string{byJTI, bySubject, byClient, bySession, kept} {
		if status, m := exchange(tok); status != 200 {
			t.Fatalf("before revocation: %d %v", status, m)
		}
	}
	for _, body := range []string{
		`{"kind":"token","token":"` + byJTI + `"}`,
		`{"kind":"subject","value":"carol"}`,
		`{"kind":"client","value":"mobile"}`,
		`{"kind":"grant","value":"g-7"}`,
	} {
		if status, _, m := e.revoke(body, admin); status != 200 {
			t.Fatalf("revoke %s: %d %v", body, status, m)
		}
	}
	for name, tok := range map[string]string{"jti": byJTI, "subject": bySubject, "client": byClient, "session": bySession} {
		status, m := exchange(tok)
		if status != 400 || m["error"] != "invalid_grant" || m["error_description"] != "subject token revoked" {
			t.Errorf("revoked by %s: %d %v", name, status, m)
		}
	}
	if status, m := exchange(kept); status != 200 {
		t.Errorf("token not revoked: %d %v", status, m)
	}

	if status, _, m := e.revoke(`{"kind":"token","token":"`+actor+`"}`, admin); status != 200 {
		t.Fatalf("revoke actor: %d %v", status, m)
	}
	status, m := exchange(kept, "actor_token", actor, "actor_token_type", tokenTypeAccessToken)
	if status != 400 || m["error"] != "invalid_request" || m["error_description"] != "actor_token revoked" {
		t.Errorf("revoked actor token: %d %v", status, m)
	}

	fs.broken.Store(true)
	if status, m := exchange(kept); status != 503 || m["error"] != "temporarily_unavailable" {
		t.Errorf("revocations unreadable: %d %v", status, m)
	}
}
