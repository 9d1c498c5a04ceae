package proxy

import (
	"bytes"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"testing/synctest"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	dto "github.com/prometheus/client_model/go"
	"gopkg.in/yaml.v3"
)

// parseYAML reads a Policy as the sidecar's config file holds it.
func parseYAML(data []byte) (Policy, error) {
	var p Policy
	dec := yaml.NewDecoder(bytes.NewReader(data))
	dec.KnownFields(true)
	err := dec.Decode(&p)
	return p, err
}

func TestPolicyFile(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		path := filepath.Join(t.TempDir(), "sidecar.yaml")
		write := func(s string) {
			if err := os.WriteFile(path, []byte(s), 0o600); err != nil {
				t.Fatal(err)
			}
		}
		write("routes:\n  - path_prefix: /a\n    scopes: [a]\n")
		var logs syncBuffer
		reg := prometheus.NewRegistry()
		hup := make(chan os.Signal, 1)
		f, err := NewPolicyFile(PolicyFileConfig{Path: path, Parse: parseYAML, Interval: time.Second, Signals: hup,
			Logger: slog.New(slog.NewTextHandler(&logs, nil)), Registerer: reg})
		if err != nil {
			t.Fatal(err)
		}
		f.Start()
		defer f.Stop()
		rules := f.Rules()
		scopesOf := func(path string) string {
			return strings.Join(rules.load().match([]byte("GET"), []byte(path)).scopes, " ")
		}
		tick := func() {
			time.Sleep(time.Second)
			synctest.Wait()
		}
		if scopesOf("/a") != "a" || rules.Version() != 1 {
			t.Fatalf("start: %q, version %d", scopesOf("/a"), rules.Version())
		}

		write("routes:\n  - path_prefix: /a\n    scopes: [b]\n")
		tick()
		if scopesOf("/a") != "b" || rules.Version() != 2 {
			t.Fatalf("after a change: %q, version %d", scopesOf("/a"), rules.Version())
		}

		// Invalid: refused, logged once, the policy in force stays.
		write("routes:\n  - path_prefix: /a\n  - path_prefix: /a\n")
		tick()
		tick()
		if scopesOf("/a") != "b" || rules.Version() != 2 {
			t.Fatalf("after an invalid file: %q, version %d", scopesOf("/a"), rules.Version())
		}
		if n := strings.Count(logs.String(), "policy file refused"); n != 1 {
			t.Errorf("refusal logged %d times, want once:\n%s", n, logs.String())
		}
		if !strings.Contains(logs.String(), "line 2: route 0") {
			t.Errorf("the refusal does not name the line:\n%s", logs.String())
		}
		hup <- os.Interrupt // asked: said again
		synctest.Wait()
		if n := strings.Count(logs.String(), "policy file refused"); n != 2 {
			t.Errorf("refusal logged %d times after a signal, want twice", n)
		}

		// Unreadable: the same.
		os.Remove(path)
		tick()
		if rules.Version() != 2 || !strings.Contains(logs.String(), "no such file") {
			t.Errorf("after removal: version %d\n%s", rules.Version(), logs.String())
		}

		write("routes:\n  - path: /c\n    condition: sub == \"x\"\n")
		hup <- os.Interrupt
		synctest.Wait()
		if scopesOf("/a") != "" || rules.Version() != 3 {
			t.Fatalf("after a signal: %q, version %d", scopesOf("/a"), rules.Version())
		}
		version, reloads := policyMetrics(t, reg)
		if version != 3 || reloads["applied"] != 2 || reloads["refused"] != 3 {
			t.Errorf("metrics: version %v, reloads %v", version, reloads)
		}
	})
}

// policyMetrics gathers meshauth_policy_version and
// meshauth_policy_reloads_total by result.
func policyMetrics(t *testing.T, reg *prometheus.Registry) (float64, map[string]float64) {
	t.Helper()
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	var version float64
	reloads := map[string]float64{}
	for _, mf := range mfs {
		for _, m := range mf.GetMetric() {
			switch mf.GetName() {
			case "meshauth_policy_version":
				version = m.GetGauge().GetValue()
				if l := labelOf(m, "sha256"); len(l) != 64 {
					t.Errorf("sha256 label %q", l)
				}
			case "meshauth_policy_reloads_total":
				reloads[labelOf(m, "result")] = m.GetCounter().GetValue()
			}
		}
	}
	return version, reloads
}

func labelOf(m *dto.Metric, name string) string {
	for _, l := range m.GetLabel() {
		if l.GetName() == name {
			return l.GetValue()
		}
	}
	return ""
}

func TestNewPolicyFileErrors(t *testing.T) {
	dir := t.TempDir()
	bad := filepath.Join(dir, "bad.yaml")
	os.WriteFile(bad, []byte("routes:\n  - path_prefix: x\n"), 0o600)
	typo := filepath.Join(dir, "typo.yaml")
	os.WriteFile(typo, []byte("routes:\n  - path_prefix: /x\n    scope: [a]\n"), 0o600)
	for _, tt := range []struct{ path, want string }{
		{filepath.Join(dir, "missing.yaml"), "no such file"},
		{bad, `line 2: route 0 (path_prefix "x"): must start with "/"`},
		{typo, `line 3: unknown key "scope"`},
	} {
		if _, err := NewPolicyFile(PolicyFileConfig{Path: tt.path, Parse: parseYAML}); err == nil || !strings.Contains(err.Error(), tt.want) {
			t.Errorf("%s: %v, want %q", filepath.Base(tt.path), err, tt.want)
		}
	}
}
