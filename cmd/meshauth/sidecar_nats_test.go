package main

import (
	"log/slog"
	"sync"
	"testing"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/meshauth/meshauth/jwks"
	"github.com/meshauth/meshauth/token"
)

// TestProviderRelayedTwice checks that two trusted issuers relaying the
// same provider at once add it once: one cache, one set of metrics (a
// second registration would panic).
func TestProviderRelayedTwice(t *testing.T) {
	keys := &trustedKeys{reg: prometheus.NewRegistry()}
	auth, err := token.NewAuthenticator([]token.Issuer{{Policy: token.Policy{Issuer: "https://a.example", Audiences: []string{"orders"}}, Keys: token.NewKeySet(nil)}}, token.AuthenticatorOptions{})
	if err != nil {
		t.Fatal(err)
	}
	log := slog.New(slog.DiscardHandler)
	var relays []func(string) *jwks.KeySetCache
	for _, iss := range []string{"https://a.example", "https://b.example"} {
		relays = append(relays, providerTrust(trustedIssuer{Issuer: iss, Audiences: []string{"orders"}}, keys, auth, log))
	}
	const provider = "https://partner.example"
	var wg sync.WaitGroup
	got := make([]*jwks.KeySetCache, 16)
	for i := range got {
		wg.Go(func() { got[i] = relays[i%2](provider) })
	}
	wg.Wait()
	for i := range got {
		if got[i] != got[0] || got[i] == nil {
			t.Fatalf("relay %d got another cache (or none) for the provider", i)
		}
	}
	if c, configured := keys.lookup(provider); c == nil || configured || len(keys.issuers) != 1 {
		t.Errorf("trusted keys: %v, configured %v, issuers %v", c, configured, keys.issuers)
	}
}
