package main

import (
	"context"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/http/httptest"
	"path/filepath"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/meshauth/meshauth/proxy"
)

func freeAddr(t *testing.T) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	return ln.Addr().String()
}

// startIssuer serves an issuer on a free loopback port until the test ends.
func startIssuer(t *testing.T) string {
	t.Helper()
	return startIssuerWith(t, nil)
}

// startIssuerWith is startIssuer with the flags changed by set, if not nil.
func startIssuerWith(t *testing.T, set func(*issuerFlags)) string {
	t.Helper()
	addr := freeAddr(t)
	f := issuerFlags{listen: addr, issuerURL: "http://" + addr, storeURL: "file:" + filepath.Join(t.TempDir(), "store"), algorithm: "ES256",
		tokenLifetime: 5 * time.Minute, keyRotation: 24 * time.Hour, keyPrePublish: 10 * time.Minute, jwksMaxAge: 5 * time.Minute}
	if set != nil {
		set(&f)
	}
	ctx, cancel := context.WithCancel(context.Background())
	ready := make(chan struct{})
	errc := make(chan error, 1)
	go func() {
		errc <- serveIssuer(ctx, &f, "admin-test-token", "BwcHBwcHBwcHBwcHBwcHBwcHBwcHBwcHBwcHBwcHBwc=", slog.New(slog.NewTextHandler(io.Discard, nil)), func(string) { close(ready) })
	}()
	select {
	case <-ready:
	case err := <-errc:
		t.Fatal(err)
	}
	t.Cleanup(func() {
		cancel()
		if err := <-errc; err != nil {
			t.Errorf("issuer stop: %v", err)
		}
	})
	return f.issuerURL
}

// clientToken registers id and returns a client_credentials token for aud.
func clientToken(t *testing.T, issuerURL, id, scope, aud string) string {
	t.Helper()
	secret := register(t, issuerURL, "--id", id, "--scope", scope, "--allowed-audience", aud)
	return tokenFor(t, issuerURL, id, secret, aud)
}

// TestSidecarEndToEnd runs the issuer and the sidecar as the binary wires
// them, in front of a real upstream, and checks what reaches it.
func TestSidecarEndToEnd(t *testing.T) {
	issuerURL := startIssuer(t)
	var hits atomic.Int32
	var gotSubject, gotSpoof atomic.Value
	upstream := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		hits.Add(1)
		gotSubject.Store(r.Header.Get("X-Meshauth-Subject"))
		gotSpoof.Store(strings.Join(r.Header.Values("X-Meshauth-Client"), ","))
		w.Write([]byte("hello from payments"))
	}))
	defer upstream.Close()

	good := clientToken(t, issuerURL, "orders", "payments.charge", "payments")
	otherAud := clientToken(t, issuerURL, "billing", "x", "ledger")

	f := sidecarFlags{upstream: upstream.URL, audience: "payments", listen: "127.0.0.1:0", adminListen: freeAddr(t),
		forwardAuthPath: proxy.DefaultForwardAuthPath, cacheMiB: 8, cacheMaxAge: time.Minute, upstreamTimeout: 5 * time.Second}
	f.trust = append(f.trust, issuerURL)
	policy := proxy.Policy{Routes: []proxy.Route{{PathPrefix: "/refunds", Scopes: []string{"payments.refund"}}, {PathPrefix: "/public", Public: true}}}
	addr, stop := startSidecar(t, &f, policy)
	waitReady(t, "http://"+f.adminListen+"/readyz")

	tests := []struct {
		name    string
		path    string
		authz   string
		status  int
		reaches bool
	}{
		{"valid token", "/charge", "Bearer " + good, 200, true},
		{"valid token, cached", "/charge", "Bearer " + good, 200, true},
		{"no token", "/charge", "", 401, false},
		{"other audience", "/charge", "Bearer " + otherAud, 401, false},
		{"tampered", "/charge", "Bearer " + good[:len(good)-4] + "AAAA", 401, false},
		{"missing scope", "/refunds/1", "Bearer " + good, 403, false},
		{"public path", "/public/status", "", 200, true},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			before := hits.Load()
			req, _ := http.NewRequest(http.MethodGet, "http://"+addr+tc.path, nil)
			if tc.authz != "" {
				req.Header.Set("Authorization", tc.authz)
			}
			req.Header.Set("X-Meshauth-Client", "spoofed")
			resp, err := http.DefaultClient.Do(req)
			if err != nil {
				t.Fatal(err)
			}
			resp.Body.Close()
			if resp.StatusCode != tc.status {
				t.Fatalf("status %d, want %d (%s)", resp.StatusCode, tc.status, resp.Header.Get("WWW-Authenticate"))
			}
			if reached := hits.Load() > before; reached != tc.reaches {
				t.Fatalf("reached upstream = %v, want %v", reached, tc.reaches)
			}
			if tc.status == 401 && !strings.HasPrefix(resp.Header.Get("WWW-Authenticate"), "Bearer") {
				t.Errorf("WWW-Authenticate = %q", resp.Header.Get("WWW-Authenticate"))
			}
			if tc.reaches && gotSpoof.Load() == "spoofed" {
				t.Error("the caller's X-Meshauth-Client reached the upstream")
			}
			if tc.status == 200 && tc.authz != "" && gotSubject.Load() != "orders" {
				t.Errorf("X-Meshauth-Subject = %v", gotSubject.Load())
			}
		})
	}

	resp, err := http.Get("http://" + f.adminListen + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	for _, want := range []string{"meshauth_requests_total", "meshauth_token_cache_hits_total", "meshauth_keyset_age_seconds", "meshauth_revocations", "meshauth_revoked_tokens_total"} {
		if !strings.Contains(string(body), want) {
			t.Errorf("metrics lack %q", want)
		}
	}
	if strings.Contains(string(body), "meshauth_token_cache_hits_total 0") {
		t.Error("a token seen twice was not served from the cache")
	}
	stop()
}

