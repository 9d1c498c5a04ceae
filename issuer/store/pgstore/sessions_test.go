package pgstore

import (
	"testing"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/meshauth/meshauth/issuer/store"
)

func TestSweepSessions(t *testing.T) {
	s := open(t, newSchema(t))
	now := time.Now()
	for name, exp := range map[string]time.Time{"expired": now.Add(-time.Hour), "live": now.Add(time.Hour)} {
		if err := s.CreateSession(t.Context(), &store.Session{Hash: name, UserID: "u", ExpiresAt: exp}); err != nil {
			t.Fatal(err)
		}
	}
	if err := s.sweep(t.Context()); err != nil {
		t.Fatal(err)
	}
	rows, _ := s.pool.Query(t.Context(), "SELECT hash FROM meshauth_sessions")
	got, err := pgx.CollectRows(rows, pgx.RowTo[string])
	if err != nil {
		t.Fatal(err)
	}
	if len(got) != 1 || got[0] != "live" {
		t.Errorf("sessions after sweep: %q, want [live]", got)
	}
}
