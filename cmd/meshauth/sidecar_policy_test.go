package main

import (
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/meshauth/meshauth/internal/natsconn"
	"github.com/meshauth/meshauth/internal/natstest"
	"github.com/meshauth/meshauth/proxy"
)

// seen is a service that keeps the identity headers it last received.
type seen struct {
	mu     sync.Mutex
	header http.Header
}

func (s *seen) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	s.mu.Lock()
	s.header = r.Header.Clone()
	s.mu.Unlock()
}

func (s *seen) get(name string) []string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.header.Values(name)
}

// TestFederatedIdentity runs an issuer that federates a provider over
// NATS, and a sidecar trusting that issuer: the provider's own client
// "web" reaches the service as the provider's, never as the local "web",
// a route restricted to the local issuer refuses it, and
// X-Meshauth-Issuer names who vouched, whatever the caller sent.
func TestFederatedIdentity(t *testing.T) {
	ns := natstest.Start(t, t.TempDir(), -1)
	provider := startIssuer(t)
	local := startIssuerWith(t, func(f *issuerFlags) {
		f.nats.URLs = ns.ClientURL()
		f.federate = append(f.federate, provider)
	})
	svc := &seen{}
	upstream := httptest.NewServer(svc)
	defer upstream.Close()
	admin := freeAddr(t)
	f := sidecarFlags{upstream: upstream.URL, audience: "payments", listen: "127.0.0.1:0", adminListen: admin,
		forwardAuthPath: proxy.DefaultForwardAuthPath, cacheMiB: 8, cacheMaxAge: time.Minute, upstreamTimeout: 5 * time.Second,
		trust: []string{local}, nats: natsconn.Flags{URLs: ns.ClientURL()}, federation: true}
	addr, _ := startSidecar(t, &f, proxy.Policy{Routes: []proxy.Route{
		{PathPrefix: "/admin", Issuers: []string{local}, Scopes: []string{"svc.admin"}},
	}})
	waitReady(t, "http://"+admin+"/readyz")
	waitFor(t, "the provider's keys over NATS", func() bool {
		return strings.Contains(fetchBody(t, "http://"+admin+"/readyz"), "federated "+provider+": 1 keys")
	})

	// The same client id, registered at both: the local one may not
	// administer, the provider's gives itself the scope.
	localWeb := clientToken(t, local, "web", "svc.read", "payments")
	providerWeb := clientToken(t, provider, "web", "svc.read svc.admin", "payments")

	forged := map[string]string{"X-Meshauth-Issuer": local, "X-Meshauth-Subject": "web", "X-Meshauth-Client": "web"}
	call := func(path, tok string) int {
		t.Helper()
		req, _ := http.NewRequest(http.MethodGet, "http://"+addr+path, nil)
		req.Header.Set("Authorization", "Bearer "+tok)
		for k, v := range forged {
			req.Header.Set(k, v)
		}
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		return resp.StatusCode
	}
	if code := call("/orders", providerWeb); code != 200 {
		t.Fatalf("the provider's token: %d", code)
	}
	for name, want := range map[string]string{
		"X-Meshauth-Subject": provider + "#web",
		"X-Meshauth-Client":  provider + "#web",
		"X-Meshauth-Issuer":  provider,
	} {
		if got := svc.get(name); len(got) != 1 || got[0] != want {
			t.Errorf("the service got %s %q, want %q", name, got, want)
		}
	}
	if code := call("/admin", providerWeb); code != 403 {
		t.Errorf("the provider's web on a route for the local issuer: %d, want 403", code)
	}
	if code := call("/orders", localWeb); code != 200 {
		t.Fatalf("the local token: %d", code)
	}
	if got := svc.get("X-Meshauth-Subject"); len(got) != 1 || got[0] != "web" {
		t.Errorf("the local web reached the service as %q", got)
	}
	if got := svc.get("X-Meshauth-Issuer"); len(got) != 1 || got[0] != local {
		t.Errorf("the local token's issuer header: %q", got)
	}
	if code := call("/admin", localWeb); code != 403 {
		t.Errorf("the local web without svc.admin: %d, want 403", code)
	}
}

// TestSidecarPolicyReload runs a sidecar whose route policy comes from its
// config file: SIGHUP applies a valid new file and refuses an invalid one,
// keeping the policy in force, and the metrics say which is live.
func TestSidecarPolicyReload(t *testing.T) {
	issuerURL := startIssuer(t)
	upstream := httptest.NewServer(&seen{})
	defer upstream.Close()
	config := filepath.Join(t.TempDir(), "sidecar.yaml")
	write := func(s string) {
		if err := os.WriteFile(config, []byte("upstream: "+upstream.URL+"\n"+s), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	write("routes:\n  - path_prefix: /admin\n    scopes: [payments.admin]\n")
	admin := freeAddr(t)
	f := sidecarFlags{upstream: upstream.URL, audience: "payments", listen: "127.0.0.1:0", adminListen: admin,
		forwardAuthPath: proxy.DefaultForwardAuthPath, cacheMaxAge: time.Minute, upstreamTimeout: 5 * time.Second,
		trust: []string{issuerURL}, configPath: config, policyCheck: -1}
	// The policy given here is the one a config file replaces.
	addr, _ := startSidecar(t, &f, proxy.Policy{DefaultScopes: []string{"never"}})
	waitReady(t, "http://"+admin+"/readyz")
	tok := clientToken(t, issuerURL, "orders", "payments.charge", "payments")
	metric := func(s string) bool { return strings.Contains(fetchBody(t, "http://"+admin+"/metrics"), s) }

	if code := get(t, "http://"+addr+"/admin", tok); code != 403 {
		t.Fatalf("start: %d, want 403", code)
	}
	if code := get(t, "http://"+addr+"/orders", tok); code != 200 {
		t.Fatalf("start, no route: %d, want 200", code)
	}
	write("routes:\n  - path_prefix: /admin\n    public: true\n")
	hangUp(t)
	waitFor(t, "the new policy", func() bool { return get(t, "http://"+addr+"/admin", "x") == 200 })
	if !metric("meshauth_policy_version{sha256=") || !metric(`} 2`) {
		t.Errorf("metrics lack version 2:\n%s", grepLines(fetchBody(t, "http://"+admin+"/metrics"), "meshauth_policy"))
	}

	write("routes:\n  - path_prefix: /admin\n  - path_prefix: /admin\n")
	hangUp(t)
	waitFor(t, "the refusal", func() bool { return metric(`meshauth_policy_reloads_total{result="refused"} 1`) })
	if code := get(t, "http://"+addr+"/admin", "x"); code != 200 {
		t.Errorf("after an invalid file: %d, want the policy in force (200)", code)
	}
}

// hangUp sends this process SIGHUP, which a running sidecar takes.
func hangUp(t *testing.T) {
	t.Helper()
	if err := syscall.Kill(os.Getpid(), syscall.SIGHUP); err != nil {
		t.Fatal(err)
	}
}
