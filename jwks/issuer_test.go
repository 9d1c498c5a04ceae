package jwks

import (
	"encoding/json"
	"net/http"
	"sync"
	"sync/atomic"
	"testing"

	"github.com/lestrrat-go/jwx/v2/jwa"
	"github.com/lestrrat-go/jwx/v2/jws"

	"github.com/meshauth/meshauth/token"
)

// issuerURL is the issuer of the tests that run in a synctest bubble.
const issuerURL = "https://issuer.example"

// testIssuer stands for an issuer in the verifier's tests: one ES256 key,
// its key set, and what the issuer distributes, signed with jwx (the
// independent oracle) as the issuer's keyring signs it. As an
// http.Handler it serves its metadata, its key set and the snapshot the
// test sets.
type testIssuer struct {
	url  string
	priv any
	key  token.Key
	doc  []byte // the JWK Set of key

	mu        sync.Mutex
	snapshot  []byte
	snapshots atomic.Int64 // snapshot requests
}

func newTestIssuer(t testing.TB, url, kid string) *testIssuer {
	t.Helper()
	priv, key, jwk := ksSigningKey(t, kid)
	return &testIssuer{url: url, priv: priv, key: key, doc: ksDoc(t, jwk)}
}

// sign returns payload, encoded as JSON, as a compact JWS of typ signed by
// the issuer's key.
func (iss *testIssuer) sign(t testing.TB, typ string, payload any) []byte {
	t.Helper()
	b, err := json.Marshal(payload)
	if err != nil {
		t.Fatal(err)
	}
	hdr := jws.NewHeaders()
	for name, v := range map[string]string{jws.KeyIDKey: iss.key.ID, jws.TypeKey: typ} {
		if err := hdr.Set(name, v); err != nil {
			t.Fatal(err)
		}
	}
	msg, err := jws.Sign(b, jws.WithKey(jwa.ES256, iss.priv, jws.WithProtectedHeaders(hdr)))
	if err != nil {
		t.Fatal(err)
	}
	return msg
}

// setSnapshot makes the issuer serve s, signed.
func (iss *testIssuer) setSnapshot(t testing.TB, s Snapshot) {
	t.Helper()
	msg := iss.sign(t, TypSnapshot, s)
	iss.mu.Lock()
	iss.snapshot = msg
	iss.mu.Unlock()
}

func (iss *testIssuer) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	switch r.URL.Path {
	case "/.well-known/oauth-authorization-server":
		json.NewEncoder(w).Encode(map[string]string{"issuer": iss.url, "jwks_uri": iss.url + "/jwks.json", "meshauth_snapshot_uri": iss.url + "/snapshot"})
	case "/jwks.json":
		w.Write(iss.doc)
	case "/snapshot":
		iss.snapshots.Add(1)
		iss.mu.Lock()
		msg := iss.snapshot
		iss.mu.Unlock()
		w.Header().Set("Content-Type", SnapshotMediaType)
		w.Write(msg)
	default:
		http.NotFound(w, r)
	}
}
