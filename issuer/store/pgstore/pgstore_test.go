package pgstore

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/meshauth/meshauth/internal/pgtest"
	"github.com/meshauth/meshauth/internal/testwait"
	"github.com/meshauth/meshauth/issuer/store"
	"github.com/meshauth/meshauth/issuer/store/storetest"
)

// testURL returns the database the tests may create schemas in.
func testURL(t *testing.T) string { return pgtest.URL(t) }

// newSchema creates an empty schema, dropped when the test ends, and returns
// a URL whose connections use it.
func newSchema(t *testing.T) string { return pgtest.Schema(t) }

func open(t *testing.T, url string) *Store {
	t.Helper()
	s, err := Open(t.Context(), url)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.Close() })
	return s
}

func TestStore(t *testing.T) {
	testURL(t)
	storetest.Run(t, storetest.Harness{
		Open: func(t *testing.T) store.Store { return open(t, newSchema(t)) },
		Reopen: func(t *testing.T, old store.Store) store.Store {
			url := old.(*Store).pool.Config().ConnString()
			old.Close()
			return open(t, url)
		},
	})
}

// TestOpenConcurrently is replicas starting together on an empty database.
func TestOpenConcurrently(t *testing.T) {
	url := newSchema(t)
	var wg sync.WaitGroup
	errs := make([]error, 4)
	for i := range errs {
		wg.Go(func() {
			s, err := Open(t.Context(), url)
			if err == nil {
				s.Close()
			}
			errs[i] = err
		})
	}
	wg.Wait()
	for _, err := range errs {
		if err != nil {
			t.Error(err)
		}
	}
	s := open(t, url)
	var n int
	if err := s.pool.QueryRow(t.Context(), "SELECT count(*) FROM meshauth_schema_migrations").Scan(&n); err != nil {
		t.Fatal(err)
	}
	names, err := migrations.ReadDir("migrations")
	if err != nil {
		t.Fatal(err)
	}
	if n != len(names) {
		t.Errorf("%d migrations recorded, want %d", n, len(names))
	}
}

func TestOpenBadURL(t *testing.T) {
	const password = "hunter2"
	_, err := Open(t.Context(), "postgres://u:"+password+"@127.0.0.1:1/db?connect_timeout=1&sslmode=disable")
	if err == nil {
		t.Fatal("Open of an unreachable database succeeded")
	}
	if strings.Contains(err.Error(), password) {
		t.Errorf("error shows the password: %v", err)
	}
	_, err = Open(t.Context(), "postgres://u:"+password+"@127.0.0.1/db?pool_max_conns=many")
	if err == nil || strings.Contains(err.Error(), password) {
		t.Errorf("Open of a bad URL: error %v, want one without the password", err)
	}
}

func TestSweep(t *testing.T) {
	s := open(t, newSchema(t))
	ctx := t.Context()
	now := time.Now()
	for _, v := range []string{"expired", "live"} {
		exp := now.Add(-time.Hour)
		if v == "live" {
			exp = now.Add(time.Hour)
		}
		err := errors.Join(
			s.UseOnce(ctx, v, exp),
			s.PutAccessToken(ctx, &store.AccessToken{Hash: v, GrantID: "g", ExpiresAt: exp}),
			s.PutAuthorizationCode(ctx, &store.AuthorizationCode{Hash: v, ExpiresAt: exp}),
			s.PutRefreshToken(ctx, &store.RefreshToken{Hash: v, GrantID: "g", ExpiresAt: exp}),
			s.CreateGrant(ctx, &store.Grant{ID: v, ExpiresAt: exp}),
			s.AddRevocation(ctx, &store.Revocation{ID: v, Kind: store.RevokeSubject, Value: v, ExpiresAt: exp}),
		)
		if err != nil {
			t.Fatal(err)
		}
	}
	if err := s.sweep(ctx); err != nil {
		t.Fatal(err)
	}
	for _, q := range []string{
		"SELECT value FROM meshauth_once",
		"SELECT hash FROM meshauth_access_tokens",
		"SELECT hash FROM meshauth_authorization_codes",
		"SELECT hash FROM meshauth_refresh_tokens",
		"SELECT id FROM meshauth_grants",
		"SELECT id FROM meshauth_revocations",
	} {
		rows, _ := s.pool.Query(ctx, q)
		got, err := pgx.CollectRows(rows, pgx.RowTo[string])
		if err != nil {
			t.Fatal(err)
		}
		if len(got) != 1 || got[0] != "live" {
			t.Errorf("%s after sweep: %q, want [live]", q, got)
		}
	}
}

