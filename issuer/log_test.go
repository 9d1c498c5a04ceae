package issuer

import (
	"net/http"
	"net/url"
	"strings"
	"testing"

	"github.com/meshauth/meshauth/issuer/store"
)

// TestLogBoundedWhileStoreDown: callers hammering the issuer while its
// store is down (token requests, readiness probes, sign-ins) cause a
// bounded number of log lines, not one per request.
func TestLogBoundedWhileStoreDown(t *testing.T) {
	var fs *failingStore
	e := newEnvOn(t, t.TempDir(), func(s store.Store) store.Store { fs = &failingStore{Store: s}; return fs })
	c := e.register(ClientMetadata{ClientID: "a"})
	fs.set(true)
	for range 100 {
		if status, _, _ := e.tokenRequest(url.Values{"grant_type": {"client_credentials"}}, basic("a", c.ClientSecret)); status != 503 {
			t.Fatalf("token with store down: %d", status)
		}
		if status, _ := e.do(http.MethodGet, "/readyz", "", nil, ""); status != 503 {
			t.Fatalf("readyz with store down: %d", status)
		}
	}
	for _, line := range []string{`msg="request failed"`, `msg="readiness: store unreachable"`} {
		if n := strings.Count(e.logs.String(), line); n == 0 || n > 5 {
			t.Errorf("100 requests logged %s %d times", line, n)
		}
	}
}
