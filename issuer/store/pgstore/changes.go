package pgstore

import (
	"context"
	"encoding/json"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/meshauth/meshauth/issuer/store"
)

// Changes of the signing keys and the revocations are numbered by the
// triggers of migration 004, which also announce them, and every write of
// a client, with NOTIFY on the channel meshauth. Each Store listens on a
// connection of its own: a change by any replica closes Changed at once,
// and a client written anywhere leaves this replica's client cache.

// notifyChannel is the channel of the migration's NOTIFYs.
const notifyChannel = "meshauth"

// notification is the payload of a NOTIFY: the schema of the tables, so
// that stores in other schemas of the database ignore it, and either the
// number of a change or the id of a client written.
type notification struct {
	Schema string  `json:"schema"`
	Change int64   `json:"change"`
	Client *string `json:"client"`
}

func (s *Store) ChangeSeq(ctx context.Context) (store.ChangeSeq, error) {
	ctx, cancel := withTimeout(ctx)
	defer cancel()
	var cs store.ChangeSeq
	if err := s.pool.QueryRow(ctx, "SELECT seq, keys_seq FROM meshauth_changes").Scan(&cs.Seq, &cs.KeysSeq); err != nil {
		return cs, fmt.Errorf("read change sequence: %w", err)
	}
	return cs, nil
}

// readAtOnce runs fn in a read-only transaction whose reads all see one
// snapshot of the database, after reading the change sequence in it.
func (s *Store) readAtOnce(ctx context.Context, fn func(pgx.Tx) error) (store.ChangeSeq, error) {
	ctx, cancel := withTimeout(ctx)
	defer cancel()
	var cs store.ChangeSeq
	err := pgx.BeginTxFunc(ctx, s.pool, pgx.TxOptions{IsoLevel: pgx.RepeatableRead, AccessMode: pgx.ReadOnly}, func(tx pgx.Tx) error {
		if err := tx.QueryRow(ctx, "SELECT seq, keys_seq FROM meshauth_changes").Scan(&cs.Seq, &cs.KeysSeq); err != nil {
			return err
		}
		return fn(tx)
	})
	return cs, err
}

func (s *Store) ListSigningKeysAt(ctx context.Context) ([]*store.SigningKey, store.ChangeSeq, error) {
	var keys []*store.SigningKey
	cs, err := s.readAtOnce(ctx, func(tx pgx.Tx) error {
		var err error
		keys, err = listSigningKeys(ctx, tx)
		return err
	})
	if err != nil {
		return nil, cs, fmt.Errorf("list signing keys: %w", err)
	}
	return keys, cs, nil
}

func (s *Store) RevocationsAfter(ctx context.Context, after int64, now time.Time) ([]*store.Revocation, store.ChangeSeq, error) {
	var list []*store.Revocation
	cs, err := s.readAtOnce(ctx, func(tx pgx.Tx) error {
		rows, _ := tx.Query(ctx, `SELECT id, seq, kind, value, revoked_at, expires_at
			FROM meshauth_revocations WHERE seq > $1 AND expires_at > $2 ORDER BY seq`, after, now)
		var err error
		list, err = pgx.CollectRows(rows, func(row pgx.CollectableRow) (*store.Revocation, error) {
			var r store.Revocation
			err := row.Scan(&r.ID, &r.Seq, &r.Kind, &r.Value, &r.RevokedAt, &r.ExpiresAt)
			r.RevokedAt, r.ExpiresAt = r.RevokedAt.UTC(), r.ExpiresAt.UTC()
			return &r, err
		})
		return err
	})
	if err != nil {
		return nil, cs, fmt.Errorf("list revocations: %w", err)
	}
	return list, cs, nil
}

// Changed is closed by a change that any replica commits, as soon as its
// NOTIFY arrives, and whenever the listening connection is lost or made
// again, since changes may have been missed meanwhile.
func (s *Store) Changed() <-chan struct{} { return s.changed.C() }

// listen follows the channel until ctx is done, connecting again with
// backoff whenever the connection is lost.
func (s *Store) listen(ctx context.Context, cfg *pgx.ConnConfig) {
	for failures := 0; ; failures++ {
		err := s.listenOnce(ctx, cfg)
		// Nothing invalidates the client cache now, and changes go
		// unannounced.
		s.clients.setLive(false)
		s.changed.Notify()
		if ctx.Err() != nil {
			return
		}
		wait := min(time.Second<<min(failures, 5), 30*time.Second)
		wait = wait/2 + rand.N(wait/2+1)
		slog.Warn("PostgreSQL store: listening for other replicas' changes failed; keys are reloaded on their schedule and clients read from the database meanwhile",
			"retry_in", wait.Round(time.Millisecond), "err", err)
		select {
		case <-ctx.Done():
			return
		case <-time.After(wait):
		}
	}
}

func (s *Store) listenOnce(ctx context.Context, cfg *pgx.ConnConfig) error {
	conn, err := pgx.ConnectConfig(ctx, cfg)
	if err != nil {
		return err
	}
	defer conn.Close(context.Background())
	var (
		schema string
		pid    uint32
	)
	if err := conn.QueryRow(ctx, "SELECT current_schema(), pg_backend_pid()").Scan(&schema, &pid); err != nil {
		return err
	}
	s.listenerPID.Store(pid)
	if _, err := conn.Exec(ctx, "LISTEN "+notifyChannel); err != nil {
		return err
	}
	// From here on nothing is missed: what changed before is read again.
	s.clients.setLive(true)
	s.changed.Notify()
	for {
		n, err := conn.WaitForNotification(ctx)
		if err != nil {
			return err
		}
		var p notification
		if err := json.Unmarshal([]byte(n.Payload), &p); err != nil || p.Schema != schema {
			continue
		}
		if p.Client != nil {
			s.clients.invalidate(*p.Client)
		} else {
			s.changed.Notify()
		}
	}
}
