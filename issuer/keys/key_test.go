package keys

import (
	"bytes"
	"crypto"
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/rsa"
	"crypto/x509"
	"encoding/base64"
	"encoding/json"
	"strings"
	"testing"
	"time"

	"github.com/lestrrat-go/jwx/v2/jwk"
)

var algs = []string{ES256, EdDSA, RS256}

func TestGenerateKey(t *testing.T) {
	s := newTestSealer(t)
	now := time.Date(2030, 1, 2, 3, 4, 5, 123456789, time.UTC)
	activateAt := now.Add(10 * time.Minute)
	want := map[string]map[string]any{
		ES256: {"kty": "EC", "crv": "P-256"},
		EdDSA: {"kty": "OKP", "crv": "Ed25519"},
		RS256: {"kty": "RSA", "e": "AQAB"},
	}
	for _, alg := range algs {
		t.Run(alg, func(t *testing.T) {
			sk, err := GenerateKey(alg, now, activateAt, s)
			if err != nil {
				t.Fatal(err)
			}
			if sk.Algorithm != alg {
				t.Errorf("Algorithm %q", sk.Algorithm)
			}
			if !sk.CreatedAt.Equal(now.Truncate(time.Microsecond)) || !sk.ActivateAt.Equal(activateAt.Truncate(time.Microsecond)) {
				t.Errorf("times %v, %v", sk.CreatedAt, sk.ActivateAt)
			}

			// The public JWK, read by an independent implementation.
			var members map[string]any
			if err := json.Unmarshal(sk.PublicJWK, &members); err != nil {
				t.Fatal(err)
			}
			for name, v := range want[alg] {
				if members[name] != v {
					t.Errorf("JWK %s = %v, want %v", name, members[name], v)
				}
			}
			if members["kid"] != sk.ID || members["alg"] != alg || members["use"] != "sig" {
				t.Errorf("JWK kid/alg/use = %v/%v/%v", members["kid"], members["alg"], members["use"])
			}
			for _, private := range []string{"d", "p", "q", "dp", "dq", "qi"} {
				if _, ok := members[private]; ok {
					t.Errorf("public JWK has private member %q", private)
				}
			}
			key, err := jwk.ParseKey(sk.PublicJWK)
			if err != nil {
				t.Fatal(err)
			}
			if isPriv, _ := jwk.IsPrivateKey(key); isPriv {
				t.Fatal("jwx reads the public JWK as a private key")
			}
			tp, err := key.Thumbprint(crypto.SHA256)
			if err != nil {
				t.Fatal(err)
			}
			if kid := base64.RawURLEncoding.EncodeToString(tp[:16]); kid != sk.ID {
				t.Errorf("kid %s, jwx's RFC 7638 thumbprint gives %s", sk.ID, kid)
			}

			// The sealed private key opens to the same key, and does not
			// hold it in clear.
			priv, err := openPrivateKey(sk, s)
			if err != nil {
				t.Fatal(err)
			}
			var rawPub any
			if err := key.Raw(&rawPub); err != nil {
				t.Fatal(err)
			}
			if !priv.Public().(interface{ Equal(crypto.PublicKey) bool }).Equal(rawPub) {
				t.Fatal("private key does not match the public JWK")
			}
			der, err := x509.MarshalPKCS8PrivateKey(priv)
			if err != nil {
				t.Fatal(err)
			}
			for name, secret := range secretParts(t, priv, der) {
				if bytes.Contains(sk.EncryptedPrivateKey, secret) {
					t.Errorf("sealed key contains the %s in clear", name)
				}
			}
		})
	}
}

// secretParts returns byte strings that must not appear in a sealed key.
func secretParts(t *testing.T, priv crypto.Signer, der []byte) map[string][]byte {
	parts := map[string][]byte{"PKCS#8 encoding": der}
	switch priv := priv.(type) {
	case *ecdsa.PrivateKey:
		d, err := priv.Bytes()
		if err != nil {
			t.Fatal(err)
		}
		parts["private scalar"] = d
	case ed25519.PrivateKey:
		parts["seed"] = priv.Seed()
	case *rsa.PrivateKey:
		parts["private exponent"] = priv.D.Bytes()
		parts["prime p"] = priv.Primes[0].Bytes()
	}
	return parts
}

func TestGenerateKeyUnsupported(t *testing.T) {
	s := newTestSealer(t)
	for _, alg := range []string{"", "none", "HS256", "RS512", "es256"} {
		_, err := GenerateKey(alg, time.Now(), time.Now(), s)
		if err == nil || !strings.Contains(err.Error(), "unsupported signing algorithm") {
			t.Errorf("GenerateKey(%q) error %v", alg, err)
		}
	}
}

func TestOpenPrivateKeyMismatch(t *testing.T) {
	s := newTestSealer(t)
	now := time.Now()
	a, err := GenerateKey(ES256, now, now, s)
	if err != nil {
		t.Fatal(err)
	}
	b, err := GenerateKey(ES256, now, now, s)
	if err != nil {
		t.Fatal(err)
	}
	swapped := copyKey(b)
	swapped.EncryptedPrivateKey = a.EncryptedPrivateKey
	if _, err := openPrivateKey(swapped, s); err == nil || !strings.Contains(err.Error(), "wrong key-encryption key or corrupted data") {
		t.Errorf("sealed key moved to another record: error %v", err)
	}
	wrongAlg := copyKey(a)
	wrongAlg.Algorithm = EdDSA
	if _, err := openPrivateKey(wrongAlg, s); err == nil || !strings.Contains(err.Error(), "cannot be used for EdDSA") {
		t.Errorf("ES256 key recorded as EdDSA: error %v", err)
	}
}
