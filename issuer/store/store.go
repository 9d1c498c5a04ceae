// Package store defines the issuer's persistence: one interface, implemented
// by an embedded store (package filestore, for dev and single-node use) and by
// PostgreSQL (package pgstore, for replicated issuers). Both pass the shared
// suite in package storetest.
package store

import (
	"context"
	"errors"
	"time"
)

// Sentinel errors. Implementations wrap them so callers can use errors.Is.
// Any other error means the store could not be reached or failed; the issuer
// answers 503 temporarily_unavailable for those.
var (
	// ErrNotFound: no record with that key.
	ErrNotFound = errors.New("not found")
	// ErrExists: a record with that key already exists; nothing was written.
	ErrExists = errors.New("already exists")
	// ErrReplay: the one-time value (for example a client assertion jti) was
	// already used.
	ErrReplay = errors.New("already used")
	// ErrConflict: a compare-and-swap precondition did not hold (another
	// replica changed the data first); nothing was written.
	ErrConflict = errors.New("conflict")
)

// Client is a registered OAuth client (RFC 7591 metadata plus meshauth's
// extensions). Slices are never nil after a round trip through a store that
// stored them non-nil; an absent list is stored as empty.
type Client struct {
	ID string
	// SecretHash is the hash of the client secret (see issuer's secret
	// hashing); empty for clients that authenticate with private_key_jwt.
	SecretHash string
	Name       string
	// TokenEndpointAuthMethod is client_secret_basic, client_secret_post or
	// private_key_jwt.
	TokenEndpointAuthMethod string
	GrantTypes              []string
	// Scope is the set of scopes the client may request.
	Scope []string
	// JWKS is the client's public key set (RFC 7591 jwks) for
	// private_key_jwt, as JSON; empty otherwise.
	JWKS []byte
	// AccessTokenFormat is "jwt" or "reference".
	AccessTokenFormat string
	// AllowedAudiences are the audiences this client may obtain tokens for.
	AllowedAudiences []string
	RedirectURIs     []string
	// ExchangeScopes limits, per target audience, the scopes this client may
	// obtain by token exchange (RFC 8693); an audience not listed is limited
	// only by Scope. Absent reads back as an empty map.
	ExchangeScopes map[string][]string
	// MaxDelegationDepth bounds the act chain (RFC 8693 §4.1) of tokens this
	// client obtains by exchange; 0 means the issuer's default.
	MaxDelegationDepth int
	CreatedAt          time.Time
}

// SigningKey is one of the issuer's signing keys. The private key is stored
// only encrypted (see package jwks).
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

// Store is the issuer's persistence. Implementations are safe for concurrent
// use, honour ctx deadlines (a cancelled ctx gives an error that satisfies
// errors.Is(err, context.Canceled) and writes nothing), and either complete a
// write or leave nothing of it behind. A record whose expiry equals now has
// expired.
type Store interface {
	// CreateClient stores a new client; ErrExists if the id is taken.
	CreateClient(ctx context.Context, c *Client) error
	// GetClient returns the client with that id or ErrNotFound.
	GetClient(ctx context.Context, id string) (*Client, error)
	// ListClients returns all clients ordered by id.
	ListClients(ctx context.Context) ([]*Client, error)
	// DeleteClient removes a client; ErrNotFound if there was none.
	DeleteClient(ctx context.Context, id string) error

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

	// UseOnce records that value (for example "client_id/jti" of a client
	// assertion) has been used, until expiresAt. ErrReplay if it is already
	// recorded and not yet expired. Expired records may be purged at any time.
	UseOnce(ctx context.Context, value string, expiresAt time.Time) error

	// PutAccessToken stores a reference access token by the hash of its
	// value; ErrExists if that hash is stored already (never replaced).
	PutAccessToken(ctx context.Context, t *AccessToken) error
	// GetAccessToken returns the reference token with that hash, or
	// ErrNotFound (also once it has expired).
	GetAccessToken(ctx context.Context, hash string) (*AccessToken, error)

	// Ping reports whether the store is reachable.
	Ping(ctx context.Context) error
	// Close releases the store's resources.
	Close() error
}

// AccessToken is a reference (opaque) access token. Only the hash of the
// token value is stored; the claims are what introspection will answer.
type AccessToken struct {
	Hash      string
	ID        string // jti
	ClientID  string
	Subject   string
	Audience  []string
	Scope     []string
	IssuedAt  time.Time
	ExpiresAt time.Time
}
