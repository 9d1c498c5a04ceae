package pgstore

import (
	"context"
	"fmt"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/meshauth/meshauth/issuer/store"
)

func init() {
	swept = append(swept, "meshauth_sessions")
}

// consentRecord is a store.Consent in the consents jsonb column.
type consentRecord struct {
	ClientID string   `json:"client_id"`
	Scope    []string `json:"scope"`
	Audience []string `json:"aud"`
}

func consentRecords(cs []store.Consent) []consentRecord {
	out := make([]consentRecord, len(cs))
	for i, c := range cs {
		out[i] = consentRecord{ClientID: c.ClientID, Scope: orEmpty(c.Scope), Audience: orEmpty(c.Audience)}
	}
	return out
}

const sessionColumns = "hash, user_id, auth_time, amr, idp, consents, last_seen_at, expires_at"

func scanSession(row pgx.CollectableRow) (*store.Session, error) {
	var s store.Session
	var consents []consentRecord
	err := row.Scan(&s.Hash, &s.UserID, &s.AuthTime, &s.AMR, &s.IDP, &consents, &s.LastSeenAt, &s.ExpiresAt)
	s.AuthTime, s.LastSeenAt, s.ExpiresAt = s.AuthTime.UTC(), s.LastSeenAt.UTC(), s.ExpiresAt.UTC()
	s.Consents = make([]store.Consent, len(consents))
	for i, c := range consents {
		s.Consents[i] = store.Consent{ClientID: c.ClientID, Scope: orEmpty(c.Scope), Audience: orEmpty(c.Audience)}
	}
	return &s, err
}

func (s *Store) CreateSession(ctx context.Context, sess *store.Session) error {
	ctx, cancel := withTimeout(ctx)
	defer cancel()
	_, err := s.pool.Exec(ctx, "INSERT INTO meshauth_sessions ("+sessionColumns+") VALUES ($1, $2, $3, $4, $5, $6, $7, $8)",
		sess.Hash, sess.UserID, sess.AuthTime, orEmpty(sess.AMR), sess.IDP, consentRecords(sess.Consents), sess.LastSeenAt, sess.ExpiresAt)
	if err != nil {
		return fmt.Errorf("create session of user %q: %w", sess.UserID, storeErr(err))
	}
	return nil
}

func (s *Store) GetSession(ctx context.Context, hash string) (*store.Session, error) {
	ctx, cancel := withTimeout(ctx)
	defer cancel()
	rows, _ := s.pool.Query(ctx, "SELECT "+sessionColumns+" FROM meshauth_sessions WHERE hash = $1 AND expires_at > $2", hash, time.Now())
	sess, err := pgx.CollectExactlyOneRow(rows, scanSession)
	if err != nil {
		return nil, fmt.Errorf("get session: %w", storeErr(err))
	}
	return sess, nil
}

func (s *Store) UpdateSession(ctx context.Context, sess *store.Session) error {
	ctx, cancel := withTimeout(ctx)
	defer cancel()
	tag, err := s.pool.Exec(ctx, `UPDATE meshauth_sessions SET last_seen_at = $2, consents = $3
		WHERE hash = $1 AND expires_at > $4`, sess.Hash, sess.LastSeenAt, consentRecords(sess.Consents), time.Now())
	if err == nil && tag.RowsAffected() == 0 {
		err = store.ErrNotFound
	}
	if err != nil {
		return fmt.Errorf("update session of user %q: %w", sess.UserID, err)
	}
	return nil
}

func (s *Store) DeleteSession(ctx context.Context, hash string) error {
	ctx, cancel := withTimeout(ctx)
	defer cancel()
	if _, err := s.pool.Exec(ctx, "DELETE FROM meshauth_sessions WHERE hash = $1", hash); err != nil {
		return fmt.Errorf("delete session: %w", err)
	}
	return nil
}

func (s *Store) DeleteUserSessions(ctx context.Context, userID string) error {
	ctx, cancel := withTimeout(ctx)
	defer cancel()
	if _, err := s.pool.Exec(ctx, "DELETE FROM meshauth_sessions WHERE user_id = $1", userID); err != nil {
		return fmt.Errorf("delete sessions of user %q: %w", userID, err)
	}
	return nil
}
