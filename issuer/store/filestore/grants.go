package filestore

import (
	"bytes"
	"context"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"time"

	"github.com/meshauth/meshauth/issuer/store"
	bolt "go.etcd.io/bbolt"
)

type grantRecord struct {
	ID        string    `json:"id"`
	ClientID  string    `json:"client_id"`
	Subject   string    `json:"sub"`
	Scope     []string  `json:"scope"`
	Audience  []string  `json:"aud"`
	CreatedAt time.Time `json:"created_at"`
	ExpiresAt time.Time `json:"exp"`
	RevokedAt time.Time `json:"revoked_at"`
	AuthTime  time.Time `json:"auth_time"`
	AMR       []string  `json:"amr"`
	IDP       string    `json:"idp,omitempty"`
	Nonce     string    `json:"nonce,omitempty"`
}

type codeRecord struct {
	Hash                string    `json:"hash"`
	GrantID             string    `json:"grant_id"`
	ClientID            string    `json:"client_id"`
	Subject             string    `json:"sub"`
	RedirectURI         string    `json:"redirect_uri"`
	Scope               []string  `json:"scope"`
	Audience            []string  `json:"aud"`
	CodeChallenge       string    `json:"code_challenge"`
	CodeChallengeMethod string    `json:"code_challenge_method"`
	IssuedAt            time.Time `json:"iat"`
	ExpiresAt           time.Time `json:"exp"`
	UsedAt              time.Time `json:"used_at"`
}

type refreshRecord struct {
	Hash      string    `json:"hash"`
	GrantID   string    `json:"grant_id"`
	ClientID  string    `json:"client_id"`
	Subject   string    `json:"sub"`
	Scope     []string  `json:"scope"`
	Audience  []string  `json:"aud"`
	IssuedAt  time.Time `json:"iat"`
	ExpiresAt time.Time `json:"exp"`
	UsedAt    time.Time `json:"used_at"`
}

// utc normalises the times a record is stored with; zero stays zero.
func utc(ts ...*time.Time) {
	for _, t := range ts {
		*t = t.UTC()
	}
}

func (s *Store) CreateGrant(ctx context.Context, g *store.Grant) error {
	r := grantRecord(*g)
	r.Scope, r.Audience, r.AMR = nonEmpty(r.Scope), nonEmpty(r.Audience), nonEmpty(r.AMR)
	utc(&r.CreatedAt, &r.ExpiresAt, &r.RevokedAt, &r.AuthTime)
	err := s.update(ctx, func(tx *bolt.Tx) error {
		b := tx.Bucket(bucketGrants)
		if b.Get([]byte(g.ID)) != nil {
			return store.ErrExists
		}
		return put(b, g.ID, r)
	})
	if err != nil {
		return fmt.Errorf("create grant %q: %w", g.ID, err)
	}
	return nil
}

func (s *Store) GetGrant(ctx context.Context, id string) (*store.Grant, error) {
	var r grantRecord
	err := s.view(ctx, func(tx *bolt.Tx) error {
		return get(tx.Bucket(bucketGrants), id, &r)
	})
	if err == nil && !time.Now().Before(r.ExpiresAt) {
		err = store.ErrNotFound
	}
	if err != nil {
		return nil, fmt.Errorf("get grant %q: %w", id, err)
	}
	g := store.Grant(r)
	g.AMR = nonEmpty(g.AMR) // grants stored before amr existed
	return &g, nil
}

// RevokeGrant finds the grant's tokens through the grant_tokens index. The
// tokens are deleted even if the grant itself is gone.
func (s *Store) RevokeGrant(ctx context.Context, id string, at time.Time) error {
	err := s.update(ctx, func(tx *bolt.Tx) error {
		var r grantRecord
		switch err := get(tx.Bucket(bucketGrants), id, &r); {
		case err == nil:
			_, err := revokeGrant(tx, &r, at)
			return err
		case errors.Is(err, store.ErrNotFound):
			return deleteGrantTokens(tx, id)
		default:
			return err
		}
	})
	if err != nil {
		return fmt.Errorf("revoke grant %q: %w", id, err)
	}
	return nil
}

