package main

import (
	"context"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/meshauth/meshauth/internal/natsconn"
	"github.com/meshauth/meshauth/internal/natstest"
	"github.com/meshauth/meshauth/jwks"
	"github.com/meshauth/meshauth/proxy"
	"github.com/meshauth/meshauth/xds"
)

// TestNATSPush runs an issuer and a sidecar wired to NATS as the binary
// does: an immediate rotation reaches the sidecar before the first token
// of the new key does, without an HTTPS fetch, and a revocation makes it
// refuse a token that has not expired.
func TestNATSPush(t *testing.T) {
	ns := natstest.Start(t, t.TempDir(), -1)
	issuerURL := startIssuerWith(t, func(f *issuerFlags) { f.nats.URLs = ns.ClientURL() })
	rec := &recorder{}
	addr, admin := startNATSSidecar(t, issuerURL, ns.ClientURL(), rec)
	waitFor(t, "the keys from the snapshot", func() bool { return strings.Contains(fetchBody(t, "http://"+admin+"/readyz"), "1 keys from snapshot") })

	t.Setenv(envAdminToken, "admin-test-token")
	secret := register(t, issuerURL, "--id", "web", "--scope", "payments.charge", "--allowed-audience", "payments")
	if err := run(context.Background(), []string{"keys", "rotate", "--issuer", issuerURL, "--immediate"}, io.Discard, io.Discard); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "the rotated key over NATS", func() bool { return strings.Contains(fetchBody(t, "http://"+admin+"/readyz"), "2 keys from nats") })
	tok := tokenFor(t, issuerURL, "web", secret, "payments")
	if code := get(t, "http://"+addr+"/charge", tok); code != 200 {
		t.Fatalf("token of the new key: %d", code)
	}
	metrics := fetchBody(t, "http://"+admin+"/metrics")
	if !regexp.MustCompile(`meshauth_keyset_fetches_total\{issuer="[^"]+"\} 1\n`).MatchString(metrics) {
		t.Errorf("the sidecar fetched the JWKS again; want the one load at start:\n%s", grepLines(metrics, "meshauth_keyset"))
	}
	if !strings.Contains(metrics, `meshauth_keyset_source{issuer="`+issuerURL+`",source="nats"} 1`) {
		t.Errorf("metrics lack the key source:\n%s", grepLines(metrics, "meshauth_keyset"))
	}

	if err := run(context.Background(), []string{"revoke", "client", "web", "--issuer", issuerURL}, io.Discard, io.Discard); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "the revocation over NATS", func() bool { return get(t, "http://"+addr+"/charge", tok) == 401 })
	hits := rec.hits.Load()
	if code := get(t, "http://"+addr+"/charge", tok); code != 401 || rec.hits.Load() != hits {
		t.Errorf("revoked token: %d, reached the upstream: %v", code, rec.hits.Load() != hits)
	}
}

// startNATSSidecar runs a sidecar for audience payments in front of
// upstream, trusting issuerURL and following it over NATS at natsURL (if
// not empty), and returns its proxy and admin addresses once it is ready.
func startNATSSidecar(t *testing.T, issuerURL, natsURL string, upstream http.Handler) (addr, admin string) {
	t.Helper()
	srv := httptest.NewServer(upstream)
	t.Cleanup(srv.Close)
	admin = freeAddr(t)
	f := sidecarFlags{upstream: srv.URL, audience: "payments", listen: "127.0.0.1:0", adminListen: admin,
		forwardAuthPath: proxy.DefaultForwardAuthPath, cacheMiB: 8, cacheMaxAge: time.Minute, upstreamTimeout: 5 * time.Second,
		trust: []string{issuerURL}, nats: natsconn.Flags{URLs: natsURL}, federation: true}
	addr, _ = startSidecar(t, &f, proxy.Policy{})
	waitReady(t, "http://"+admin+"/readyz")
	return addr, admin
}

func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(15 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

func fetchBody(t *testing.T, url string) string {
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
	return string(b)
}

func grepLines(text, substr string) string {
	var out []string
	for l := range strings.SplitSeq(text, "\n") {
		if strings.Contains(l, substr) {
			out = append(out, l)
		}
	}
	return strings.Join(out, "\n")
}

// TestXDSKeysOverNATS checks meshauth xds's --nats wiring: an issuer's key
// cache followed there takes a rotation from NATS at once, without fetching the
// JWKS again, so Envoy's jwt_authn gets the key before any token uses it.
func TestXDSKeysOverNATS(t *testing.T) {
	ns := natstest.Start(t, t.TempDir(), -1)
	issuerURL := startIssuerWith(t, func(f *issuerFlags) { f.nats.URLs = ns.ClientURL() })
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	nc := natstest.Connect(t, ns.ClientURL())
	cache, err := jwks.NewKeySetCache(jwks.KeySetConfig{Issuer: issuerURL})
	if err != nil {
		t.Fatal(err)
	}
	cache.Start(ctx)
	go followPushedKeys(nc, slog.New(slog.DiscardHandler))(ctx, xds.Issuer{Issuer: issuerURL}, cache)
	waitFor(t, "the keys from the snapshot", func() bool { return cache.Status().Source == jwks.SourceSnapshot })
	t.Setenv(envAdminToken, "admin-test-token")
	if err := run(context.Background(), []string{"keys", "rotate", "--issuer", issuerURL, "--immediate"}, io.Discard, io.Discard); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "the rotated key over NATS", func() bool { return cache.Keys().Len() == 2 })
	if st := cache.Status(); st.Source != "nats" || st.Fetches != 1 {
		t.Errorf("key source %q after %d fetches; want nats after the one load at start", st.Source, st.Fetches)
	}
}

// TestFederatedRevocationBySubject: the local issuer federates a provider
// whose client alice has the same name as a local one. Revoking subject
// alice at the local issuer refuses the local alice's token at a sidecar,
// never the provider's: a revocation applies to the issuer that made it.
func TestFederatedRevocationBySubject(t *testing.T) {
	ns := natstest.Start(t, t.TempDir(), -1)
	provider := startIssuer(t)
	local := startIssuerWith(t, func(f *issuerFlags) { f.nats.URLs = ns.ClientURL(); f.federate = []string{provider} })
	addr, _ := startNATSSidecar(t, local, ns.ClientURL(), &recorder{})

	localAlice := clientToken(t, local, "alice", "payments.charge", "payments")
	foreignAlice := clientToken(t, provider, "alice", "payments.charge", "payments")
	waitFor(t, "the provider's keys relayed", func() bool { return get(t, "http://"+addr+"/charge", foreignAlice) == 200 })
	if code := get(t, "http://"+addr+"/charge", localAlice); code != 200 {
		t.Fatalf("local alice before the revocation: %d", code)
	}
	if err := run(context.Background(), []string{"revoke", "subject", "alice", "--issuer", local}, io.Discard, io.Discard); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "the revocation", func() bool { return get(t, "http://"+addr+"/charge", localAlice) == 401 })
	if code := get(t, "http://"+addr+"/charge", foreignAlice); code != 200 {
		t.Errorf("the provider's alice after the local issuer revoked subject alice: %d, want 200", code)
	}
}
