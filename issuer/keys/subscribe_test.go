package keys

import (
	"context"
	"log/slog"
	"net/http"
	"path/filepath"
	"sync/atomic"
	"testing"
	"testing/synctest"
	"time"

	"github.com/meshauth/meshauth/internal/inprocess"
	"github.com/meshauth/meshauth/issuer/store"
	"github.com/meshauth/meshauth/issuer/store/filestore"
	"github.com/meshauth/meshauth/jwks"
	"github.com/meshauth/meshauth/token"
)

// bubbleIssuer is an issuer answering in process at issuerURL, for tests
// in a synctest bubble: keys and revocations in a real store, metadata,
// JWKS and snapshot.
type bubbleIssuer struct {
	store     store.Store
	keyring   *Keyring
	dist      *Distributor
	client    *http.Client
	snapshots atomic.Int64
}

const issuerURL = "https://issuer.example"

func newBubbleIssuer(t *testing.T) *bubbleIssuer {
	st, err := filestore.Open(filepath.Join(t.TempDir(), "store"))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { st.Close() })
	b := &bubbleIssuer{store: st}
	b.keyring = newTestKeyring(t, KeyringConfig{MaxTokenLifetime: 5 * time.Minute, Sealer: newTestSealer(t), Store: st, Logger: slog.New(slog.DiscardHandler)})
	mustLoad(t, b.keyring)
	if b.dist, err = NewDistributor(DistributorConfig{Issuer: issuerURL, Keyring: b.keyring, Store: st, Logger: slog.New(slog.DiscardHandler)}); err != nil {
		t.Fatal(err)
	}
	mux := http.NewServeMux()
	mux.HandleFunc("/.well-known/oauth-authorization-server", func(w http.ResponseWriter, r *http.Request) {
		w.Write([]byte(`{"issuer":"` + issuerURL + `","jwks_uri":"` + issuerURL + `/jwks.json","meshauth_snapshot_uri":"` + issuerURL + `/snapshot"}`))
	})
	mux.Handle("/jwks.json", b.keyring)
	mux.HandleFunc("/snapshot", func(w http.ResponseWriter, r *http.Request) {
		b.snapshots.Add(1)
		b.dist.ServeHTTP(w, r)
	})
	b.client = inprocess.Client(mux)
	return b
}

// follow starts a subscriber of b until ctx ends and returns it and the
// revocations it passes on.
func (b *bubbleIssuer) follow(t *testing.T, ctx context.Context, poll time.Duration) (*jwks.Subscriber, *atomic.Int64) {
	keys := newTestKeySetCache(t, jwks.KeySetConfig{Issuer: issuerURL, HTTPClient: b.client, MinRefresh: time.Hour, MaxRefresh: time.Hour, Logger: slog.New(slog.DiscardHandler)})
	keys.Start(ctx)
	var revoked atomic.Int64
	sub, err := jwks.NewSubscriber(jwks.SubscriberConfig{Issuer: issuerURL, Keys: keys, HTTPClient: b.client, PollInterval: poll, Logger: slog.New(slog.DiscardHandler),
		Revoked: func(token.Revocation) { revoked.Add(1) }})
	if err != nil {
		t.Fatal(err)
	}
	go sub.Run(ctx)
	return sub, &revoked
}

// TestSubscriberPolls: without NATS, a revocation reaches the subscriber
// within the polling interval; polls of an unchanged state are answered
// 304 and confirm it.
func TestSubscriberPolls(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		b := newBubbleIssuer(t)
		ctx, cancel := context.WithCancel(t.Context())
		defer cancel()
		sub, revoked := b.follow(t, ctx, 10*time.Second)
		synctest.Wait()
		if st := sub.Status(); st.ConfirmedAt.IsZero() || st.NATS != "off" {
			t.Fatalf("status after start: %+v", st)
		}
		r := &store.Revocation{ID: "r1", Kind: store.RevokeSubject, Value: "alice", RevokedAt: time.Now(), ExpiresAt: time.Now().Add(time.Hour)}
		if err := b.store.AddRevocation(ctx, r); err != nil {
			t.Fatal(err)
		}
		time.Sleep(11 * time.Second) // the poll is jittered by a tenth
		synctest.Wait()
		if revoked.Load() != 1 {
			t.Fatalf("%d revocations after a polling interval, want 1", revoked.Load())
		}
		confirmed := sub.Status().ConfirmedAt
		time.Sleep(11 * time.Second)
		synctest.Wait()
		if st := sub.Status(); !st.ConfirmedAt.After(confirmed) || revoked.Load() != 1 || st.Age > 11*time.Second {
			t.Errorf("after an unchanged poll: %+v, %d revocations", st, revoked.Load())
		}
	})
}
