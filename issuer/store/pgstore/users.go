package pgstore

import (
	"context"
	"fmt"

	"github.com/jackc/pgx/v5"

	"github.com/meshauth/meshauth/issuer/store"
)

const userColumns = "id, name, password_hash, created_at, display_name, email, email_verified, disabled"

const selectUser = "SELECT " + userColumns + " FROM meshauth_users"

func scanUser(row pgx.CollectableRow) (*store.User, error) {
	var u store.User
	err := row.Scan(&u.ID, &u.Name, &u.PasswordHash, &u.CreatedAt, &u.DisplayName, &u.Email, &u.EmailVerified, &u.Disabled)
	u.CreatedAt = u.CreatedAt.UTC()
	return &u, err
}

// insertUser is the statement that stores u, with its arguments.
func insertUser(u *store.User) (string, []any) {
	return "INSERT INTO meshauth_users (" + userColumns + ") VALUES ($1, $2, $3, $4, $5, $6, $7, $8)",
		[]any{u.ID, u.Name, u.PasswordHash, u.CreatedAt, u.DisplayName, u.Email, u.EmailVerified, u.Disabled}
}

// CreateUser relies on the table's two unique constraints, id and name:
// either violated is ErrExists.
func (s *Store) CreateUser(ctx context.Context, u *store.User) error {
	ctx, cancel := withTimeout(ctx)
	defer cancel()
	sql, args := insertUser(u)
	_, err := s.pool.Exec(ctx, sql, args...)
	if err != nil {
		return fmt.Errorf("create user %q named %q: %w", u.ID, u.Name, storeErr(err))
	}
	return nil
}

func (s *Store) GetUserByName(ctx context.Context, name string) (*store.User, error) {
	ctx, cancel := withTimeout(ctx)
	defer cancel()
	rows, _ := s.pool.Query(ctx, selectUser+" WHERE name = $1", name)
	u, err := pgx.CollectExactlyOneRow(rows, scanUser)
	if err != nil {
		return nil, fmt.Errorf("get user named %q: %w", name, storeErr(err))
	}
	return u, nil
}

func (s *Store) GetUser(ctx context.Context, id string) (*store.User, error) {
	ctx, cancel := withTimeout(ctx)
	defer cancel()
	rows, _ := s.pool.Query(ctx, selectUser+" WHERE id = $1", id)
	u, err := pgx.CollectExactlyOneRow(rows, scanUser)
	if err != nil {
		return nil, fmt.Errorf("get user %q: %w", id, storeErr(err))
	}
	return u, nil
}

func (s *Store) UpdateUserPassword(ctx context.Context, id, passwordHash string) error {
	ctx, cancel := withTimeout(ctx)
	defer cancel()
	tag, err := s.pool.Exec(ctx, "UPDATE meshauth_users SET password_hash = $2 WHERE id = $1", id, passwordHash)
	if err == nil && tag.RowsAffected() == 0 {
		err = store.ErrNotFound
	}
	if err != nil {
		return fmt.Errorf("update password of user %q: %w", id, err)
	}
	return nil
}
