// Package pgstore is the PostgreSQL store.Store, for issuers running as
// replicas over one database.
//
// Open applies the embedded migrations (migrations/*.sql) in one transaction
// under an advisory lock, so replicas starting together are safe; applied
// versions are recorded in meshauth_schema_migrations. The tables live in the
// connection's search_path, which a URL may set (search_path=myschema).
// Expired records (one-time values, access and refresh tokens, authorization
// codes, grants and revocations) are purged by a sweep that Open starts and
// Close stops; every replica sweeps, which is harmless. Open also starts
// listening for the changes other replicas make (see changes.go), which
// keeps the cache of clients and Changed current.
package pgstore

import (
	"context"
	"embed"
	"errors"
	"fmt"
	"io/fs"
	"log/slog"
	"path"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/meshauth/meshauth/internal/broadcast"
	"github.com/meshauth/meshauth/issuer/store"
)

//go:embed migrations/*.sql
var migrations embed.FS

const (
	// opTimeout bounds an operation whose context has no deadline, so that
	// an unreachable database fails requests instead of hanging them.
	opTimeout = 5 * time.Second
	// sweepInterval is how often expired records are purged. They are
	// already invisible once expired; purging only reclaims space.
	sweepInterval = time.Minute
)

// Advisory lock keys, the same in every replica. The high half spells
// "mesh" to stay clear of keys other applications on the database use.
const (
	migrateLock    int64 = 0x6d657368_00000001
	signingKeyLock int64 = 0x6d657368_00000002
)

// uniqueViolation is the SQLSTATE of a duplicate primary key.
const uniqueViolation = "23505"

// Store is a store.Store in PostgreSQL. It is safe for concurrent use.
type Store struct {
	pool    *pgxpool.Pool
	clients *clientCache
	changed broadcast.Signal // see Changed
	// listenerPID is the server process of the listening connection.
	listenerPID atomic.Uint32
	stop        context.CancelFunc
	sweepDone   sync.WaitGroup
}

var _ store.Store = (*Store)(nil)

// Open connects to the database at url (a postgres:// URL; pgx's
// parameters such as pool_max_conns and runtime parameters such as
// search_path are honoured) and brings its schema up to date.
func Open(ctx context.Context, url string) (*Store, error) {
	// pgx redacts the password from its parse and connect errors.
	cfg, err := pgxpool.ParseConfig(url)
	if err != nil {
		return nil, fmt.Errorf("open postgres store: %w", err)
	}
	pool, err := pgxpool.NewWithConfig(ctx, cfg)
	if err != nil {
		return nil, fmt.Errorf("open postgres store: %w", err)
	}
	if err := migrate(ctx, pool); err != nil {
		pool.Close()
		return nil, fmt.Errorf("open postgres store: %w", err)
	}
	bg, stop := context.WithCancel(context.Background())
	s := &Store{pool: pool, clients: newClientCache(), stop: stop}
	s.sweepDone.Go(func() { s.sweepLoop(bg) })
	s.sweepDone.Go(func() { s.listen(bg, pool.Config().ConnConfig.Copy()) })
	return s, nil
}

// migrate applies the migrations not yet applied, all in one transaction.
func migrate(ctx context.Context, pool *pgxpool.Pool) error {
	ctx, cancel := withTimeout(ctx)
	defer cancel()
	names, err := fs.Glob(migrations, "migrations/*.sql") // sorted by name
	if err != nil {
		return err
	}
	return pgx.BeginFunc(ctx, pool, func(tx pgx.Tx) error {
		// Replicas starting together queue here: the first applies the
		// migrations, the others then find them applied.
		if _, err := tx.Exec(ctx, "SELECT pg_advisory_xact_lock($1)", migrateLock); err != nil {
			return fmt.Errorf("lock for migrations: %w", err)
		}
		_, err := tx.Exec(ctx, `CREATE TABLE IF NOT EXISTS meshauth_schema_migrations (
			version    text PRIMARY KEY,
			applied_at timestamptz NOT NULL DEFAULT now()
		)`)
		if err != nil {
			return fmt.Errorf("create meshauth_schema_migrations: %w", err)
		}
		rows, _ := tx.Query(ctx, "SELECT version FROM meshauth_schema_migrations")
		applied, err := pgx.CollectRows(rows, pgx.RowTo[string])
		if err != nil {
			return fmt.Errorf("read applied migrations: %w", err)
		}
		for _, name := range names {
			version := strings.TrimSuffix(path.Base(name), ".sql")
			if slices.Contains(applied, version) {
				continue
			}
			sql, err := migrations.ReadFile(name)
			if err != nil {
				return err
			}
			// Without arguments, Exec uses the simple protocol, which
			// runs a file of several statements.
			if _, err := tx.Exec(ctx, string(sql)); err != nil {
				return fmt.Errorf("apply migration %s: %w", version, err)
			}
			if _, err := tx.Exec(ctx, "INSERT INTO meshauth_schema_migrations (version) VALUES ($1)", version); err != nil {
				return fmt.Errorf("record migration %s: %w", version, err)
			}
		}
		return nil
	})
}

