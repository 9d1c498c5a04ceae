package storetest

import (
	"fmt"
	"testing"
	"time"

	"github.com/meshauth/meshauth/issuer/store"
)

// revocationTests are the tests of store.Revocations.
var revocationTests = []suiteTest{
	{"AddRevocation", testAddRevocation},
	{"AddRevocationExists", testAddRevocationExists},
	{"AddRevocationRace", testAddRevocationRace},
	{"RevocationsAfter", testRevocationsAfter},
	{"IsRevoked", testIsRevoked},
}

func newRevocation(id, kind, value string, revokedAt, expiresAt time.Time) *store.Revocation {
	return &store.Revocation{ID: id, Kind: kind, Value: value, RevokedAt: revokedAt, ExpiresAt: expiresAt}
}

func checkRevocation(t *testing.T, got, want *store.Revocation) {
	t.Helper()
	checkRecord(t, "revocation", got, want,
		func(r *store.Revocation) map[string]*time.Time {
			return map[string]*time.Time{"RevokedAt": &r.RevokedAt, "ExpiresAt": &r.ExpiresAt}
		},
		func(*store.Revocation) []*[]string { return nil })
}

func mustAddRevocation(t *testing.T, s store.Revocations, r *store.Revocation) {
	t.Helper()
	if err := s.AddRevocation(t.Context(), r); err != nil {
		t.Fatalf("AddRevocation(%q): %v", r.ID, err)
	}
}

// listRevocations returns every revocation not expired at now.
func listRevocations(t *testing.T, s store.Changes, now time.Time) []*store.Revocation {
	t.Helper()
	list, _, err := s.RevocationsAfter(t.Context(), 0, now)
	if err != nil {
		t.Fatalf("RevocationsAfter: %v", err)
	}
	return list
}

func testAddRevocation(t *testing.T, h Harness) {
	s := h.Open(t)
	now := time.Now()
	var last int64
	for i, kind := range []string{store.RevokeToken, store.RevokeClient, store.RevokeSubject, store.RevokeGrant} {
		r := newRevocation(fmt.Sprintf("rv%d", i), kind, "v", now, now.Add(time.Hour))
		mustAddRevocation(t, s, r)
		if r.Seq <= last {
			t.Errorf("AddRevocation(%q): Seq %d, want more than %d", r.ID, r.Seq, last)
		}
		last = r.Seq
	}
}

// testAddRevocationExists checks that a taken ID refuses the revocation
// whole: nothing listed, nothing matched, no Seq handed out.
func testAddRevocationExists(t *testing.T, h Harness) {
	s := h.Open(t)
	now := time.Now()
	want := newRevocation("rv1", store.RevokeToken, "t1", now, now.Add(time.Hour))
	mustAddRevocation(t, s, want)
	dup := newRevocation("rv1", store.RevokeSubject, "alice", now, now.Add(time.Hour))
	wantErr(t, "AddRevocation of a taken id", s.AddRevocation(t.Context(), dup), store.ErrExists)
	if dup.Seq != 0 {
		t.Errorf("a refused revocation got Seq %d", dup.Seq)
	}
	list := listRevocations(t, s, now)
	if len(list) != 1 {
		t.Fatalf("RevocationsAfter: %d revocations, want 1", len(list))
	}
	checkRevocation(t, list[0], want)
	keys := []store.RevocationKey{{Kind: store.RevokeSubject, Value: "alice"}}
	if revoked, err := s.IsRevoked(t.Context(), keys, now.Add(-time.Hour), now); err != nil || revoked {
		t.Errorf("IsRevoked of a refused revocation = %v, %v; want false", revoked, err)
	}
}

// testAddRevocationRace checks that concurrent additions all succeed with
// distinct Seqs, listed in Seq order.
func testAddRevocationRace(t *testing.T, h Harness) {
	s := h.Open(t)
	now := time.Now()
	revs := make([]*store.Revocation, racers)
	for i := range revs {
		revs[i] = newRevocation(fmt.Sprintf("rv%02d", i), store.RevokeToken, fmt.Sprintf("t%d", i), now, now.Add(time.Hour))
	}
	errs := race(t, s, func(i int) error { return s.AddRevocation(t.Context(), revs[i]) })
	bySeq := map[int64]string{}
	for i, err := range errs {
		if err != nil {
			t.Fatalf("AddRevocation(%q): %v", revs[i].ID, err)
		}
		if other, ok := bySeq[revs[i].Seq]; ok {
			t.Errorf("revocations %q and %q both have Seq %d", other, revs[i].ID, revs[i].Seq)
		}
		bySeq[revs[i].Seq] = revs[i].ID
	}
	list := listRevocations(t, s, now)
	if len(list) != racers {
		t.Fatalf("RevocationsAfter: %d revocations, want %d", len(list), racers)
	}
	for i, r := range list {
		if bySeq[r.Seq] != r.ID {
			t.Errorf("listed %q with Seq %d, AddRevocation gave that Seq to %q", r.ID, r.Seq, bySeq[r.Seq])
		}
		if i > 0 && r.Seq <= list[i-1].Seq {
			t.Errorf("RevocationsAfter not in Seq order: %d after %d", r.Seq, list[i-1].Seq)
		}
	}
}

