// Package filestore is the embedded store.Store: one bbolt file,
// meshauth.db, in a directory, for `meshauth dev` and single-node issuers.
//
// Records are JSON, one bucket per kind. Only one process may open the file
// at a time; bbolt's file lock enforces that. Expired records (one-time
// values, access and refresh tokens, authorization codes, grants and
// revocations) are purged by a sweep that Open starts and Close stops.
//
// Index buckets let the lookups that run per request avoid scanning: a
// grant's tokens (grant_tokens), users by name (user_names), revocations by
// kind and value (revocation_index) and by ID (revocation_ids).
package filestore

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"slices"
	"sync"
	"time"

	"github.com/meshauth/meshauth/internal/broadcast"
	"github.com/meshauth/meshauth/issuer/store"
	bolt "go.etcd.io/bbolt"
	berrors "go.etcd.io/bbolt/errors"
)

// FileName is the name of the database file in the store's directory.
const FileName = "meshauth.db"

const (
	// lockTimeout bounds the wait for the file lock, so that a second issuer
	// on the same directory fails with a clear error instead of hanging.
	lockTimeout = 2 * time.Second
	// sweepInterval is how often expired records are purged. They are
	// already invisible once expired; purging only reclaims space.
	sweepInterval = time.Minute
)

var (
	bucketClients         = []byte("clients")
	bucketKeys            = []byte("signing_keys")
	bucketOnce            = []byte("once")
	bucketTokens          = []byte("access_tokens")
	bucketUsers           = []byte("users")
	bucketUserNames       = []byte("user_names")
	bucketGrants          = []byte("grants")
	bucketGrantTokens     = []byte("grant_tokens")
	bucketCodes           = []byte("authorization_codes")
	bucketRefreshTokens   = []byte("refresh_tokens")
	bucketRevocations     = []byte("revocations")
	bucketRevocationIDs   = []byte("revocation_ids")
	bucketRevocationIndex = []byte("revocation_index")
)

var allBuckets = [][]byte{
	bucketClients, bucketKeys, bucketOnce, bucketTokens, bucketUsers, bucketUserNames,
	bucketGrants, bucketGrantTokens, bucketCodes, bucketRefreshTokens,
	bucketRevocations, bucketRevocationIDs, bucketRevocationIndex, bucketChanges,
}

// Store is a store.Store in a bbolt file. It is safe for concurrent use.
type Store struct {
	db        *bolt.DB
	changed   broadcast.Signal // see Changed
	stop      chan struct{}
	stopOnce  sync.Once
	sweepDone sync.WaitGroup
}

var _ store.Store = (*Store)(nil)

// Open opens the store in dir, creating dir (mode 0700) and its file (mode
// 0600) if needed.
func Open(dir string) (*Store, error) {
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return nil, fmt.Errorf("store file:%s: %w", dir, err)
	}
	db, err := bolt.Open(filepath.Join(dir, FileName), 0o600, &bolt.Options{Timeout: lockTimeout})
	if errors.Is(err, berrors.ErrTimeout) {
		return nil, fmt.Errorf("store file:%s is locked by another process (is an issuer already running on it?)", dir)
	}
	if err != nil {
		return nil, fmt.Errorf("store file:%s: %w", dir, err)
	}
	err = db.Update(func(tx *bolt.Tx) error {
		for _, b := range allBuckets {
			if _, err := tx.CreateBucketIfNotExists(b); err != nil {
				return err
			}
		}
		return initChanges(tx)
	})
	if err != nil {
		db.Close()
		return nil, fmt.Errorf("store file:%s: create buckets: %w", dir, err)
	}
	s := &Store{db: db, stop: make(chan struct{})}
	s.sweepDone.Go(s.sweepLoop)
	return s, nil
}

// Close stops the sweep and closes the file. Closing twice is harmless.
func (s *Store) Close() error {
	s.stopOnce.Do(func() { close(s.stop) })
	s.sweepDone.Wait()
	if err := s.db.Close(); err != nil {
		return fmt.Errorf("close store: %w", err)
	}
	return nil
}

// Ping reports whether the file is open and readable.
func (s *Store) Ping(ctx context.Context) error {
	if err := s.view(ctx, func(*bolt.Tx) error { return nil }); err != nil {
		return fmt.Errorf("ping store: %w", err)
	}
	return nil
}

// view and update run fn in a transaction unless ctx is already done. A
// transaction, once started, is not interrupted: bbolt transactions are
// short and local.
func (s *Store) view(ctx context.Context, fn func(*bolt.Tx) error) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	return s.db.View(fn)
}

func (s *Store) update(ctx context.Context, fn func(*bolt.Tx) error) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	return s.db.Update(fn)
}