// Close stops the sweep and the listening, and closes the connections.
// Closing twice is harmless.
func (s *Store) Close() error {
	s.stop()
	s.sweepDone.Wait()
	s.pool.Close()
	return nil
}

// withTimeout gives ctx the default operation timeout unless it has a
// deadline already.
func withTimeout(ctx context.Context) (context.Context, context.CancelFunc) {
	if _, ok := ctx.Deadline(); ok {
		return ctx, func() {}
	}
	return context.WithTimeout(ctx, opTimeout)
}

// storeErr maps PostgreSQL's errors to the store's sentinels.
func storeErr(err error) error {
	var pgErr *pgconn.PgError
	switch {
	case errors.Is(err, pgx.ErrNoRows):
		return store.ErrNotFound
	case errors.As(err, &pgErr) && pgErr.Code == uniqueViolation:
		return store.ErrExists
	}
	return err
}

// orEmpty returns s, or an empty slice if s is nil: pgx sends nil as NULL,
// and an absent list is stored as empty.
func orEmpty[T any](s []T) []T {
	if s == nil {
		return []T{}
	}
	return s
}

func orEmptyMap(m map[string][]string) map[string][]string {
	if m == nil {
		return map[string][]string{}
	}
	return m
}

func (s *Store) Ping(ctx context.Context) error {
	ctx, cancel := withTimeout(ctx)
	defer cancel()
	if err := s.pool.Ping(ctx); err != nil {
		return fmt.Errorf("ping postgres store: %w", err)
	}
	return nil
}

const selectClient = `SELECT id, secret_hash, name, token_endpoint_auth_method, grant_types, scope,
	jwks, access_token_format, allowed_audiences, redirect_uris, exchange_scopes, max_delegation_depth, created_at,
	post_logout_redirect_uris
	FROM meshauth_clients`

func scanClient(row pgx.CollectableRow) (*store.Client, error) {
	var c store.Client
	err := row.Scan(&c.ID, &c.SecretHash, &c.Name, &c.TokenEndpointAuthMethod, &c.GrantTypes, &c.Scope,
		&c.JWKS, &c.AccessTokenFormat, &c.AllowedAudiences, &c.RedirectURIs, &c.ExchangeScopes, &c.MaxDelegationDepth, &c.CreatedAt,
		&c.PostLogoutRedirectURIs)
	c.CreatedAt = c.CreatedAt.UTC()
	return &c, err
}

func (s *Store) CreateClient(ctx context.Context, c *store.Client) error {
	ctx, cancel := withTimeout(ctx)
	defer cancel()
	_, err := s.pool.Exec(ctx, `INSERT INTO meshauth_clients (id, secret_hash, name, token_endpoint_auth_method,
		grant_types, scope, jwks, access_token_format, allowed_audiences, redirect_uris, exchange_scopes,
		max_delegation_depth, created_at, post_logout_redirect_uris)
		VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14)`,
		c.ID, c.SecretHash, c.Name, c.TokenEndpointAuthMethod, orEmpty(c.GrantTypes), orEmpty(c.Scope),
		orEmpty(c.JWKS), c.AccessTokenFormat, orEmpty(c.AllowedAudiences), orEmpty(c.RedirectURIs),
		orEmptyMap(c.ExchangeScopes), c.MaxDelegationDepth, c.CreatedAt, orEmpty(c.PostLogoutRedirectURIs))
	if err != nil {
		return fmt.Errorf("create client %q: %w", c.ID, storeErr(err))
	}
	return nil
}

