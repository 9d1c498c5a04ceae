package store

import (
	"context"
	"time"
)

// AccessTokens holds the reference (opaque) access tokens the issuer
// issued, which introspection and the edge's dereference look up.
type AccessTokens interface {
	// PutAccessToken stores a reference access token by the hash of its
	// value; ErrExists if that hash is stored already (never replaced).
	PutAccessToken(ctx context.Context, t *AccessToken) error
	// GetAccessToken returns the reference token with that hash, or
	// ErrNotFound (also once it has expired).
	GetAccessToken(ctx context.Context, hash string) (*AccessToken, error)
	// DeleteAccessToken removes a reference access token; a missing one is
	// not an error.
	DeleteAccessToken(ctx context.Context, hash string) error
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
