package filestore

import (
	"cmp"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"time"

	"github.com/meshauth/meshauth/issuer/store"
	bolt "go.etcd.io/bbolt"
)

// Login failures are stored under their key; the sweep purges the expired
// ones and keeps the bucket within store.MaxLoginFailures.
var bucketLoginFailures = []byte("login_failures")

func init() {
	allBuckets = append(allBuckets, bucketLoginFailures)
	swept = append(swept, struct {
		bucket []byte
		remove func(tx *bolt.Tx, key []byte) error
	}{bucketLoginFailures, deleteFrom(bucketLoginFailures)})
}

type loginFailureRecord struct {
	Count     int       `json:"count"`
	Last      time.Time `json:"last"`
	ExpiresAt time.Time `json:"exp"`
}

func (r *loginFailureRecord) failure(key string) *store.LoginFailure {
	return &store.LoginFailure{Key: key, Count: r.Count, Last: r.Last, ExpiresAt: r.ExpiresAt}
}

func (s *Store) AddLoginFailure(ctx context.Context, key string, at, expiresAt time.Time) (*store.LoginFailure, error) {
	at, expiresAt = at.UTC(), expiresAt.UTC()
	var r loginFailureRecord
	err := s.update(ctx, func(tx *bolt.Tx) error {
		b := tx.Bucket(bucketLoginFailures)
		switch err := get(b, key, &r); {
		case err == nil && r.ExpiresAt.After(at):
			r.Count++
			r.Last = later(r.Last, at)
			r.ExpiresAt = later(r.ExpiresAt, expiresAt)
		case err == nil || errors.Is(err, store.ErrNotFound):
			r = loginFailureRecord{Count: 1, Last: at, ExpiresAt: expiresAt}
		default:
			return err
		}
		return put(b, key, r)
	})
	if err != nil {
		return nil, fmt.Errorf("count login failure of %q: %w", key, err)
	}
	return r.failure(key), nil
}

func later(a, b time.Time) time.Time {
	if b.After(a) {
		return b
	}
	return a
}

func (s *Store) GetLoginFailures(ctx context.Context, keys []string, now time.Time) ([]*store.LoginFailure, error) {
	var out []*store.LoginFailure
	err := s.view(ctx, func(tx *bolt.Tx) error {
		b := tx.Bucket(bucketLoginFailures)
		for _, k := range keys {
			var r loginFailureRecord
			switch err := get(b, k, &r); {
			case errors.Is(err, store.ErrNotFound):
			case err != nil:
				return err
			case r.ExpiresAt.After(now):
				out = append(out, r.failure(k))
			}
		}
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("get login failures: %w", err)
	}
	return out, nil
}

// DeleteLoginFailures looks before it writes: most sign-ins follow no
// failure, and a read spares them a write transaction and its fsync.
func (s *Store) DeleteLoginFailures(ctx context.Context, key string) error {
	var found bool
	err := s.view(ctx, func(tx *bolt.Tx) error {
		found = tx.Bucket(bucketLoginFailures).Get([]byte(key)) != nil
		return nil
	})
	if err == nil && found {
		err = s.update(ctx, func(tx *bolt.Tx) error {
			return tx.Bucket(bucketLoginFailures).Delete([]byte(key))
		})
	}
	if err != nil {
		return fmt.Errorf("delete login failures of %q: %w", key, err)
	}
	return nil
}

// trimLoginFailures deletes records beyond limit: the fewest failures
// first, then the soonest to expire (see store.MaxLoginFailures).
func (s *Store) trimLoginFailures(limit int) error {
	err := s.db.Update(func(tx *bolt.Tx) error {
		b := tx.Bucket(bucketLoginFailures)
		if b.Stats().KeyN <= limit {
			return nil
		}
		type entry struct {
			key []byte
			r   loginFailureRecord
		}
		var all []entry
		err := b.ForEach(func(k, v []byte) error {
			e := entry{key: slices.Clone(k)}
			if err := json.Unmarshal(v, &e.r); err != nil {
				return fmt.Errorf("decode login failures %q: %w", k, err)
			}
			all = append(all, e)
			return nil
		})
		if err != nil {
			return err
		}
		slices.SortFunc(all, func(a, b entry) int {
			return cmp.Or(cmp.Compare(a.r.Count, b.r.Count), a.r.ExpiresAt.Compare(b.r.ExpiresAt))
		})
		for _, e := range all[:max(0, len(all)-limit)] {
			if err := b.Delete(e.key); err != nil {
				return err
			}
		}
		return nil
	})
	if err != nil {
		return fmt.Errorf("trim login failures: %w", err)
	}
	return nil
}