// clientRecord, keyRecord, tokenRecord and the other records are the JSON
// forms of the store types. They have the same fields, so that conversion between them is a
// type conversion and a new field that is not added here fails to compile.
type clientRecord struct {
	ID                      string              `json:"id"`
	SecretHash              string              `json:"secret_hash"`
	Name                    string              `json:"name"`
	TokenEndpointAuthMethod string              `json:"token_endpoint_auth_method"`
	GrantTypes              []string            `json:"grant_types"`
	Scope                   []string            `json:"scope"`
	JWKS                    []byte              `json:"jwks"`
	AccessTokenFormat       string              `json:"access_token_format"`
	AllowedAudiences        []string            `json:"allowed_audiences"`
	RedirectURIs            []string            `json:"redirect_uris"`
	PostLogoutRedirectURIs  []string            `json:"post_logout_redirect_uris"`
	ExchangeScopes          map[string][]string `json:"exchange_scopes"`
	MaxDelegationDepth      int                 `json:"max_delegation_depth"`
	CreatedAt               time.Time           `json:"created_at"`
}

type keyRecord struct {
	ID                  string    `json:"id"`
	Algorithm           string    `json:"alg"`
	PublicJWK           []byte    `json:"public_jwk"`
	EncryptedPrivateKey []byte    `json:"encrypted_private_key"`
	CreatedAt           time.Time `json:"created_at"`
	ActivateAt          time.Time `json:"activate_at"`
}

type tokenRecord struct {
	Hash      string    `json:"hash"`
	ID        string    `json:"jti"`
	GrantID   string    `json:"grant_id"`
	ClientID  string    `json:"client_id"`
	Subject   string    `json:"sub"`
	Audience  []string  `json:"aud"`
	Scope     []string  `json:"scope"`
	IssuedAt  time.Time `json:"iat"`
	ExpiresAt time.Time `json:"exp"`
}

type onceRecord struct {
	ExpiresAt time.Time `json:"exp"`
}

// nonEmpty returns s, or an empty list if s is nil, so that an absent list
// is stored as [] and reads back non-nil.
func nonEmpty(s []string) []string {
	if s == nil {
		return []string{}
	}
	return s
}

func (s *Store) CreateClient(ctx context.Context, c *store.Client) error {
	r := clientRecord(*c)
	r.GrantTypes = nonEmpty(r.GrantTypes)
	r.Scope = nonEmpty(r.Scope)
	r.AllowedAudiences = nonEmpty(r.AllowedAudiences)
	r.RedirectURIs = nonEmpty(r.RedirectURIs)
	r.PostLogoutRedirectURIs = nonEmpty(r.PostLogoutRedirectURIs)
	if r.ExchangeScopes == nil {
		r.ExchangeScopes = map[string][]string{}
	}
	r.CreatedAt = r.CreatedAt.UTC()
	err := s.update(ctx, func(tx *bolt.Tx) error {
		b := tx.Bucket(bucketClients)
		if b.Get([]byte(c.ID)) != nil {
			return store.ErrExists
		}
		return put(b, c.ID, r)
	})
	if err != nil {
		return fmt.Errorf("create client %q: %w", c.ID, err)
	}
	return nil
}

func (s *Store) GetClient(ctx context.Context, id string) (*store.Client, error) {
	var r clientRecord
	err := s.view(ctx, func(tx *bolt.Tx) error {
		return get(tx.Bucket(bucketClients), id, &r)
	})
	if err != nil {
		return nil, fmt.Errorf("get client %q: %w", id, err)
	}
	return clientFromRecord(r), nil
}

// clientFromRecord converts a stored record; records written before a field
// existed read back with its empty value.
func clientFromRecord(r clientRecord) *store.Client {
	c := store.Client(r)
	if c.ExchangeScopes == nil {
		c.ExchangeScopes = map[string][]string{}
	}
	c.PostLogoutRedirectURIs = nonEmpty(c.PostLogoutRedirectURIs)
	return &c
}

func (s *Store) ListClients(ctx context.Context) ([]*store.Client, error) {
	var clients []*store.Client
	// The bucket iterates in byte order of the keys, which are the ids.
	err := s.view(ctx, func(tx *bolt.Tx) error {
		return tx.Bucket(bucketClients).ForEach(func(k, v []byte) error {
			var r clientRecord
			if err := json.Unmarshal(v, &r); err != nil {
				return fmt.Errorf("decode client %q: %w", k, err)
			}
			clients = append(clients, clientFromRecord(r))
			return nil
		})
	})
	if err != nil {
		return nil, fmt.Errorf("list clients: %w", err)
	}
	return clients, nil
}

