package bench

import (
	"context"
	"crypto/rand"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"net/url"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats.go"

	"github.com/meshauth/meshauth/internal/natstest"
	"github.com/meshauth/meshauth/issuer"
	"github.com/meshauth/meshauth/issuer/keys"
	"github.com/meshauth/meshauth/issuer/store"
	"github.com/meshauth/meshauth/issuer/store/storeurl"
	"github.com/meshauth/meshauth/jwks"
	"github.com/meshauth/meshauth/token"
)

// propagationTimeout bounds the wait for one event to reach every
// subscriber; a benchmark that exceeds it fails rather than hangs.
const propagationTimeout = 10 * time.Second

// snapshotPoll is the sidecars' polling interval on the snapshot path of
// BenchmarkPropagation: short, so that a run holds enough events.
const snapshotPoll = 250 * time.Millisecond

// propagationEnv is a real issuer (its HTTP endpoints, store, keyring and
// distributor) and n sidecars, each with its own key-set cache, verifier
// (with a verified-token cache) and Subscriber, and, on the NATS path, its
// own NATS connection.
type propagationEnv struct {
	natsURL   string
	issuerURL string
	store     store.Store
	keyring   *keys.Keyring
	authz     string // the client's Basic credentials
	caches    []*jwks.KeySetCache
	auths     []*token.Authenticator

	// watched is the token whose refusal is awaited: each sidecar, once
	// its verifier refuses it, counts once.
	mu      sync.Mutex
	watched []byte
	refused []bool
	left    int
	done    chan struct{}
}

// newPropagationEnv starts an issuer and n sidecars, over NATS if
// withNATS, until stop is called, so that no environment loads the
// machine while another is measured.
func newPropagationEnv(b *testing.B, n int, withNATS bool) (e *propagationEnv, stop func()) {
	ctx, cancel := context.WithCancel(context.Background())
	var (
		wg    sync.WaitGroup
		stops []func()
	)
	stop = func() {
		cancel()
		wg.Wait()
		for _, f := range slices.Backward(stops) {
			f()
		}
	}
	b.Cleanup(stop)
	st, err := storeurl.Open(ctx, "file:"+filepath.Join(b.TempDir(), "store"))
	if err != nil {
		b.Fatal(err)
	}
	stops = append(stops, func() { st.Close() })
	// connect connects to NATS until stop: a connection left open would
	// try to reconnect to the stopped server while others are measured.
	connect := func(url string) *nats.Conn {
		nc, err := nats.Connect(url, natstest.Options()...)
		if err != nil {
			b.Fatal(err)
		}
		stops = append(stops, nc.Close)
		return nc
	}
	kek := make([]byte, keys.KEKSize)
	rand.Read(kek)
	sealer, err := keys.NewSealer(kek)
	if err != nil {
		b.Fatal(err)
	}
	quiet := slog.New(slog.DiscardHandler)
	k, err := keys.NewKeyring(keys.KeyringConfig{MaxTokenLifetime: 5 * time.Minute, Sealer: sealer, Store: st, Logger: quiet})
	if err != nil {
		b.Fatal(err)
	}
	if err := k.Load(ctx); err != nil {
		b.Fatal(err)
	}
	e = &propagationEnv{store: st, keyring: k}
	hs := httptest.NewUnstartedServer(nil)
	e.issuerURL = "http://" + hs.Listener.Addr().String()
	dcfg := keys.DistributorConfig{Issuer: e.issuerURL, Keyring: k, Store: st, Logger: quiet}
	if withNATS {
		ns := natstest.Start(b, b.TempDir(), -1)
		stops = append(stops, ns.Shutdown)
		e.natsURL = ns.ClientURL()
		dcfg.Conn = connect(e.natsURL)
	}
	dist, err := keys.NewDistributor(dcfg)
	if err != nil {
		b.Fatal(err)
	}
	wg.Go(func() { dist.Run(ctx) })
	srv, err := issuer.New(issuer.Config{IssuerURL: e.issuerURL, Store: st, Keys: k, Revocations: dist, Snapshot: dist, Logger: quiet})
	if err != nil {
		b.Fatal(err)
	}
	hs.Config.Handler = srv
	hs.Start()
	stops = append(stops, hs.Close)
	id := "bench-propagation"
	e.authz = basicAuth(id, registerBench(b, st, issuer.ClientMetadata{ClientID: id, Scope: "read", AllowedAudiences: []string{"api"}}))

	for i := range n {
		// Polling the JWKS as rarely as allowed: whatever the sidecars
		// learn during the benchmark comes from the distribution.
		c, err := jwks.NewKeySetCache(jwks.KeySetConfig{Issuer: e.issuerURL, MinRefresh: time.Hour, MaxRefresh: time.Hour, Logger: quiet})
		if err != nil {
			b.Fatal(err)
		}
		c.Start(ctx)
		cache, err := token.NewCache(token.CacheConfig{MaxBytes: 1 << 20, Shards: 16})
		if err != nil {
			b.Fatal(err)
		}
		auth, err := token.NewAuthenticator([]token.Issuer{{Policy: token.Policy{Issuer: e.issuerURL, Audiences: []string{"api"}}, Keys: c}}, token.AuthenticatorOptions{Cache: cache})
		if err != nil {
			b.Fatal(err)
		}
		scfg := jwks.SubscriberConfig{Issuer: e.issuerURL, Keys: c, Revoked: e.sink(i, auth), PollInterval: snapshotPoll, Logger: quiet}
		if withNATS {
			// Polling out of the way: the NATS path alone is measured.
			scfg.Conn, scfg.PollInterval = connect(e.natsURL), time.Hour
		}
		sub, err := jwks.NewSubscriber(scfg)
		if err != nil {
			b.Fatal(err)
		}
		wg.Go(func() { sub.Run(ctx) })
		e.caches = append(e.caches, c)
		e.auths = append(e.auths, auth)
		for deadline := time.Now().Add(propagationTimeout); sub.Status().ConfirmedAt.IsZero(); time.Sleep(time.Millisecond) {
			if time.Now().After(deadline) {
				b.Fatal("a subscriber did not get the first snapshot")
			}
		}
	}
	return e, stop
}

