package keys

import (
	"context"
	"encoding/json"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"path/filepath"
	"slices"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/nats-io/nats.go"

	"github.com/meshauth/meshauth/internal/discovery"
	"github.com/meshauth/meshauth/internal/natstest"
	"github.com/meshauth/meshauth/internal/testwait"
	"github.com/meshauth/meshauth/issuer/store"
	"github.com/meshauth/meshauth/issuer/store/filestore"
	"github.com/meshauth/meshauth/jwks"
	"github.com/meshauth/meshauth/token"
)

// distTimeout bounds every wait of these tests.
const distTimeout = 30 * time.Second

func distWait(t testing.TB, what string, cond func() bool) {
	t.Helper()
	testwait.For(t, distTimeout, testwait.Holds(what, cond))
}

// distIssuer is an issuer as verifiers see it: a keyring and revocations
// in a real store, and its metadata, JWKS and snapshot served over
// loopback HTTP.
type distIssuer struct {
	url     string
	store   store.Store
	keyring *Keyring
	dist    *Distributor
	clock   *clock

	jwksFetches     atomic.Int64
	snapshotFetches atomic.Int64
	// down makes every request fail with 503, as an unreachable issuer.
	down atomic.Bool
}

// newDistIssuer starts an issuer whose clock reads real time until the
// test sets it.
func newDistIssuer(t testing.TB) *distIssuer {
	t.Helper()
	st, err := filestore.Open(filepath.Join(t.TempDir(), "store"))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { st.Close() })
	iss := &distIssuer{store: st, clock: newClock()}
	iss.clock.Set(time.Now())
	iss.keyring = newTestKeyring(t, KeyringConfig{
		MaxTokenLifetime: 5 * time.Minute, Sealer: newTestSealer(t), Store: st,
		Logger: slog.New(slog.DiscardHandler), Now: iss.clock.Now,
	})
	mustLoad(t, iss.keyring)
	mux := http.NewServeMux()
	mux.HandleFunc("/.well-known/oauth-authorization-server", func(w http.ResponseWriter, r *http.Request) {
		json.NewEncoder(w).Encode(map[string]string{"issuer": iss.url, "jwks_uri": iss.url + "/jwks.json", discovery.MemberSnapshotURI: iss.url + "/snapshot"})
	})
	mux.HandleFunc("/jwks.json", func(w http.ResponseWriter, r *http.Request) {
		iss.jwksFetches.Add(1)
		iss.keyring.ServeHTTP(w, r)
	})
	mux.HandleFunc("/snapshot", func(w http.ResponseWriter, r *http.Request) {
		iss.snapshotFetches.Add(1)
		iss.dist.ServeHTTP(w, r)
	})
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if iss.down.Load() {
			http.Error(w, "down", http.StatusServiceUnavailable)
			return
		}
		mux.ServeHTTP(w, r)
	}))
	t.Cleanup(srv.Close)
	iss.url = srv.URL
	iss.dist = iss.newDistributor(t, nil, nil)
	return iss
}

func (iss *distIssuer) newDistributor(t testing.TB, nc *nats.Conn, providers map[string]*jwks.KeySetCache) *Distributor {
	t.Helper()
	d, err := NewDistributor(DistributorConfig{Issuer: iss.url, Keyring: iss.keyring, Store: iss.store, Providers: providers, Conn: nc, Logger: ksLogger(t), Now: iss.clock.Now})
	if err != nil {
		t.Fatal(err)
	}
	return d
}

// publish makes the issuer publish its deltas on NATS at urls until the
// test ends.
func (iss *distIssuer) publish(t testing.TB, urls string, providers map[string]*jwks.KeySetCache) {
	t.Helper()
	iss.dist = iss.newDistributor(t, natstest.Connect(t, urls), providers)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { defer close(done); iss.dist.Run(ctx) }()
	t.Cleanup(func() { cancel(); <-done })
}

// newNATSIssuer starts a NATS server and an issuer publishing on it until
// the test ends, and returns the issuer and the server's URL.
func newNATSIssuer(t testing.TB) (*distIssuer, string) {
	t.Helper()
	ns := natstest.Start(t, t.TempDir(), -1)
	iss := newDistIssuer(t)
	iss.publish(t, ns.ClientURL(), nil)
	return iss, ns.ClientURL()
}

