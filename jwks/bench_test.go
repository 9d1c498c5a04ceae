package jwks

import (
	"log/slog"
	"strconv"
	"testing"
	"time"

	"github.com/meshauth/meshauth/token"
)

// BenchmarkApplyRevocation measures what one sidecar spends on a
// revocation that arrives over NATS (the part of BenchmarkPropagation that
// grows with the number of sidecars sharing a machine, apart from the
// fan-out): verifying the signed delta, and its verifier's Revoke, which
// also evicts matching tokens from its verified-token cache of default
// size, with 10,000 revocations held. The floor is the bare signature
// check of the same message (token.VerifyJWS).
func BenchmarkApplyRevocation(b *testing.B) {
	const iss = issuerURL
	k := newTestIssuer(b, iss, "k1")
	keys := newTestKeySetCache(b, KeySetConfig{JWKSURL: "https://unused.example/jwks.json", Logger: slog.New(slog.DiscardHandler)})
	keys.Set([]token.Key{k.key}, "test")
	now := time.Now()
	msgs := make([][]byte, 1<<12)
	for i := range msgs {
		msgs[i] = k.sign(b, TypRevocation, RevocationUpdate{Issuer: iss, RevocationEntry: RevocationEntry{
			ID: strconv.Itoa(i), Seq: int64(i + 1), Kind: token.RevokeTokenID, Value: strconv.Itoa(i), RevokedAt: now, ExpiresAt: now.Add(time.Hour)}})
	}
	cache, err := token.NewCache(token.CacheConfig{})
	if err != nil {
		b.Fatal(err)
	}
	auth, err := token.NewAuthenticator([]token.Issuer{{Policy: token.Policy{Issuer: iss, Audiences: []string{"api"}}, Keys: keys}}, token.AuthenticatorOptions{Cache: cache})
	if err != nil {
		b.Fatal(err)
	}
	for i := range 10000 {
		auth.Revoke(token.Revocation{Issuer: iss, Kind: token.RevokeSubject, Value: "held" + strconv.Itoa(i), RevokedAt: now, ExpiresAt: now.Add(time.Hour)})
	}
	sub, err := NewSubscriber(SubscriberConfig{Issuer: iss, Keys: keys, Revoked: auth.Revoke, Logger: slog.New(slog.DiscardHandler)})
	if err != nil {
		b.Fatal(err)
	}
	sub.synced = true
	b.Run("apply", func(b *testing.B) {
		b.ReportAllocs()
		i := 0
		for b.Loop() {
			sub.seq = 0 // each message is new
			if sub.apply(received{kind: KindRevocation, data: msgs[i%len(msgs)]}) {
				b.Fatal("refused")
			}
			i++
		}
	})
	b.Run("floor", func(b *testing.B) {
		b.ReportAllocs()
		i := 0
		for b.Loop() {
			if _, err := token.VerifyJWS(msgs[i%len(msgs)], keys, TypRevocation); err != nil {
				b.Fatal(err)
			}
			i++
		}
	})
}
