// Package store defines the issuer's persistence: one interface, implemented
// by an embedded store (package filestore, for dev and single-node use) and by
// PostgreSQL (package pgstore, for replicated issuers). Both pass the shared
// suite in package storetest.
package store

import (
	"context"
	"errors"
	"time"

	"github.com/meshauth/meshauth/token"
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
	// PostLogoutRedirectURIs are where the client may send people after
	// they sign out (OpenID Connect RP-Initiated Logout 1.0 §3.1).
	PostLogoutRedirectURIs []string
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

	// CreateUser stores a new user; ErrExists if the id or the name is
	// taken.
	CreateUser(ctx context.Context, u *User) error
	// GetUserByName returns the user with that name or ErrNotFound. Names
	// are compared exactly; callers normalise them first.
	GetUserByName(ctx context.Context, name string) (*User, error)
	// GetUser returns the user with that id or ErrNotFound.
	GetUser(ctx context.Context, id string) (*User, error)
	// UpdateUserPassword replaces a user's password hash; ErrNotFound if
	// there is no such user.
	UpdateUserPassword(ctx context.Context, id, passwordHash string) error

	// CreateGrant stores a new grant (the family of tokens that descend
	// from one user authorization); ErrExists if the id is taken.
	CreateGrant(ctx context.Context, g *Grant) error
	// GetGrant returns the grant with that id or ErrNotFound (also once it
	// has expired). A revoked grant is returned with RevokedAt set.
	GetGrant(ctx context.Context, id string) (*Grant, error)
	// RevokeGrant sets the grant's RevokedAt (kept if already set) and, in
	// the same transaction, deletes every refresh token and reference
	// access token of the grant. Revoking a missing grant is not an error.
	RevokeGrant(ctx context.Context, id string, at time.Time) error

	// PutAuthorizationCode stores a code by the hash of its value;
	// ErrExists if the hash is stored already.
	PutAuthorizationCode(ctx context.Context, c *AuthorizationCode) error
	// RedeemAuthorizationCode marks the code used and returns it. If it was
	// used before, it returns the code and an error wrapping ErrReplay, so
	// the caller can revoke the grant the first use created (RFC 6749
	// §4.1.2, RFC 9700 §4.5). ErrNotFound if there is no such code or it
	// has expired.
	RedeemAuthorizationCode(ctx context.Context, hash string, at time.Time) (*AuthorizationCode, error)

	// PutRefreshToken stores a refresh token by the hash of its value;
	// ErrExists if the hash is stored already.
	PutRefreshToken(ctx context.Context, t *RefreshToken) error
	// UseRefreshToken marks the token used and returns it. If it was used
	// before, it returns the token and an error wrapping ErrReplay, so the
	// caller can revoke its whole grant (RFC 9700 §4.14.2). ErrNotFound if
	// there is no such token or it has expired.
	UseRefreshToken(ctx context.Context, hash string, at time.Time) (*RefreshToken, error)
	// GetRefreshToken returns the refresh token with that hash, used or
	// not, or ErrNotFound (also once it has expired).
	GetRefreshToken(ctx context.Context, hash string) (*RefreshToken, error)
	// DeleteRefreshToken removes one refresh token; a missing one is not an
	// error.
	DeleteRefreshToken(ctx context.Context, hash string) error

	// DeleteAccessToken removes a reference access token; a missing one is
	// not an error.
	DeleteAccessToken(ctx context.Context, hash string) error

	// AddRevocation records a revocation and sets its Seq; ErrExists if
	// its ID is taken.
	AddRevocation(ctx context.Context, r *Revocation) error

	// IsRevoked reports whether a revocation that has not expired at now
	// matches one of keys and was made at or after issuedAt (the token's
	// iat). Introspection asks it for every token it answers active.
	IsRevoked(ctx context.Context, keys []RevocationKey, issuedAt, now time.Time) (bool, error)

	// Sign-in sessions and links to upstream identities (sessions.go,
	// identities.go).
	Sessions
	Identities
	// Changes numbers the changes of signing keys and revocations: every
	// AddSigningKey, DeleteSigningKey of an existing key and
	// AddRevocation is one.
	Changes
	// Administration of users and the login backoff's counters
	// (people.go, loginfailures.go).
	People
	LoginFailures

	// Ping reports whether the store is reachable.
	Ping(ctx context.Context) error
	// Close releases the store's resources.
	Close() error
}

