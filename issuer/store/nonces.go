package store

import (
	"context"
	"time"
)

// Nonces remembers one-time values, so that a second use of one is
// refused: a client assertion's jti (RFC 7523 §3), a consent form, an
// upstream sign-in's state.
type Nonces interface {
	// UseOnce records that value (for example "client_id/jti" of a client
	// assertion) has been used, until expiresAt. ErrReplay if it is already
	// recorded and not yet expired. Expired records may be purged at any time.
	UseOnce(ctx context.Context, value string, expiresAt time.Time) error
}
