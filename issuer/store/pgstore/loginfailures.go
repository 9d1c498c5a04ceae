package pgstore

import (
	"context"
	"fmt"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/meshauth/meshauth/issuer/store"
)

func init() {
	swept = append(swept, "meshauth_login_failures")
}

// AddLoginFailure is one statement, so that concurrent failures of one key
// serialise on its row and each counts.
func (s *Store) AddLoginFailure(ctx context.Context, key string, at, expiresAt time.Time) (*store.LoginFailure, error) {
	ctx, cancel := withTimeout(ctx)
	defer cancel()
	f := store.LoginFailure{Key: key}
	err := s.pool.QueryRow(ctx, `INSERT INTO meshauth_login_failures AS f (key, count, last_at, expires_at)
		VALUES ($1, 1, $2, $3)
		ON CONFLICT (key) DO UPDATE SET
			count      = CASE WHEN f.expires_at > $2 THEN f.count + 1 ELSE 1 END,
			last_at    = CASE WHEN f.expires_at > $2 THEN GREATEST(f.last_at, $2) ELSE $2 END,
			expires_at = CASE WHEN f.expires_at > $2 THEN GREATEST(f.expires_at, $3) ELSE $3 END
		RETURNING count, last_at, expires_at`, key, at, expiresAt).Scan(&f.Count, &f.Last, &f.ExpiresAt)
	if err != nil {
		return nil, fmt.Errorf("count login failure of %q: %w", key, err)
	}
	f.Last, f.ExpiresAt = f.Last.UTC(), f.ExpiresAt.UTC()
	return &f, nil
}

func (s *Store) GetLoginFailures(ctx context.Context, keys []string, now time.Time) ([]*store.LoginFailure, error) {
	ctx, cancel := withTimeout(ctx)
	defer cancel()
	rows, _ := s.pool.Query(ctx, `SELECT key, count, last_at, expires_at FROM meshauth_login_failures
		WHERE key = ANY($1) AND expires_at > $2`, keys, now)
	out, err := pgx.CollectRows(rows, func(row pgx.CollectableRow) (*store.LoginFailure, error) {
		var f store.LoginFailure
		err := row.Scan(&f.Key, &f.Count, &f.Last, &f.ExpiresAt)
		f.Last, f.ExpiresAt = f.Last.UTC(), f.ExpiresAt.UTC()
		return &f, err
	})
	if err != nil {
		return nil, fmt.Errorf("get login failures: %w", err)
	}
	return out, nil
}

func (s *Store) DeleteLoginFailures(ctx context.Context, key string) error {
	ctx, cancel := withTimeout(ctx)
	defer cancel()
	if _, err := s.pool.Exec(ctx, "DELETE FROM meshauth_login_failures WHERE key = $1", key); err != nil {
		return fmt.Errorf("delete login failures of %q: %w", key, err)
	}
	return nil
}

// trimLoginFailures deletes rows beyond limit: the fewest failures first,
// then the soonest to expire (see store.MaxLoginFailures).
func (s *Store) trimLoginFailures(ctx context.Context, limit int) error {
	ctx, cancel := withTimeout(ctx)
	defer cancel()
	_, err := s.pool.Exec(ctx, `DELETE FROM meshauth_login_failures WHERE key IN (
		SELECT key FROM meshauth_login_failures ORDER BY count, expires_at
		LIMIT GREATEST((SELECT count(*) FROM meshauth_login_failures) - $1, 0))`, limit)
	if err != nil {
		return fmt.Errorf("trim login failures: %w", err)
	}
	return nil
}
