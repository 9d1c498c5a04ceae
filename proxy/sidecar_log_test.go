package proxy

import (
	"log/slog"
	"strings"
	"testing"

	"github.com/meshauth/meshauth/internal/testlog"
)

// TestSidecarLogBounded: a caller that makes every request fail at the
// upstream must not make the sidecar write a line per request.
func TestSidecarLogBounded(t *testing.T) {
	ln := listen(t)
	dead := "http://" + ln.Addr().String()
	ln.Close() // nothing listens there any more: every forward fails
	logs := &testlog.Buffer{}
	cfg := testConfig(t)
	cfg.Logger = slog.New(slog.NewTextHandler(logs, nil))
	base := startSidecar(t, SidecarConfig{Config: cfg, Upstream: dead})
	tok := validToken()
	for i := range 100 {
		if resp := get(t, base, "/orders/1", bearer(tok)); resp.status != 502 {
			t.Fatalf("request %d: %d %q, want 502", i, resp.status, resp.body)
		}
	}
	if n := strings.Count(logs.String(), "upstream request failed"); n == 0 || n > 5 {
		t.Fatalf("100 failed forwards logged %d times:\n%s", n, logs)
	}
}
