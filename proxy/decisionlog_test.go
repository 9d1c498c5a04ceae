package proxy

import (
	"context"
	"encoding/json"
	"log/slog"
	"strings"
	"testing"
)

// jsonLines decodes the JSON lines written to b.
func jsonLines(t *testing.T, b *syncBuffer) []map[string]any {
	t.Helper()
	var out []map[string]any
	for line := range strings.SplitSeq(strings.TrimSpace(b.String()), "\n") {
		if line == "" {
			continue
		}
		var m map[string]any
		if err := json.Unmarshal([]byte(line), &m); err != nil {
			t.Fatalf("%q: %v", line, err)
		}
		out = append(out, m)
	}
	return out
}

func TestDecisionLog(t *testing.T) {
	for _, rate := range []float64{0, 1} {
		var out syncBuffer
		d, err := NewDecisionLog(DecisionLogConfig{Logger: slog.New(slog.NewJSONHandler(&out, nil)), AllowedRate: rate})
		if err != nil {
			t.Fatal(err)
		}
		cfg := testConfig(t)
		cfg.Decisions = d
		up := newUpstream(t, nil)
		base := startSidecar(t, SidecarConfig{Config: cfg, Upstream: up.URL})
		readOnly := tokenWith(func(_, c jsonObject) { c["scope"] = "orders:read"; c["jti"] = "the-jti" })
		get(t, base, "/admin/x", bearer(readOnly))  // 403
		get(t, base, "/orders/1", bearer(readOnly)) // allowed
		get(t, base, "/orders/1", "Authorization: Bearer x.y.z")
		get(t, base, "/public/..;/admin") // 400
		d.Close()

		lines := jsonLines(t, &out)
		want := []map[string]any{
			{"msg": "decision", "entry": "proxy", "route": `path_prefix /admin`, "outcome": "denied", "reason": "insufficient_scope",
				"status": 403.0, "method": "GET", "path": "/admin/x", "iss": testIssuer, "sub": "alice", "client_id": "web",
				"jti_sha256": "49d1e211bdd2a73a"},
			{"msg": "decision", "entry": "proxy", "route": "default", "outcome": "allowed", "reason": "none", "status": 200.0,
				"path": "/orders/1", "sub": "alice"},
			{"msg": "decision", "route": "default", "outcome": "denied", "reason": "malformed", "status": 401.0, "path": "/orders/1"},
			{"msg": "decision", "route": "none", "outcome": "denied", "reason": "path_dot_params", "status": 400.0, "path": "/public/..;/admin"},
		}
		if rate == 0 {
			want = append(want[:1], want[2:]...)
		}
		if len(lines) != len(want) {
			t.Fatalf("rate %v: %d lines, want %d: %v", rate, len(lines), len(want), lines)
		}
		for i, w := range want {
			for k, v := range w {
				if lines[i][k] != v {
					t.Errorf("rate %v, line %d: %s = %v, want %v", rate, i, k, lines[i][k], v)
				}
			}
		}
		if _, ok := lines[len(lines)-2]["sub"]; ok {
			t.Error("the claims of a token refused were logged")
		}
		if s := out.String(); strings.Contains(s, readOnly[:20]) || strings.Contains(s, "the-jti") {
			t.Error("the log holds the token or its jti")
		}
	}
}

// blockingHandler holds every record until released.
type blockingHandler struct {
	slog.Handler
	entered chan struct{}
	release chan struct{}
}

func (h blockingHandler) Enabled(context.Context, slog.Level) bool { return true }

func (h blockingHandler) Handle(context.Context, slog.Record) error {
	h.entered <- struct{}{}
	<-h.release
	return nil
}

func TestDecisionLogDrops(t *testing.T) {
	h := blockingHandler{Handler: slog.DiscardHandler, entered: make(chan struct{}, 8), release: make(chan struct{})}
	d, err := NewDecisionLog(DecisionLogConfig{Logger: slog.New(h), Buffer: 1})
	if err != nil {
		t.Fatal(err)
	}
	g, err := newGuard(Config{Verifier: testVerifier(t), Decisions: d})
	if err != nil {
		t.Fatal(err)
	}
	r := g.begin()
	defer g.end(r)
	g.record(entryProxy, codeNoToken, r, []byte("GET")) // written: the writer blocks in it
	<-h.entered
	g.record(entryProxy, codeNoToken, r, []byte("GET")) // queued
	g.record(entryProxy, codeNoToken, r, []byte("GET")) // dropped
	if n := d.Dropped(); n != 1 {
		t.Errorf("%d dropped, want 1", n)
	}
	close(h.release)
	d.Close() // writes the queued line, then returns
	if len(h.entered) != 1 {
		t.Errorf("%d lines written after the first, want 1", len(h.entered))
	}
	if n := testing.AllocsPerRun(100, func() { g.record(entryProxy, codeNoToken, r, []byte("GET")) }); n != 0 {
		t.Errorf("recording a refusal: %v allocations", n)
	}
	for _, rate := range []float64{-0.1, 1.5} {
		if _, err := NewDecisionLog(DecisionLogConfig{Logger: slog.New(h), AllowedRate: rate}); err == nil {
			t.Errorf("rate %v accepted", rate)
		}
	}
}