// revokeGrant sets r's RevokedAt unless it is set, and deletes the grant's
// tokens; it reports whether r was newly revoked.
func revokeGrant(tx *bolt.Tx, r *grantRecord, at time.Time) (bool, error) {
	revoked := r.RevokedAt.IsZero()
	if revoked {
		r.RevokedAt = at.UTC()
		if err := put(tx.Bucket(bucketGrants), r.ID, r); err != nil {
			return false, err
		}
	}
	return revoked, deleteGrantTokens(tx, r.ID)
}

// deleteGrantTokens deletes the tokens of grant id that the grant_tokens
// index lists.
func deleteGrantTokens(tx *bolt.Tx, id string) error {
	prefix := grantIndexPrefix(id)
	var entries [][]byte
	c := tx.Bucket(bucketGrantTokens).Cursor()
	for k, _ := c.Seek(prefix); k != nil && bytes.HasPrefix(k, prefix); k, _ = c.Next() {
		entries = append(entries, bytes.Clone(k))
	}
	for _, k := range entries {
		kind, hash := k[len(prefix)], k[len(prefix)+1:]
		remove := deleteAccessToken
		if kind == kindRefresh {
			remove = deleteRefreshToken
		}
		if err := remove(tx, hash); err != nil {
			return err
		}
	}
	return nil
}

// The grant_tokens index has a key per token of a grant: the grant id
// (length-prefixed, so that no id is a prefix of another's keys), the
// token's kind and its hash.
const (
	kindAccess  byte = 'a'
	kindRefresh byte = 'r'
)

func grantIndexPrefix(grantID string) []byte {
	return appendLengthPrefixed(nil, grantID)
}

func grantIndexKey(grantID string, kind byte, hash []byte) []byte {
	return append(append(grantIndexPrefix(grantID), kind), hash...)
}

// appendLengthPrefixed appends s preceded by its length as a uvarint.
func appendLengthPrefixed(b []byte, s string) []byte {
	return append(binary.AppendUvarint(b, uint64(len(s))), s...)
}

// indexGrantToken records a token of a grant; tokens of no grant are not
// indexed.
func indexGrantToken(tx *bolt.Tx, grantID string, kind byte, hash string) error {
	if grantID == "" {
		return nil
	}
	return tx.Bucket(bucketGrantTokens).Put(grantIndexKey(grantID, kind, []byte(hash)), nil)
}

func unindexGrantToken(tx *bolt.Tx, grantID string, kind byte, hash []byte) error {
	if grantID == "" {
		return nil
	}
	return tx.Bucket(bucketGrantTokens).Delete(grantIndexKey(grantID, kind, hash))
}

func (s *Store) PutAuthorizationCode(ctx context.Context, c *store.AuthorizationCode) error {
	r := codeRecord(*c)
	r.Scope, r.Audience = nonEmpty(r.Scope), nonEmpty(r.Audience)
	utc(&r.IssuedAt, &r.ExpiresAt, &r.UsedAt)
	err := s.update(ctx, func(tx *bolt.Tx) error {
		b := tx.Bucket(bucketCodes)
		if b.Get([]byte(c.Hash)) != nil {
			return store.ErrExists
		}
		return put(b, c.Hash, r)
	})
	if err != nil {
		return fmt.Errorf("put authorization code: %w", err)
	}
	return nil
}

func (s *Store) RedeemAuthorizationCode(ctx context.Context, hash string, at time.Time) (*store.AuthorizationCode, error) {
	var r codeRecord
	err := s.markUsed(ctx, bucketCodes, hash, at, &r)
	if err != nil && !errors.Is(err, store.ErrReplay) {
		return nil, fmt.Errorf("redeem authorization code: %w", err)
	}
	c := store.AuthorizationCode(r)
	if err != nil {
		return &c, fmt.Errorf("redeem authorization code of grant %q: %w", r.GrantID, err)
	}
	return &c, nil
}

