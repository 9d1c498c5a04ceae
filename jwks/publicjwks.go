package jwks

import (
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/elliptic"
	"crypto/rsa"
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
		Keys []*publicJWK `json:"keys"`
	}{Keys: make([]*publicJWK, 0, len(keys))}
	for _, k := range keys {
		j, err := verificationJWK(k)
		if err != nil {
			return nil, err
		}
		doc.Keys = append(doc.Keys, j)
	}
	return json.Marshal(doc)
}

// verificationJWK describes k as a public JWK, members as in RFC 7518 §6.2.1
// (EC), §6.3.1 (RSA) and RFC 8037 §2 (OKP).
func verificationJWK(k token.Key) (*publicJWK, error) {
	j := &publicJWK{Kid: k.ID, Alg: k.Algorithm, Use: "sig"}
	switch pub := k.Public.(type) {
	case *ecdsa.PublicKey:
		var crv string
		switch pub.Curve {
		case elliptic.P256():
			crv = "P-256"
		case elliptic.P384():
			crv = "P-384"
		case elliptic.P521():
			crv = "P-521"
		default:
			return nil, fmt.Errorf("key %q: unsupported curve %s", k.ID, pub.Curve.Params().Name)
		}
		// 0x04 || X || Y, each coordinate at full length (RFC 7518
		// §6.2.1.2).
		point, err := pub.Bytes()
		if err != nil {
			return nil, fmt.Errorf("key %q: encode ECDSA public key: %w", k.ID, err)
		}
		size := (len(point) - 1) / 2
		j.Kty, j.Crv, j.X, j.Y = "EC", crv, b64.EncodeToString(point[1:1+size]), b64.EncodeToString(point[1+size:])
	case ed25519.PublicKey:
		j.Kty, j.Crv, j.X = "OKP", "Ed25519", b64.EncodeToString(pub)
	case *rsa.PublicKey:
		// Minimal big-endian octets (RFC 7518 §6.3.1).
		j.Kty, j.N, j.E = "RSA", b64.EncodeToString(pub.N.Bytes()), b64.EncodeToString(big.NewInt(int64(pub.E)).Bytes())
	default:
		return nil, fmt.Errorf("key %q: unsupported public key type %T", k.ID, k.Public)
	}
	return j, nil
}
