package store

import (
	"context"
	"time"
)

// SigningKeys holds the issuer's signing keys, shared by its replicas.
// Changes numbers every change of them.
type SigningKeys interface {
	// AddSigningKey stores k only if the newest existing key (greatest
	// ActivateAt, ties broken by ID) has id ifNewestID ("" meaning no key
	// exists yet); otherwise ErrConflict and nothing is written. This lets
	// several issuer replicas race to rotate and exactly one win. A key whose
	// ID exists already gives ErrExists.
	AddSigningKey(ctx context.Context, k *SigningKey, ifNewestID string) error
	// ListSigningKeys returns all keys ordered by ActivateAt, oldest first,
	// ties broken by ID in byte order.
	ListSigningKeys(ctx context.Context) ([]*SigningKey, error)
	// DeleteSigningKey removes a key; deleting a missing key is not an error.
	DeleteSigningKey(ctx context.Context, id string) error
}

// SigningKey is one of the issuer's signing keys. The private key is stored
// only encrypted (see package issuer/keys).
type SigningKey struct {
	ID        string // the JWK kid
	Algorithm string // ES256, EdDSA or RS256
	// PublicJWK is the public key as a JSON JWK.
	PublicJWK []byte
	// EncryptedPrivateKey is the sealed private key; opaque to the store.
	EncryptedPrivateKey []byte
	CreatedAt           time.Time
	// ActivateAt is when the key may start signing; it is published in the
	// JWKS from CreatedAt on.
	ActivateAt time.Time
}
