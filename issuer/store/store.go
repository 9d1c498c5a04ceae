// Package store defines the issuer's persistence as roles, one interface
// each: Clients, SigningKeys, Nonces, AccessTokens, Users, Grants,
// Revocations, Changes, Sessions and Identities. Store embeds them all; a
// consumer declares the role, or the few methods, it uses, where it uses
// it. Two implementations hold every role: an embedded store (package
// filestore, for dev and single-node use) and PostgreSQL (package pgstore,
// for replicated issuers). Both pass the shared suite in package
// storetest, one group of tests per role.
package store

import (
	"context"
	"errors"
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

// Store is the issuer's persistence: every role. Implementations are safe
// for concurrent use, honour ctx deadlines (a cancelled ctx gives an error
// that satisfies errors.Is(err, context.Canceled) and writes nothing), and
// either complete a write or leave nothing of it behind. A record whose
// expiry equals now has expired.
type Store interface {
	Clients
	SigningKeys
	Nonces
	AccessTokens
	Users
	Grants
	Revocations
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
