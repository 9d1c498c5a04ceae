package keys

import (
	"crypto/aes"
	"crypto/cipher"
	"encoding/base64"
	"errors"
	"fmt"
	"strings"
)

// KEKSize is the size of the key-encryption key: an AES-256 key.
const KEKSize = 32

// sealVersion is the first byte of every sealed key, so that the format
// (today AES-256-GCM with a random 96-bit nonce) can change without guessing.
const sealVersion = 1

// A Sealer encrypts private signing keys at rest with AES-256-GCM under a
// key-encryption key (KEK) that is never stored beside them. It is safe for
// concurrent use.
type Sealer struct {
	aead cipher.AEAD
}

// NewSealer returns a Sealer for kek, which must be exactly [KEKSize] bytes.
func NewSealer(kek []byte) (*Sealer, error) {
	if len(kek) != KEKSize {
		return nil, kekSizeError(fmt.Sprintf("%d bytes", len(kek)))
	}
	block, err := aes.NewCipher(kek)
	if err != nil {
		return nil, fmt.Errorf("key-encryption key: %w", err)
	}
	// Random nonces are safe for up to 2^32 seals under one KEK (NIST SP
	// 800-38D §8.3); a key is sealed once per rotation.
	aead, err := cipher.NewGCMWithRandomNonce(block)
	if err != nil {
		return nil, fmt.Errorf("key-encryption key: %w", err)
	}
	return &Sealer{aead: aead}, nil
}

// ParseKEK decodes a key-encryption key given as standard or URL-safe base64,
// with or without padding, as it would come from an environment variable or
// a file (surrounding white space is ignored). The error never repeats the
// input: it is a secret.
func ParseKEK(s string) ([]byte, error) {
	s = strings.TrimSpace(s)
	enc := base64.StdEncoding
	if strings.ContainsAny(s, "-_") {
		enc = base64.URLEncoding
	}
	if !strings.HasSuffix(s, "=") {
		enc = enc.WithPadding(base64.NoPadding)
	}
	kek, err := enc.DecodeString(s)
	if err != nil {
		return nil, kekSizeError("a value that is not valid base64")
	}
	if len(kek) != KEKSize {
		return nil, kekSizeError(fmt.Sprintf("%d bytes", len(kek)))
	}
	return kek, nil
}

func kekSizeError(got string) error {
	return fmt.Errorf("key-encryption key must be %d bytes, base64-encoded; got %s", KEKSize, got)
}

// Seal encrypts plaintext, the private key of the signing key kid. The kid is
// authenticated as additional data, so a sealed key copied onto another
// key's record does not open. The result is
// version byte || nonce || ciphertext (with the GCM tag).
func (s *Sealer) Seal(plaintext []byte, kid string) []byte {
	out := make([]byte, 1, 1+s.aead.Overhead()+len(plaintext))
	out[0] = sealVersion
	return s.aead.Seal(out, nil, plaintext, []byte(kid))
}

// Open decrypts what Seal sealed for the same kid.
func (s *Sealer) Open(sealed []byte, kid string) ([]byte, error) {
	if len(sealed) == 0 {
		return nil, fmt.Errorf("decrypt signing key %s: empty sealed key", kid)
	}
	if sealed[0] != sealVersion {
		return nil, fmt.Errorf("decrypt signing key %s: unknown sealed-key format version %d", kid, sealed[0])
	}
	plaintext, err := s.aead.Open(nil, nil, sealed[1:], []byte(kid))
	if err != nil {
		return nil, fmt.Errorf("decrypt signing key %s: %w", kid, errWrongKEK)
	}
	return plaintext, nil
}

// errWrongKEK hides the cipher's own error, which says no more than this.
var errWrongKEK = errors.New("wrong key-encryption key or corrupted data")