// revoke stores a revocation of kind and value, lasting an hour, and
// notifies the distributor, as the issuer does.
func (iss *distIssuer) revoke(t testing.TB, kind, value string) *store.Revocation {
	t.Helper()
	now := time.Now()
	r := &store.Revocation{ID: value + "-" + kind, Kind: kind, Value: value, RevokedAt: now, ExpiresAt: now.Add(time.Hour)}
	if err := iss.store.AddRevocation(context.Background(), r); err != nil {
		t.Fatal(err)
	}
	iss.dist.NotifyRevocation(context.Background(), r)
	return r
}

func (iss *distIssuer) rotate(t testing.TB, immediate bool) string {
	t.Helper()
	sk, err := iss.keyring.Rotate(context.Background(), immediate)
	if err != nil {
		t.Fatal(err)
	}
	return sk.ID
}

// sidecar is what a sidecar holds of one issuer: its key-set cache, a
// Subscriber, and the revocations received.
type sidecar struct {
	keys *jwks.KeySetCache
	sub  *jwks.Subscriber

	mu        sync.Mutex
	revoked   []token.Revocation
	providers map[string]*jwks.KeySetCache
}

type sidecarOptions struct {
	natsURLs   string        // "" for none
	poll       time.Duration // of the snapshot; default an hour
	federation bool
}

// newSidecar follows iss. Its cache polls the JWKS only for the first
// load: anything it learns later came from the distribution, or from the
// unknown-kid refresh, which iss counts.
func newSidecar(t testing.TB, iss *distIssuer, o sidecarOptions) *sidecar {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	sc := &sidecar{providers: map[string]*jwks.KeySetCache{}}
	sc.keys = newTestKeySetCache(t, jwks.KeySetConfig{Issuer: iss.url, MinRefresh: time.Hour, MaxRefresh: time.Hour, Logger: slog.New(slog.DiscardHandler)})
	sc.keys.Start(ctx)
	cfg := jwks.SubscriberConfig{
		Issuer: iss.url, Keys: sc.keys, Logger: ksLogger(t), PollInterval: o.poll,
		Revoked: func(r token.Revocation) {
			sc.mu.Lock()
			defer sc.mu.Unlock()
			sc.revoked = append(sc.revoked, r)
		},
	}
	if cfg.PollInterval == 0 {
		cfg.PollInterval = time.Hour
	}
	if o.natsURLs != "" {
		cfg.Conn = natstest.Connect(t, o.natsURLs)
	}
	if o.federation {
		cfg.Provider = func(owner string) *jwks.KeySetCache {
			sc.mu.Lock()
			defer sc.mu.Unlock()
			c := sc.providers[owner]
			if c == nil {
				c = newTestKeySetCache(t, jwks.KeySetConfig{Issuer: owner, Logger: slog.New(slog.DiscardHandler)})
				sc.providers[owner] = c
			}
			return c
		}
	}
	sub, err := jwks.NewSubscriber(cfg)
	if err != nil {
		t.Fatal(err)
	}
	sc.sub = sub
	done := make(chan struct{})
	go func() { defer close(done); sub.Run(ctx) }()
	t.Cleanup(func() { cancel(); <-done })
	distWait(t, "the first snapshot", func() bool { return !sub.Status().ConfirmedAt.IsZero() })
	return sc
}

func (sc *sidecar) has(kid string) bool { return cacheHas(sc.keys, kid) }

func cacheHas(c *jwks.KeySetCache, kid string) bool {
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

func (sc *sidecar) provider(owner string) *jwks.KeySetCache {
	sc.mu.Lock()
	defer sc.mu.Unlock()
	return sc.providers[owner]
}

// hasRevoked reports whether the sidecar received a revocation of value,
// by its issuer.
func (sc *sidecar) hasRevoked(iss *distIssuer, value string) bool {
	sc.mu.Lock()
	defer sc.mu.Unlock()
	return slices.ContainsFunc(sc.revoked, func(r token.Revocation) bool { return r.Value == value && r.Issuer == iss.url })
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

func newTestKeySetCache(t testing.TB, cfg jwks.KeySetConfig) *jwks.KeySetCache {
	t.Helper()
	if cfg.Logger == nil {
		cfg.Logger = ksLogger(t)
	}
	c, err := jwks.NewKeySetCache(cfg)
	if err != nil {
		t.Fatal(err)
	}
	return c
}

func ksLogger(t testing.TB) *slog.Logger {
	return slog.New(slog.NewTextHandler(t.Output(), nil))
}
