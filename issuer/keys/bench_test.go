package keys

import (
	"context"
	"crypto"
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/rand"
	"crypto/rsa"
	"crypto/sha256"
	"strings"
	"testing"

	"github.com/lestrrat-go/jwx/v2/jwa"
	"github.com/lestrrat-go/jwx/v2/jws"
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
