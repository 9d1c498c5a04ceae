package pgstore

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/meshauth/meshauth/issuer/store"
)

// nullTime stores the zero time (unset) as NULL.
func nullTime(t time.Time) *time.Time {
	if t.IsZero() {
		return nil
	}
	return &t
}

// fromNull reads NULL back as the zero time.
func fromNull(t *time.Time) time.Time {
	if t == nil {
		return time.Time{}
	}
	return t.UTC()
}

const grantColumns = "id, client_id, subject, scope, audience, created_at, expires_at, revoked_at, auth_time, amr, idp, nonce"

func scanGrant(row pgx.CollectableRow) (*store.Grant, error) {
	var g store.Grant
	var revokedAt, authTime *time.Time
	err := row.Scan(&g.ID, &g.ClientID, &g.Subject, &g.Scope, &g.Audience, &g.CreatedAt, &g.ExpiresAt, &revokedAt,
		&authTime, &g.AMR, &g.IDP, &g.Nonce)
	g.CreatedAt, g.ExpiresAt, g.RevokedAt, g.AuthTime = g.CreatedAt.UTC(), g.ExpiresAt.UTC(), fromNull(revokedAt), fromNull(authTime)
	return &g, err
}

func (s *Store) CreateGrant(ctx context.Context, g *store.Grant) error {
	ctx, cancel := withTimeout(ctx)
	defer cancel()
	_, err := s.pool.Exec(ctx, "INSERT INTO meshauth_grants ("+grantColumns+") VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12)",
		g.ID, g.ClientID, g.Subject, orEmpty(g.Scope), orEmpty(g.Audience), g.CreatedAt, g.ExpiresAt, nullTime(g.RevokedAt),
		nullTime(g.AuthTime), orEmpty(g.AMR), g.IDP, g.Nonce)
	if err != nil {
		return fmt.Errorf("create grant %q: %w", g.ID, storeErr(err))
	}
	return nil
}

func (s *Store) GetGrant(ctx context.Context, id string) (*store.Grant, error) {
	ctx, cancel := withTimeout(ctx)
	defer cancel()
	rows, _ := s.pool.Query(ctx, "SELECT "+grantColumns+" FROM meshauth_grants WHERE id = $1 AND expires_at > now()", id)
	g, err := pgx.CollectExactlyOneRow(rows, scanGrant)
	if err != nil {
		return nil, fmt.Errorf("get grant %q: %w", id, storeErr(err))
	}
	return g, nil
}

// RevokeGrant deletes the grant's tokens through the grant_id indexes. The
// tokens are deleted even if the grant itself is gone; tokens of no grant
// (an empty grant_id) are never a grant's.
func (s *Store) RevokeGrant(ctx context.Context, id string, at time.Time) error {
	ctx, cancel := withTimeout(ctx)
	defer cancel()
	err := pgx.BeginFunc(ctx, s.pool, func(tx pgx.Tx) error {
		if _, err := tx.Exec(ctx, "UPDATE meshauth_grants SET revoked_at = $2 WHERE id = $1 AND revoked_at IS NULL", id, at); err != nil {
			return err
		}
		if _, err := tx.Exec(ctx, "DELETE FROM meshauth_refresh_tokens WHERE grant_id = $1 AND grant_id <> ''", id); err != nil {
			return err
		}
		_, err := tx.Exec(ctx, "DELETE FROM meshauth_access_tokens WHERE grant_id = $1 AND grant_id <> ''", id)
		return err
	})
	if err != nil {
		return fmt.Errorf("revoke grant %q: %w", id, err)
	}
	return nil
}

const codeColumns = `hash, grant_id, client_id, subject, redirect_uri, scope, audience,
	code_challenge, code_challenge_method, issued_at, expires_at, used_at`

func scanCode(row pgx.CollectableRow) (*store.AuthorizationCode, error) {
	var c store.AuthorizationCode
	var usedAt *time.Time
	err := row.Scan(&c.Hash, &c.GrantID, &c.ClientID, &c.Subject, &c.RedirectURI, &c.Scope, &c.Audience,
		&c.CodeChallenge, &c.CodeChallengeMethod, &c.IssuedAt, &c.ExpiresAt, &usedAt)
	c.IssuedAt, c.ExpiresAt, c.UsedAt = c.IssuedAt.UTC(), c.ExpiresAt.UTC(), fromNull(usedAt)
	return &c, err
}

func (s *Store) PutAuthorizationCode(ctx context.Context, c *store.AuthorizationCode) error {
	ctx, cancel := withTimeout(ctx)
	defer cancel()
	_, err := s.pool.Exec(ctx, "INSERT INTO meshauth_authorization_codes ("+codeColumns+`)
		VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12)`,
		c.Hash, c.GrantID, c.ClientID, c.Subject, c.RedirectURI, orEmpty(c.Scope), orEmpty(c.Audience),
		c.CodeChallenge, c.CodeChallengeMethod, c.IssuedAt, c.ExpiresAt, nullTime(c.UsedAt))
	if err != nil {
		return fmt.Errorf("put authorization code: %w", storeErr(err))
	}
	return nil
}

