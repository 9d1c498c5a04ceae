package store

import (
	"context"
	"time"
)

// LoginFailures counts failed sign-ins per key (an account name or a
// client address, as the issuer names them) for the login backoff. The
// counters live in the store so that every replica sees the failures made
// at the others: N replicas allow no more attempts than one.
type LoginFailures interface {
	// AddLoginFailure counts one failure of key at `at` and returns the
	// record as written. A record that is live at `at` (ExpiresAt after
	// it) counts one more, keeps the later of its Last and at, and the
	// later of its ExpiresAt and expiresAt; otherwise the count starts
	// again at one, with Last at and ExpiresAt expiresAt. Concurrent
	// failures of one key each count.
	AddLoginFailure(ctx context.Context, key string, at, expiresAt time.Time) (*LoginFailure, error)
	// GetLoginFailures returns the records of keys that are live at now,
	// in no particular order; a key without one is left out.
	GetLoginFailures(ctx context.Context, keys []string, now time.Time) ([]*LoginFailure, error)
	// DeleteLoginFailures forgets the failures of key; a key without any
	// is not an error.
	DeleteLoginFailures(ctx context.Context, key string) error
}

// LoginFailure is the count of a key's recent failed sign-ins.
type LoginFailure struct {
	Key   string
	Count int
	// Last is the latest failure; the record is forgotten at ExpiresAt.
	Last      time.Time
	ExpiresAt time.Time
}

// MaxLoginFailures bounds the records a store keeps, so that an attacker
// cycling through names or addresses cannot grow it without end. The
// store's sweep enforces it, dropping first the records with the fewest
// failures (a name guessed once), then those that expire soonest, so that
// the counters that block someone are the last to go. Between two sweeps
// the store may hold more, by as many failures as the issuers can check
// (each costs a password hash).
const MaxLoginFailures = 100_000
