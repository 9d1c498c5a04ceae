package token

import (
	"crypto"
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/rsa"
	"encoding/json"
	"errors"
	"fmt"
	"math/big"
	"strings"
	"testing"
)

// jwkJSON returns the public JWK of pub with the given extra members.
func jwkJSON(pub crypto.PublicKey, extra map[string]any) string {
	m := map[string]any{}
	switch k := pub.(type) {
	case *ecdsa.PublicKey:
		b, err := k.Bytes()
		if err != nil {
			panic(err)
		}
		size := (len(b) - 1) / 2
		m["kty"], m["crv"] = "EC", k.Curve.Params().Name
		m["x"], m["y"] = enc.EncodeToString(b[1:1+size]), enc.EncodeToString(b[1+size:])
	case ed25519.PublicKey:
		m["kty"], m["crv"], m["x"] = "OKP", "Ed25519", enc.EncodeToString(k)
	case *rsa.PublicKey:
		m["kty"], m["n"], m["e"] = "RSA", enc.EncodeToString(k.N.Bytes()), enc.EncodeToString(big.NewInt(int64(k.E)).Bytes())
	}
	for name, v := range extra {
		if v == nil {
			delete(m, name)
		} else {
			m[name] = v
		}
	}
	b, err := json.Marshal(m)
	if err != nil {
		panic(err)
	}
	return string(b)
}

func jwks(keys ...string) string {
	return `{"keys":[` + strings.Join(keys, ",") + `]}`
}

func TestParseJWKS(t *testing.T) {
	k := fixture()
	set := jwks(
		jwkJSON(k.es256.Public(), map[string]any{"kid": "p256", "use": "sig"}),
		jwkJSON(k.es384.Public(), map[string]any{"kid": "p384", "alg": "ES384"}),
		jwkJSON(k.es512.Public(), map[string]any{"kid": "p521", "key_ops": []string{"verify"}}),
		jwkJSON(k.ed.Public(), map[string]any{"kid": "ed", "alg": "EdDSA"}),
		jwkJSON(k.rsa.Public(), map[string]any{"kid": "rsa"}),
		jwkJSON(k.rsa.Public(), map[string]any{"kid": "rsa-pss", "alg": "PS384", "x5c": []string{"MIIB"}, "ext": true}),
		// Skipped: encryption keys, unsupported types, curves and algorithms.
		jwkJSON(k.rsa.Public(), map[string]any{"kid": "rsa", "use": "enc"}),
		jwkJSON(k.rsa.Public(), map[string]any{"kid": "rsa", "alg": "RSA-OAEP-256"}),
		jwkJSON(k.rsa.Public(), map[string]any{"kid": "rsa", "key_ops": []string{"encrypt", "wrapKey"}}),
		jwkJSON(k.es256.Public(), map[string]any{"kid": "p256", "alg": "ES256K"}),
		jwkJSON(k.es256.Public(), map[string]any{"kid": "p256", "alg": "ECDH-ES"}),
		`{"kty":"EC","crv":"secp256k1","kid":"k1","x":"AA","y":"AA"}`,
		`{"kty":"OKP","crv":"X25519","kid":"x","x":"AA"}`,
		`{"kty":"OKP","crv":"Ed448","kid":"x","x":"AA"}`,
		`{"kty":"AKP","alg":"ML-DSA-44","kid":"pq","pub":"AA"}`,
	)
	keys, err := ParseJWKS([]byte(set))
	if err != nil {
		t.Fatal(err)
	}
	want := []Key{
		{"p256", "ES256", k.es256.Public()},
		{"p384", "ES384", k.es384.Public()},
		{"p521", "ES512", k.es512.Public()},
		{"ed", "EdDSA", k.ed.Public()},
		{"rsa", "RS256", k.rsa.Public()},
		{"rsa-pss", "PS384", k.rsa.Public()},
	}
	if len(keys) != len(want) {
		t.Fatalf("got %d keys, want %d: %v", len(keys), len(want), keys)
	}
	for i, w := range want {
		g := keys[i]
		if g.ID != w.ID || g.Algorithm != w.Algorithm || !w.Public.(interface{ Equal(crypto.PublicKey) bool }).Equal(g.Public) {
			t.Errorf("key %d = %+v, want %+v", i, g, w)
		}
	}

	// The parsed keys verify tokens of their private keys.
	v, err := NewVerifier(testPolicy(), NewKeySet(keys))
	if err != nil {
		t.Fatal(err)
	}
	for _, key := range keys {
		priv := k.signer(key.Algorithm)
		tok := compact(fmt.Sprintf(`{"alg":%q,"typ":"at+jwt","kid":%q}`, key.Algorithm, key.ID), claimsJSON(""), key.Algorithm, priv)
		if _, err := v.Verify(tok); err != nil {
			t.Errorf("%s: %v", key.ID, err)
		}
	}
}