// startSidecar serves a sidecar wired as the binary does and returns its
// proxy address and a function that stops it and checks it stopped cleanly.
func startSidecar(t *testing.T, f *sidecarFlags, policy proxy.Policy) (addr string, stop func()) {
	t.Helper()
	return startSidecarWithSecret(t, f, policy, "")
}

// startSidecarWithSecret is startSidecar with the sidecar's client secret,
// which its egress needs.
func startSidecarWithSecret(t *testing.T, f *sidecarFlags, policy proxy.Policy, secret string) (addr string, stop func()) {
	t.Helper()
	trusted, err := f.trustedIssuers(nil)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	addrc := make(chan string, 1)
	errc := make(chan error, 1)
	go func() {
		errc <- serveSidecar(ctx, f, trusted, policy, secret, slog.New(slog.NewTextHandler(io.Discard, nil)), func(a string) { addrc <- a })
	}()
	select {
	case addr = <-addrc:
	case err := <-errc:
		cancel()
		t.Fatal(err)
	}
	var once bool
	stop = func() {
		if once {
			return
		}
		once = true
		cancel()
		if err := <-errc; err != nil {
			t.Errorf("sidecar stop: %v", err)
		}
	}
	t.Cleanup(stop)
	return addr, stop
}

func waitReady(t *testing.T, url string) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for {
		resp, err := http.Get(url)
		if err == nil {
			resp.Body.Close()
			if resp.StatusCode == 200 {
				return
			}
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s not ready", url)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// TestSidecarFailedStartFreesListeners checks that a start failing on a
// taken port closes the listeners it had bound already.
func TestSidecarFailedStartFreesListeners(t *testing.T) {
	issuerURL := startIssuer(t)
	taken, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer taken.Close()
	listen := freeAddr(t)
	f := sidecarFlags{upstream: "http://127.0.0.1:1", audience: "payments", listen: listen, adminListen: taken.Addr().String(),
		forwardAuthPath: proxy.DefaultForwardAuthPath, cacheMaxAge: time.Minute, upstreamTimeout: time.Second, trust: []string{issuerURL}}
	trusted, err := f.trustedIssuers(nil)
	if err != nil {
		t.Fatal(err)
	}
	err = serveSidecar(context.Background(), &f, trusted, proxy.Policy{}, "", slog.New(slog.DiscardHandler), nil)
	if err == nil || !strings.Contains(err.Error(), "listen on "+taken.Addr().String()) {
		t.Fatalf("start with the admin port taken: %v", err)
	}
	l, err := net.Listen("tcp", listen)
	if err != nil {
		t.Fatalf("the proxy's listener was left bound: %v", err)
	}
	l.Close()
}