func TestDefaultTimeout(t *testing.T) {
	ctx, cancel := withTimeout(t.Context())
	defer cancel()
	if d, ok := ctx.Deadline(); !ok || time.Until(d) > opTimeout {
		t.Errorf("no default deadline: %v %v", d, ok)
	}
	want := time.Now().Add(time.Hour)
	parent, cancel2 := context.WithDeadline(t.Context(), want)
	defer cancel2()
	ctx, cancel = withTimeout(parent)
	defer cancel()
	if d, _ := ctx.Deadline(); !d.Equal(want) {
		t.Errorf("deadline %v, want the caller's %v", d, want)
	}
}

// waitUntil waits up to ten seconds for cond: for a NOTIFY to arrive.
func waitUntil(t *testing.T, what string, cond func() bool) {
	t.Helper()
	testwait.For(t, 10*time.Second, testwait.Holds(what, cond))
}

// TestReplicasSeeChanges runs two stores on one schema, as two issuer
// replicas: a change by one closes the other's Changed, and a client
// written through one, or by anyone with SQL, leaves the other's cache.
func TestReplicasSeeChanges(t *testing.T) {
	url := newSchema(t)
	a, b := open(t, url), open(t, url)
	waitUntil(t, "both listening", func() bool { return a.listenerPID.Load() != 0 && b.listenerPID.Load() != 0 })
	ctx := t.Context()

	for _, change := range []struct {
		name string
		op   func() error
	}{
		{"a key added", func() error {
			return a.AddSigningKey(ctx, &store.SigningKey{ID: "k1", Algorithm: "ES256", CreatedAt: time.Now(), ActivateAt: time.Now()}, "")
		}},
		{"a revocation", func() error {
			return a.AddRevocation(ctx, &store.Revocation{ID: "r1", Kind: store.RevokeSubject, Value: "alice", ExpiresAt: time.Now().Add(time.Hour)})
		}},
		{"a key deleted", func() error { return a.DeleteSigningKey(ctx, "k1") }},
	} {
		changed := b.Changed()
		if err := change.op(); err != nil {
			t.Fatal(err)
		}
		select {
		case <-changed:
		case <-time.After(10 * time.Second):
			t.Fatalf("%s by one replica: the other's Changed not closed", change.name)
		}
	}

	if err := a.CreateClient(ctx, &store.Client{ID: "web", Name: "before", CreatedAt: time.Now()}); err != nil {
		t.Fatal(err)
	}
	nameAtB := func() string {
		c, err := b.GetClient(ctx, "web")
		if err != nil {
			return err.Error()
		}
		return c.Name
	}
	if got := nameAtB(); got != "before" {
		t.Fatalf("client at the other replica: %q", got)
	}
	if _, err := a.pool.Exec(ctx, "UPDATE meshauth_clients SET name = 'after' WHERE id = 'web'"); err != nil {
		t.Fatal(err)
	}
	waitUntil(t, "the update at the other replica", func() bool { return nameAtB() == "after" })
	if err := a.DeleteClient(ctx, "web"); err != nil {
		t.Fatal(err)
	}
	waitUntil(t, "the deletion at the other replica", func() bool {
		_, err := b.GetClient(ctx, "web")
		return errors.Is(err, store.ErrNotFound)
	})
}

