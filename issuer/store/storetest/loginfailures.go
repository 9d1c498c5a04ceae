package storetest

import (
	"context"
	"errors"
	"slices"
	"testing"
	"time"

	"github.com/meshauth/meshauth/issuer/store"
)

var loginFailureTests = []suiteTest{
	{"LoginFailureCount", testLoginFailureCount},
	{"LoginFailureOutOfOrder", testLoginFailureOutOfOrder},
	{"LoginFailureExpiry", testLoginFailureExpiry},
	{"DeleteLoginFailures", testDeleteLoginFailures},
	{"LoginFailureRace", testLoginFailureRace},
	{"LoginFailuresCancelledContext", testLoginFailuresCancelledContext},
	{"ReopenLoginFailures", testReopenLoginFailures},
}

// memory is how long the tests' failures are remembered.
const memory = time.Hour

func checkLoginFailure(t *testing.T, got, want *store.LoginFailure) {
	t.Helper()
	checkRecord(t, "login failure "+want.Key, got, want,
		func(f *store.LoginFailure) map[string]*time.Time {
			return map[string]*time.Time{"Last": &f.Last, "ExpiresAt": &f.ExpiresAt}
		},
		func(*store.LoginFailure) []*[]string { return nil })
}

func mustAddLoginFailure(t *testing.T, s store.Store, key string, at time.Time) *store.LoginFailure {
	t.Helper()
	f, err := s.AddLoginFailure(t.Context(), key, at, at.Add(memory))
	if err != nil {
		t.Fatalf("AddLoginFailure(%q): %v", key, err)
	}
	return f
}

// loginFailures returns the live records of keys at now, by key.
func loginFailures(t *testing.T, s store.Store, now time.Time, keys ...string) map[string]*store.LoginFailure {
	t.Helper()
	list, err := s.GetLoginFailures(t.Context(), keys, now)
	if err != nil {
		t.Fatalf("GetLoginFailures: %v", err)
	}
	out := map[string]*store.LoginFailure{}
	for _, f := range list {
		if out[f.Key] != nil {
			t.Errorf("GetLoginFailures returned %q twice", f.Key)
		}
		out[f.Key] = f
	}
	return out
}

// testLoginFailureCount counts failures per key, keys compared exactly.
func testLoginFailureCount(t *testing.T, h Harness) {
	s := h.Open(t)
	for i := range 3 {
		at := base.Add(time.Duration(i) * time.Second)
		got := mustAddLoginFailure(t, s, "account:alice", at)
		checkLoginFailure(t, got, &store.LoginFailure{Key: "account:alice", Count: i + 1, Last: at, ExpiresAt: at.Add(memory)})
	}
	mustAddLoginFailure(t, s, "account:Alice", base)
	mustAddLoginFailure(t, s, "address:192.0.2.1", base)
	now := base.Add(time.Minute)
	got := loginFailures(t, s, now, "account:alice", "account:Alice", "account:bob", "address:192.0.2.1")
	if len(got) != 3 || got["account:bob"] != nil {
		t.Fatalf("GetLoginFailures: %d records %v, want alice, Alice and the address", len(got), got)
	}
	last := base.Add(2 * time.Second)
	checkLoginFailure(t, got["account:alice"], &store.LoginFailure{Key: "account:alice", Count: 3, Last: last, ExpiresAt: last.Add(memory)})
	checkLoginFailure(t, got["account:Alice"], &store.LoginFailure{Key: "account:Alice", Count: 1, Last: base, ExpiresAt: base.Add(memory)})
	if got := loginFailures(t, s, now); len(got) != 0 {
		t.Errorf("GetLoginFailures of no keys: %v", got)
	}
}

// testLoginFailureOutOfOrder: a failure reported late (by a slower
// replica) counts, but moves neither Last nor ExpiresAt back.
func testLoginFailureOutOfOrder(t *testing.T, h Harness) {
	s := h.Open(t)
	later := base.Add(10 * time.Second)
	mustAddLoginFailure(t, s, "k", later)
	got := mustAddLoginFailure(t, s, "k", base)
	checkLoginFailure(t, got, &store.LoginFailure{Key: "k", Count: 2, Last: later, ExpiresAt: later.Add(memory)})
}

// testLoginFailureExpiry: a record is forgotten at its ExpiresAt, and the
// next failure starts counting again.
func testLoginFailureExpiry(t *testing.T, h Harness) {
	s := h.Open(t)
	mustAddLoginFailure(t, s, "k", base)
	mustAddLoginFailure(t, s, "k", base)
	expiry := base.Add(memory)
	if got := loginFailures(t, s, expiry.Add(-time.Microsecond), "k"); got["k"] == nil || got["k"].Count != 2 {
		t.Errorf("just before expiry: %v", got)
	}
	if got := loginFailures(t, s, expiry, "k"); len(got) != 0 {
		t.Errorf("at expiry: %v, want none", got)
	}
	got := mustAddLoginFailure(t, s, "k", expiry)
	checkLoginFailure(t, got, &store.LoginFailure{Key: "k", Count: 1, Last: expiry, ExpiresAt: expiry.Add(memory)})
}

