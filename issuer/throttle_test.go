package issuer

import (
	"bytes"
	"context"
	"net/http"
	"testing"
	"time"

	"github.com/meshauth/meshauth/issuer/store"
	"github.com/meshauth/meshauth/issuer/store/pgstore"
)

// TestLoginBackoffAcrossReplicas: failed logins spread over two replicas
// of one store count together, so the account is blocked after as many
// failures as at one replica, and a sign-in at either replica is refused.
func TestLoginBackoffAcrossReplicas(t *testing.T) {
	formKey := bytes.Repeat([]byte{9}, formKeySize)
	withFormKey := func(_ *env, cfg *Config) { cfg.FormKey = formKey }
	t.Run("store=file", func(t *testing.T) {
		a := newEnv(t)
		b := serveEnvWith(t, a.store, a.store, a.url, withFormKey)
		a = serveEnvWith(t, a.store, a.store, a.url, withFormKey)
		backoffAcrossReplicas(t, a, b)
	})
	t.Run("store=postgres", func(t *testing.T) {
		pgURL := pgSchema(t)
		stA := openPG(t, pgURL)
		a := serveEnvWith(t, stA, stA, "", withFormKey)
		stB := openPG(t, pgURL)
		backoffAcrossReplicas(t, a, serveEnvWith(t, stB, stB, a.url, withFormKey))
	})
}

// openPG opens a replica's store on the database at url (see pgSchema),
// closed when the test ends.
func openPG(t *testing.T, url string) store.Store {
	t.Helper()
	st, err := pgstore.Open(context.Background(), url)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { st.Close() })
	return st
}

func backoffAcrossReplicas(t *testing.T, a, b *env) {
	a.addUser()
	a.publicClient("app")
	browser := a.browser()
	login := browser.authorize("app")
	replicas := []*env{a, b}
	for i := range accountFreeFailures {
		browser.e = replicas[i%2]
		if p := browser.login(login, testUser, "not the password at all"); p.status != http.StatusUnauthorized {
			t.Fatalf("failure %d: %d", i+1, p.status)
		}
	}
	// One failure over the free ones blocks the account.
	browser.e = b
	if p := browser.login(login, testUser, "not the password either"); p.status != http.StatusUnauthorized {
		t.Fatalf("failure %d: %d", accountFreeFailures+1, p.status)
	}
	for _, r := range replicas {
		browser.e = r
		if p := browser.login(login, testUser, testPassword); p.status != http.StatusTooManyRequests || p.header.Get("Retry-After") == "" {
			t.Errorf("right password after %d failures spread over two replicas: %d, want 429 with Retry-After", accountFreeFailures+1, p.status)
		}
	}
}

// throttleStore fails the login backoff's store calls named in down.
type throttleStore struct {
	store.Store
	down map[string]bool
}

func (s *throttleStore) GetLoginFailures(ctx context.Context, keys []string, now time.Time) ([]*store.LoginFailure, error) {
	if s.down["get"] {
		return nil, errDown
	}
	return s.Store.GetLoginFailures(ctx, keys, now)
}

func (s *throttleStore) AddLoginFailure(ctx context.Context, key string, at, exp time.Time) (*store.LoginFailure, error) {
	if s.down["add"] {
		return nil, errDown
	}
	return s.Store.AddLoginFailure(ctx, key, at, exp)
}

func (s *throttleStore) DeleteLoginFailures(ctx context.Context, key string) error {
	if s.down["delete"] {
		return errDown
	}
	return s.Store.DeleteLoginFailures(ctx, key)
}

// TestLoginBackoffStoreDown: a backoff that cannot be read checks no
// password, and a failure that cannot be counted is answered 503, not as
// a wrong password; neither counts. A success whose failures cannot be
// forgotten still signs in.
func TestLoginBackoffStoreDown(t *testing.T) {
	ts := &throttleStore{}
	e := newEnvOn(t, t.TempDir(), func(s store.Store) store.Store { ts.Store = s; return ts })
	e.addUser()
	e.publicClient("app")
	b := e.browser()
	login := b.authorize("app")
	failures := func() int {
		t.Helper()
		list, err := ts.Store.GetLoginFailures(context.Background(), []string{accountKey(testUser)}, time.Now())
		if err != nil {
			t.Fatal(err)
		}
		if len(list) == 0 {
			return 0
		}
		return list[0].Count
	}
	for _, tc := range []struct {
		down     string
		password string
		status   int
		failures int
	}{
		{"get", testPassword, http.StatusServiceUnavailable, 0},
		{"get", "not the password at all", http.StatusServiceUnavailable, 0},
		{"add", "not the password at all", http.StatusServiceUnavailable, 0},
		{"", "not the password at all", http.StatusUnauthorized, 1},
		{"delete", testPassword, http.StatusOK, 1},
		{"", testPassword, http.StatusOK, 0},
	} {
		ts.down = map[string]bool{tc.down: true}
		if p := b.login(login, testUser, tc.password); p.status != tc.status {
			t.Errorf("%s down, password %q: %d, want %d", tc.down, tc.password, p.status, tc.status)
		}
		if n := failures(); n != tc.failures {
			t.Errorf("%s down, password %q: %d failures counted, want %d", tc.down, tc.password, n, tc.failures)
		}
	}
}
