package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http/httptest"
	"os/exec"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/meshauth/meshauth/internal/natsconn"
	"github.com/meshauth/meshauth/proxy"
)

// startInstalledNATS runs the nats-server binary on PATH, with JetStream,
// on a free loopback port until the test ends, and returns its URL and
// version; it skips the test if there is none.
func startInstalledNATS(t *testing.T) (url, version string) {
	t.Helper()
	bin, err := exec.LookPath("nats-server")
	if err != nil {
		t.Skip("no nats-server on PATH")
	}
	out, err := exec.Command(bin, "--version").Output()
	if err != nil {
		t.Skipf("nats-server --version: %v", err)
	}
	version = strings.TrimPrefix(strings.TrimSpace(string(out)), "nats-server: v")
	addr := freeAddr(t)
	host, port, _ := net.SplitHostPort(addr)
	cmd := exec.Command(bin, "-a", host, "-p", port, "-js", "-sd", t.TempDir())
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { cmd.Process.Kill(); cmd.Wait() })
	deadline := time.Now().Add(10 * time.Second)
	for {
		c, err := net.Dial("tcp", addr)
		if err == nil {
			c.Close()
			return "nats://" + addr, version
		}
		if time.Now().After(deadline) {
			t.Fatalf("nats-server %s did not start", version)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// TestOldNATSServer runs the issuer and a sidecar on the nats-server
// installed on the machine (2.9 here, older than per-message TTL): a
// revocation still reaches the sidecar, and nothing is left on the server
// that would outlive the revocation.
func TestOldNATSServer(t *testing.T) {
	natsURL, version := startInstalledNATS(t)
	t.Logf("nats-server %s", version)
	issuerURL := startIssuerWith(t, func(f *issuerFlags) { f.nats.URLs = natsURL })
	upstream := httptest.NewServer(&recorder{})
	defer upstream.Close()
	admin := freeAddr(t)
	f := sidecarFlags{upstream: upstream.URL, audience: "payments", listen: "127.0.0.1:0", adminListen: admin,
		forwardAuthPath: proxy.DefaultForwardAuthPath, cacheMiB: 8, cacheMaxAge: time.Minute, upstreamTimeout: 5 * time.Second,
		trust: []string{issuerURL}, nats: natsconn.Flags{URLs: natsURL}, federation: true}
	addr, _ := startSidecar(t, &f, proxy.Policy{})
	waitReady(t, "http://"+admin+"/readyz")

	tok := clientToken(t, issuerURL, "web", "payments.charge", "payments")
	if code := get(t, "http://"+addr+"/charge", tok); code != 200 {
		t.Fatalf("before the revocation: %d", code)
	}
	if err := run(context.Background(), []string{"revoke", "client", "web", "--issuer", issuerURL}, io.Discard, io.Discard); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "the revocation", func() bool { return get(t, "http://"+addr+"/charge", tok) == 401 })

	nc, err := nats.Connect(natsURL)
	if err != nil {
		t.Fatal(err)
	}
	defer nc.Close()
	js, err := jetstream.New(nc)
	if err != nil {
		t.Fatal(err)
	}
	names := js.StreamNames(context.Background())
	var kept []string
	for name := range names.Name() {
		st, err := js.Stream(context.Background(), name)
		if err != nil {
			t.Fatal(err)
		}
		info, err := st.Info(context.Background())
		if err != nil {
			t.Fatal(err)
		}
		if info.State.Msgs > 0 && !info.Config.AllowMsgTTL && info.Config.MaxAge == 0 {
			kept = append(kept, fmt.Sprintf("%s (%d messages, no expiry)", name, info.State.Msgs))
		}
	}
	if err := names.Err(); err != nil && !errors.Is(err, jetstream.ErrEndOfData) {
		t.Fatal(err)
	}
	if len(kept) > 0 {
		t.Errorf("nats-server %s keeps forever: %s", version, strings.Join(kept, ", "))
	}
}
