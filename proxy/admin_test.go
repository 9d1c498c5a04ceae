package proxy

import (
	"context"
	"errors"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"

	"github.com/prometheus/client_golang/prometheus"
)

func TestAdminMetrics(t *testing.T) {
	reg := prometheus.NewRegistry()
	m, err := NewMetrics(reg)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := NewMetrics(reg); err == nil {
		t.Error("registering twice succeeded")
	}
	cfg := testConfig(t)
	cfg.Metrics = m
	up := newUpstream(t, nil)
	base := startSidecar(t, SidecarConfig{Config: cfg, Upstream: up.URL})
	get(t, base, "/orders", bearer(validToken()))
	get(t, base, "/orders", bearer(validToken()))
	get(t, base, "/orders", bearer(tokenWith(func(_, c jsonObject) { c["exp"] = 1 })))
	get(t, base, "/orders")
	get(t, base, "/public")
	get(t, base, DefaultForwardAuthPath, "X-Forwarded-Uri: /public")

	var ready error
	admin := httptest.NewServer(NewAdminHandler(reg, func(context.Context) error { return ready }))
	defer admin.Close()

	status, body := fetch(t, admin.URL+"/metrics")
	if status != 200 {
		t.Fatalf("/metrics: %d", status)
	}
	for _, want := range []string{
		`meshauth_requests_total{entry="proxy",outcome="allowed",reason="none"} 2`,
		`meshauth_requests_total{entry="proxy",outcome="denied",reason="expired"} 1`,
		`meshauth_requests_total{entry="proxy",outcome="denied",reason="no_token"} 1`,
		`meshauth_requests_total{entry="proxy",outcome="public",reason="none"} 1`,
		`meshauth_requests_total{entry="forward_auth",outcome="public",reason="none"} 1`,
		`meshauth_requests_total{entry="ext_authz_grpc",outcome="denied",reason="bad_signature"} 0`,
		`meshauth_verify_duration_seconds_count 3`,
	} {
		if !strings.Contains(body, want+"\n") {
			t.Errorf("/metrics lacks %s", want)
		}
	}

	if status, body := fetch(t, admin.URL+"/healthz"); status != 200 {
		t.Errorf("/healthz: %d %q", status, body)
	}
	if status, _ := fetch(t, admin.URL+"/readyz"); status != 200 {
		t.Errorf("/readyz when ready: %d", status)
	}
	ready = errors.New("no keys loaded")
	if status, body := fetch(t, admin.URL+"/readyz"); status != 503 || !strings.Contains(body, "no keys loaded") {
		t.Errorf("/readyz when not ready: %d %q", status, body)
	}
}

func fetch(t *testing.T, url string) (int, string) {
	t.Helper()
	resp, err := http.Get(url)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	return resp.StatusCode, string(b)
}

func TestAdminReadyzStatus(t *testing.T) {
	var ready error
	status := "trusted https://issuer.example: 2 keys from nats, 3s old\n"
	admin := httptest.NewServer(NewAdminHandlerWithStatus(prometheus.NewRegistry(), func(context.Context) error { return ready }, func() string { return status }))
	defer admin.Close()
	if code, body := fetch(t, admin.URL+"/readyz"); code != 200 || body != "ok\n"+status {
		t.Errorf("/readyz when ready: %d %q", code, body)
	}
	ready = errors.New("keys not loaded")
	if code, body := fetch(t, admin.URL+"/readyz"); code != 503 || body != "not ready: keys not loaded\n"+status {
		t.Errorf("/readyz when not ready: %d %q", code, body)
	}
}