func TestParseJWKSShortCoordinate(t *testing.T) {
	// RFC 7518 wants full-size coordinates; some producers strip leading
	// zeros. Find a key with one and check both forms parse alike.
	for range 10000 {
		k, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
		if err != nil {
			t.Fatal(err)
		}
		b, _ := k.PublicKey.Bytes()
		if b[1] != 0 {
			continue
		}
		short := jwkJSON(&k.PublicKey, map[string]any{"x": enc.EncodeToString(b[2:33])})
		keys, err := ParseJWKS([]byte(jwks(short)))
		if err != nil {
			t.Fatal(err)
		}
		if !k.PublicKey.Equal(keys[0].Public) {
			t.Fatal("short coordinate parsed to another key")
		}
		return
	}
	t.Skip("no key with a short coordinate found")
}

func TestParseJWKSErrors(t *testing.T) {
	k := fixture()
	huge := new(big.Int).Lsh(big.NewInt(1), maxRSABits)
	huge.Add(huge, bigOne)
	tests := map[string]string{
		"not JSON":                  `{"keys":[`,
		"not an object":             `[]`,
		"keys missing":              `{"jwks":[]}`,
		"keys not an array":         `{"keys":{}}`,
		"key not an object":         `{"keys":["x"]}`,
		"trailing data":             jwks() + "x",
		"duplicate keys member":     `{"keys":[],"keys":[]}`,
		"duplicate member in a key": jwks(strings.Replace(jwkJSON(k.es256.Public(), nil), `{`, `{"kty":"oct",`, 1)),
		"kty missing":               jwks(jwkJSON(k.es256.Public(), map[string]any{"kty": nil})),
		"kty not a string":          jwks(jwkJSON(k.es256.Public(), map[string]any{"kty": 1})),
		"ES384 on P-256":            jwks(jwkJSON(k.es256.Public(), map[string]any{"alg": "ES384"})),
		"ES256 on P-384":            jwks(jwkJSON(k.es384.Public(), map[string]any{"alg": "ES256"})),
		"RS256 on EC":               jwks(jwkJSON(k.es256.Public(), map[string]any{"alg": "RS256"})),
		"ES256 on RSA":              jwks(jwkJSON(k.rsa.Public(), map[string]any{"alg": "ES256"})),
		"EdDSA on RSA":              jwks(jwkJSON(k.rsa.Public(), map[string]any{"alg": "EdDSA"})),
		"PS256 on Ed25519":          jwks(jwkJSON(k.ed.Public(), map[string]any{"alg": "PS256"})),
		"HS256 on RSA":              jwks(jwkJSON(k.rsa.Public(), map[string]any{"alg": "HS256"})),
		"none on EC":                jwks(jwkJSON(k.es256.Public(), map[string]any{"alg": "none"})),
		"EC private key":            jwks(jwkJSON(k.es256.Public(), map[string]any{"d": enc.EncodeToString(k.es256.D.Bytes())})),
		"Ed25519 private key":       jwks(jwkJSON(k.ed.Public(), map[string]any{"d": enc.EncodeToString(k.ed.Seed())})),
		"RSA private key":           jwks(jwkJSON(k.rsa.Public(), map[string]any{"d": enc.EncodeToString(k.rsa.D.Bytes())})),
		"RSA prime":                 jwks(jwkJSON(k.rsa.Public(), map[string]any{"p": enc.EncodeToString(k.rsa.Primes[0].Bytes())})),
		"private encryption key":    jwks(jwkJSON(k.rsa.Public(), map[string]any{"use": "enc", "d": "AQAB"})),
		"oct":                       jwks(`{"kty":"oct","k":"c2VjcmV0","alg":"HS256","kid":"h"}`),
		"oct for encryption":        jwks(`{"kty":"oct","k":"c2VjcmV0","use":"enc"}`),
		"duplicate kid":             jwks(jwkJSON(k.es256.Public(), map[string]any{"kid": "a"}), jwkJSON(k.ed.Public(), map[string]any{"kid": "a"})),
		"RSA 1024":                  jwks(jwkJSON(k.rsa1024.Public(), nil)),
		"RSA 1024 with alg":         jwks(jwkJSON(k.rsa1024.Public(), map[string]any{"alg": "RS256"})),
		"RSA too large":             jwks(jwkJSON(&rsa.PublicKey{N: huge, E: 65537}, nil)),
		"RSA even modulus":          jwks(jwkJSON(&rsa.PublicKey{N: new(big.Int).Add(k.rsa.N, bigOne), E: 65537}, nil)),
		"RSA exponent 1":            jwks(jwkJSON(k.rsa.Public(), map[string]any{"e": "AQ"})),
		"RSA exponent even":         jwks(jwkJSON(k.rsa.Public(), map[string]any{"e": "AQAA"})),
		"RSA exponent huge":         jwks(jwkJSON(k.rsa.Public(), map[string]any{"e": "AQAAAAAB"})),
		"RSA n missing":             jwks(jwkJSON(k.rsa.Public(), map[string]any{"n": nil})),
		"EC y missing":              jwks(jwkJSON(k.es256.Public(), map[string]any{"y": nil})),
		"EC point off the curve":    jwks(jwkJSON(k.es256.Public(), map[string]any{"y": enc.EncodeToString(make([]byte, 32))})),
		"EC coordinate too long":    jwks(jwkJSON(k.es256.Public(), map[string]any{"x": enc.EncodeToString(make([]byte, 33))})),
		"EC x padded":               jwks(jwkJSON(k.es256.Public(), map[string]any{"x": base64Std(k.es256.X.Bytes())})),
		"Ed25519 short":             jwks(jwkJSON(k.ed.Public(), map[string]any{"x": "AAAA"})),
		"key_ops not an array":      jwks(jwkJSON(k.ed.Public(), map[string]any{"key_ops": "verify"})),
		"invalid UTF-8":             jwks(strings.Replace(jwkJSON(k.ed.Public(), nil), `{`, "{\"kid\":\"\xff\",", 1)),
	}
	for name, set := range tests {
		t.Run(name, func(t *testing.T) {
			keys, err := ParseJWKS([]byte(set))
			if err == nil {
				t.Errorf("accepted: %v", keys)
			}
		})
	}
}