func testDeleteLoginFailures(t *testing.T, h Harness) {
	s := h.Open(t)
	mustAddLoginFailure(t, s, "k1", base)
	mustAddLoginFailure(t, s, "k10", base)
	if err := s.DeleteLoginFailures(t.Context(), "k1"); err != nil {
		t.Fatalf("DeleteLoginFailures: %v", err)
	}
	if err := s.DeleteLoginFailures(t.Context(), "nope"); err != nil {
		t.Errorf("DeleteLoginFailures of a key without failures: %v", err)
	}
	got := loginFailures(t, s, base, "k1", "k10")
	if got["k1"] != nil || got["k10"] == nil {
		t.Errorf("after deleting k1: %v", got)
	}
	if f := mustAddLoginFailure(t, s, "k1", base); f.Count != 1 {
		t.Errorf("count after the deletion: %d, want 1", f.Count)
	}
}

// testLoginFailureRace: failures at once, as from several replicas, all
// count, and each racer is told a different count.
func testLoginFailureRace(t *testing.T, h Harness) {
	s := h.Open(t)
	counts := make([]int, racers)
	errs := race(t, s, func(i int) error {
		f, err := s.AddLoginFailure(t.Context(), "k", base, base.Add(memory))
		if err == nil {
			counts[i] = f.Count
		}
		return err
	})
	for i, err := range errs {
		if err != nil {
			t.Errorf("racer %d: %v", i, err)
		}
	}
	slices.Sort(counts)
	for i, c := range counts {
		if c != i+1 {
			t.Fatalf("counts told to the racers %v, want 1..%d", counts, racers)
		}
	}
	if got := loginFailures(t, s, base, "k"); got["k"] == nil || got["k"].Count != racers {
		t.Errorf("stored count %v, want %d", got["k"], racers)
	}
}

func testLoginFailuresCancelledContext(t *testing.T, h Harness) {
	s := h.Open(t)
	mustAddLoginFailure(t, s, "k", base)
	ctx, cancel := context.WithCancel(t.Context())
	cancel()
	ops := []struct {
		name string
		call func() error
	}{
		{"AddLoginFailure", func() error { _, err := s.AddLoginFailure(ctx, "k", base, base.Add(memory)); return err }},
		{"AddLoginFailure of a new key", func() error { _, err := s.AddLoginFailure(ctx, "new", base, base.Add(memory)); return err }},
		{"GetLoginFailures", func() error { _, err := s.GetLoginFailures(ctx, []string{"k"}, base); return err }},
		{"DeleteLoginFailures", func() error { return s.DeleteLoginFailures(ctx, "k") }},
	}
	for _, op := range ops {
		if err := op.call(); !errors.Is(err, context.Canceled) {
			t.Errorf("%s with a cancelled context: error %v, want %v", op.name, err, context.Canceled)
		}
	}
	got := loginFailures(t, s, base, "k", "new")
	if len(got) != 1 || got["k"] == nil || got["k"].Count != 1 {
		t.Errorf("after calls with a cancelled context: %v, want k counted once", got)
	}
}

func testReopenLoginFailures(t *testing.T, h Harness) {
	if h.Reopen == nil {
		t.Skip("the store does not keep data across a restart")
	}
	s := h.Open(t)
	mustAddLoginFailure(t, s, "k", base)
	s = h.Reopen(t, s)
	if f := mustAddLoginFailure(t, s, "k", base); f.Count != 2 {
		t.Errorf("count after reopening: %d, want 2", f.Count)
	}
}

// SweepLoginFailures checks what the interface leaves to a store's
// sweep: it drops expired counters, then, beyond the limit, those with the
// fewest failures and, among equals, those that expire soonest. The
// store's own test gives the hooks: sweep as the store runs it, trim to a
// limit, and the keys stored, in byte order.
func SweepLoginFailures(t *testing.T, s store.Store, sweep func() error, trim func(limit int) error, keys func() []string) {
	t.Helper()
	now := time.Now()
	for _, f := range []struct {
		key      string
		failures int
		at       time.Time
	}{
		{"expired", 9, now.Add(-2 * memory)},
		{"once-old", 1, now.Add(-time.Minute)},
		{"once-new", 1, now},
		{"twice", 2, now.Add(-time.Minute)},
		{"blocked", 6, now.Add(-memory / 2)},
	} {
		for range f.failures {
			mustAddLoginFailure(t, s, f.key, f.at)
		}
	}
	if err := sweep(); err != nil {
		t.Fatalf("sweep: %v", err)
	}
	if got, want := keys(), []string{"blocked", "once-new", "once-old", "twice"}; !slices.Equal(got, want) {
		t.Fatalf("after the sweep: %q, want %q", got, want)
	}
	for _, tc := range []struct {
		limit int
		want  []string
	}{
		{3, []string{"blocked", "once-new", "twice"}},
		{2, []string{"blocked", "twice"}},
		{1, []string{"blocked"}},
	} {
		if err := trim(tc.limit); err != nil {
			t.Fatalf("trim to %d: %v", tc.limit, err)
		}
		if got := keys(); !slices.Equal(got, tc.want) {
			t.Errorf("trimmed to %d: %q, want %q", tc.limit, got, tc.want)
		}
	}
}