// sink is the revocation sink of sidecar i: its verifier's Revoke, then,
// as a sidecar would on the next request, the check of the watched token.
func (e *propagationEnv) sink(i int, auth *token.Authenticator) token.RevocationSink {
	var c token.Claims
	return func(r token.Revocation) {
		auth.Revoke(r)
		e.mu.Lock()
		watched := e.watched
		e.mu.Unlock()
		// Verified outside the lock: the sidecars check at once, as
		// they would in their own processes.
		if watched == nil {
			return
		}
		if err := auth.VerifyInto(watched, &c); err == nil || err.(*token.Error).Reason != token.Revoked {
			return
		}
		e.mu.Lock()
		defer e.mu.Unlock()
		if string(e.watched) == string(watched) && !e.refused[i] {
			e.refused[i] = true
			if e.left--; e.left == 0 {
				close(e.done)
			}
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
	stored, err := e.store.ListSigningKeys(ctx)
	if err != nil {
		b.Fatal(err)
	}
	for _, old := range stored {
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

// revokeEvent takes a token, untimed, that every sidecar accepts (and
// caches), then revokes it with an RFC 7009 request to the issuer and
// returns how long until every sidecar refuses it.
func (e *propagationEnv) revokeEvent(b *testing.B) time.Duration {
	b.StopTimer()
	tok := e.token(b)
	var c token.Claims
	for _, auth := range e.auths {
		if err := auth.VerifyInto(tok, &c); err != nil {
			b.Fatal(err)
		}
	}
	e.mu.Lock()
	e.watched, e.refused, e.left, e.done = tok, make([]bool, len(e.auths)), len(e.auths), make(chan struct{})
	done := e.done
	e.mu.Unlock()
	b.StartTimer()

	start := time.Now()
	e.post(b, "/revoke", url.Values{"token": {string(tok)}})
	select {
	case <-done:
	case <-time.After(propagationTimeout):
		b.Fatal("a sidecar did not refuse the revoked token in time")
	}
	took := time.Since(start)
	e.mu.Lock()
	e.watched = nil
	e.mu.Unlock()
	return took
}

// token returns a client_credentials token for api.
func (e *propagationEnv) token(b *testing.B) []byte {
	body := e.post(b, "/token", url.Values{"grant_type": {"client_credentials"}, "audience": {"api"}})
	const field = `"access_token":"`
	i := strings.Index(body, field)
	if i < 0 {
		b.Fatalf("token response %s", body)
	}
	rest := body[i+len(field):]
	return []byte(rest[:strings.IndexByte(rest, '"')])
}

// post sends form to the issuer's path as the client and returns the
// answer, which must be 200.
func (e *propagationEnv) post(b *testing.B, path string, form url.Values) string {
	req, _ := http.NewRequest(http.MethodPost, e.issuerURL+path, strings.NewReader(form.Encode()))
	req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	req.Header.Set("Authorization", e.authz)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		b.Fatal(err)
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(resp.Body)
	if resp.StatusCode != http.StatusOK {
		b.Fatalf("%s: %d %s", path, resp.StatusCode, body)
	}
	return string(body)
}

// fanOutFloor is the floor of BenchmarkPropagation: core NATS messages of
// an update's size published to n plain subscribers, each on its own
// connection; the fan-out alone, without the issuer, signing or
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

// BenchmarkPropagation measures how long a revocation takes from the RFC
// 7009 request to the issuer until all N sidecars refuse the token, and a
// key rotation (Keyring.Rotate, immediate) until all N hold the new key:
// over NATS (nats/...), and with NATS down, through the snapshot that
// sidecars poll every snapshotPoll (snapshot/...). Each sidecar has its
// own connection, verifier and subscriber. The floor is a bare core NATS
// publish of a message of the same size to N plain subscribers on the same
// server. Targets: p99 under 50 ms at N = 100 over NATS; within the
// polling interval + 1 s through the snapshot. What one sidecar spends
// applying a revocation is jwks's BenchmarkApplyRevocation.
func BenchmarkPropagation(b *testing.B) {
	run := func(name string, n int, event func(*testing.B) time.Duration) {
		b.Run(fmt.Sprintf("%s/subscribers=%d", name, n), func(b *testing.B) {
			lats := make([]time.Duration, 0, b.N)
			for range b.N {
				lats = append(lats, event(b))
			}
			reportLatencies(b, true, lats)
		})
	}
	for _, n := range []int{1, 10, 100} {
		e, stop := newPropagationEnv(b, n, true)
		floor := newFanOutFloor(b, e.natsURL, n)
		run("nats/rotate", n, e.rotateEvent)
		run("nats/revoke", n, e.revokeEvent)
		run("floor", n, floor.event)
		stop()
		down, stop := newPropagationEnv(b, n, false)
		run("snapshot/revoke", n, down.revokeEvent)
		stop()
	}
}