func (s *Store) DeleteClient(ctx context.Context, id string) error {
	err := s.update(ctx, func(tx *bolt.Tx) error {
		b := tx.Bucket(bucketClients)
		if b.Get([]byte(id)) == nil {
			return store.ErrNotFound
		}
		return b.Delete([]byte(id))
	})
	if err != nil {
		return fmt.Errorf("delete client %q: %w", id, err)
	}
	return nil
}

// AddSigningKey is a compare-and-swap because bbolt runs one write
// transaction at a time: the newest key cannot change between the check and
// the write.
func (s *Store) AddSigningKey(ctx context.Context, k *store.SigningKey, ifNewestID string) error {
	r := keyRecord(*k)
	r.CreatedAt = r.CreatedAt.UTC()
	r.ActivateAt = r.ActivateAt.UTC()
	err := s.update(ctx, func(tx *bolt.Tx) error {
		keys, err := listKeys(tx)
		if err != nil {
			return err
		}
		newest := ""
		if len(keys) > 0 {
			newest = keys[len(keys)-1].ID
		}
		if newest != ifNewestID {
			return fmt.Errorf("newest key is %q, not %q: %w", newest, ifNewestID, store.ErrConflict)
		}
		b := tx.Bucket(bucketKeys)
		if b.Get([]byte(k.ID)) != nil {
			return store.ErrExists
		}
		if err := put(b, k.ID, r); err != nil {
			return err
		}
		_, err = nextChange(tx, true)
		return err
	})
	if err != nil {
		return fmt.Errorf("add signing key %q: %w", k.ID, err)
	}
	s.changed.Notify()
	return nil
}

func (s *Store) ListSigningKeys(ctx context.Context) ([]*store.SigningKey, error) {
	var keys []*store.SigningKey
	err := s.view(ctx, func(tx *bolt.Tx) error {
		var err error
		keys, err = listKeys(tx)
		return err
	})
	if err != nil {
		return nil, fmt.Errorf("list signing keys: %w", err)
	}
	return keys, nil
}

// listKeys returns the keys ordered by ActivateAt, then ID: oldest first,
// newest last. There are only ever a handful.
func listKeys(tx *bolt.Tx) ([]*store.SigningKey, error) {
	var keys []*store.SigningKey
	err := tx.Bucket(bucketKeys).ForEach(func(id, v []byte) error {
		var r keyRecord
		if err := json.Unmarshal(v, &r); err != nil {
			return fmt.Errorf("decode signing key %q: %w", id, err)
		}
		k := store.SigningKey(r)
		keys = append(keys, &k)
		return nil
	})
	if err != nil {
		return nil, err
	}
	// ForEach yields ID order; a stable sort by ActivateAt keeps it for ties.
	slices.SortStableFunc(keys, func(a, b *store.SigningKey) int { return a.ActivateAt.Compare(b.ActivateAt) })
	return keys, nil
}

func (s *Store) DeleteSigningKey(ctx context.Context, id string) error {
	deleted := false
	err := s.update(ctx, func(tx *bolt.Tx) error {
		b := tx.Bucket(bucketKeys)
		if b.Get([]byte(id)) == nil {
			return nil
		}
		deleted = true
		if err := b.Delete([]byte(id)); err != nil {
			return err
		}
		_, err := nextChange(tx, true)
		return err
	})
	if err != nil {
		return fmt.Errorf("delete signing key %q: %w", id, err)
	}
	if deleted {
		s.changed.Notify()
	}
	return nil
}

func (s *Store) UseOnce(ctx context.Context, value string, expiresAt time.Time) error {
	now := time.Now()
	err := s.update(ctx, func(tx *bolt.Tx) error {
		b := tx.Bucket(bucketOnce)
		var r onceRecord
		switch err := get(b, value, &r); {
		case err == nil && now.Before(r.ExpiresAt):
			return store.ErrReplay
		case err != nil && !errors.Is(err, store.ErrNotFound):
			return err
		}
		return put(b, value, onceRecord{ExpiresAt: expiresAt.UTC()})
	})
	if err != nil {
		// The value may be a client_id/jti pair: an identifier, not a secret.
		return fmt.Errorf("use once %q: %w", value, err)
	}
	return nil
}

func (s *Store) PutAccessToken(ctx context.Context, t *store.AccessToken) error {
	r := tokenRecord(*t)
	r.Audience = nonEmpty(r.Audience)
	r.Scope = nonEmpty(r.Scope)
	r.IssuedAt = r.IssuedAt.UTC()
	r.ExpiresAt = r.ExpiresAt.UTC()
	err := s.update(ctx, func(tx *bolt.Tx) error {
		b := tx.Bucket(bucketTokens)
		if b.Get([]byte(t.Hash)) != nil {
			return store.ErrExists
		}
		if err := indexGrantToken(tx, t.GrantID, kindAccess, t.Hash); err != nil {
			return err
		}
		return put(b, t.Hash, r)
	})
	if err != nil {
		return fmt.Errorf("put access token %q: %w", t.ID, err)
	}
	return nil
}

