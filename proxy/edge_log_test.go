package proxy

import (
	"fmt"
	"log/slog"
	"strings"
	"testing"

	"github.com/meshauth/meshauth/internal/testlog"
)

// TestEdgeLogBounded: a client that makes every request fail (each with a
// new reference token while the issuer is down) causes a bounded number
// of log lines, not one per request.
func TestEdgeLogBounded(t *testing.T) {
	up := newUpstream(t, nil)
	f := newFakeIssuer()
	f.down.Store(true)
	logs := &testlog.Buffer{}
	cfg := edgeConfig(t, up.URL, f)
	cfg.Logger = slog.New(slog.NewTextHandler(logs, nil))
	cfg.DereferenceRate, cfg.DereferenceBurst = 1e6, 1e6
	_, base := startEdge(t, cfg)
	for i := range 100 {
		if resp := get(t, base, "/orders/1", bearer(fmt.Sprint("ref-", i))); resp.status != 503 {
			t.Fatalf("request %d: %d %q", i, resp.status, resp.body)
		}
	}
	if n := strings.Count(logs.String(), "dereference failed"); n == 0 || n > 5 {
		t.Fatalf("100 failed dereferences logged %d times:\n%s", n, logs)
	}
}
