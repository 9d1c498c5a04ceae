// Package pgtest gives tests a PostgreSQL schema of their own on the
// database MESHAUTH_TEST_POSTGRES_URL names, and skips them without it.
package pgtest

import (
	"context"
	"crypto/rand"
	"net/url"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
)

// EnvURL is the variable naming the database tests may create schemas in.
const EnvURL = "MESHAUTH_TEST_POSTGRES_URL"

// URL returns the database tests may create schemas in, or skips the
// test.
func URL(t testing.TB) string {
	t.Helper()
	u := os.Getenv(EnvURL)
	if u == "" {
		t.Skip(EnvURL + " not set; skipping a test that needs PostgreSQL")
	}
	return u
}

// Schema creates an empty schema, dropped when the test ends, and returns
// a URL whose connections use it, with a pool small enough for many tests
// at once.
func Schema(t testing.TB) string {
	t.Helper()
	base := URL(t)
	name := "t_" + strings.ToLower(rand.Text())
	Exec(t, base, "CREATE SCHEMA "+name)
	t.Cleanup(func() { Exec(t, base, "DROP SCHEMA "+name+" CASCADE") })
	u, err := url.Parse(base)
	if err != nil {
		t.Fatalf("%s must be a URL: %v", EnvURL, err)
	}
	q := u.Query()
	q.Set("search_path", name)
	q.Set("pool_max_conns", "4")
	u.RawQuery = q.Encode()
	return u.String()
}

// Exec runs sql on a connection of its own to the database at url.
func Exec(t testing.TB, url, sql string) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	conn, err := pgx.Connect(ctx, url)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close(ctx)
	if _, err := conn.Exec(ctx, sql); err != nil {
		t.Fatalf("%s: %v", sql, err)
	}
}