// testRevocationsAfter checks the order, that expired revocations,
// including one whose expiry equals now, are left out, and that those up
// to after are.
func testRevocationsAfter(t *testing.T, h Harness) {
	s := h.Open(t)
	if list := listRevocations(t, s, time.Now()); len(list) != 0 {
		t.Fatalf("RevocationsAfter on an empty store: %d revocations", len(list))
	}
	now := time.Now()
	adds := []*store.Revocation{
		newRevocation("z", store.RevokeToken, "t1", base, now.Add(time.Hour)),
		newRevocation("expired", store.RevokeClient, "c1", now.Add(-2*time.Hour), now.Add(-time.Hour)),
		newRevocation("a", store.RevokeSubject, "alice", now, now.Add(2*time.Hour)),
		newRevocation("expires-now", store.RevokeGrant, "g1", now, now),
		newRevocation("m", store.RevokeGrant, "g2", now.Add(-time.Minute), now.Add(time.Minute)),
	}
	for _, r := range adds {
		mustAddRevocation(t, s, r)
	}
	list := listRevocations(t, s, now)
	want := []*store.Revocation{adds[0], adds[2], adds[4]}
	if len(list) != len(want) {
		t.Fatalf("RevocationsAfter: %d revocations, want %d", len(list), len(want))
	}
	for i, r := range list {
		checkRevocation(t, r, want[i])
		if r.Seq != want[i].Seq {
			t.Errorf("revocation %q listed with Seq %d, added with %d", r.ID, r.Seq, want[i].Seq)
		}
	}
	if list := listRevocations(t, s, now.Add(3*time.Hour)); len(list) != 0 {
		t.Errorf("RevocationsAfter after every expiry: %d revocations", len(list))
	}
	after, cs, err := s.RevocationsAfter(t.Context(), adds[2].Seq, now)
	if err != nil {
		t.Fatal(err)
	}
	if len(after) != 1 || after[0].ID != "m" {
		t.Errorf("RevocationsAfter(Seq of %q) = %d revocations, want only %q", adds[2].ID, len(after), "m")
	}
	if cs.Seq != adds[4].Seq {
		t.Errorf("RevocationsAfter is current at Seq %d, want %d, the last revocation's", cs.Seq, adds[4].Seq)
	}
}

// testIsRevoked checks the matching rule: an unexpired revocation of one of
// the keys, made at or after the token was issued. JWT iat has whole
// seconds, so a token issued in the same second as a revocation is refused.
func testIsRevoked(t *testing.T, h Harness) {
	s := h.Open(t)
	now := time.Now()
	at := now.Add(-time.Minute)
	live := now.Add(time.Hour)
	for _, r := range []*store.Revocation{
		newRevocation("rv1", store.RevokeToken, "t1", at, live),
		newRevocation("rv2", store.RevokeSubject, "alice", at, now.Add(-time.Second)),
		newRevocation("rv3", store.RevokeClient, "c1", at, now),
		newRevocation("rv4", store.RevokeGrant, "g1", at.Add(-time.Hour), live),
		newRevocation("rv5", store.RevokeGrant, "g1", at, live),
	} {
		mustAddRevocation(t, s, r)
	}
	key := func(kind, value string) store.RevocationKey { return store.RevocationKey{Kind: kind, Value: value} }
	tests := []struct {
		name     string
		keys     []store.RevocationKey
		issuedAt time.Time
		want     bool
	}{
		{"issued before", []store.RevocationKey{key(store.RevokeToken, "t1")}, at.Add(-time.Second), true},
		{"issued at the revocation", []store.RevocationKey{key(store.RevokeToken, "t1")}, at, true},
		{"issued in the same second", []store.RevocationKey{key(store.RevokeToken, "t1")}, at.Truncate(time.Second), true},
		{"issued a millisecond after", []store.RevocationKey{key(store.RevokeToken, "t1")}, at.Add(time.Millisecond), false},
		{"issued the second after", []store.RevocationKey{key(store.RevokeToken, "t1")}, at.Truncate(time.Second).Add(time.Second), false},
		{"expired revocation", []store.RevocationKey{key(store.RevokeSubject, "alice")}, at.Add(-time.Hour), false},
		{"revocation expiring now", []store.RevocationKey{key(store.RevokeClient, "c1")}, at.Add(-time.Hour), false},
		{"other kind, same value", []store.RevocationKey{key(store.RevokeSubject, "t1")}, at.Add(-time.Hour), false},
		{"other value", []store.RevocationKey{key(store.RevokeToken, "t2")}, at.Add(-time.Hour), false},
		{"prefix of a value", []store.RevocationKey{key(store.RevokeToken, "t")}, at.Add(-time.Hour), false},
		{"value extending one", []store.RevocationKey{key(store.RevokeToken, "t10")}, at.Add(-time.Hour), false},
		{"the later of two revocations", []store.RevocationKey{key(store.RevokeGrant, "g1")}, at.Add(-time.Minute), true},
		{"after both revocations", []store.RevocationKey{key(store.RevokeGrant, "g1")}, at.Add(time.Second), false},
		{"one of several keys", []store.RevocationKey{
			key(store.RevokeToken, "t9"), key(store.RevokeClient, "c9"), key(store.RevokeSubject, "bob"), key(store.RevokeGrant, "g1"),
		}, at, true},
		{"none of several keys", []store.RevocationKey{
			key(store.RevokeToken, "t9"), key(store.RevokeClient, "c1"), key(store.RevokeSubject, "alice"),
		}, at.Add(-time.Hour), false},
		{"no keys", nil, at.Add(-time.Hour), false},
	}
	for _, tt := range tests {
		got, err := s.IsRevoked(t.Context(), tt.keys, tt.issuedAt, now)
		if err != nil {
			t.Fatalf("IsRevoked %s: %v", tt.name, err)
		}
		if got != tt.want {
			t.Errorf("IsRevoked %s = %v, want %v", tt.name, got, tt.want)
		}
	}
}
