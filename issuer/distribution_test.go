package issuer

import (
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"

	"github.com/meshauth/meshauth/internal/discovery"
	"github.com/meshauth/meshauth/issuer/keys"
	"github.com/meshauth/meshauth/jwks"
)

// TestSnapshotServed: with a Snapshot, the issuer serves it, names it in
// its metadata, has every revocation it stores published, and lists the
// Status lines on /readyz; without one, neither the path nor the member
// exists.
func TestSnapshotServed(t *testing.T) {
	e := newEnv(t)
	if status, _ := e.do(http.MethodGet, "/meshauth/snapshot", "", nil, ""); status != http.StatusNotFound {
		t.Errorf("snapshot without a distributor: %d, want 404", status)
	}
	if _, body := e.do(http.MethodGet, "/.well-known/oauth-authorization-server", "", nil, ""); strings.Contains(string(body), discovery.MemberSnapshotURI) {
		t.Errorf("metadata names a snapshot without a distributor: %s", body)
	}

	dist, err := keys.NewDistributor(keys.DistributorConfig{Issuer: e.url, Keyring: e.keys, Store: e.store})
	if err != nil {
		t.Fatal(err)
	}
	notified := &recordingNotifier{}
	srv, err := New(Config{IssuerURL: e.url, Store: e.store, Keys: e.keys, AdminToken: testAdminToken, Snapshot: dist,
		Revocations: notified, Status: func() []string { return []string{"federated https://p.example: 1 keys"} }})
	if err != nil {
		t.Fatal(err)
	}
	get := func(path string) (*httptest.ResponseRecorder, map[string]any) {
		w := httptest.NewRecorder()
		srv.ServeHTTP(w, httptest.NewRequest(http.MethodGet, path, nil))
		var md map[string]any
		json.Unmarshal(w.Body.Bytes(), &md)
		return w, md
	}
	if _, md := get("/.well-known/oauth-authorization-server"); md[discovery.MemberSnapshotURI] != e.url+"/meshauth/snapshot" {
		t.Errorf("metadata %s = %v", discovery.MemberSnapshotURI, md[discovery.MemberSnapshotURI])
	}
	w, _ := get("/meshauth/snapshot")
	if w.Code != http.StatusOK || w.Header().Get("Content-Type") != jwks.SnapshotMediaType || w.Header().Get("ETag") == "" {
		t.Fatalf("snapshot: %d %v", w.Code, w.Header())
	}
	if w, _ := get("/readyz"); w.Code != http.StatusOK || w.Body.String() != "ok\nfederated https://p.example: 1 keys\n" {
		t.Errorf("readyz: %d %q", w.Code, w.Body.String())
	}
	r := httptest.NewRequest(http.MethodPost, "/admin/revoke", strings.NewReader(`{"kind":"subject","value":"alice"}`))
	r.Header.Set("Content-Type", "application/json")
	r.Header.Set("Authorization", "Bearer "+testAdminToken)
	rw := httptest.NewRecorder()
	srv.ServeHTTP(rw, r)
	if rw.Code != http.StatusOK || len(notified.revs) != 1 || notified.revs[0].Seq == 0 {
		t.Fatalf("revocation: %d %s, notified %d (with its number)", rw.Code, rw.Body, len(notified.revs))
	}
}
