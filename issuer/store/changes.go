package store

import (
	"context"
	"time"
)

// ChangeSeq numbers the changes of what verifiers follow from the issuer:
// its signing keys and its revocations. Every change of either (a key
// added or deleted, a revocation added) takes the next number of one
// sequence that every process on the store shares, in the order the
// changes commit, so that a reader who sees number n sees every change up
// to n. Revocations that expire are no change: verifiers expire them too.
type ChangeSeq struct {
	// Seq is the number of the latest change.
	Seq int64
	// KeysSeq is the number of the latest change of the signing keys; at
	// least 1 once the store exists, even for keys older than the
	// sequence.
	KeysSeq int64
}

// Changes is what the issuer's distribution of keys and revocations
// needs of a store: the state verifiers follow, numbered, and a signal
// when it changes.
type Changes interface {
	// ChangeSeq returns the numbers of the latest changes.
	ChangeSeq(ctx context.Context) (ChangeSeq, error)
	// ListSigningKeysAt returns what ListSigningKeys does and the numbers
	// those keys are current at, read at one instant.
	ListSigningKeysAt(ctx context.Context) ([]*SigningKey, ChangeSeq, error)
	// RevocationsAfter returns the revocations whose Seq is greater than
	// after and that have not expired at now, ordered by Seq, and the
	// numbers they are current at, read at one instant: every revocation
	// numbered up to that Seq and after after is either returned or
	// expired.
	RevocationsAfter(ctx context.Context, after int64, now time.Time) ([]*Revocation, ChangeSeq, error)
	// Changed returns a channel that is closed at the next change of the
	// signing keys or revocations by any process on the store (another
	// issuer replica too), or when such a change may have been missed,
	// such as after a lost connection. Call it again after each close.
	Changed() <-chan struct{}
}
