package filestore

import (
	"context"
	"encoding/binary"
	"fmt"
	"time"

	"github.com/meshauth/meshauth/issuer/store"
	bolt "go.etcd.io/bbolt"
)

// The change sequence (store.ChangeSeq) lives in the bucket changes, under
// seq and keys_seq, 8 bytes big-endian. bbolt runs one write transaction
// at a time, so numbers are taken, and become visible, in commit order.
var (
	bucketChanges = []byte("changes")
	keySeq        = []byte("seq")
	keyKeysSeq    = []byte("keys_seq")
)

// initChanges starts the sequence of a store that has none: after the
// revocations numbered before it existed, and counting the keys already
// there as one change.
func initChanges(tx *bolt.Tx) error {
	b := tx.Bucket(bucketChanges)
	if b.Get(keySeq) != nil {
		return nil
	}
	seq := tx.Bucket(bucketRevocations).Sequence() + 1
	if err := b.Put(keySeq, seqKey(seq)); err != nil {
		return err
	}
	return b.Put(keyKeysSeq, seqKey(seq))
}

func readChangeSeq(tx *bolt.Tx) store.ChangeSeq {
	b := tx.Bucket(bucketChanges)
	return store.ChangeSeq{
		Seq:     int64(binary.BigEndian.Uint64(b.Get(keySeq))),
		KeysSeq: int64(binary.BigEndian.Uint64(b.Get(keyKeysSeq))),
	}
}

// nextChange takes the next number for a change made in tx, of the keys
// if keys is set.
func nextChange(tx *bolt.Tx, keys bool) (int64, error) {
	seq := readChangeSeq(tx).Seq + 1
	b := tx.Bucket(bucketChanges)
	if err := b.Put(keySeq, seqKey(uint64(seq))); err != nil {
		return 0, err
	}
	if keys {
		if err := b.Put(keyKeysSeq, seqKey(uint64(seq))); err != nil {
			return 0, err
		}
	}
	return seq, nil
}

func (s *Store) ChangeSeq(ctx context.Context) (store.ChangeSeq, error) {
	var cs store.ChangeSeq
	err := s.view(ctx, func(tx *bolt.Tx) error {
		cs = readChangeSeq(tx)
		return nil
	})
	if err != nil {
		return cs, fmt.Errorf("read change sequence: %w", err)
	}
	return cs, nil
}

func (s *Store) ListSigningKeysAt(ctx context.Context) ([]*store.SigningKey, store.ChangeSeq, error) {
	var (
		keys []*store.SigningKey
		cs   store.ChangeSeq
	)
	err := s.view(ctx, func(tx *bolt.Tx) error {
		cs = readChangeSeq(tx)
		var err error
		keys, err = listKeys(tx)
		return err
	})
	if err != nil {
		return nil, cs, fmt.Errorf("list signing keys: %w", err)
	}
	return keys, cs, nil
}

func (s *Store) RevocationsAfter(ctx context.Context, after int64, now time.Time) ([]*store.Revocation, store.ChangeSeq, error) {
	var (
		list []*store.Revocation
		cs   store.ChangeSeq
	)
	err := s.view(ctx, func(tx *bolt.Tx) error {
		cs = readChangeSeq(tx)
		var err error
		list, err = listRevocations(tx, after, now)
		return err
	})
	if err != nil {
		return nil, cs, fmt.Errorf("list revocations: %w", err)
	}
	return list, cs, nil
}

// Changed is closed after the next change this process commits: an
// embedded store has no other writer.
func (s *Store) Changed() <-chan struct{} { return s.changed.C() }
