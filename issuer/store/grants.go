package store

import (
	"context"
	"time"
)

// Grants holds what people authorized: each grant with its authorization
// code and refresh tokens, which revoking the grant ends together with its
// reference access tokens.
type Grants interface {
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