// usable is a record that can be used once: a code or a refresh token.
type usable interface {
	expiry() time.Time
	used() *time.Time
}

func (r *codeRecord) expiry() time.Time    { return r.ExpiresAt }
func (r *codeRecord) used() *time.Time     { return &r.UsedAt }
func (r *refreshRecord) expiry() time.Time { return r.ExpiresAt }
func (r *refreshRecord) used() *time.Time  { return &r.UsedAt }

// markUsed reads the record under hash into r and marks it used at at. If it
// was used already, r is the record as stored and the error ErrReplay. It is
// atomic because bbolt runs one write transaction at a time: of concurrent
// uses, the first marks the record and every later one sees it marked.
func (s *Store) markUsed(ctx context.Context, bucket []byte, hash string, at time.Time, r usable) error {
	return s.update(ctx, func(tx *bolt.Tx) error {
		b := tx.Bucket(bucket)
		if err := get(b, hash, r); err != nil {
			return err
		}
		switch {
		case !at.Before(r.expiry()):
			return store.ErrNotFound
		case !r.used().IsZero():
			return store.ErrReplay
		}
		*r.used() = at.UTC()
		return put(b, hash, r)
	})
}

func (s *Store) PutRefreshToken(ctx context.Context, t *store.RefreshToken) error {
	r := refreshRecord(*t)
	r.Scope, r.Audience = nonEmpty(r.Scope), nonEmpty(r.Audience)
	utc(&r.IssuedAt, &r.ExpiresAt, &r.UsedAt)
	err := s.update(ctx, func(tx *bolt.Tx) error {
		b := tx.Bucket(bucketRefreshTokens)
		if b.Get([]byte(t.Hash)) != nil {
			return store.ErrExists
		}
		if err := indexGrantToken(tx, t.GrantID, kindRefresh, t.Hash); err != nil {
			return err
		}
		return put(b, t.Hash, r)
	})
	if err != nil {
		return fmt.Errorf("put refresh token of grant %q: %w", t.GrantID, err)
	}
	return nil
}

func (s *Store) UseRefreshToken(ctx context.Context, hash string, at time.Time) (*store.RefreshToken, error) {
	var r refreshRecord
	err := s.markUsed(ctx, bucketRefreshTokens, hash, at, &r)
	if err != nil && !errors.Is(err, store.ErrReplay) {
		return nil, fmt.Errorf("use refresh token: %w", err)
	}
	t := store.RefreshToken(r)
	if err != nil {
		return &t, fmt.Errorf("use refresh token of grant %q: %w", r.GrantID, err)
	}
	return &t, nil
}

func (s *Store) GetRefreshToken(ctx context.Context, hash string) (*store.RefreshToken, error) {
	var r refreshRecord
	err := s.view(ctx, func(tx *bolt.Tx) error {
		return get(tx.Bucket(bucketRefreshTokens), hash, &r)
	})
	if err == nil && !time.Now().Before(r.ExpiresAt) {
		err = store.ErrNotFound
	}
	if err != nil {
		return nil, fmt.Errorf("get refresh token: %w", err)
	}
	t := store.RefreshToken(r)
	return &t, nil
}

func (s *Store) DeleteRefreshToken(ctx context.Context, hash string) error {
	err := s.update(ctx, func(tx *bolt.Tx) error { return deleteRefreshToken(tx, []byte(hash)) })
	if err != nil {
		return fmt.Errorf("delete refresh token: %w", err)
	}
	return nil
}

// deleteRefreshToken removes a token and its grant index entry.
func deleteRefreshToken(tx *bolt.Tx, hash []byte) error {
	b := tx.Bucket(bucketRefreshTokens)
	data := b.Get(hash)
	if data == nil {
		return nil
	}
	var r refreshRecord
	if err := json.Unmarshal(data, &r); err != nil {
		return fmt.Errorf("decode refresh token: %w", err)
	}
	if err := unindexGrantToken(tx, r.GrantID, kindRefresh, hash); err != nil {
		return err
	}
	return b.Delete(hash)
}
