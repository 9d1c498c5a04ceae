package jwks

import (
	"context"
	"crypto"
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/rand"
	"crypto/rsa"
	"crypto/sha256"
	"encoding/json"
	"log/slog"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/lestrrat-go/jwx/v2/jwa"
	"github.com/lestrrat-go/jwx/v2/jws"

	"github.com/meshauth/meshauth/token"
)

// benchPayload is a typical RFC 9068 access token's claims.
var benchPayload = []byte(`{"iss":"https://issuer.mesh.internal","sub":"orders","aud":"payments","client_id":"orders","scope":"payments:charge payments:refund","iat":1893456000,"nbf":1893456000,"exp":1893456300,"jti":"b9c2f1d4e8a7436b9f0e2d5c7a1b3e6f","act":{"sub":"frontend"}}`)

// BenchmarkSign measures Keyring.Sign for each algorithm against two
// references in the same run: "floor", the bare standard-library signature
// over an input of the same size (nothing can be faster), and "jwx",
// jws.Sign with the same key and header.
func BenchmarkSign(b *testing.B) {
	for _, alg := range algs {
		st, clk := newFakeStore(), newClock()
		s := newTestSealer(b)
		cfg := testConfig(st, clk, s)
		cfg.Algorithm = alg
		k := newTestKeyring(b, cfg)
		mustLoad(b, k)
		keys, err := st.ListSigningKeys(context.Background())
		if err != nil {
			b.Fatal(err)
		}
		priv, err := openPrivateKey(keys[0], s)
		if err != nil {
			b.Fatal(err)
		}
		token, err := k.Sign("at+jwt", benchPayload)
		if err != nil {
			b.Fatal(err)
		}
		// The signing input of a real token: header.payload.
		input := []byte(token[:strings.LastIndexByte(token, '.')])

		b.Run(alg, func(b *testing.B) {
			b.ReportAllocs()
			for b.Loop() {
				if _, err := k.Sign("at+jwt", benchPayload); err != nil {
					b.Fatal(err)
				}
			}
		})
		b.Run(alg+"-parallel", func(b *testing.B) {
			b.ReportAllocs()
			b.RunParallel(func(pb *testing.PB) {
				for pb.Next() {
					if _, err := k.Sign("at+jwt", benchPayload); err != nil {
						b.Error(err)
						return
					}
				}
			})
		})
		b.Run(alg+"-floor", func(b *testing.B) {
			b.ReportAllocs()
			for b.Loop() {
				var err error
				switch priv := priv.(type) {
				case *ecdsa.PrivateKey:
					h := sha256.Sum256(input)
					_, err = ecdsa.SignASN1(rand.Reader, priv, h[:])
				case ed25519.PrivateKey:
					ed25519.Sign(priv, input)
				case *rsa.PrivateKey:
					h := sha256.Sum256(input)
					_, err = rsa.SignPKCS1v15(nil, priv, crypto.SHA256, h[:])
				}
				if err != nil {
					b.Fatal(err)
				}
			}
		})
		b.Run(alg+"-jwx", func(b *testing.B) {
			hdr := jws.NewHeaders()
			for name, v := range map[string]string{jws.KeyIDKey: keys[0].ID, jws.TypeKey: "at+jwt"} {
				if err := hdr.Set(name, v); err != nil {
					b.Fatal(err)
				}
			}
			opt := jws.WithKey(jwa.SignatureAlgorithm(alg), priv, jws.WithProtectedHeaders(hdr))
			b.ReportAllocs()
			for b.Loop() {
				if _, err := jws.Sign(benchPayload, opt); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}

// BenchmarkApplyRevocation measures what one sidecar spends on a
// revocation that arrives over NATS (the part of BenchmarkPropagation that
// grows with the number of sidecars sharing a machine, apart from the
// fan-out): verifying the signed delta, and its verifier's Revoke, which
// also evicts matching tokens from its verified-token cache of default
// size, with 10,000 revocations held. The floor is the bare signature
// check of the same message (token.VerifyJWS).
func BenchmarkApplyRevocation(b *testing.B) {
	k := newTestKeyring(b, testConfig(newFakeStore(), newClock(), newTestSealer(b)))
	mustLoad(b, k)
	doc, _ := k.Published()
	parsed, err := token.ParseJWKS(doc)
	if err != nil {
		b.Fatal(err)
	}
	keys := newTestKeySetCache(b, KeySetConfig{JWKSURL: "https://unused.example/jwks.json", Logger: slog.New(slog.DiscardHandler)})
	keys.Set(parsed, "test")
	const iss = "https://issuer.example"
	now := time.Now()
	msgs := make([][]byte, 1<<12)
	for i := range msgs {
		payload, _ := json.Marshal(revocationUpdate{Issuer: iss, revocationEntry: revocationEntry{
			ID: strconv.Itoa(i), Seq: int64(i + 1), Kind: token.RevokeTokenID, Value: strconv.Itoa(i), RevokedAt: now, ExpiresAt: now.Add(time.Hour)}})
		m, err := k.SignUpdate(typRevocation, payload)
		if err != nil {
			b.Fatal(err)
		}
		msgs[i] = []byte(m)
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
			if sub.apply(received{kind: kindRevocation, data: msgs[i%len(msgs)]}) {
				b.Fatal("refused")
			}
			i++
		}
	})
	b.Run("floor", func(b *testing.B) {
		b.ReportAllocs()
		i := 0
		for b.Loop() {
			if _, err := token.VerifyJWS(msgs[i%len(msgs)], keys, typRevocation); err != nil {
				b.Fatal(err)
			}
			i++
		}
	})
}
