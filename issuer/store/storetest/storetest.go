// Package storetest is the conformance suite every store.Store
// implementation must pass. An implementation's tests call Run with a Harness
// that opens fresh, empty stores.
package storetest

import (
	"context"
	"errors"
	"fmt"
	"reflect"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/meshauth/meshauth/issuer/store"
)

// Harness opens the stores under test. Its functions are called from
// parallel tests.
type Harness struct {
	// Open returns a new, empty store, isolated from every other store Open
	// returns, and arranges (with t.Cleanup) for it to be closed.
	Open func(t *testing.T) store.Store
	// Reopen closes old and returns a store over the same data, as after a
	// restart, and arranges for it to be closed. (Open's cleanup still
	// closes old, a second time.) Nil if the store keeps
	// nothing across a restart; the durability tests are then skipped.
	Reopen func(t *testing.T, old store.Store) store.Store
}

// racers is how many goroutines the concurrency tests start at once.
const racers = 16

// Run runs the suite, a group of tests per role of store.Store and one of
// what they share. Every test opens its own store, so they all run in
// parallel.
func Run(t *testing.T, h Harness) {
	for _, r := range roles {
		t.Run(r.name, func(t *testing.T) {
			t.Parallel()
			for _, tt := range r.tests {
				t.Run(tt.name, func(t *testing.T) {
					t.Parallel()
					tt.run(t, h)
				})
			}
		})
	}
}

// roles are the groups of the suite, named as the roles of store.Store.
var roles = []struct {
	name  string
	tests []suiteTest
}{
	{"Clients", clientTests},
	{"SigningKeys", signingKeyTests},
	{"Nonces", nonceTests},
	{"AccessTokens", accessTokenTests},
	{"Users", userTests},
	{"Grants", grantTests},
	{"Revocations", revocationTests},
	{"Changes", changeTests},
	{"Sessions", sessionTests},
	{"Identities", identityTests},
	{"People", peopleTests},
	{"LoginFailures", loginFailureTests},
	{"Store", storeTests},
}

// suiteTest is a test of the suite.
type suiteTest = struct {
	name string
	run  func(t *testing.T, h Harness)
}

// storeTests are what the roles share: every method honours its context,
// and what is written outlives a restart.
var storeTests = []suiteTest{
	{"CancelledContext", testCancelledContext},
	{"Ping", testPing},
	{"Reopen", testReopen},
}

// base is a fixed instant with sub-microsecond digits and a non-UTC zone, so
// that the round-trip tests see both normalised.
var base = time.Date(2030, 5, 17, 10, 30, 15, 123456789, time.FixedZone("CEST", 2*60*60))

// checkTime reports whether got is want to the microsecond, in UTC.
func checkTime(t *testing.T, field string, got, want time.Time) {
	t.Helper()
	if got.Location() != time.UTC {
		t.Errorf("%s: location %v, want UTC", field, got.Location())
	}
	if d := got.Sub(want); d <= -time.Microsecond || d >= time.Microsecond {
		t.Errorf("%s = %v, want %v to the microsecond", field, got, want)
	}
}

// checkRecord compares got with want: the named times to the microsecond
// and in UTC (a zero time must stay zero), the lists as non-nil (an absent
// one reads back empty), every other field exactly.
func checkRecord[T any](t *testing.T, what string, got, want *T, times func(*T) map[string]*time.Time, lists func(*T) []*[]string) {
	t.Helper()
	if got == nil {
		t.Errorf("%s: got nil, want %+v", what, want)
		return
	}
	g, w := *got, *want
	gt, wt := times(&g), times(&w)
	for name, p := range wt {
		if p.IsZero() && !gt[name].IsZero() {
			t.Errorf("%s.%s = %v, want zero", what, name, *gt[name])
		} else {
			checkTime(t, what+"."+name, *gt[name], *p)
		}
		*gt[name], *p = time.Time{}, time.Time{}
	}
	for _, l := range lists(&g) {
		if *l == nil {
			t.Errorf("%s: a list reads back nil, want non-nil", what)
		}
	}
	for _, l := range lists(&w) {
		if *l == nil {
			*l = []string{}
		}
	}
	if !reflect.DeepEqual(g, w) {
		t.Errorf("%s = %+v\nwant %+v", what, g, w)
	}
}

func wantErr(t *testing.T, op string, err, want error) {
	t.Helper()
	if !errors.Is(err, want) {
		t.Errorf("%s: error %v, want %v", op, err, want)
	}
}

// race runs f in racers goroutines released at once and returns their
// errors. Each racer first pings s, so that a pooled store has its
// connections open and the racers do overlap.
func race(t *testing.T, s store.Store, f func(i int) error) []error {
	t.Helper()
	errs := make([]error, racers)
	var ready, done sync.WaitGroup
	start := make(chan struct{})
	ready.Add(racers)
	for i := range racers {
		done.Go(func() {
			errs[i] = s.Ping(t.Context())
			ready.Done()
			<-start
			if errs[i] == nil {
				errs[i] = f(i)
			}
		})
	}
	ready.Wait()
	close(start)
	done.Wait()
	return errs
}

