package filestore

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"time"

	"github.com/meshauth/meshauth/issuer/store"
	bolt "go.etcd.io/bbolt"
)

// Sessions are stored under their hash; session_users has a key per session
// made of its user's id (length-prefixed) and its hash, so that a user's
// sessions are found without a scan.
var (
	bucketSessions     = []byte("sessions")
	bucketSessionUsers = []byte("session_users")
)

func init() {
	allBuckets = append(allBuckets, bucketSessions, bucketSessionUsers)
	swept = append(swept, struct {
		bucket []byte
		remove func(tx *bolt.Tx, key []byte) error
	}{bucketSessions, deleteSession})
}

type sessionRecord struct {
	Hash       string          `json:"hash"`
	UserID     string          `json:"user_id"`
	AuthTime   time.Time       `json:"auth_time"`
	AMR        []string        `json:"amr"`
	IDP        string          `json:"idp,omitempty"`
	Consents   []consentRecord `json:"consents"`
	LastSeenAt time.Time       `json:"last_seen_at"`
	ExpiresAt  time.Time       `json:"exp"`
}

type consentRecord struct {
	ClientID string   `json:"client_id"`
	Scope    []string `json:"scope"`
	Audience []string `json:"aud"`
}

func sessionRecordOf(s *store.Session) sessionRecord {
	r := sessionRecord{
		Hash: s.Hash, UserID: s.UserID, AuthTime: s.AuthTime.UTC(), AMR: nonEmpty(s.AMR), IDP: s.IDP,
		Consents: make([]consentRecord, len(s.Consents)), LastSeenAt: s.LastSeenAt.UTC(), ExpiresAt: s.ExpiresAt.UTC(),
	}
	for i, c := range s.Consents {
		r.Consents[i] = consentRecord{ClientID: c.ClientID, Scope: nonEmpty(c.Scope), Audience: nonEmpty(c.Audience)}
	}
	return r
}

func (r *sessionRecord) session() *store.Session {
	s := &store.Session{
		Hash: r.Hash, UserID: r.UserID, AuthTime: r.AuthTime, AMR: nonEmpty(r.AMR), IDP: r.IDP,
		Consents: make([]store.Consent, len(r.Consents)), LastSeenAt: r.LastSeenAt, ExpiresAt: r.ExpiresAt,
	}
	for i, c := range r.Consents {
		s.Consents[i] = store.Consent{ClientID: c.ClientID, Scope: nonEmpty(c.Scope), Audience: nonEmpty(c.Audience)}
	}
	return s
}

func sessionUserKey(userID string, hash []byte) []byte {
	return append(appendLengthPrefixed(nil, userID), hash...)
}

func (s *Store) CreateSession(ctx context.Context, sess *store.Session) error {
	r := sessionRecordOf(sess)
	err := s.update(ctx, func(tx *bolt.Tx) error {
		b := tx.Bucket(bucketSessions)
		if b.Get([]byte(sess.Hash)) != nil {
			return store.ErrExists
		}
		if err := tx.Bucket(bucketSessionUsers).Put(sessionUserKey(sess.UserID, []byte(sess.Hash)), nil); err != nil {
			return err
		}
		return put(b, sess.Hash, r)
	})
	if err != nil {
		return fmt.Errorf("create session of user %q: %w", sess.UserID, err)
	}
	return nil
}

func (s *Store) GetSession(ctx context.Context, hash string) (*store.Session, error) {
	var r sessionRecord
	err := s.view(ctx, func(tx *bolt.Tx) error { return get(tx.Bucket(bucketSessions), hash, &r) })
	if err == nil && !time.Now().Before(r.ExpiresAt) {
		err = store.ErrNotFound
	}
	if err != nil {
		return nil, fmt.Errorf("get session: %w", err)
	}
	return r.session(), nil
}

func (s *Store) UpdateSession(ctx context.Context, sess *store.Session) error {
	update := sessionRecordOf(sess)
	err := s.update(ctx, func(tx *bolt.Tx) error {
		b := tx.Bucket(bucketSessions)
		var r sessionRecord
		if err := get(b, sess.Hash, &r); err != nil {
			return err
		}
		if !time.Now().Before(r.ExpiresAt) {
			return store.ErrNotFound
		}
		r.LastSeenAt, r.Consents = update.LastSeenAt, update.Consents
		return put(b, sess.Hash, r)
	})
	if err != nil {
		return fmt.Errorf("update session of user %q: %w", sess.UserID, err)
	}
	return nil
}

func (s *Store) DeleteSession(ctx context.Context, hash string) error {
	err := s.update(ctx, func(tx *bolt.Tx) error { return deleteSession(tx, []byte(hash)) })
	if err != nil {
		return fmt.Errorf("delete session: %w", err)
	}
	return nil
}

// deleteSession removes a session and its index entry, if it exists.
func deleteSession(tx *bolt.Tx, hash []byte) error {
	b := tx.Bucket(bucketSessions)
	data := b.Get(hash)
	if data == nil {
		return nil
	}
	var r sessionRecord
	if err := json.Unmarshal(data, &r); err != nil {
		return fmt.Errorf("decode session: %w", err)
	}
	if err := tx.Bucket(bucketSessionUsers).Delete(sessionUserKey(r.UserID, hash)); err != nil {
		return err
	}
	return b.Delete(hash)
}

func (s *Store) DeleteUserSessions(ctx context.Context, userID string) error {
	err := s.update(ctx, func(tx *bolt.Tx) error {
		prefix := appendLengthPrefixed(nil, userID)
		var hashes [][]byte
		c := tx.Bucket(bucketSessionUsers).Cursor()
		for k, _ := c.Seek(prefix); k != nil && bytes.HasPrefix(k, prefix); k, _ = c.Next() {
			hashes = append(hashes, bytes.Clone(k[len(prefix):]))
		}
		for _, h := range hashes {
			if err := deleteSession(tx, h); err != nil {
				return err
			}
		}
		return nil
	})
	if err != nil {
		return fmt.Errorf("delete sessions of user %q: %w", userID, err)
	}
	return nil
}
