package issuer

import (
	"crypto/rand"
	"crypto/sha256"
	"crypto/subtle"
	"encoding/base64"
	"strings"
)

// secretBytes is the entropy of generated client secrets: 256 bits.
const secretBytes = 32

// newSecret returns a fresh client secret, base64url without padding.
func newSecret() string {
	b := make([]byte, secretBytes)
	_, _ = rand.Read(b) // crypto/rand.Read never fails (Go 1.24+)
	return base64.RawURLEncoding.EncodeToString(b)
}

// hashSecret returns the stored form of a client secret. A generated secret
// carries 256 bits of entropy, so a single SHA-256 is preimage-resistant
// enough and a slow password hash would only cost throughput on the token
// endpoint; secrets chosen by people are never accepted.
func hashSecret(secret string) string {
	sum := sha256.Sum256([]byte(secret))
	return "sha256:" + base64.RawURLEncoding.EncodeToString(sum[:])
}

// dummySecretHash is compared against when the client does not exist, so an
// unknown client id costs the same work as a wrong secret.
var dummySecretHash = hashSecret("meshauth-no-such-client")

// secretMatches reports, in constant time, whether secret hashes to stored.
func secretMatches(stored, secret string) bool {
	if !strings.HasPrefix(stored, "sha256:") {
		return false
	}
	return subtle.ConstantTimeCompare([]byte(stored), []byte(hashSecret(secret))) == 1
}

// randomID returns a random identifier with 128 bits of entropy, for token
// ids (jti) and generated client ids.
func randomID() string {
	return strings.ToLower(rand.Text())
}