// checkOneWinner checks that exactly one racer succeeded and the others got
// lose, and returns the winner.
func checkOneWinner(t *testing.T, errs []error, lose error) int {
	t.Helper()
	won := -1
	for i, err := range errs {
		switch {
		case err == nil && won < 0:
			won = i
		case err == nil:
			t.Errorf("racers %d and %d both succeeded", won, i)
		case !errors.Is(err, lose):
			t.Errorf("racer %d: error %v, want %v", i, err, lose)
		}
	}
	if won < 0 {
		t.Fatalf("no racer succeeded")
	}
	return won
}

// testCancelledContext checks that every method fails on a cancelled
// context, and that the writes among them leave nothing behind.
func testCancelledContext(t *testing.T, h Harness) {
	s := h.Open(t)
	mustAddKey(t, s, newKey("k1", base), "")
	exp := time.Now().Add(time.Hour)
	// What the cancelled updates and deletes would change.
	mustCreateUser(t, s, newUser("u1", "alice"))
	mustCreateGrant(t, s, newGrant("g1", exp))
	mustPutCode(t, s, newCode("c1", "g1", exp))
	mustPutRefresh(t, s, newRefresh("r1", "g1", exp))
	live := newToken("a1", exp)
	live.GrantID = "g1"
	mustPutToken(t, s, live)
	ctx, cancel := context.WithCancel(t.Context())
	cancel()
	keys := []store.RevocationKey{{Kind: store.RevokeGrant, Value: "g1"}}
	rev := newRevocation("rv1", store.RevokeGrant, "g1", time.Now(), exp)
	ops := []struct {
		name string
		call func() error
		// check, with a live context, that nothing was written.
		check func() error
	}{
		{"CreateClient", func() error { return s.CreateClient(ctx, newClient("a")) },
			func() error { return notFound(s.GetClient(t.Context(), "a")) }},
		{"GetClient", func() error { _, err := s.GetClient(ctx, "a"); return err }, nil},
		{"ListClients", func() error { _, err := s.ListClients(ctx); return err }, nil},
		{"AddSigningKey", func() error { return s.AddSigningKey(ctx, newKey("k2", base.Add(time.Hour)), "k1") },
			func() error {
				if ids := keyIDs(t, s); !slices.Equal(ids, []string{"k1"}) {
					return fmt.Errorf("keys = %q, want [k1]", ids)
				}
				return nil
			}},
		{"ListSigningKeys", func() error { _, err := s.ListSigningKeys(ctx); return err }, nil},
		{"UseOnce", func() error { return s.UseOnce(ctx, "v", exp) },
			func() error { return s.UseOnce(t.Context(), "v", exp) }},
		{"PutAccessToken", func() error { return s.PutAccessToken(ctx, newToken("h", exp)) },
			func() error { return notFound(s.GetAccessToken(t.Context(), "h")) }},
		{"GetAccessToken", func() error { _, err := s.GetAccessToken(ctx, "h"); return err }, nil},
		{"CreateUser", func() error { return s.CreateUser(ctx, newUser("u2", "bob")) },
			func() error { return notFound(s.GetUserByName(t.Context(), "bob")) }},
		{"GetUser", func() error { _, err := s.GetUser(ctx, "u1"); return err }, nil},
		{"GetUserByName", func() error { _, err := s.GetUserByName(ctx, "alice"); return err }, nil},
		{"UpdateUserPassword", func() error { return s.UpdateUserPassword(ctx, "u1", "new hash") },
			func() error {
				u, err := s.GetUser(t.Context(), "u1")
				if err == nil && u.PasswordHash != newUser("u1", "alice").PasswordHash {
					err = errors.New("password hash changed")
				}
				return err
			}},
		{"CreateGrant", func() error { return s.CreateGrant(ctx, newGrant("g2", exp)) },
			func() error { return notFound(s.GetGrant(t.Context(), "g2")) }},
		{"GetGrant", func() error { _, err := s.GetGrant(ctx, "g1"); return err }, nil},
		{"RevokeGrant", func() error { return s.RevokeGrant(ctx, "g1", time.Now()) },
			func() error {
				g, err := s.GetGrant(t.Context(), "g1")
				if err == nil && !g.RevokedAt.IsZero() {
					err = errors.New("grant revoked")
				}
				return err
			}},
		{"PutAuthorizationCode", func() error { return s.PutAuthorizationCode(ctx, newCode("c2", "g1", exp)) },
			func() error { return notFound(s.RedeemAuthorizationCode(t.Context(), "c2", time.Now())) }},
		{"RedeemAuthorizationCode", func() error { _, err := s.RedeemAuthorizationCode(ctx, "c1", time.Now()); return err },
			func() error {
				_, err := s.RedeemAuthorizationCode(t.Context(), "c1", time.Now())
				return err
			}},
		{"PutRefreshToken", func() error { return s.PutRefreshToken(ctx, newRefresh("r2", "g1", exp)) },
			func() error { return notFound(s.GetRefreshToken(t.Context(), "r2")) }},
		{"GetRefreshToken", func() error { _, err := s.GetRefreshToken(ctx, "r1"); return err }, nil},
		{"UseRefreshToken", func() error { _, err := s.UseRefreshToken(ctx, "r1", time.Now()); return err },
			func() error {
				r, err := s.GetRefreshToken(t.Context(), "r1")
				if err == nil && !r.UsedAt.IsZero() {
					err = errors.New("refresh token used")
				}
				return err
			}},
		{"DeleteRefreshToken", func() error { return s.DeleteRefreshToken(ctx, "r1") },
			func() error { _, err := s.GetRefreshToken(t.Context(), "r1"); return err }},
		{"DeleteAccessToken", func() error { return s.DeleteAccessToken(ctx, "a1") },
			func() error { _, err := s.GetAccessToken(t.Context(), "a1"); return err }},
		{"AddRevocation", func() error { return s.AddRevocation(ctx, rev) },
			func() error {
				if list := listRevocations(t, s, time.Now()); len(list) != 0 || rev.Seq != 0 {
					return fmt.Errorf("%d revocations listed, Seq %d", len(list), rev.Seq)
				}
				return nil
			}},
		{"RevocationsAfter", func() error { _, _, err := s.RevocationsAfter(ctx, 0, time.Now()); return err }, nil},
		{"ListSigningKeysAt", func() error { _, _, err := s.ListSigningKeysAt(ctx); return err }, nil},
		{"ChangeSeq", func() error { _, err := s.ChangeSeq(ctx); return err }, nil},
		{"IsRevoked", func() error { _, err := s.IsRevoked(ctx, keys, base, time.Now()); return err }, nil},
		{"Ping", func() error { return s.Ping(ctx) }, nil},
	}
	for _, op := range ops {
		if err := op.call(); !errors.Is(err, context.Canceled) {
			t.Errorf("%s with a cancelled context: error %v, want %v", op.name, err, context.Canceled)
		}
		if op.check == nil {
			continue
		}
		if err := op.check(); err != nil {
			t.Errorf("%s with a cancelled context wrote something: %v", op.name, err)
		}
	}
	// Deletes: what they would have deleted is still there.
	mustCreateClient(t, s, newClient("a"))
	wantErr(t, "DeleteClient with a cancelled context", s.DeleteClient(ctx, "a"), context.Canceled)
	if _, err := s.GetClient(t.Context(), "a"); err != nil {
		t.Errorf("DeleteClient with a cancelled context deleted: %v", err)
	}
	wantErr(t, "DeleteSigningKey with a cancelled context", s.DeleteSigningKey(ctx, "k1"), context.Canceled)
	if ids := keyIDs(t, s); !slices.Equal(ids, []string{"k1"}) {
		t.Errorf("DeleteSigningKey with a cancelled context deleted: keys = %q", ids)
	}
}

