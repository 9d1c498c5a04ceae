package token

import (
	"crypto/sha256"
	"fmt"
	"testing"
	"time"
)

// BenchmarkAuthenticatorCacheHit measures a token answered from the Cache,
// with no revocation held and with 10,000 (of every kind, none of the
// token): compare it with BenchmarkCacheHitFloor.
func BenchmarkAuthenticatorCacheHit(b *testing.B) {
	for _, revocations := range []int{0, 10000} {
		cache, err := NewCache(CacheConfig{})
		if err != nil {
			b.Fatal(err)
		}
		a, err := NewAuthenticator([]Issuer{{
			Policy: Policy{Issuer: "https://issuer.meshauth.example", Audiences: []string{"payments"}},
			Keys:   fixture().set,
		}}, AuthenticatorOptions{Cache: cache})
		if err != nil {
			b.Fatal(err)
		}
		revokeMany(a, revocations/4, time.Now())
		for _, alg := range benchAlgorithms {
			tok := benchToken(alg)
			b.Run(fmt.Sprintf("%s/revocations=%d", alg, revocations), func(b *testing.B) {
				var c Claims
				if err := a.VerifyInto(tok, &c); err != nil {
					b.Fatal(err)
				}
				hits := cache.Stats().Hits
				b.ReportAllocs()
				b.SetBytes(int64(len(tok)))
				for b.Loop() {
					if err := a.VerifyInto(tok, &c); err != nil {
						b.Fatal(err)
					}
				}
				if cache.Stats().Hits == hits {
					b.Fatal("no cache hit")
				}
			})
		}
	}
}

// BenchmarkCacheHitFloor is the floor of a cache hit: the SHA-256 digest
// of the token and a Go map lookup of it.
func BenchmarkCacheHitFloor(b *testing.B) {
	for _, alg := range benchAlgorithms {
		tok := benchToken(alg)
		m := map[[sha256.Size]byte]*Claims{sha256.Sum256(tok): new(Claims)}
		b.Run(alg, func(b *testing.B) {
			b.ReportAllocs()
			b.SetBytes(int64(len(tok)))
			for b.Loop() {
				if m[sha256.Sum256(tok)] == nil {
					b.Fatal("not found")
				}
			}
		})
	}
}

// BenchmarkRevocationCheck measures what revocations add to every
// verification: the check of a token that none matches, with none held and
// with 10,000 (of every kind).
func BenchmarkRevocationCheck(b *testing.B) {
	for _, revocations := range []int{0, 10000} {
		a, err := NewAuthenticator([]Issuer{{
			Policy: Policy{Issuer: "https://issuer.meshauth.example", Audiences: []string{"payments"}},
			Keys:   fixture().set,
		}}, AuthenticatorOptions{})
		if err != nil {
			b.Fatal(err)
		}
		var c Claims
		if err := a.VerifyInto(benchToken("ES256"), &c); err != nil {
			b.Fatal(err)
		}
		c.SessionID = "g-bench" // a lookup for every kind
		revokeMany(a, revocations/4, time.Now())
		b.Run(fmt.Sprintf("revocations=%d", revocations), func(b *testing.B) {
			b.ReportAllocs()
			for b.Loop() {
				if a.denied.check(&c, a.now) != nil {
					b.Fatal("refused")
				}
			}
		})
	}
}
