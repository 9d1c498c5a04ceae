package jwks

import (
	"crypto"
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/rsa"
	"testing"

	"github.com/meshauth/meshauth/token"
)

func TestPublicJWKSRoundTrip(t *testing.T) {
	gen := func(alg string) crypto.PublicKey {
		var (
			priv crypto.Signer
			err  error
		)
		switch alg {
		case "ES256":
			priv, err = ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
		case "ES384":
			priv, err = ecdsa.GenerateKey(elliptic.P384(), rand.Reader)
		case "ES512":
			priv, err = ecdsa.GenerateKey(elliptic.P521(), rand.Reader)
		case "EdDSA":
			_, priv, err = ed25519.GenerateKey(rand.Reader)
		case "RS256", "PS384":
			priv, err = rsa.GenerateKey(rand.Reader, 2048)
		}
		if err != nil {
			t.Fatal(err)
		}
		return priv.Public()
	}
	var keys []token.Key
	for _, alg := range []string{"ES256", "ES384", "ES512", "EdDSA", "RS256", "PS384"} {
		keys = append(keys, token.Key{ID: "kid-" + alg, Algorithm: alg, Public: gen(alg)})
	}
	doc, err := PublicJWKS(keys)
	if err != nil {
		t.Fatal(err)
	}
	got, err := token.ParseJWKS(doc)
	if err != nil {
		t.Fatalf("ParseJWKS of %s: %v", doc, err)
	}
	if len(got) != len(keys) {
		t.Fatalf("%d keys back, want %d", len(got), len(keys))
	}
	for i, k := range got {
		want := keys[i]
		eq, ok := want.Public.(interface{ Equal(crypto.PublicKey) bool })
		if k.ID != want.ID || k.Algorithm != want.Algorithm || !ok || !eq.Equal(k.Public) {
			t.Errorf("key %d: got %s %s, want %s %s (same public key: %v)", i, k.ID, k.Algorithm, want.ID, want.Algorithm, ok && eq.Equal(k.Public))
		}
	}
}

func TestPublicJWKSRefusesUnknownKeys(t *testing.T) {
	if _, err := PublicJWKS([]token.Key{{ID: "x", Algorithm: "ES256", Public: "not a key"}}); err == nil {
		t.Fatal("no error for an unsupported key type")
	}
	empty, err := PublicJWKS(nil)
	if err != nil || string(empty) != `{"keys":[]}` {
		t.Fatalf("PublicJWKS(nil) = %s, %v", empty, err)
	}
}