// GetClient answers from the cache of clients when it can (clientcache.go).
func (s *Store) GetClient(ctx context.Context, id string) (*store.Client, error) {
	c, gen := s.clients.get(id)
	if c != nil {
		return c, nil
	}
	ctx, cancel := withTimeout(ctx)
	defer cancel()
	// Query's error is also the rows' error, which Collect returns.
	rows, _ := s.pool.Query(ctx, selectClient+" WHERE id = $1", id)
	c, err := pgx.CollectExactlyOneRow(rows, scanClient)
	if err != nil {
		return nil, fmt.Errorf("get client %q: %w", id, storeErr(err))
	}
	s.clients.put(c, gen)
	return c, nil
}

func (s *Store) ListClients(ctx context.Context) ([]*store.Client, error) {
	ctx, cancel := withTimeout(ctx)
	defer cancel()
	rows, _ := s.pool.Query(ctx, selectClient+" ORDER BY id")
	clients, err := pgx.CollectRows(rows, scanClient)
	if err != nil {
		return nil, fmt.Errorf("list clients: %w", err)
	}
	return clients, nil
}

func (s *Store) DeleteClient(ctx context.Context, id string) error {
	ctx, cancel := withTimeout(ctx)
	defer cancel()
	tag, err := s.pool.Exec(ctx, "DELETE FROM meshauth_clients WHERE id = $1", id)
	// The NOTIFY reaches this replica's cache too, a moment later.
	s.clients.invalidate(id)
	if err == nil && tag.RowsAffected() == 0 {
		err = store.ErrNotFound
	}
	if err != nil {
		return fmt.Errorf("delete client %q: %w", id, err)
	}
	return nil
}

// newestKey orders keys newest first, as AddSigningKey defines newest.
const newestKey = "ORDER BY activate_at DESC, id DESC"

func (s *Store) AddSigningKey(ctx context.Context, k *store.SigningKey, ifNewestID string) error {
	ctx, cancel := withTimeout(ctx)
	defer cancel()
	err := pgx.BeginFunc(ctx, s.pool, func(tx pgx.Tx) error {
		// Held until the transaction ends, so that no other replica's key
		// lands between the check and the insert. (Row locks cannot do
		// this: there may be no row yet.)
		if _, err := tx.Exec(ctx, "SELECT pg_advisory_xact_lock($1)", signingKeyLock); err != nil {
			return err
		}
		var newest string
		err := tx.QueryRow(ctx, "SELECT id FROM meshauth_signing_keys "+newestKey+" LIMIT 1").Scan(&newest)
		if err != nil && !errors.Is(err, pgx.ErrNoRows) {
			return err
		}
		if newest != ifNewestID {
			return fmt.Errorf("newest key is %q, not %q: %w", newest, ifNewestID, store.ErrConflict)
		}
		_, err = tx.Exec(ctx, `INSERT INTO meshauth_signing_keys
			(id, algorithm, public_jwk, encrypted_private_key, created_at, activate_at)
			VALUES ($1, $2, $3, $4, $5, $6)`,
			k.ID, k.Algorithm, orEmpty(k.PublicJWK), orEmpty(k.EncryptedPrivateKey), k.CreatedAt, k.ActivateAt)
		return err
	})
	if err != nil {
		return fmt.Errorf("add signing key %q: %w", k.ID, storeErr(err))
	}
	s.changed.Notify()
	return nil
}

func (s *Store) ListSigningKeys(ctx context.Context) ([]*store.SigningKey, error) {
	ctx, cancel := withTimeout(ctx)
	defer cancel()
	keys, err := listSigningKeys(ctx, s.pool)
	if err != nil {
		return nil, fmt.Errorf("list signing keys: %w", err)
	}
	return keys, nil
}

func listSigningKeys(ctx context.Context, q interface {
	Query(context.Context, string, ...any) (pgx.Rows, error)
}) ([]*store.SigningKey, error) {
	rows, _ := q.Query(ctx, `SELECT id, algorithm, public_jwk, encrypted_private_key, created_at, activate_at
		FROM meshauth_signing_keys ORDER BY activate_at, id`)
	return pgx.CollectRows(rows, func(row pgx.CollectableRow) (*store.SigningKey, error) {
		var k store.SigningKey
		err := row.Scan(&k.ID, &k.Algorithm, &k.PublicJWK, &k.EncryptedPrivateKey, &k.CreatedAt, &k.ActivateAt)
		k.CreatedAt, k.ActivateAt = k.CreatedAt.UTC(), k.ActivateAt.UTC()
		return &k, err
	})
}

