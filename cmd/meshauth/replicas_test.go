package main

import (
	"context"
	"io"
	"net/http/httptest"
	"testing"
	"time"

	"github.com/meshauth/meshauth/internal/pgtest"
	"github.com/meshauth/meshauth/proxy"
)

// TestReplicasAgreeOnRotation runs two issuer replicas on one PostgreSQL
// database behind one issuer URL. After an immediate rotation on replica A,
// a token A signs with the new key is accepted at once by a sidecar that
// reaches the issuer through replica B: B knows the new key as soon as A
// has stored it, not at its next reload.
func TestReplicasAgreeOnRotation(t *testing.T) {
	pg := pgtest.Schema(t)
	addrB := freeAddr(t)
	issuerURL := "http://" + addrB
	var addrA string
	startIssuerWith(t, func(f *issuerFlags) { addrA, f.issuerURL, f.storeURL = f.listen, issuerURL, pg })
	startIssuerWith(t, func(f *issuerFlags) { f.listen, f.issuerURL, f.storeURL = addrB, issuerURL, pg })
	replicaA := "http://" + addrA

	upstream := httptest.NewServer(&recorder{})
	defer upstream.Close()
	admin := freeAddr(t)
	f := sidecarFlags{upstream: upstream.URL, audience: "payments", listen: "127.0.0.1:0", adminListen: admin,
		forwardAuthPath: proxy.DefaultForwardAuthPath, cacheMiB: 8, cacheMaxAge: time.Minute, upstreamTimeout: 5 * time.Second,
		trust: []string{issuerURL}}
	addr, _ := startSidecar(t, &f, proxy.Policy{})
	waitReady(t, "http://"+admin+"/readyz")

	secret := register(t, issuerURL, "--id", "web", "--scope", "payments.charge", "--allowed-audience", "payments")
	if code := get(t, "http://"+addr+"/charge", tokenFor(t, replicaA, "web", secret, "payments")); code != 200 {
		t.Fatalf("token of the first key: %d", code)
	}
	if err := run(context.Background(), []string{"keys", "rotate", "--issuer", replicaA, "--immediate"}, io.Discard, io.Discard); err != nil {
		t.Fatal(err)
	}
	if code := get(t, "http://"+addr+"/charge", tokenFor(t, replicaA, "web", secret, "payments")); code != 200 {
		t.Fatalf("token of the key replica A rotated to, at a sidecar that reaches replica B: %d", code)
	}
}
