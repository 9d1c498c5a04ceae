package pgstore

import (
	"context"
	"errors"
	"fmt"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"

	"github.com/meshauth/meshauth/issuer/store"
)

// foreignKeyViolation is the SQLSTATE of a link to a missing user.
const foreignKeyViolation = "23503"

const identityColumns = "issuer, subject, user_id, created_at"

// linkErr maps a refused link: a taken identity or user link is ErrExists,
// a missing user ErrNotFound.
func linkErr(err error) error {
	var pgErr *pgconn.PgError
	if errors.As(err, &pgErr) && pgErr.Code == foreignKeyViolation {
		return store.ErrNotFound
	}
	return storeErr(err)
}

func (s *Store) LinkIdentity(ctx context.Context, id *store.Identity) error {
	ctx, cancel := withTimeout(ctx)
	defer cancel()
	_, err := s.pool.Exec(ctx, "INSERT INTO meshauth_identities ("+identityColumns+") VALUES ($1, $2, $3, $4)",
		id.Issuer, id.Subject, id.UserID, id.CreatedAt)
	if err != nil {
		return fmt.Errorf("link identity at %q to user %q: %w", id.Issuer, id.UserID, linkErr(err))
	}
	return nil
}

func (s *Store) CreateUserWithIdentity(ctx context.Context, u *store.User, id *store.Identity) error {
	ctx, cancel := withTimeout(ctx)
	defer cancel()
	err := pgx.BeginFunc(ctx, s.pool, func(tx pgx.Tx) error {
		sql, args := insertUser(u)
		if _, err := tx.Exec(ctx, sql, args...); err != nil {
			return err
		}
		_, err := tx.Exec(ctx, "INSERT INTO meshauth_identities ("+identityColumns+") VALUES ($1, $2, $3, $4)",
			id.Issuer, id.Subject, id.UserID, id.CreatedAt)
		return err
	})
	if err != nil {
		return fmt.Errorf("create user %q linked to an identity at %q: %w", u.ID, id.Issuer, linkErr(err))
	}
	return nil
}

func (s *Store) GetIdentity(ctx context.Context, issuer, subject string) (*store.Identity, error) {
	ctx, cancel := withTimeout(ctx)
	defer cancel()
	rows, _ := s.pool.Query(ctx, "SELECT "+identityColumns+" FROM meshauth_identities WHERE issuer = $1 AND subject = $2", issuer, subject)
	id, err := pgx.CollectExactlyOneRow(rows, func(row pgx.CollectableRow) (*store.Identity, error) {
		var id store.Identity
		err := row.Scan(&id.Issuer, &id.Subject, &id.UserID, &id.CreatedAt)
		id.CreatedAt = id.CreatedAt.UTC()
		return &id, err
	})
	if err != nil {
		return nil, fmt.Errorf("get identity at %q: %w", issuer, storeErr(err))
	}
	return id, nil
}

func (s *Store) FindUsersByEmail(ctx context.Context, email string) ([]*store.User, error) {
	ctx, cancel := withTimeout(ctx)
	defer cancel()
	rows, _ := s.pool.Query(ctx, selectUser+" WHERE email = $1 AND email <> ''", email)
	users, err := pgx.CollectRows(rows, scanUser)
	if err != nil {
		return nil, fmt.Errorf("find users by email: %w", err)
	}
	return users, nil
}

func (s *Store) SetUserDisabled(ctx context.Context, id string, disabled bool) error {
	ctx, cancel := withTimeout(ctx)
	defer cancel()
	tag, err := s.pool.Exec(ctx, "UPDATE meshauth_users SET disabled = $2 WHERE id = $1", id, disabled)
	if err == nil && tag.RowsAffected() == 0 {
		err = store.ErrNotFound
	}
	if err != nil {
		return fmt.Errorf("set disabled of user %q: %w", id, err)
	}
	return nil
}