func (s *Store) DeleteSigningKey(ctx context.Context, id string) error {
	ctx, cancel := withTimeout(ctx)
	defer cancel()
	tag, err := s.pool.Exec(ctx, "DELETE FROM meshauth_signing_keys WHERE id = $1", id)
	if err != nil {
		return fmt.Errorf("delete signing key %q: %w", id, err)
	}
	if tag.RowsAffected() > 0 {
		s.changed.Notify()
	}
	return nil
}

func (s *Store) UseOnce(ctx context.Context, value string, expiresAt time.Time) error {
	ctx, cancel := withTimeout(ctx)
	defer cancel()
	// One statement, so concurrent uses of one value serialise on its row:
	// an expired record is taken over, a live one is left alone and no row
	// is affected.
	tag, err := s.pool.Exec(ctx, `INSERT INTO meshauth_once (value, expires_at) VALUES ($1, $2)
		ON CONFLICT (value) DO UPDATE SET expires_at = EXCLUDED.expires_at
		WHERE meshauth_once.expires_at <= now()`, value, expiresAt)
	if err == nil && tag.RowsAffected() == 0 {
		err = store.ErrReplay
	}
	if err != nil {
		// The value may be a client_id/jti pair: an identifier, not a secret.
		return fmt.Errorf("use once %q: %w", value, err)
	}
	return nil
}

func (s *Store) PutAccessToken(ctx context.Context, t *store.AccessToken) error {
	ctx, cancel := withTimeout(ctx)
	defer cancel()
	_, err := s.pool.Exec(ctx, `INSERT INTO meshauth_access_tokens
		(hash, id, grant_id, client_id, subject, audience, scope, issued_at, expires_at)
		VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)`,
		t.Hash, t.ID, t.GrantID, t.ClientID, t.Subject, orEmpty(t.Audience), orEmpty(t.Scope), t.IssuedAt, t.ExpiresAt)
	if err != nil {
		return fmt.Errorf("put access token %q: %w", t.ID, storeErr(err))
	}
	return nil
}

func (s *Store) GetAccessToken(ctx context.Context, hash string) (*store.AccessToken, error) {
	ctx, cancel := withTimeout(ctx)
	defer cancel()
	rows, _ := s.pool.Query(ctx, `SELECT hash, id, grant_id, client_id, subject, audience, scope, issued_at, expires_at
		FROM meshauth_access_tokens WHERE hash = $1 AND expires_at > now()`, hash)
	t, err := pgx.CollectExactlyOneRow(rows, func(row pgx.CollectableRow) (*store.AccessToken, error) {
		var t store.AccessToken
		err := row.Scan(&t.Hash, &t.ID, &t.GrantID, &t.ClientID, &t.Subject, &t.Audience, &t.Scope, &t.IssuedAt, &t.ExpiresAt)
		t.IssuedAt, t.ExpiresAt = t.IssuedAt.UTC(), t.ExpiresAt.UTC()
		return &t, err
	})
	if err != nil {
		return nil, fmt.Errorf("get access token: %w", storeErr(err))
	}
	return t, nil
}

func (s *Store) DeleteAccessToken(ctx context.Context, hash string) error {
	ctx, cancel := withTimeout(ctx)
	defer cancel()
	if _, err := s.pool.Exec(ctx, "DELETE FROM meshauth_access_tokens WHERE hash = $1", hash); err != nil {
		return fmt.Errorf("delete access token: %w", err)
	}
	return nil
}

func (s *Store) sweepLoop(ctx context.Context) {
	tick := time.NewTicker(sweepInterval)
	defer tick.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-tick.C:
			if err := s.sweep(ctx); err != nil && ctx.Err() == nil {
				slog.Warn("purging expired records from the store failed", "err", err)
			}
		}
	}
}

// swept are the tables of records that expire.
var swept = []string{
	"meshauth_once", "meshauth_access_tokens", "meshauth_authorization_codes",
	"meshauth_refresh_tokens", "meshauth_grants", "meshauth_revocations",
}

// sweep deletes the records that have expired.
func (s *Store) sweep(ctx context.Context) error {
	ctx, cancel := withTimeout(ctx)
	defer cancel()
	for _, table := range swept {
		if _, err := s.pool.Exec(ctx, "DELETE FROM "+table+" WHERE expires_at <= now()"); err != nil {
			return fmt.Errorf("sweep %s: %w", table, err)
		}
	}
	return s.trimLoginFailures(ctx, store.MaxLoginFailures)
}