var bigOne = big.NewInt(1)

// base64Std encodes b with padding, which JWK values must not have.
func base64Std(b []byte) string {
	s := enc.EncodeToString(b)
	for len(s)%4 != 0 {
		s += "="
	}
	return s
}

func TestNewKeySet(t *testing.T) {
	k := fixture()
	es256 := Key{ID: "a", Algorithm: "ES256", Public: k.es256.Public()}
	ed := Key{ID: "b", Algorithm: "EdDSA", Public: k.ed.Public()}

	// An ID two keys share finds neither.
	s := NewKeySet([]Key{es256, ed, {ID: "a", Algorithm: "EdDSA", Public: k.ed.Public()}})
	if _, ok := s.Lookup("a"); ok {
		t.Error("shared ID found a key")
	}
	if key, ok := s.Lookup("b"); !ok || key.Algorithm != "EdDSA" || s.Len() != 3 {
		t.Error("key b not found")
	}
	if n := testing.AllocsPerRun(100, func() { s.Lookup("b") }); n != 0 {
		t.Errorf("Lookup allocates %v times", n)
	}

	// A key without ID is found only when it is alone.
	noID := Key{Algorithm: "ES256", Public: k.es256.Public()}
	if key, ok := NewKeySet([]Key{noID}).Lookup(""); !ok || key.Algorithm != "ES256" {
		t.Error("sole key not found without kid")
	}
	if key, ok := NewKeySet([]Key{es256}).Lookup(""); !ok || key.ID != "a" {
		t.Error("sole key with ID not found without kid")
	}
	if _, ok := NewKeySet([]Key{noID, ed}).Lookup(""); ok {
		t.Error("key found without kid in a set of two")
	}
	if _, ok := NewKeySet(nil).Lookup(""); ok {
		t.Error("key found in an empty set")
	}

	// Keys that do not fit their algorithm are refused on use.
	for _, bad := range []Key{
		{ID: "x", Algorithm: "HS256", Public: k.es256.Public()},
		{ID: "x", Algorithm: "ES384", Public: k.es256.Public()},
		{ID: "x", Algorithm: "ES256", Public: nil},
		{ID: "x", Algorithm: "ES256", Public: *k.es256.Public().(*ecdsa.PublicKey)},
		{ID: "x", Algorithm: "RS256", Public: k.rsa1024.Public()},
		{ID: "x", Algorithm: "RS256", Public: &rsa.PublicKey{N: k.rsa.N, E: 1}},
		{ID: "x", Algorithm: "EdDSA", Public: ed25519.PublicKey("short")},
	} {
		if err := bad.check(); err == nil {
			t.Errorf("key %+v passes check", bad)
		}
		alg := bad.Algorithm
		if alg == "HS256" {
			alg = "ES256"
		}
		v, err := NewVerifier(testPolicy(), NewKeySet([]Key{bad}))
		if err != nil {
			t.Fatal(err)
		}
		tok := compact(fmt.Sprintf(`{"alg":%q,"typ":"at+jwt","kid":"x"}`, bad.Algorithm), claimsJSON(""), alg, k.signer(alg))
		if _, err := v.Verify(tok); !errors.Is(err, ErrUnsupportedAlgorithm) {
			t.Errorf("key %+v: %v", bad, err)
		}
	}
}
