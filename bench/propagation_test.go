package bench

import (
	"context"
	"crypto/rand"
	"encoding/json"
	"fmt"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats.go"

	"github.com/meshauth/meshauth/internal/natstest"
	"github.com/meshauth/meshauth/issuer/store"
	"github.com/meshauth/meshauth/issuer/store/storeurl"
	"github.com/meshauth/meshauth/jwks"
	"github.com/meshauth/meshauth/token"
)

// propagationTimeout bounds the wait for one event to reach every
// subscriber; a benchmark that exceeds it fails rather than hangs.
const propagationTimeout = 10 * time.Second

// propagationEnv is an issuer publishing over NATS and n sidecars, each
// with its own connection, key-set cache and revocation callback.
type propagationEnv struct {
	natsURL string
	store   store.Store
	keyring *jwks.Keyring
	pub     *jwks.Publisher
	caches  []*jwks.KeySetCache

	// revoked counts, per revocation value, the subscribers that have it.
	mu      sync.Mutex
	revoked map[string]int
	allDone map[string]chan struct{}
}

func newPropagationEnv(b *testing.B, n int) *propagationEnv {
	ns := natstest.Start(b, b.TempDir(), -1)
	ctx, cancel := context.WithCancel(context.Background())
	var wg sync.WaitGroup
	b.Cleanup(func() { cancel(); wg.Wait() })
	st, err := storeurl.Open(ctx, "file:"+filepath.Join(b.TempDir(), "store"))
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { st.Close() })
	kek := make([]byte, jwks.KEKSize)
	rand.Read(kek)
	sealer, err := jwks.NewSealer(kek)
	if err != nil {
		b.Fatal(err)
	}
	quiet := slog.New(slog.DiscardHandler)
	k, err := jwks.NewKeyring(jwks.KeyringConfig{MaxTokenLifetime: 5 * time.Minute, Sealer: sealer, Store: st, Logger: quiet})
	if err != nil {
		b.Fatal(err)
	}
	if err := k.Load(ctx); err != nil {
		b.Fatal(err)
	}
	e := &propagationEnv{natsURL: ns.ClientURL(), store: st, keyring: k, revoked: map[string]int{}, allDone: map[string]chan struct{}{}}

	var issuerURL string
	mux := http.NewServeMux()
	mux.HandleFunc("/.well-known/oauth-authorization-server", func(w http.ResponseWriter, _ *http.Request) {
		json.NewEncoder(w).Encode(map[string]string{"issuer": issuerURL, "jwks_uri": issuerURL + "/jwks.json"})
	})
	mux.Handle("/jwks.json", k)
	srv := httptest.NewServer(mux)
	b.Cleanup(srv.Close)
	issuerURL = srv.URL

	e.pub, err = jwks.NewPublisher(jwks.PublisherConfig{Conn: natstest.Connect(b, e.natsURL), Issuer: issuerURL, Keyring: k, Revocations: st, Logger: quiet})
	if err != nil {
		b.Fatal(err)
	}
	wg.Go(func() { e.pub.Run(ctx) })
	for range n {
		// Polling as rarely as allowed: whatever the sidecars learn during
		// the benchmark comes over NATS.
		c, err := jwks.NewKeySetCache(jwks.KeySetConfig{Issuer: issuerURL, MinRefresh: time.Hour, MaxRefresh: time.Hour, Logger: quiet})
		if err != nil {
			b.Fatal(err)
		}
		c.Start(ctx)
		sub, err := jwks.NewSubscriber(jwks.SubscriberConfig{Conn: natstest.Connect(b, e.natsURL), Issuer: issuerURL, Keys: c, Revoked: e.revoke, Logger: quiet})
		if err != nil {
			b.Fatal(err)
		}
		wg.Go(func() { sub.Run(ctx) })
		e.caches = append(e.caches, c)
	}
	e.waitKeys(b, func(c *jwks.KeySetCache) bool { return c.Status().Source == jwks.SourceNATS })
	return e
}

// revoke is every subscriber's Revoked: it counts, and signals when all
// have a revocation.
func (e *propagationEnv) revoke(r token.Revocation) {
	e.mu.Lock()
	defer e.mu.Unlock()
	e.revoked[r.Value]++
	if e.revoked[r.Value] == len(e.caches) {
		if done := e.allDone[r.Value]; done != nil {
			close(done)
		}
	}
}

// waitKeys waits until every subscriber's key-set cache satisfies ok.
func (e *propagationEnv) waitKeys(b *testing.B, ok func(*jwks.KeySetCache) bool) {
	timeout := time.NewTimer(propagationTimeout)
	defer timeout.Stop()
	for _, c := range e.caches {
		for {
			changed := c.Changed()
			if c.Ready() && ok(c) {
				break
			}
			select {
			case <-changed:
			case <-timeout.C:
				b.Fatal("a subscriber did not get the update in time")
			}
		}
	}
}

