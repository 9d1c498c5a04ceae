package jwks

import (
	"context"
	"encoding/json"
	"log/slog"
	"net"
	"net/http"
	"net/http/httptest"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/meshauth/meshauth/internal/natstest"
	"github.com/meshauth/meshauth/issuer/store"
	"github.com/meshauth/meshauth/token"
)

// distTimeout bounds every wait of these tests; a NATS restart makes the
// ordered consumers notice missed heartbeats, which takes seconds.
const distTimeout = 30 * time.Second

func distWait(t testing.TB, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(distTimeout)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// revocationList is a RevocationLister over a slice.
type revocationList struct {
	mu   sync.Mutex
	revs []*store.Revocation
}

func (l *revocationList) RevocationsAfter(_ context.Context, _ int64, now time.Time) ([]*store.Revocation, store.ChangeSeq, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	var out []*store.Revocation
	for _, r := range l.revs {
		if r.ExpiresAt.After(now) {
			c := *r
			out = append(out, &c)
		}
	}
	return out, store.ChangeSeq{}, nil
}

// distIssuer is an issuer as verifiers see it: a keyring, and its metadata
// and JWKS served over loopback HTTP.
type distIssuer struct {
	url       string
	keyring   *Keyring
	revs      *revocationList
	jwksFetch func() int
}

func newDistIssuer(t testing.TB) *distIssuer {
	t.Helper()
	k := newTestKeyring(t, KeyringConfig{
		MaxTokenLifetime: 5 * time.Minute,
		Sealer:           newTestSealer(t),
		Store:            newFakeStore(),
		Logger:           slog.New(slog.DiscardHandler),
	})
	mustLoad(t, k)
	var (
		mu      sync.Mutex
		fetches int
	)
	iss := &distIssuer{keyring: k, revs: &revocationList{}, jwksFetch: func() int {
		mu.Lock()
		defer mu.Unlock()
		return fetches
	}}
	mux := http.NewServeMux()
	mux.HandleFunc("/.well-known/oauth-authorization-server", func(w http.ResponseWriter, r *http.Request) {
		json.NewEncoder(w).Encode(map[string]string{"issuer": iss.url, "jwks_uri": iss.url + "/jwks.json"})
	})
	mux.HandleFunc("/jwks.json", func(w http.ResponseWriter, r *http.Request) {
		mu.Lock()
		fetches++
		mu.Unlock()
		k.ServeHTTP(w, r)
	})
	srv := httptest.NewServer(mux)
	t.Cleanup(srv.Close)
	iss.url = srv.URL
	return iss
}

// publish runs a Publisher for iss on NATS at urls until the test ends.
func (iss *distIssuer) publish(t testing.TB, urls string, cfg PublisherConfig) *Publisher {
	t.Helper()
	cfg.Conn = natstest.Connect(t, urls)
	cfg.Issuer, cfg.Keyring, cfg.Revocations = iss.url, iss.keyring, iss.revs
	if cfg.Logger == nil {
		cfg.Logger = ksLogger(t)
	}
	p, err := NewPublisher(cfg)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { defer close(done); p.Run(ctx) }()
	t.Cleanup(func() { cancel(); <-done })
	return p
}

// sidecar is what a sidecar holds of one issuer: its key-set cache, a
// Subscriber, and the revocations received.
type sidecar struct {
	keys *KeySetCache
	sub  *Subscriber

	mu        sync.Mutex
	revoked   []token.Revocation
	providers map[string]*KeySetCache
}

// newSidecar follows iss over NATS at urls. Its cache polls HTTP only for
// the first load: anything it learns later came over NATS, or from the
// unknown-kid refresh, which jwksFetch counts.
func newSidecar(t testing.TB, urls string, iss *distIssuer, federation bool) *sidecar {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	sc := &sidecar{providers: map[string]*KeySetCache{}}
	sc.keys = newTestKeySetCache(t, KeySetConfig{Issuer: iss.url, MinRefresh: time.Hour, MaxRefresh: time.Hour, Logger: slog.New(slog.DiscardHandler)})
	sc.keys.Start(ctx)
	cfg := SubscriberConfig{
		Conn: natstest.Connect(t, urls), Issuer: iss.url, Keys: sc.keys, Logger: ksLogger(t),
		Revoked: func(r token.Revocation) {
			sc.mu.Lock()
			defer sc.mu.Unlock()
			sc.revoked = append(sc.revoked, r)
		},
	}
	if federation {
		cfg.Provider = func(owner string) *KeySetCache {
			sc.mu.Lock()
			defer sc.mu.Unlock()
			c := sc.providers[owner]
			if c == nil {
				c = newTestKeySetCache(t, KeySetConfig{Issuer: owner, Logger: slog.New(slog.DiscardHandler)})
				sc.providers[owner] = c
			}
			return c
		}
	}
	sub, err := NewSubscriber(cfg)
	if err != nil {
		t.Fatal(err)
	}
	sc.sub = sub
	done := make(chan struct{})
	go func() { defer close(done); sub.Run(ctx) }()
	t.Cleanup(func() { cancel(); <-done })
	return sc
}

func (sc *sidecar) has(kid string) bool { return cacheHas(sc.keys, kid) }

func cacheHas(c *KeySetCache, kid string) bool {
	if c == nil {
		return false
	}
	ks := c.Keys()
	if ks == nil {
		return false
	}
	_, ok := ks.Lookup(kid)
	return ok
}

func (sc *sidecar) provider(owner string) *KeySetCache {
	sc.mu.Lock()
	defer sc.mu.Unlock()
	return sc.providers[owner]
}

func (sc *sidecar) revokedValues() []string {
	sc.mu.Lock()
	defer sc.mu.Unlock()
	var v []string
	for _, r := range sc.revoked {
		if !slices.Contains(v, r.Value) {
			v = append(v, r.Value)
		}
	}
	slices.Sort(v)
	return v
}

func (sc *sidecar) fromNATS() bool { return sc.keys.Status().Source == SourceNATS }

func rotate(t testing.TB, k *Keyring, immediate bool) string {
	t.Helper()
	sk, err := k.Rotate(context.Background(), immediate)
	if err != nil {
		t.Fatal(err)
	}
	return sk.ID
}

func TestDistributorKeySets(t *testing.T) {
	ns := natstest.Start(t, t.TempDir(), -1)
	iss := newDistIssuer(t)
	iss.publish(t, ns.ClientURL(), PublisherConfig{})
	sidecars := []*sidecar{
		newSidecar(t, ns.ClientURL(), iss, false),
		newSidecar(t, ns.ClientURL(), iss, false),
		newSidecar(t, ns.ClientURL(), iss, false),
	}
	for _, sc := range sidecars {
		distWait(t, "the key set over NATS", sc.fromNATS)
	}
	fetches := iss.jwksFetch()

	// A scheduled rotation: the new key is pre-published.
	next := rotate(t, iss.keyring, false)
	for _, sc := range sidecars {
		distWait(t, "the pre-published key", func() bool { return sc.has(next) })
	}
	// An immediate rotation: the new key signs at once, and the update is
	// signed by a key the sidecars hold, so no one fetches anything.
	now := rotate(t, iss.keyring, true)
	for _, sc := range sidecars {
		distWait(t, "the immediately rotated key", func() bool { return sc.has(now) })
	}
	if got := iss.jwksFetch(); got != fetches {
		t.Errorf("JWKS fetched %d times during the rotations; the keys should have come over NATS", got-fetches)
	}
	for _, sc := range sidecars {
		if sc.has(next) {
			t.Error("the pending key deleted by the immediate rotation is still trusted")
		}
	}

	// A sidecar that starts after the change learns it from the bucket.
	late := newSidecar(t, ns.ClientURL(), iss, false)
	distWait(t, "the key set at a late start", func() bool { return late.fromNATS() && late.has(now) })
}

func TestDistributorRevocations(t *testing.T) {
	ns := natstest.Start(t, t.TempDir(), -1)
	iss := newDistIssuer(t)
	now := time.Now()
	stored := &store.Revocation{ID: "R0", Seq: 1, Kind: store.RevokeClient, Value: "stored-client", RevokedAt: now, ExpiresAt: now.Add(time.Hour)}
	iss.revs.revs = []*store.Revocation{
		stored,
		{ID: "R-old", Seq: 2, Kind: store.RevokeToken, Value: "expired-jti", RevokedAt: now.Add(-2 * time.Hour), ExpiresAt: now.Add(-time.Hour)},
	}
	p := iss.publish(t, ns.ClientURL(), PublisherConfig{})
	sidecars := []*sidecar{newSidecar(t, ns.ClientURL(), iss, false), newSidecar(t, ns.ClientURL(), iss, false)}

	p.NotifyRevocation(context.Background(), &store.Revocation{ID: "R1", Seq: 3, Kind: store.RevokeSubject, Value: "alice", RevokedAt: now, ExpiresAt: now.Add(time.Hour)})
	p.NotifyRevocation(context.Background(), &store.Revocation{ID: "R2", Seq: 4, Kind: store.RevokeToken, Value: "gone", RevokedAt: now.Add(-time.Hour), ExpiresAt: now.Add(-time.Minute)})
	want := []string{"alice", "stored-client"}
	for _, sc := range sidecars {
		distWait(t, "the revocations", func() bool { return slices.Equal(sc.revokedValues(), want) })
	}
	sc := sidecars[0]
	sc.mu.Lock()
	for _, r := range sc.revoked {
		if r.Value == "alice" && (r.Kind != token.RevokeSubject || !r.RevokedAt.Equal(now) || !r.ExpiresAt.Equal(now.Add(time.Hour))) {
			t.Errorf("revocation received as %+v", r)
		}
	}
	sc.mu.Unlock()

	// A sidecar that starts later rebuilds the whole list from the stream.
	late := newSidecar(t, ns.ClientURL(), iss, false)
	distWait(t, "the revocations at a late start", func() bool { return slices.Equal(late.revokedValues(), want) })
}

// putRaw writes value under key in the key-set bucket, as anyone allowed
// to publish on NATS could.
func putRaw(t testing.TB, kv jetstream.KeyValue, key string, value []byte) {
	t.Helper()
	if _, err := kv.Put(context.Background(), key, value); err != nil {
		t.Fatal(err)
	}
}

func TestDistributorRefusesForgeries(t *testing.T) {
	ns := natstest.Start(t, t.TempDir(), -1)
	iss := newDistIssuer(t)
	p := iss.publish(t, ns.ClientURL(), PublisherConfig{})
	sc := newSidecar(t, ns.ClientURL(), iss, false)
	distWait(t, "the key set over NATS", sc.fromNATS)

	js, err := jetstream.New(natstest.Connect(t, ns.ClientURL()))
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	kv, err := js.KeyValue(ctx, KeysBucket)
	if err != nil {
		t.Fatal(err)
	}
	key := keySetKey(iss.url, iss.url)
	entry, err := kv.Get(ctx, key)
	if err != nil {
		t.Fatal(err)
	}
	old := entry.Value()
	current := rotate(t, iss.keyring, false)
	distWait(t, "the rotation", func() bool { return sc.has(current) })

	foreign := newDistIssuer(t) // another issuer's keys
	forgedDoc, _ := foreign.keyring.Published()
	update := func(k *Keyring, iss, owner string, version int64, doc []byte) []byte {
		payload, err := json.Marshal(keySetUpdate{Issuer: iss, Owner: owner, Version: version, JWKS: doc})
		if err != nil {
			t.Fatal(err)
		}
		msg, err := k.SignUpdate(typKeySetUpdate, payload)
		if err != nil {
			t.Fatal(err)
		}
		return []byte(msg)
	}
	later := time.Now().Add(time.Minute).UnixMicro()
	for _, tt := range []struct {
		name  string
		key   string
		value []byte
	}{
		{"not a JWS", key, []byte("garbage")},
		{"unsigned", key, []byte(strings.Join(strings.Split(string(old), ".")[:2], ".") + ".")},
		{"signed by another issuer's key", key, update(foreign.keyring, iss.url, iss.url, later, forgedDoc)},
		{"naming another issuer", key, update(iss.keyring, foreign.url, iss.url, later, forgedDoc)},
		{"replayed older version", key, old},
		{"dated far in the future", key, update(iss.keyring, iss.url, iss.url, time.Now().Add(time.Hour).UnixMicro(), forgedDoc)},
		{"filed under another owner's key", keySetKey(iss.url, foreign.url), update(iss.keyring, iss.url, iss.url, later, forgedDoc)},
		{"relayed provider with federation off", keySetKey(iss.url, foreign.url), update(iss.keyring, iss.url, foreign.url, later, forgedDoc)},
	} {
		t.Run(tt.name, func(t *testing.T) {
			refused := sc.sub.Stats().Refused
			putRaw(t, kv, tt.key, tt.value)
			distWait(t, "the refusal", func() bool { return sc.sub.Stats().Refused > refused })
			// (A message signed with an unknown kid makes the cache
			// refresh over HTTPS once, rate-limited: the same keys.)
			if !sc.has(current) || sc.keys.Keys().Len() != 2 {
				t.Fatal("the keys changed")
			}
			forgedKid := foreign.keyring.state.Load().kids[0]
			if sc.has(forgedKid) {
				t.Fatal("a forged key is trusted")
			}
		})
	}

	// A forged revocation is refused; the genuine one after it goes through.
	forgedRev, err := foreign.keyring.SignUpdate(typRevocation, []byte(`{"iss":"`+iss.url+`","jti":"F","kind":"sub","value":"bob","expires_at":"2999-01-01T00:00:00Z"}`))
	if err != nil {
		t.Fatal(err)
	}
	if _, err := js.Publish(ctx, revocationSubject(iss.url, "F"), []byte(forgedRev)); err != nil {
		t.Fatal(err)
	}
	now := time.Now()
	p.NotifyRevocation(ctx, &store.Revocation{ID: "G", Seq: 1, Kind: store.RevokeSubject, Value: "carol", RevokedAt: now, ExpiresAt: now.Add(time.Hour)})
	distWait(t, "the genuine revocation", func() bool { return slices.Contains(sc.revokedValues(), "carol") })
	if slices.Contains(sc.revokedValues(), "bob") {
		t.Fatal("a forged revocation was applied")
	}
}

func TestDistributorNATSRestart(t *testing.T) {
	dir := t.TempDir()
	ns := natstest.Start(t, dir, -1)
	port := ns.Addr().(*net.TCPAddr).Port
	iss := newDistIssuer(t)
	p := iss.publish(t, ns.ClientURL(), PublisherConfig{})
	sc := newSidecar(t, ns.ClientURL(), iss, false)
	distWait(t, "the key set over NATS", sc.fromNATS)
	first := iss.keyring.state.Load().kids[0]

	ns.Shutdown()
	ns.WaitForShutdown()
	// NATS is down: the sidecar verifies with the last good keys, and the
	// issuer goes on rotating and revoking.
	if _, ok := sc.keys.Lookup(first); !ok {
		t.Fatal("keys lost while NATS is down")
	}
	next := rotate(t, iss.keyring, false)
	now := time.Now()
	p.NotifyRevocation(context.Background(), &store.Revocation{ID: "R", Seq: 1, Kind: store.RevokeToken, Value: "while-down", RevokedAt: now, ExpiresAt: now.Add(time.Hour)})

	natstest.Start(t, dir, port)
	distWait(t, "the rotation made while NATS was down", func() bool { return sc.has(next) })
	distWait(t, "the revocation made while NATS was down", func() bool { return slices.Contains(sc.revokedValues(), "while-down") })
	// And it keeps following.
	again := rotate(t, iss.keyring, false)
	distWait(t, "a rotation after the restart", func() bool { return sc.has(again) })
}

func TestDistributorCluster(t *testing.T) {
	servers, _ := natstest.Cluster(t, t.TempDir(), 3)
	var all []string
	for _, s := range servers {
		all = append(all, s.ClientURL())
	}
	iss := newDistIssuer(t)
	iss.publish(t, strings.Join(all, ","), PublisherConfig{Replicas: 3})
	var sidecars []*sidecar
	for i := range servers {
		// Each sidecar on its own node first, the others to fail over to.
		urls := append([]string{all[i]}, slices.Delete(slices.Clone(all), i, i+1)...)
		sidecars = append(sidecars, newSidecar(t, strings.Join(urls, ","), iss, false))
	}
	for _, sc := range sidecars {
		distWait(t, "the key set over NATS", sc.fromNATS)
	}
	servers[2].Shutdown()
	servers[2].WaitForShutdown()
	next := rotate(t, iss.keyring, true)
	for _, sc := range sidecars {
		distWait(t, "the rotation with a node down", func() bool { return sc.has(next) })
	}
}

func TestDistributorFederation(t *testing.T) {
	ns := natstest.Start(t, t.TempDir(), -1)
	provider := newDistIssuer(t)
	ctx, cancel := context.WithCancel(context.Background())
	t.Cleanup(cancel)
	relayed := newTestKeySetCache(t, KeySetConfig{Issuer: provider.url, Logger: slog.New(slog.DiscardHandler)})
	relayed.Start(ctx)

	home := newDistIssuer(t)
	home.publish(t, ns.ClientURL(), PublisherConfig{Providers: map[string]*KeySetCache{provider.url: relayed}})
	federated := newSidecar(t, ns.ClientURL(), home, true)
	isolated := newSidecar(t, ns.ClientURL(), home, false)

	first := provider.keyring.state.Load().kids[0]
	distWait(t, "the provider's keys", func() bool {
		c := federated.provider(provider.url)
		return cacheHas(c, first) && c.Status().Source == SourceNATS
	})
	distWait(t, "the refusal of the relayed set", func() bool { return isolated.sub.Stats().Refused > 0 })
	if isolated.provider(provider.url) != nil {
		t.Fatal("federation off, yet a provider was added")
	}

	// The provider rotates; once the home issuer sees it, so do sidecars.
	next := rotate(t, provider.keyring, false)
	if _, ok := relayed.Lookup(next); !ok {
		t.Fatal("the home issuer's cache did not load the provider's new key")
	}
	distWait(t, "the provider's rotation", func() bool { return cacheHas(federated.provider(provider.url), next) })
}

func TestNewPublisherAndSubscriberCheckConfig(t *testing.T) {
	nc, err := nats.Connect("nats://127.0.0.1:1", nats.RetryOnFailedConnect(true), nats.MaxReconnects(0))
	if err != nil {
		t.Fatal(err)
	}
	defer nc.Close()
	iss := newDistIssuer(t)
	keys := newTestKeySetCache(t, KeySetConfig{Issuer: iss.url})
	for _, cfg := range []PublisherConfig{
		{Issuer: iss.url, Keyring: iss.keyring, Revocations: iss.revs},
		{Conn: nc, Keyring: iss.keyring, Revocations: iss.revs},
		{Conn: nc, Issuer: iss.url, Revocations: iss.revs},
		{Conn: nc, Issuer: iss.url, Keyring: iss.keyring},
		{Conn: nc, Issuer: iss.url, Keyring: iss.keyring, Revocations: iss.revs, Reassert: -time.Second},
	} {
		if _, err := NewPublisher(cfg); err == nil {
			t.Errorf("NewPublisher(%+v) accepted", cfg)
		}
	}
	for _, cfg := range []SubscriberConfig{
		{Issuer: iss.url, Keys: keys},
		{Conn: nc, Keys: keys},
		{Conn: nc, Issuer: iss.url},
	} {
		if _, err := NewSubscriber(cfg); err == nil {
			t.Errorf("NewSubscriber(%+v) accepted", cfg)
		}
	}
}
