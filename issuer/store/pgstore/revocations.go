package pgstore

import (
	"context"
	"fmt"
	"time"

	"github.com/meshauth/meshauth/issuer/store"
)

// AddRevocation takes Seq from the change sequence (the trigger of
// migration 004) and sets r.Seq once the revocation is stored.
func (s *Store) AddRevocation(ctx context.Context, r *store.Revocation) error {
	ctx, cancel := withTimeout(ctx)
	defer cancel()
	var seq int64
	err := s.pool.QueryRow(ctx, `INSERT INTO meshauth_revocations (id, kind, value, revoked_at, expires_at)
		VALUES ($1, $2, $3, $4, $5) RETURNING seq`, r.ID, r.Kind, r.Value, r.RevokedAt, r.ExpiresAt).Scan(&seq)
	if err != nil {
		return fmt.Errorf("add revocation %q: %w", r.ID, storeErr(err))
	}
	r.Seq = seq
	s.changed.Notify()
	return nil
}

// IsRevoked looks each key up in the (kind, value) index, in one query.
func (s *Store) IsRevoked(ctx context.Context, keys []store.RevocationKey, issuedAt, now time.Time) (bool, error) {
	ctx, cancel := withTimeout(ctx)
	defer cancel()
	kinds, values := make([]string, len(keys)), make([]string, len(keys))
	for i, k := range keys {
		kinds[i], values[i] = k.Kind, k.Value
	}
	var revoked bool
	err := s.pool.QueryRow(ctx, `SELECT EXISTS (SELECT 1 FROM meshauth_revocations r
		JOIN unnest($1::text[], $2::text[]) AS k(kind, value) ON r.kind = k.kind AND r.value = k.value
		WHERE r.revoked_at >= $3 AND r.expires_at > $4)`, kinds, values, issuedAt, now).Scan(&revoked)
	if err != nil {
		return false, fmt.Errorf("check revocations: %w", err)
	}
	return revoked, nil
}
