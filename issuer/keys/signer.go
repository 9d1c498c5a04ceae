package keys

import (
	"crypto"
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/rand"
	"crypto/rsa"
	"crypto/sha256"
	"encoding/json"
	"fmt"
	"sync"
	"time"

	"github.com/meshauth/meshauth/issuer/store"
)

// A signer makes compact JWS (RFC 7515 §7.1) with one decrypted signing key.
type signer struct {
	kid        string
	alg        string
	activateAt time.Time
	sigSize    int
	sign       func(signingInput []byte) ([]byte, error)

	// headers caches, per typ, the encoded protected header followed by
	// '.': the signing input's prefix. typ comes from the issuer's code, not
	// from requests, so the map stays tiny.
	headers sync.Map // string → string
}

func newSigner(k *store.SigningKey, priv crypto.Signer) (*signer, error) {
	sg := &signer{kid: k.ID, alg: k.Algorithm, activateAt: k.ActivateAt}
	switch priv := priv.(type) {
	case *ecdsa.PrivateKey:
		sg.sigSize = 64
		sg.sign = func(in []byte) ([]byte, error) { return signES256(priv, in) }
	case ed25519.PrivateKey:
		sg.sigSize = ed25519.SignatureSize
		sg.sign = func(in []byte) ([]byte, error) { return ed25519.Sign(priv, in), nil }
	case *rsa.PrivateKey:
		sg.sigSize = priv.Size()
		sg.sign = func(in []byte) ([]byte, error) {
			h := sha256.Sum256(in)
			return rsa.SignPKCS1v15(nil, priv, crypto.SHA256, h[:])
		}
	default:
		// openPrivateKey accepts nothing else.
		return nil, fmt.Errorf("signing key %s: unsupported private key type %T", k.ID, priv)
	}
	return sg, nil
}

// signES256 signs with ECDSA P-256 and returns R || S, each left-padded to
// 32 bytes, as RFC 7518 §3.4 requires (not the ASN.1 DER of crypto/ecdsa).
// ecdsa.Sign is ecdsa.SignASN1 followed by parsing the DER.
func signES256(priv *ecdsa.PrivateKey, in []byte) ([]byte, error) {
	h := sha256.Sum256(in)
	r, s, err := ecdsa.Sign(rand.Reader, priv, h[:])
	if err != nil {
		return nil, err
	}
	sig := make([]byte, 64)
	r.FillBytes(sig[:32])
	s.FillBytes(sig[32:])
	return sig, nil
}

// header returns the encoded protected header for typ, followed by '.'.
func (sg *signer) header(typ string) (string, error) {
	if h, ok := sg.headers.Load(typ); ok {
		return h.(string), nil
	}
	// alg and kid only ever come from the key (RFC 8725 §3.1); no jku, jwk,
	// x5u or x5c: verifiers must not follow them anyway.
	b, err := json.Marshal(struct {
		Alg string `json:"alg"`
		Kid string `json:"kid"`
		Typ string `json:"typ,omitempty"`
	}{sg.alg, sg.kid, typ})
	if err != nil {
		return "", fmt.Errorf("encode JWS header: %w", err)
	}
	h := b64.EncodeToString(b) + "."
	sg.headers.Store(typ, h)
	return h, nil
}

// signCompact returns the compact serialisation
// BASE64URL(header) '.' BASE64URL(payload) '.' BASE64URL(signature), built
// in one buffer of the exact size.
func (sg *signer) signCompact(typ string, payload []byte) (string, error) {
	hdr, err := sg.header(typ)
	if err != nil {
		return "", err
	}
	n := len(hdr) + b64.EncodedLen(len(payload))
	buf := make([]byte, n, n+1+b64.EncodedLen(sg.sigSize))
	copy(buf, hdr)
	b64.Encode(buf[len(hdr):], payload)
	sig, err := sg.sign(buf)
	if err != nil {
		return "", fmt.Errorf("sign with key %s: %w", sg.kid, err)
	}
	buf = append(buf, '.')
	buf = b64.AppendEncode(buf, sig)
	return string(buf), nil
}