// notFound turns the result of a Get into nil if it was ErrNotFound.
func notFound[T any](_ T, err error) error {
	if errors.Is(err, store.ErrNotFound) {
		return nil
	}
	if err == nil {
		return errors.New("found")
	}
	return err
}

func testPing(t *testing.T, h Harness) {
	s := h.Open(t)
	if err := s.Ping(t.Context()); err != nil {
		t.Errorf("Ping: %v", err)
	}
}

func testReopen(t *testing.T, h Harness) {
	if h.Reopen == nil {
		t.Skip("the store does not keep data across a restart")
	}
	s := h.Open(t)
	c := newClient("a")
	mustCreateClient(t, s, c)
	k1, k2 := newKey("k1", base), newKey("k2", base.Add(time.Hour))
	mustAddKey(t, s, k1, "")
	mustAddKey(t, s, k2, "k1")
	exp := time.Now().Add(time.Hour)
	if err := s.UseOnce(t.Context(), "v", exp); err != nil {
		t.Fatalf("UseOnce: %v", err)
	}
	tok := newToken("h1", exp)
	if err := s.PutAccessToken(t.Context(), tok); err != nil {
		t.Fatalf("PutAccessToken: %v", err)
	}

	s = h.Reopen(t, s)
	got, err := s.GetClient(t.Context(), "a")
	if err != nil {
		t.Fatalf("GetClient after reopening: %v", err)
	}
	checkClient(t, got, c)
	keys, err := s.ListSigningKeys(t.Context())
	if err != nil || len(keys) != 2 {
		t.Fatalf("ListSigningKeys after reopening: %d keys, %v", len(keys), err)
	}
	checkKey(t, keys[0], k1)
	checkKey(t, keys[1], k2)
	wantErr(t, "UseOnce after reopening", s.UseOnce(t.Context(), "v", exp), store.ErrReplay)
	gotTok, err := s.GetAccessToken(t.Context(), "h1")
	if err != nil {
		t.Fatalf("GetAccessToken after reopening: %v", err)
	}
	checkToken(t, gotTok, tok)
	mustAddKey(t, s, newKey("k3", base.Add(2*time.Hour)), "k2")
}