// AccessToken is a reference (opaque) access token. Only the hash of the
// token value is stored; the claims are what introspection will answer.
type AccessToken struct {
	Hash string
	ID   string // jti
	// GrantID is the user authorization the token descends from; empty for
	// tokens of no user (client_credentials).
	GrantID   string
	ClientID  string
	Subject   string
	Audience  []string
	Scope     []string
	IssuedAt  time.Time
	ExpiresAt time.Time
}

// User is an end user who can log in to the authorization endpoint.
type User struct {
	// ID is the stable subject identifier (the sub of the user's tokens).
	ID string
	// Name is the unique login name.
	Name string
	// PasswordHash is the argon2id hash in PHC string format; empty for a
	// user who signs in only through an upstream identity provider.
	PasswordHash string
	CreatedAt    time.Time
	// DisplayName, Email and EmailVerified are what clients may learn of
	// the person as the OpenID Connect claims name, email and
	// email_verified; empty when unknown.
	DisplayName   string
	Email         string
	EmailVerified bool
	// Disabled users cannot sign in, and their grants issue no tokens.
	Disabled bool
}

// Grant is one user authorization of one client: the family of an
// authorization code and every refresh and access token descending from it.
// Revoking it ends them all.
type Grant struct {
	ID       string
	ClientID string
	Subject  string
	Scope    []string
	Audience []string
	// CreatedAt is when the user authorized; ExpiresAt bounds the family's
	// life (the absolute refresh token lifetime).
	CreatedAt time.Time
	ExpiresAt time.Time
	// RevokedAt is zero unless the grant was revoked.
	RevokedAt time.Time
	// How the user signed in (OpenID Connect Core §2): when (AuthTime),
	// with which methods (AMR, RFC 8176 values) and, for a sign-in
	// through an upstream identity provider, its issuer (IDP). Nonce is
	// the client's nonce, echoed in the ID Token.
	AuthTime time.Time
	AMR      []string
	IDP      string
	Nonce    string
}

// AuthorizationCode is an RFC 6749 §4.1 code, stored only as a hash.
type AuthorizationCode struct {
	Hash     string
	GrantID  string
	ClientID string
	Subject  string
	// RedirectURI is the redirect_uri of the authorization request, which
	// the token request must repeat exactly (RFC 6749 §4.1.3).
	RedirectURI string
	Scope       []string
	Audience    []string
	// CodeChallenge and CodeChallengeMethod are RFC 7636's; empty when the
	// request had none (confidential clients only).
	CodeChallenge       string
	CodeChallengeMethod string
	IssuedAt            time.Time
	ExpiresAt           time.Time
	// UsedAt is zero until the code is redeemed.
	UsedAt time.Time
}

// RefreshToken is a refresh token, stored only as a hash. Every use rotates
// it: the used token is kept (UsedAt set) so that a second use is detected.
type RefreshToken struct {
	Hash      string
	GrantID   string
	ClientID  string
	Subject   string
	Scope     []string
	Audience  []string
	IssuedAt  time.Time
	ExpiresAt time.Time
	UsedAt    time.Time
}

// Revocation kinds: what a Revocation's Value matches in a token. They are
// the claim names package token matches.
const (
	RevokeToken   = token.RevokeTokenID
	RevokeClient  = token.RevokeClientID
	RevokeSubject = token.RevokeSubject
	RevokeGrant   = token.RevokeSession
)

// RevocationKey is what a revocation matches: a kind and its value.
type RevocationKey struct {
	Kind  string
	Value string
}

// Revocation tells verifiers to refuse matching tokens issued at or before
// RevokedAt. It is kept until ExpiresAt, when no token it can match is still
// valid.
type Revocation struct {
	ID string
	// Seq is the ChangeSeq.Seq of its addition; the store assigns it.
	Seq       int64
	Kind      string
	Value     string
	RevokedAt time.Time
	ExpiresAt time.Time
}
