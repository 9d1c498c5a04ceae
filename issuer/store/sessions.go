package store

import (
	"context"
	"time"
)

// Sessions keeps the issuer's sign-in sessions: a person who signed in once
// is not asked for a password again by the next authorization in the same
// browser. Replicas share them through the store. A session is found by the
// hash of the random value its browser cookie holds; the value itself is
// never stored.
type Sessions interface {
	// CreateSession stores a new session; ErrExists if its hash is taken.
	CreateSession(ctx context.Context, s *Session) error
	// GetSession returns the session with that hash, or ErrNotFound (also
	// once it has expired).
	GetSession(ctx context.Context, hash string) (*Session, error)
	// UpdateSession replaces the LastSeenAt and Consents of the live
	// session with s.Hash; ErrNotFound if it has ended, which it never
	// brings back. Concurrent updates of one session may overwrite each
	// other: the last one wins.
	UpdateSession(ctx context.Context, s *Session) error
	// DeleteSession ends a session; a missing one is not an error.
	DeleteSession(ctx context.Context, hash string) error
	// DeleteUserSessions ends every session of a user.
	DeleteUserSessions(ctx context.Context, userID string) error
}

// Session is a person signed in at the issuer, in one browser.
type Session struct {
	// Hash is the SHA-256 of the session cookie's value (see issuer's
	// reference token hashing).
	Hash   string
	UserID string
	// AuthTime is when the user authenticated; AMR the methods (RFC 8176
	// values such as "pwd"); IDP the issuer of the upstream identity
	// provider they signed in with, empty for a password.
	AuthTime time.Time
	AMR      []string
	IDP      string
	// Consents are the authorizations the user allowed during the
	// session: a later request within one of them needs no consent page.
	Consents []Consent
	// LastSeenAt is the session's last use, for the idle timeout, which
	// the issuer applies; ExpiresAt bounds its life.
	LastSeenAt time.Time
	ExpiresAt  time.Time
}

// Consent is what a user allowed a client: scopes and audiences.
type Consent struct {
	ClientID string
	Scope    []string
	Audience []string
}
