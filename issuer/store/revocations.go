package store

import (
	"context"
	"time"

	"github.com/meshauth/meshauth/token"
)

// Revocations records what verifiers must refuse (RFC 7009 and the admin
// API's revocations), for introspection here and, numbered by Changes,
// for every verifier through the distribution.
type Revocations interface {
	// AddRevocation records a revocation and sets its Seq; ErrExists if
	// its ID is taken.
	AddRevocation(ctx context.Context, r *Revocation) error
	// IsRevoked reports whether a revocation that has not expired at now
	// matches one of keys and was made at or after issuedAt (the token's
	// iat). Introspection asks it for every token it answers active.
	IsRevoked(ctx context.Context, keys []RevocationKey, issuedAt, now time.Time) (bool, error)
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
