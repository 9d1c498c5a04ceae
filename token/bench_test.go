package token

import (
	"crypto"
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/rsa"
	"crypto/sha256"
	"fmt"
	"strings"
	"testing"
	"time"
)

// benchAlgorithms are the algorithms whose cost the package must keep close
// to the bare signature check.
var benchAlgorithms = []string{"ES256", "EdDSA", "RS256"}

// benchToken returns a typical exchanged access token (RFC 9068 with an
// RFC 8693 act claim), valid for an hour from now.
func benchToken(alg string) []byte {
	now := time.Now().Unix()
	claims := fmt.Sprintf(`{"iss":"https://issuer.meshauth.example","sub":"user-8f14e45fceea167a","aud":"payments",`+
		`"exp":%d,"iat":%d,"nbf":%d,"jti":"3f2b8c1e-6d4a-4e7b-9a0c-5d1e2f3a4b5c","client_id":"orders",`+
		`"scope":"payments:read payments:write","act":{"sub":"orders"}}`, now+3600, now, now)
	return compact(header(alg), claims, alg, fixture().signer(alg))
}

func BenchmarkVerify(b *testing.B) {
	v, err := NewVerifier(Policy{Issuer: "https://issuer.meshauth.example", Audiences: []string{"payments"}}, fixture().set)
	if err != nil {
		b.Fatal(err)
	}
	for _, alg := range benchAlgorithms {
		tok := benchToken(alg)
		b.Run(alg, func(b *testing.B) {
			b.ReportAllocs()
			b.SetBytes(int64(len(tok)))
			for b.Loop() {
				if _, err := v.Verify(tok); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}

// BenchmarkStdlibVerify is the floor: only the standard library's signature
// check (with its hash) of the same signing input, the signature already
// decoded and, for ECDSA, already in ASN.1 form.
func BenchmarkStdlibVerify(b *testing.B) {
	k := fixture()
	for _, alg := range benchAlgorithms {
		tok := string(benchToken(alg))
		dot := strings.LastIndexByte(tok, '.')
		msg := []byte(tok[:dot])
		sig, err := enc.DecodeString(tok[dot+1:])
		if err != nil {
			b.Fatal(err)
		}
		var check func() bool
		switch alg {
		case "ES256":
			der := appendECDSADER(nil, sig)
			pub := &k.es256.PublicKey
			check = func() bool {
				h := sha256.Sum256(msg)
				return ecdsa.VerifyASN1(pub, h[:], der)
			}
		case "EdDSA":
			pub := k.ed.Public().(ed25519.PublicKey)
			check = func() bool { return ed25519.Verify(pub, msg, sig) }
		case "RS256":
			pub := &k.rsa.PublicKey
			check = func() bool {
				h := sha256.Sum256(msg)
				return rsa.VerifyPKCS1v15(pub, crypto.SHA256, h[:], sig) == nil
			}
		}
		b.Run(alg, func(b *testing.B) {
			b.ReportAllocs()
			b.SetBytes(int64(len(tok)))
			for b.Loop() {
				if !check() {
					b.Fatal("signature does not verify")
				}
			}
		})
	}
}

// BenchmarkRefuse measures refusals that must stay cheap under a flood:
// before any signature check.
func BenchmarkRefuse(b *testing.B) {
	v := testVerifier(b, testPolicy())
	for _, tt := range hostileTokens() {
		if tt.name != "alg none" && tt.name != "unknown kid" && tt.name != "jku" {
			continue
		}
		b.Run(strings.ReplaceAll(tt.name, " ", "_"), func(b *testing.B) {
			b.ReportAllocs()
			for b.Loop() {
				if _, err := v.Verify(tt.tok); err == nil {
					b.Fatal("accepted")
				}
			}
		})
	}
}
