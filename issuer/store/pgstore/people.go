package pgstore

import (
	"context"
	"fmt"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/meshauth/meshauth/issuer/store"
)

// ListUsers pages by name, which the "C" collation keeps in byte order.
func (s *Store) ListUsers(ctx context.Context, after string, limit int) ([]*store.User, error) {
	ctx, cancel := withTimeout(ctx)
	defer cancel()
	rows, _ := s.pool.Query(ctx, selectUser+" WHERE name > $1 ORDER BY name LIMIT $2", after, limit)
	users, err := pgx.CollectRows(rows, scanUser)
	if err != nil {
		return nil, fmt.Errorf("list users: %w", err)
	}
	return users, nil
}

func (s *Store) ListIdentities(ctx context.Context, userIDs []string) ([]*store.Identity, error) {
	ctx, cancel := withTimeout(ctx)
	defer cancel()
	rows, _ := s.pool.Query(ctx, "SELECT "+identityColumns+` FROM meshauth_identities
		WHERE user_id = ANY($1) ORDER BY user_id, issuer COLLATE "C"`, userIDs)
	ids, err := pgx.CollectRows(rows, func(row pgx.CollectableRow) (*store.Identity, error) {
		var id store.Identity
		err := row.Scan(&id.Issuer, &id.Subject, &id.UserID, &id.CreatedAt)
		id.CreatedAt = id.CreatedAt.UTC()
		return &id, err
	})
	if err != nil {
		return nil, fmt.Errorf("list identities: %w", err)
	}
	return ids, nil
}

func (s *Store) DeleteUser(ctx context.Context, id string) error {
	ctx, cancel := withTimeout(ctx)
	defer cancel()
	err := pgx.BeginFunc(ctx, s.pool, func(tx pgx.Tx) error {
		// The links first: they refer to the user.
		for _, sql := range []string{
			"DELETE FROM meshauth_identities WHERE user_id = $1",
			"DELETE FROM meshauth_sessions WHERE user_id = $1",
		} {
			if _, err := tx.Exec(ctx, sql, id); err != nil {
				return err
			}
		}
		tag, err := tx.Exec(ctx, "DELETE FROM meshauth_users WHERE id = $1", id)
		if err == nil && tag.RowsAffected() == 0 {
			err = store.ErrNotFound
		}
		return err
	})
	if err != nil {
		return fmt.Errorf("delete user %q: %w", id, err)
	}
	return nil
}

func (s *Store) RevokeUserGrants(ctx context.Context, subject string, at time.Time) (int, error) {
	ctx, cancel := withTimeout(ctx)
	defer cancel()
	var n int64
	err := pgx.BeginFunc(ctx, s.pool, func(tx pgx.Tx) error {
		tag, err := tx.Exec(ctx, "UPDATE meshauth_grants SET revoked_at = $2 WHERE subject = $1 AND revoked_at IS NULL", subject, at)
		if err != nil {
			return err
		}
		n = tag.RowsAffected()
		for _, table := range []string{"meshauth_refresh_tokens", "meshauth_access_tokens"} {
			_, err := tx.Exec(ctx, "DELETE FROM "+table+" WHERE grant_id <> '' AND grant_id IN (SELECT id FROM meshauth_grants WHERE subject = $1)", subject)
			if err != nil {
				return err
			}
		}
		return nil
	})
	if err != nil {
		return 0, fmt.Errorf("revoke grants of %q: %w", subject, err)
	}
	return int(n), nil
}