func (s *Store) DeleteAccessToken(ctx context.Context, hash string) error {
	err := s.update(ctx, func(tx *bolt.Tx) error { return deleteAccessToken(tx, []byte(hash)) })
	if err != nil {
		return fmt.Errorf("delete access token: %w", err)
	}
	return nil
}

// deleteAccessToken removes a token and its grant index entry, if any.
func deleteAccessToken(tx *bolt.Tx, hash []byte) error {
	b := tx.Bucket(bucketTokens)
	data := b.Get(hash)
	if data == nil {
		return nil
	}
	var r tokenRecord
	if err := json.Unmarshal(data, &r); err != nil {
		return fmt.Errorf("decode access token: %w", err)
	}
	if err := unindexGrantToken(tx, r.GrantID, kindAccess, hash); err != nil {
		return err
	}
	return b.Delete(hash)
}

func (s *Store) GetAccessToken(ctx context.Context, hash string) (*store.AccessToken, error) {
	var r tokenRecord
	err := s.view(ctx, func(tx *bolt.Tx) error {
		return get(tx.Bucket(bucketTokens), hash, &r)
	})
	if err == nil && !time.Now().Before(r.ExpiresAt) {
		err = store.ErrNotFound
	}
	if err != nil {
		return nil, fmt.Errorf("get access token: %w", err)
	}
	t := store.AccessToken(r)
	return &t, nil
}

// put stores v as JSON under key.
func put(b *bolt.Bucket, key string, v any) error {
	data, err := json.Marshal(v)
	if err != nil {
		return err
	}
	return b.Put([]byte(key), data)
}

// get decodes the JSON under key into v, or returns store.ErrNotFound.
func get(b *bolt.Bucket, key string, v any) error {
	data := b.Get([]byte(key))
	if data == nil {
		return store.ErrNotFound
	}
	// Unmarshal copies what it keeps, so v outlives the transaction.
	return json.Unmarshal(data, v)
}

func (s *Store) sweepLoop() {
	tick := time.NewTicker(sweepInterval)
	defer tick.Stop()
	for {
		select {
		case <-s.stop:
			return
		case <-tick.C:
			if err := s.sweep(time.Now()); err != nil {
				slog.Warn("purging expired records from the store failed", "err", err)
			}
		}
	}
}

// sweepBatch bounds the deletions of one transaction, so that a large
// backlog does not hold the write lock for long.
const sweepBatch = 1000

// swept lists the buckets of expiring records, each with the function that
// deletes one record together with its index entries.
var swept = []struct {
	bucket []byte
	remove func(tx *bolt.Tx, key []byte) error
}{
	{bucketOnce, deleteFrom(bucketOnce)},
	{bucketTokens, deleteAccessToken},
	{bucketCodes, deleteFrom(bucketCodes)},
	{bucketRefreshTokens, deleteRefreshToken},
	{bucketGrants, deleteFrom(bucketGrants)},
	{bucketRevocations, deleteRevocation},
}

// deleteFrom returns a remove function for records that have no index.
func deleteFrom(bucket []byte) func(tx *bolt.Tx, key []byte) error {
	return func(tx *bolt.Tx, key []byte) error { return tx.Bucket(bucket).Delete(key) }
}

// sweep deletes the records that expired before now.
func (s *Store) sweep(now time.Time) error {
	for _, sw := range swept {
		for {
			var n int
			err := s.db.Update(func(tx *bolt.Tx) error {
				var expired [][]byte
				c := tx.Bucket(sw.bucket).Cursor()
				for k, v := c.First(); k != nil && len(expired) < sweepBatch; k, v = c.Next() {
					// Every swept record has its expiry under "exp".
					var r onceRecord
					if err := json.Unmarshal(v, &r); err != nil {
						return fmt.Errorf("decode %s record %q: %w", sw.bucket, k, err)
					}
					if !now.Before(r.ExpiresAt) {
						// k is only valid during the transaction, and
						// deleting while iterating would skip keys.
						expired = append(expired, bytes.Clone(k))
					}
				}
				n = len(expired)
				for _, k := range expired {
					if err := sw.remove(tx, k); err != nil {
						return err
					}
				}
				return nil
			})
			if err != nil {
				return fmt.Errorf("sweep %s: %w", sw.bucket, err)
			}
			if n < sweepBatch {
				break
			}
		}
	}
	return s.trimLoginFailures(store.MaxLoginFailures)
}