// rotateEvent rotates the key at once and returns how long until every
// subscriber holds the new key. Afterwards, untimed, it deletes the older
// keys, so that the key set keeps its size from event to event.
func (e *propagationEnv) rotateEvent(b *testing.B) time.Duration {
	ctx := context.Background()
	start := time.Now()
	sk, err := e.keyring.Rotate(ctx, true)
	if err != nil {
		b.Fatal(err)
	}
	e.waitKeys(b, func(c *jwks.KeySetCache) bool { _, ok := c.Keys().Lookup(sk.ID); return ok })
	took := time.Since(start)

	b.StopTimer()
	keys, err := e.store.ListSigningKeys(ctx)
	if err != nil {
		b.Fatal(err)
	}
	for _, old := range keys {
		if old.ID != sk.ID {
			if err := e.store.DeleteSigningKey(ctx, old.ID); err != nil {
				b.Fatal(err)
			}
		}
	}
	if err := e.keyring.Load(ctx); err != nil {
		b.Fatal(err)
	}
	e.waitKeys(b, func(c *jwks.KeySetCache) bool { return c.Keys().Len() == 1 })
	b.StartTimer()
	return took
}

// revokeEvent revokes a subject and returns how long until every
// subscriber has passed the revocation to its verifier.
func (e *propagationEnv) revokeEvent(b *testing.B) time.Duration {
	ctx := context.Background()
	now := time.Now()
	r := &store.Revocation{ID: rand.Text(), Kind: store.RevokeSubject, Value: rand.Text(), RevokedAt: now, ExpiresAt: now.Add(5 * time.Minute)}
	done := make(chan struct{})
	e.mu.Lock()
	e.allDone[r.Value] = done
	e.mu.Unlock()
	start := time.Now()
	// As the issuer does: store, then notify.
	if err := e.store.AddRevocation(ctx, r); err != nil {
		b.Fatal(err)
	}
	e.pub.NotifyRevocation(ctx, r)
	select {
	case <-done:
	case <-time.After(propagationTimeout):
		b.Fatal("a subscriber did not get the revocation in time")
	}
	return time.Since(start)
}

// fanOutFloor is the floor of BenchmarkPropagation: core NATS messages of
// an update's size published to n plain subscribers, each on its own
// connection; the fan-out alone, without JetStream, signing or
// verification.
type fanOutFloor struct {
	pub      *nats.Conn
	received chan struct{}
	n        int
	payload  []byte
}

func newFanOutFloor(b *testing.B, natsURL string, n int) *fanOutFloor {
	f := &fanOutFloor{pub: natstest.Connect(b, natsURL), received: make(chan struct{}, n), n: n, payload: make([]byte, 600)}
	for range n {
		nc := natstest.Connect(b, natsURL)
		if _, err := nc.Subscribe("bench.floor", func(*nats.Msg) { f.received <- struct{}{} }); err != nil {
			b.Fatal(err)
		}
		if err := nc.Flush(); err != nil {
			b.Fatal(err)
		}
	}
	return f
}

// event publishes one message and returns how long until every subscriber
// has it.
func (f *fanOutFloor) event(b *testing.B) time.Duration {
	start := time.Now()
	if err := f.pub.Publish("bench.floor", f.payload); err != nil {
		b.Fatal(err)
	}
	timeout := time.After(propagationTimeout)
	for range f.n {
		select {
		case <-f.received:
		case <-timeout:
			b.Fatal("fan-out floor: a subscriber missed the message")
		}
	}
	return time.Since(start)
}

// BenchmarkPropagation measures how long a key rotation (Keyring.Rotate,
// immediate) and a revocation (stored, then NotifyRevocation) take from the
// issuer's action to the moment all N subscribers enforce it: the new key
// in every key-set cache, the revocation passed to every verifier. Each
// subscriber has its own NATS connection. The floor is a bare core NATS
// publish of a message of the same size to N plain subscribers on the same
// server. Target: p99 under 50 ms at N = 100.
func BenchmarkPropagation(b *testing.B) {
	for _, n := range []int{1, 10, 100} {
		e := newPropagationEnv(b, n)
		floor := newFanOutFloor(b, e.natsURL, n)
		for _, ev := range []struct {
			name  string
			event func(*testing.B) time.Duration
		}{
			{"rotate", e.rotateEvent},
			{"revoke", e.revokeEvent},
			{"floor", floor.event},
		} {
			b.Run(fmt.Sprintf("%s/subscribers=%d", ev.name, n), func(b *testing.B) {
				lats := make([]time.Duration, 0, b.N)
				for range b.N {
					lats = append(lats, ev.event(b))
				}
				reportLatencies(b, true, lats)
			})
		}
	}
}
