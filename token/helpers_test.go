package token

import (
	"crypto"
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/elliptic"
	"crypto/hmac"
	"crypto/rand"
	"crypto/rsa"
	"crypto/sha256"
	"crypto/sha512"
	"crypto/x509"
	"encoding/asn1"
	"encoding/base64"
	"encoding/pem"
	"fmt"
	"math/big"
	"os"
	"sync"
	"testing"
	"time"
)

// The test keys are fixed, so that fuzz corpus entries signed in one run
// stay meaningful in the next.

func testECKey(curve elliptic.Curve, seed string) *ecdsa.PrivateKey {
	size := (curve.Params().BitSize + 7) / 8
	h := sha512.Sum512([]byte(seed))
	scalar := make([]byte, size)
	copy(scalar[max(0, size-len(h)):], h[:min(size, len(h))])
	if curve == elliptic.P521() {
		scalar[0], scalar[1] = 0, 0
	}
	k, err := ecdsa.ParseRawPrivateKey(curve, scalar)
	if err != nil {
		panic(err)
	}
	return k
}

func testRSAKey(name string) *rsa.PrivateKey {
	b, err := os.ReadFile("testdata/" + name + ".pem")
	if err != nil {
		panic(err)
	}
	blk, _ := pem.Decode(b)
	k, err := x509.ParsePKCS8PrivateKey(blk.Bytes)
	if err != nil {
		panic(err)
	}
	return k.(*rsa.PrivateKey)
}

type testKeys struct {
	es256, es384, es512 *ecdsa.PrivateKey
	ed                  ed25519.PrivateKey
	rsa, rsa1024        *rsa.PrivateKey
	set                 *KeySet
}

var fixture = sync.OnceValue(func() *testKeys {
	k := &testKeys{
		es256:   testECKey(elliptic.P256(), "es256"),
		es384:   testECKey(elliptic.P384(), "es384"),
		es512:   testECKey(elliptic.P521(), "es512"),
		ed:      ed25519.NewKeyFromSeed(make([]byte, ed25519.SeedSize)),
		rsa:     testRSAKey("rsa2048"),
		rsa1024: testRSAKey("rsa1024"),
	}
	var keys []Key
	for _, alg := range algNames[1:] {
		keys = append(keys, Key{ID: kidOf(alg), Algorithm: alg, Public: k.signer(alg).Public()})
	}
	k.set = NewKeySet(keys)
	return k
})

// kidOf names the test key of an algorithm.
func kidOf(alg string) string { return "key-" + alg }

// signer returns the test private key for an algorithm.
func (k *testKeys) signer(alg string) crypto.Signer {
	switch alg {
	case "ES256":
		return k.es256
	case "ES384":
		return k.es384
	case "ES512":
		return k.es512
	case "EdDSA":
		return k.ed
	}
	return k.rsa
}

// sign returns the JWS signature of msg by key with alg, built by hand with
// the standard library. It signs whatever it is asked to, mismatched key
// and algorithm included, so that tests can build hostile tokens.
func sign(alg string, key crypto.Signer, msg []byte) []byte {
	var h crypto.Hash
	switch alg[2:] {
	case "256":
		h = crypto.SHA256
	case "384":
		h = crypto.SHA384
	case "512":
		h = crypto.SHA512
	}
	switch alg[:2] {
	case "Ed":
		return ed25519.Sign(key.(ed25519.PrivateKey), msg)
	case "HS":
		m := hmac.New(sha256.New, publicKeyPEM(key.Public()))
		m.Write(msg)
		return m.Sum(nil)
	}
	hh := h.New()
	hh.Write(msg)
	digest := hh.Sum(nil)
	switch alg[:2] {
	case "ES":
		k := key.(*ecdsa.PrivateKey)
		der, err := ecdsa.SignASN1(rand.Reader, k, digest)
		if err != nil {
			panic(err)
		}
		var rs struct{ R, S *big.Int }
		if _, err := asn1.Unmarshal(der, &rs); err != nil {
			panic(err)
		}
		size := (k.Curve.Params().BitSize + 7) / 8
		sig := make([]byte, 2*size)
		rs.R.FillBytes(sig[:size])
		rs.S.FillBytes(sig[size:])
		return sig
	case "RS":
		sig, err := rsa.SignPKCS1v15(nil, key.(*rsa.PrivateKey), h, digest)
		if err != nil {
			panic(err)
		}
		return sig
	case "PS":
		sig, err := rsa.SignPSS(rand.Reader, key.(*rsa.PrivateKey), h, digest, &rsa.PSSOptions{SaltLength: rsa.PSSSaltLengthEqualsHash})
		if err != nil {
			panic(err)
		}
		return sig
	}
	panic("sign: unknown algorithm " + alg)
}

func publicKeyPEM(pub crypto.PublicKey) []byte {
	der, err := x509.MarshalPKIXPublicKey(pub)
	if err != nil {
		panic(err)
	}
	return pem.EncodeToMemory(&pem.Block{Type: "PUBLIC KEY", Bytes: der})
}

var enc = base64.RawURLEncoding

// compact builds a JWS compact serialization from raw header and claims
// JSON, signed with alg by key.
func compact(header, claims string, alg string, key crypto.Signer) []byte {
	msg := enc.EncodeToString([]byte(header)) + "." + enc.EncodeToString([]byte(claims))
	return []byte(msg + "." + enc.EncodeToString(sign(alg, key, []byte(msg))))
}

// testNow is the fixed clock of the tests.
var testNow = time.Unix(1_750_000_000, 0)

const (
	testIssuer   = "https://issuer.example"
	testAudience = "orders"
)

func header(alg string) string {
	return fmt.Sprintf(`{"alg":%q,"typ":"at+jwt","kid":%q}`, alg, kidOf(alg))
}

// claimsJSON returns a valid claims set, with extra members spliced in
// before the standard ones when given.
func claimsJSON(extra string) string {
	if extra != "" {
		extra += ","
	}
	return fmt.Sprintf(`{%s"iss":%q,"aud":%q,"exp":%d,"iat":%d,"sub":"alice","client_id":"web","scope":"read write","jti":"j1"}`,
		extra, testIssuer, testAudience, testNow.Unix()+300, testNow.Unix()-10)
}

// validToken returns a valid token signed with alg.
func validToken(alg string) []byte {
	return compact(header(alg), claimsJSON(""), alg, fixture().signer(alg))
}

func testPolicy() Policy {
	return Policy{
		Issuer:    testIssuer,
		Audiences: []string{testAudience, "payments"},
		Now:       func() time.Time { return testNow },
	}
}

func testVerifier(tb testing.TB, p Policy) *Verifier {
	tb.Helper()
	v, err := NewVerifier(p, fixture().set)
	if err != nil {
		tb.Fatal(err)
	}
	return v
}

// singleKey is a Keys holding one key, found whatever the kid, to test that
// the Verifier itself checks what a Keys implementation returns.
type singleKey Key

func (k singleKey) Lookup(string) (Key, bool) { return Key(k), true }
