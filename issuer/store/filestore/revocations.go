package filestore

import (
	"bytes"
	"context"
	"encoding/binary"
	"encoding/json"
	"fmt"
	"time"

	"github.com/meshauth/meshauth/issuer/store"
	bolt "go.etcd.io/bbolt"
)

// Revocations are stored under their Seq (8 bytes, big-endian, so the
// bucket iterates in Seq order), with two indexes: revocation_ids maps an
// ID to its Seq key, and revocation_index has a key per revocation made of
// its kind, its value (both length-prefixed) and its Seq key.
type revocationRecord struct {
	ID        string    `json:"id"`
	Seq       int64     `json:"seq"`
	Kind      string    `json:"kind"`
	Value     string    `json:"value"`
	RevokedAt time.Time `json:"revoked_at"`
	ExpiresAt time.Time `json:"exp"`
}

func seqKey(seq uint64) []byte { return binary.BigEndian.AppendUint64(nil, seq) }

func revocationIndexPrefix(kind, value string) []byte {
	return appendLengthPrefixed(appendLengthPrefixed(nil, kind), value)
}

// AddRevocation numbers the revocation with the next change and sets r.Seq
// once it is stored.
func (s *Store) AddRevocation(ctx context.Context, r *store.Revocation) error {
	rec := revocationRecord(*r)
	utc(&rec.RevokedAt, &rec.ExpiresAt)
	err := s.update(ctx, func(tx *bolt.Tx) error {
		b, ids := tx.Bucket(bucketRevocations), tx.Bucket(bucketRevocationIDs)
		if ids.Get([]byte(r.ID)) != nil {
			return store.ErrExists
		}
		seq, err := nextChange(tx, false)
		if err != nil {
			return err
		}
		rec.Seq = seq
		key := seqKey(uint64(seq))
		if err := ids.Put([]byte(r.ID), key); err != nil {
			return err
		}
		if err := tx.Bucket(bucketRevocationIndex).Put(append(revocationIndexPrefix(r.Kind, r.Value), key...), nil); err != nil {
			return err
		}
		return put(b, string(key), rec)
	})
	if err != nil {
		return fmt.Errorf("add revocation %q: %w", r.ID, err)
	}
	r.Seq = rec.Seq
	s.changed.Notify()
	return nil
}

// listRevocations returns the revocations numbered after after that have
// not expired at now, in Seq order: the bucket's key order.
func listRevocations(tx *bolt.Tx, after int64, now time.Time) ([]*store.Revocation, error) {
	var list []*store.Revocation
	c := tx.Bucket(bucketRevocations).Cursor()
	for k, v := c.Seek(seqKey(uint64(after) + 1)); k != nil; k, v = c.Next() {
		var r revocationRecord
		if err := json.Unmarshal(v, &r); err != nil {
			return nil, fmt.Errorf("decode revocation %x: %w", k, err)
		}
		if now.Before(r.ExpiresAt) {
			rev := store.Revocation(r)
			list = append(list, &rev)
		}
	}
	return list, nil
}

// IsRevoked reads, for each key, only the revocations of that kind and
// value, found through revocation_index.
func (s *Store) IsRevoked(ctx context.Context, keys []store.RevocationKey, issuedAt, now time.Time) (bool, error) {
	var revoked bool
	err := s.view(ctx, func(tx *bolt.Tx) error {
		b := tx.Bucket(bucketRevocations)
		c := tx.Bucket(bucketRevocationIndex).Cursor()
		for _, key := range keys {
			prefix := revocationIndexPrefix(key.Kind, key.Value)
			for k, _ := c.Seek(prefix); k != nil && bytes.HasPrefix(k, prefix); k, _ = c.Next() {
				var r revocationRecord
				if err := get(b, string(k[len(prefix):]), &r); err != nil {
					return fmt.Errorf("revocation %x: %w", k[len(prefix):], err)
				}
				if now.Before(r.ExpiresAt) && !r.RevokedAt.Before(issuedAt) {
					revoked = true
					return nil
				}
			}
		}
		return nil
	})
	if err != nil {
		return false, fmt.Errorf("check revocations: %w", err)
	}
	return revoked, nil
}

// deleteRevocation removes the revocation stored under key and its index
// entries.
func deleteRevocation(tx *bolt.Tx, key []byte) error {
	b := tx.Bucket(bucketRevocations)
	var r revocationRecord
	if err := get(b, string(key), &r); err != nil {
		return fmt.Errorf("revocation %x: %w", key, err)
	}
	if err := tx.Bucket(bucketRevocationIDs).Delete([]byte(r.ID)); err != nil {
		return err
	}
	if err := tx.Bucket(bucketRevocationIndex).Delete(append(revocationIndexPrefix(r.Kind, r.Value), key...)); err != nil {
		return err
	}
	return b.Delete(key)
}