// TestClientCacheWithoutListener checks that a replica that lost its
// listening connection reads clients from the database, never from what
// it cached, until it listens again.
func TestClientCacheWithoutListener(t *testing.T) {
	url := newSchema(t)
	a, b := open(t, url), open(t, url)
	waitUntil(t, "listening", func() bool { return b.listenerPID.Load() != 0 })
	ctx := t.Context()
	if err := a.CreateClient(ctx, &store.Client{ID: "web", Name: "v1", CreatedAt: time.Now()}); err != nil {
		t.Fatal(err)
	}
	if _, err := b.GetClient(ctx, "web"); err != nil {
		t.Fatal(err)
	}
	pid := b.listenerPID.Load()
	changed := b.Changed()
	if _, err := a.pool.Exec(ctx, "SELECT pg_terminate_backend($1)", pid); err != nil {
		t.Fatal(err)
	}
	select {
	case <-changed: // changes may be missed: consumers reload
	case <-time.After(10 * time.Second):
		t.Fatal("Changed not closed when the listening connection was lost")
	}
	// Written while nobody listens at b: no NOTIFY reaches it.
	if _, err := a.pool.Exec(ctx, "UPDATE meshauth_clients SET name = 'v2' WHERE id = 'web'"); err != nil {
		t.Fatal(err)
	}
	if c, err := b.GetClient(ctx, "web"); err != nil || c.Name != "v2" {
		t.Fatalf("client read while not listening: %+v, %v; want v2 from the database", c, err)
	}
}

// TestMigrationNumbersAfterOldRevocations opens a database whose
// revocations were numbered before the change sequence existed: new
// changes are numbered after them.
func TestMigrationNumbersAfterOldRevocations(t *testing.T) {
	url := newSchema(t)
	ctx := t.Context()
	cfg, err := pgxpool.ParseConfig(url)
	if err != nil {
		t.Fatal(err)
	}
	conn, err := pgx.ConnectConfig(ctx, cfg.ConnConfig)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close(ctx)
	names, err := migrations.ReadDir("migrations")
	if err != nil {
		t.Fatal(err)
	}
	if _, err := conn.Exec(ctx, "CREATE TABLE meshauth_schema_migrations (version text PRIMARY KEY, applied_at timestamptz NOT NULL DEFAULT now())"); err != nil {
		t.Fatal(err)
	}
	for _, n := range names {
		if n.Name() >= "004" {
			break
		}
		sql, err := migrations.ReadFile("migrations/" + n.Name())
		if err != nil {
			t.Fatal(err)
		}
		if _, err := conn.Exec(ctx, string(sql)); err != nil {
			t.Fatalf("%s: %v", n.Name(), err)
		}
		if _, err := conn.Exec(ctx, "INSERT INTO meshauth_schema_migrations (version) VALUES ($1)", strings.TrimSuffix(n.Name(), ".sql")); err != nil {
			t.Fatal(err)
		}
	}
	for i := range 3 {
		if _, err := conn.Exec(ctx, `INSERT INTO meshauth_revocations (id, kind, value, revoked_at, expires_at)
			VALUES ($1, 'sub', 'old', now(), now() + interval '1 hour')`, fmt.Sprint("old", i)); err != nil {
			t.Fatal(err)
		}
	}
	s := open(t, url)
	r := &store.Revocation{ID: "new", Kind: store.RevokeSubject, Value: "new", ExpiresAt: time.Now().Add(time.Hour)}
	if err := s.AddRevocation(ctx, r); err != nil {
		t.Fatal(err)
	}
	cs, err := s.ChangeSeq(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if r.Seq != 5 || cs.Seq != 5 || cs.KeysSeq != 4 {
		t.Errorf("after 3 old revocations: new revocation %d, ChangeSeq %+v; want 5, {5 4}", r.Seq, cs)
	}
}
