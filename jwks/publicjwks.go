package jwks

import (
	"crypto"
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/elliptic"
	"crypto/rsa"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"math/big"

	"github.com/meshauth/meshauth/token"
)

// PublicJWKS returns the JWK Set document (RFC 7517 §5) of verification keys
// as held by a verifier, such as the keys of a [KeySetCache], for consumers
// that take keys as a document: Envoy's jwt_authn local_jwks, for one. Each
// key keeps its kid and its algorithm, with "use":"sig". It supports the
// keys [token.ParseJWKS] returns: EC on P-256, P-384 and P-521, Ed25519 and
// RSA.
func PublicJWKS(keys []token.Key) ([]byte, error) {
	doc := struct {
		Keys []*JWK `json:"keys"`
	}{Keys: make([]*JWK, 0, len(keys))}
	for _, k := range keys {
		j, err := verificationJWK(k)
		if err != nil {
			return nil, err
		}
		doc.Keys = append(doc.Keys, j)
	}
	return json.Marshal(doc)
}

// verificationJWK describes k as a public JWK with its kid and algorithm.
func verificationJWK(k token.Key) (*JWK, error) {
	j, err := NewJWK(k.Public)
	if err != nil {
		return nil, fmt.Errorf("key %q: %w", k.ID, err)
	}
	j.Kid, j.Alg, j.Use = k.ID, k.Algorithm, "sig"
	return j, nil
}

// JWK is a public key as a JWK (RFC 7517 §4) with the members of RFC 7518
// §6.2.1 (EC), §6.3.1 (RSA) and RFC 8037 §2 (OKP): what a verifier is
// given of a key, and what the issuer publishes of its own.
type JWK struct {
	Kty string `json:"kty"`
	Crv string `json:"crv,omitempty"`
	X   string `json:"x,omitempty"`
	Y   string `json:"y,omitempty"`
	N   string `json:"n,omitempty"`
	E   string `json:"e,omitempty"`
	Kid string `json:"kid"`
	Alg string `json:"alg"`
	Use string `json:"use"`
}

// NewJWK describes pub as a public JWK without kid, alg and use. It
// supports the keys [token.ParseJWKS] returns: EC on P-256, P-384 and
// P-521, Ed25519 and RSA.
func NewJWK(pub crypto.PublicKey) (*JWK, error) {
	j := &JWK{}
	switch pub := pub.(type) {
	case *ecdsa.PublicKey:
		switch pub.Curve {
		case elliptic.P256():
			j.Crv = "P-256"
		case elliptic.P384():
			j.Crv = "P-384"
		case elliptic.P521():
			j.Crv = "P-521"
		default:
			return nil, fmt.Errorf("unsupported curve %s", pub.Curve.Params().Name)
		}
		// 0x04 || X || Y, each coordinate at full length (RFC 7518
		// §6.2.1.2).
		point, err := pub.Bytes()
		if err != nil {
			return nil, fmt.Errorf("encode ECDSA public key: %w", err)
		}
		size := (len(point) - 1) / 2
		j.Kty, j.X, j.Y = "EC", b64.EncodeToString(point[1:1+size]), b64.EncodeToString(point[1+size:])
	case ed25519.PublicKey:
		j.Kty, j.Crv, j.X = "OKP", "Ed25519", b64.EncodeToString(pub)
	case *rsa.PublicKey:
		// Minimal big-endian octets (RFC 7518 §6.3.1).
		j.Kty, j.N, j.E = "RSA", b64.EncodeToString(pub.N.Bytes()), b64.EncodeToString(big.NewInt(int64(pub.E)).Bytes())
	default:
		return nil, fmt.Errorf("unsupported public key type %T", pub)
	}
	return j, nil
}

// b64 is the base64url encoding without padding of JOSE (RFC 7515 §2).
var b64 = base64.RawURLEncoding
