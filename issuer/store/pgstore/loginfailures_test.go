package pgstore

import (
	"context"
	"testing"

	"github.com/jackc/pgx/v5"

	"github.com/meshauth/meshauth/issuer/store/storetest"
)

func TestSweepLoginFailures(t *testing.T) {
	s := open(t, newSchema(t))
	storetest.SweepLoginFailures(t, s,
		func() error { return s.sweep(t.Context()) },
		func(limit int) error { return s.trimLoginFailures(t.Context(), limit) },
		func() []string {
			rows, _ := s.pool.Query(context.Background(), `SELECT key FROM meshauth_login_failures ORDER BY key COLLATE "C"`)
			keys, err := pgx.CollectRows(rows, pgx.RowTo[string])
			if err != nil {
				t.Fatal(err)
			}
			return keys
		})
}
