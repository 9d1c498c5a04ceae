package jwks

import (
	"context"
	"log/slog"
	"testing"
	"testing/synctest"
	"time"

	"github.com/meshauth/meshauth/internal/inprocess"
	"github.com/meshauth/meshauth/token"
)

// TestSubscriberFetchRate: a flood of deltas that cannot be verified, as
// anyone who may publish on NATS could send, costs the issuer one
// snapshot fetch a second at most.
func TestSubscriberFetchRate(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		iss := newTestIssuer(t, issuerURL, "k1")
		iss.setSnapshot(t, Snapshot{Issuer: issuerURL, Seq: 1, KeysSeq: 1, JWKS: iss.doc, Revocations: []RevocationEntry{}, Providers: []ProviderKeys{}})
		client := inprocess.Client(iss)
		ctx, cancel := context.WithCancel(t.Context())
		defer cancel()
		keys := newTestKeySetCache(t, KeySetConfig{Issuer: issuerURL, HTTPClient: client, MinRefresh: time.Hour, MaxRefresh: time.Hour, Logger: slog.New(slog.DiscardHandler)})
		keys.Start(ctx)
		sub, err := NewSubscriber(SubscriberConfig{Issuer: issuerURL, Keys: keys, HTTPClient: client, PollInterval: time.Hour, Logger: slog.New(slog.DiscardHandler)})
		if err != nil {
			t.Fatal(err)
		}
		go sub.Run(ctx)
		synctest.Wait()
		if st := sub.Status(); st.ConfirmedAt.IsZero() {
			t.Fatalf("status after start: %+v", st)
		}
		before := iss.snapshots.Load()
		for range 10 {
			for range 100 {
				sub.in <- received{kind: KindRevocation, data: []byte("garbage")}
			}
			time.Sleep(100 * time.Millisecond)
		}
		synctest.Wait()
		if st := sub.Status(); st.Refused != 1000 {
			t.Fatalf("%d refused, want 1000", st.Refused)
		}
		if got := iss.snapshots.Load() - before; got < 1 || got > 2 {
			t.Errorf("%d snapshot fetches for 1000 unverifiable deltas in a second, want 1 or 2", got)
		}
	})
}

// TestSnapshotRefused: a snapshot that does not verify is refused and
// counted, and the last good state kept.
func TestSnapshotRefused(t *testing.T) {
	iss := newTestIssuer(t, issuerURL, "k1")
	foreign := newTestIssuer(t, "https://foreign.example", "f1")
	keys := newTestKeySetCache(t, KeySetConfig{Issuer: issuerURL, HTTPClient: inprocess.Client(iss)})
	keys.Set([]token.Key{iss.key}, SourceSnapshot)
	const seq = 5 // what the verifier has
	for _, tt := range []struct {
		name string
		body []byte
	}{
		{"garbage", []byte("not a JWS")},
		{"signed by another issuer", foreign.sign(t, TypSnapshot, Snapshot{Issuer: issuerURL, Seq: 1 << 40, KeysSeq: 1 << 40, JWKS: foreign.doc, Revocations: []RevocationEntry{}})},
		{"naming another issuer", iss.sign(t, TypSnapshot, Snapshot{Issuer: foreign.url, Seq: 1 << 40, KeysSeq: 1 << 40, JWKS: foreign.doc, Revocations: []RevocationEntry{}})},
		{"older than what the sidecar has", iss.sign(t, TypSnapshot, Snapshot{Issuer: issuerURL, Seq: 1, KeysSeq: 1, JWKS: foreign.doc, Revocations: []RevocationEntry{}})},
	} {
		t.Run(tt.name, func(t *testing.T) {
			sub, err := NewSubscriber(SubscriberConfig{Issuer: issuerURL, Keys: keys, SnapshotURL: issuerURL + "/snapshot", Logger: ksLogger(t)})
			if err != nil {
				t.Fatal(err)
			}
			sub.seq, sub.synced = seq, true
			sub.applyFetched(fetchResult{body: tt.body})
			if st := sub.Status(); st.Refused != 1 || st.LastError == "" {
				t.Errorf("status after the forged snapshot: %+v", st)
			}
			if !ksHas(keys, iss.key) || keys.Keys().Len() != 1 || sub.seq != seq {
				t.Fatal("a forged snapshot changed the state")
			}
		})
	}
}
