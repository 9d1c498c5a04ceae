package bench

import (
	"crypto"
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/rsa"
	"crypto/sha256"
	"encoding/asn1"
	"encoding/base64"
	"fmt"
	"math/big"
	"testing"
	"time"

	"github.com/meshauth/meshauth/token"
)

// BenchmarkVerifyPaired complements token's BenchmarkVerify and
// BenchmarkStdlibVerify: it times token verification and its floor, the bare
// stdlib signature check of the same token, in alternating blocks of one
// benchmark, so that both see the same load on a shared machine, and
// reports the ratio directly as verify/floor (target ≤ 1.3).
func BenchmarkVerifyPaired(b *testing.B) {
	for _, alg := range []string{"ES256", "EdDSA", "RS256"} {
		b.Run(alg, func(b *testing.B) {
			tok, key, floor := pairedToken(b, alg)
			keys := token.NewKeySet([]token.Key{key})
			v, err := token.NewVerifier(token.Policy{Issuer: "https://issuer.meshauth.example", Audiences: []string{"payments"}}, keys)
			if err != nil {
				b.Fatal(err)
			}
			const block = 8
			var tv, tf time.Duration
			n := 0
			for ; n < b.N; n += block {
				t0 := time.Now()
				for range block {
					if _, err := v.Verify(tok); err != nil {
						b.Fatal(err)
					}
				}
				t1 := time.Now()
				for range block {
					if !floor() {
						b.Fatal("floor: signature does not verify")
					}
				}
				tf += time.Since(t1)
				tv += t1.Sub(t0)
			}
			b.ReportMetric(float64(tv)/float64(tf), "verify/floor")
			b.ReportMetric(float64(tv.Nanoseconds())/float64(n), "verify-ns/op")
			b.ReportMetric(float64(tf.Nanoseconds())/float64(n), "floor-ns/op")
		})
	}
}

// pairedToken returns a typical exchanged access token signed with a fresh
// key, the key, and the floor: the signature check alone.
func pairedToken(b *testing.B, alg string) (tok []byte, key token.Key, floor func() bool) {
	enc := base64.RawURLEncoding
	now := time.Now().Unix()
	claims := fmt.Sprintf(`{"iss":"https://issuer.meshauth.example","sub":"user-8f14e45fceea167a","aud":"payments",`+
		`"exp":%d,"iat":%d,"nbf":%d,"jti":"3f2b8c1e-6d4a-4e7b-9a0c-5d1e2f3a4b5c","client_id":"orders",`+
		`"scope":"payments:read payments:write","act":{"sub":"orders"}}`, now+3600, now, now)
	header := fmt.Sprintf(`{"alg":%q,"typ":"at+jwt","kid":"k1"}`, alg)
	msg := []byte(enc.EncodeToString([]byte(header)) + "." + enc.EncodeToString([]byte(claims)))
	sum := sha256.Sum256(msg)
	var sig []byte
	switch alg {
	case "ES256":
		priv, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
		if err != nil {
			b.Fatal(err)
		}
		der, err := ecdsa.SignASN1(rand.Reader, priv, sum[:])
		if err != nil {
			b.Fatal(err)
		}
		var rs struct{ R, S *big.Int }
		if _, err := asn1.Unmarshal(der, &rs); err != nil {
			b.Fatal(err)
		}
		sig = append(rs.R.FillBytes(make([]byte, 32)), rs.S.FillBytes(make([]byte, 32))...)
		pub := &priv.PublicKey
		key = token.Key{ID: "k1", Algorithm: alg, Public: pub}
		floor = func() bool {
			h := sha256.Sum256(msg)
			return ecdsa.VerifyASN1(pub, h[:], der)
		}
	case "EdDSA":
		pub, priv, err := ed25519.GenerateKey(rand.Reader)
		if err != nil {
			b.Fatal(err)
		}
		sig = ed25519.Sign(priv, msg)
		key = token.Key{ID: "k1", Algorithm: alg, Public: pub}
		floor = func() bool { return ed25519.Verify(pub, msg, sig) }
	case "RS256":
		priv, err := rsa.GenerateKey(rand.Reader, 2048)
		if err != nil {
			b.Fatal(err)
		}
		if sig, err = rsa.SignPKCS1v15(nil, priv, crypto.SHA256, sum[:]); err != nil {
			b.Fatal(err)
		}
		pub := &priv.PublicKey
		key = token.Key{ID: "k1", Algorithm: alg, Public: pub}
		floor = func() bool {
			h := sha256.Sum256(msg)
			return rsa.VerifyPKCS1v15(pub, crypto.SHA256, h[:], sig) == nil
		}
	}
	return append(msg, "."+enc.EncodeToString(sig)...), key, floor
}
