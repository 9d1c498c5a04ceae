package keys

import (
	"crypto"
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/rsa"
	"crypto/sha256"
	"crypto/x509"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"time"

	"github.com/meshauth/meshauth/issuer/store"
	"github.com/meshauth/meshauth/jwks"
)

// b64 is the base64url encoding without padding of JOSE (RFC 7515 §2).
var b64 = base64.RawURLEncoding

// The signing algorithms (RFC 7518 §3.1, RFC 8037 §3.1). Only asymmetric
// algorithms: verifiers hold nothing that can sign.
const (
	ES256 = "ES256" // ECDSA P-256 with SHA-256: the default; small keys and tokens, fast
	EdDSA = "EdDSA" // Ed25519 (RFC 8037): fast and small, but not every JOSE library supports it
	RS256 = "RS256" // RSA PKCS#1 v1.5 with SHA-256: for verifiers that know nothing else
)

// rsaBits is the RSA modulus size. 3072 bits give the 128-bit security of
// P-256 and Ed25519 (NIST SP 800-57 Part 1 Rev. 5, Table 2); 2048 bits give
// 112 and are disallowed by NIST after 2030.
const rsaBits = 3072

// GenerateKey creates a signing key for alg (ES256, EdDSA or RS256), created
// at now and signing from activateAt, its private key sealed by s. The kid is
// derived from the public key (its RFC 7638 thumbprint), so it is the same on every
// replica and every verifier can recompute it.
func GenerateKey(alg string, now, activateAt time.Time, s *Sealer) (*store.SigningKey, error) {
	var priv crypto.Signer
	var err error
	switch alg {
	case ES256:
		priv, err = ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	case EdDSA:
		_, priv, err = ed25519.GenerateKey(rand.Reader)
	case RS256:
		priv, err = rsa.GenerateKey(rand.Reader, rsaBits)
	default:
		return nil, unsupportedAlgError(alg)
	}
	if err != nil {
		return nil, fmt.Errorf("generate %s key: %w", alg, err)
	}
	pub, err := newPublicJWK(priv.Public(), alg)
	if err != nil {
		return nil, err
	}
	pubJSON, err := json.Marshal(pub)
	if err != nil {
		return nil, fmt.Errorf("encode %s public key: %w", alg, err)
	}
	der, err := x509.MarshalPKCS8PrivateKey(priv)
	if err != nil {
		return nil, fmt.Errorf("encode %s private key: %w", alg, err)
	}
	sealed := s.Seal(der, pub.Kid)
	clear(der)
	// Microseconds: what PostgreSQL's timestamptz keeps, so that a key reads
	// back from any store exactly as it was written.
	return &store.SigningKey{
		ID:                  pub.Kid,
		Algorithm:           alg,
		PublicJWK:           pubJSON,
		EncryptedPrivateKey: sealed,
		CreatedAt:           now.UTC().Truncate(time.Microsecond),
		ActivateAt:          activateAt.UTC().Truncate(time.Microsecond),
	}, nil
}

func unsupportedAlgError(alg string) error {
	return fmt.Errorf("unsupported signing algorithm %q (supported: %s, %s, %s)", alg, ES256, EdDSA, RS256)
}

// openPrivateKey decrypts k's private key and checks that it is the key k
// describes: same kid (hence same public key) and a key type fit for
// k.Algorithm.
func openPrivateKey(k *store.SigningKey, s *Sealer) (crypto.Signer, error) {
	der, err := s.Open(k.EncryptedPrivateKey, k.ID)
	if err != nil {
		return nil, err
	}
	parsed, err := x509.ParsePKCS8PrivateKey(der)
	clear(der)
	if err != nil {
		return nil, fmt.Errorf("signing key %s: parse private key: %w", k.ID, err)
	}
	priv, ok := parsed.(crypto.Signer)
	if !ok {
		return nil, fmt.Errorf("signing key %s: unsupported private key type %T", k.ID, parsed)
	}
	pub, err := newPublicJWK(priv.Public(), k.Algorithm)
	if err != nil {
		return nil, fmt.Errorf("signing key %s: %w", k.ID, err)
	}
	if pub.Kid != k.ID {
		return nil, fmt.Errorf("signing key %s: private key does not match the key id", k.ID)
	}
	return priv, nil
}

// newPublicJWK describes pub as the JWK of a key for alg, with its kid.
func newPublicJWK(pub crypto.PublicKey, alg string) (*jwks.JWK, error) {
	switch pub := pub.(type) {
	case *ecdsa.PublicKey:
		if alg != ES256 || pub.Curve != elliptic.P256() {
			return nil, fmt.Errorf("an ECDSA %s key cannot be used for %s", pub.Curve.Params().Name, alg)
		}
	case ed25519.PublicKey:
		if alg != EdDSA {
			return nil, fmt.Errorf("an Ed25519 key cannot be used for %s", alg)
		}
	case *rsa.PublicKey:
		if alg != RS256 {
			return nil, fmt.Errorf("an RSA key cannot be used for %s", alg)
		}
	}
	j, err := jwks.NewJWK(pub)
	if err != nil {
		return nil, err
	}
	j.Alg, j.Use = alg, "sig"
	t, err := thumbprint(j)
	if err != nil {
		return nil, err
	}
	j.Kid = b64.EncodeToString(t[:16])
	return j, nil
}

// thumbprint returns the SHA-256 JWK thumbprint (RFC 7638) of j. A kid is
// the base64url encoding of its first 16 bytes: 128 bits are plenty to tell
// a handful of keys apart and keep tokens short.
func thumbprint(j *jwks.JWK) ([sha256.Size]byte, error) {
	// The required members only, in lexicographic order, without white space
	// (RFC 7638 §3.2-3.3): crv < e < kty < n < x < y, and encoding/json writes
	// struct fields in order. The values are base64url or fixed names, which
	// need no escaping.
	b, err := json.Marshal(struct {
		Crv string `json:"crv,omitempty"`
		E   string `json:"e,omitempty"`
		Kty string `json:"kty"`
		N   string `json:"n,omitempty"`
		X   string `json:"x,omitempty"`
		Y   string `json:"y,omitempty"`
	}{j.Crv, j.E, j.Kty, j.N, j.X, j.Y})
	if err != nil {
		return [sha256.Size]byte{}, fmt.Errorf("JWK thumbprint: %w", err)
	}
	return sha256.Sum256(b), nil
}