func (s *Store) RedeemAuthorizationCode(ctx context.Context, hash string, at time.Time) (*store.AuthorizationCode, error) {
	c, err := markUsed(ctx, s, "meshauth_authorization_codes", codeColumns, hash, at, scanCode,
		func(c *store.AuthorizationCode) bool { return !c.UsedAt.IsZero() })
	switch {
	case err == nil:
		return c, nil
	case errors.Is(err, store.ErrReplay):
		return c, fmt.Errorf("redeem authorization code of grant %q: %w", c.GrantID, err)
	}
	return nil, fmt.Errorf("redeem authorization code: %w", err)
}

// markUsed sets used_at of the live, unused record under hash in one
// UPDATE, so that of concurrent uses exactly one matches: the others wait
// for its row lock, then find used_at set (READ COMMITTED re-reads the row).
// If no record was updated, it reads the record to tell a replay (returned
// with ErrReplay) from a missing or expired one (ErrNotFound).
func markUsed[T any](ctx context.Context, s *Store, table, columns, hash string, at time.Time,
	scan pgx.RowToFunc[*T], used func(*T) bool) (*T, error) {
	ctx, cancel := withTimeout(ctx)
	defer cancel()
	rows, _ := s.pool.Query(ctx, "UPDATE "+table+` SET used_at = $2
		WHERE hash = $1 AND used_at IS NULL AND expires_at > $2 RETURNING `+columns, hash, at)
	v, err := pgx.CollectExactlyOneRow(rows, scan)
	if !errors.Is(err, pgx.ErrNoRows) {
		if err != nil {
			return nil, err
		}
		return v, nil
	}
	rows, _ = s.pool.Query(ctx, "SELECT "+columns+" FROM "+table+" WHERE hash = $1 AND expires_at > $2", hash, at)
	v, err = pgx.CollectExactlyOneRow(rows, scan)
	switch {
	case err != nil:
		return nil, storeErr(err)
	case !used(v):
		// Stored after the UPDATE looked: it did not exist when used.
		return nil, store.ErrNotFound
	}
	return v, store.ErrReplay
}

const refreshColumns = "hash, grant_id, client_id, subject, scope, audience, issued_at, expires_at, used_at"

func scanRefresh(row pgx.CollectableRow) (*store.RefreshToken, error) {
	var t store.RefreshToken
	var usedAt *time.Time
	err := row.Scan(&t.Hash, &t.GrantID, &t.ClientID, &t.Subject, &t.Scope, &t.Audience, &t.IssuedAt, &t.ExpiresAt, &usedAt)
	t.IssuedAt, t.ExpiresAt, t.UsedAt = t.IssuedAt.UTC(), t.ExpiresAt.UTC(), fromNull(usedAt)
	return &t, err
}

func (s *Store) PutRefreshToken(ctx context.Context, t *store.RefreshToken) error {
	ctx, cancel := withTimeout(ctx)
	defer cancel()
	_, err := s.pool.Exec(ctx, "INSERT INTO meshauth_refresh_tokens ("+refreshColumns+`)
		VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)`,
		t.Hash, t.GrantID, t.ClientID, t.Subject, orEmpty(t.Scope), orEmpty(t.Audience), t.IssuedAt, t.ExpiresAt, nullTime(t.UsedAt))
	if err != nil {
		return fmt.Errorf("put refresh token of grant %q: %w", t.GrantID, storeErr(err))
	}
	return nil
}

func (s *Store) UseRefreshToken(ctx context.Context, hash string, at time.Time) (*store.RefreshToken, error) {
	t, err := markUsed(ctx, s, "meshauth_refresh_tokens", refreshColumns, hash, at, scanRefresh,
		func(t *store.RefreshToken) bool { return !t.UsedAt.IsZero() })
	switch {
	case err == nil:
		return t, nil
	case errors.Is(err, store.ErrReplay):
		return t, fmt.Errorf("use refresh token of grant %q: %w", t.GrantID, err)
	}
	return nil, fmt.Errorf("use refresh token: %w", err)
}

func (s *Store) GetRefreshToken(ctx context.Context, hash string) (*store.RefreshToken, error) {
	ctx, cancel := withTimeout(ctx)
	defer cancel()
	rows, _ := s.pool.Query(ctx, "SELECT "+refreshColumns+" FROM meshauth_refresh_tokens WHERE hash = $1 AND expires_at > now()", hash)
	t, err := pgx.CollectExactlyOneRow(rows, scanRefresh)
	if err != nil {
		return nil, fmt.Errorf("get refresh token: %w", storeErr(err))
	}
	return t, nil
}

func (s *Store) DeleteRefreshToken(ctx context.Context, hash string) error {
	ctx, cancel := withTimeout(ctx)
	defer cancel()
	if _, err := s.pool.Exec(ctx, "DELETE FROM meshauth_refresh_tokens WHERE hash = $1", hash); err != nil {
		return fmt.Errorf("delete refresh token: %w", err)
	}
	return nil
}
