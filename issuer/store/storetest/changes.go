package storetest

import (
	"fmt"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/meshauth/meshauth/issuer/store"
)

// changeTests are the tests of store.Changes: the one sequence of
// the changes of keys and revocations.
var changeTests = []suiteTest{
	{"ChangeSeqCounts", testChangeSeqCounts},
	{"ChangeSeqRace", testChangeSeqRace},
	{"Changed", testChanged},
	{"ReopenChangeSeq", testReopenChangeSeq},
}

func changeSeq(t *testing.T, s store.Changes) store.ChangeSeq {
	t.Helper()
	cs, err := s.ChangeSeq(t.Context())
	if err != nil {
		t.Fatalf("ChangeSeq: %v", err)
	}
	return cs
}

// testChangeSeqCounts checks which operations are changes: every addition
// and deletion of a key and every addition of a revocation, each one
// number; nothing refused, and nothing else, counts.
func testChangeSeqCounts(t *testing.T, h Harness) {
	s := h.Open(t)
	cs := changeSeq(t, s)
	if cs.Seq < 1 || cs.KeysSeq < 1 || cs.KeysSeq > cs.Seq {
		t.Fatalf("ChangeSeq of a new store = %+v, want KeysSeq between 1 and Seq", cs)
	}
	now := time.Now()
	steps := []struct {
		name string
		op   func() error
		// change and keys: whether it is a change, of the keys.
		change, keys bool
	}{
		{"AddSigningKey", func() error { return s.AddSigningKey(t.Context(), newKey("k1", base), "") }, true, true},
		{"AddSigningKey refused", func() error { s.AddSigningKey(t.Context(), newKey("k2", base), ""); return nil }, false, false},
		{"AddRevocation", func() error {
			r := newRevocation("rv1", store.RevokeSubject, "alice", now, now.Add(time.Hour))
			if err := s.AddRevocation(t.Context(), r); err != nil {
				return err
			}
			if want := changeSeq(t, s).Seq; r.Seq != want {
				return fmt.Errorf("revocation numbered %d, the change sequence is at %d", r.Seq, want)
			}
			return nil
		}, true, false},
		{"AddRevocation refused", func() error {
			s.AddRevocation(t.Context(), newRevocation("rv1", store.RevokeToken, "t", now, now.Add(time.Hour)))
			return nil
		}, false, false},
		{"an expired revocation added", func() error {
			return s.AddRevocation(t.Context(), newRevocation("rv2", store.RevokeToken, "t", now.Add(-time.Hour), now.Add(-time.Minute)))
		}, true, false},
		{"CreateClient", func() error { return s.CreateClient(t.Context(), newClient("c")) }, false, false},
		{"DeleteSigningKey of a missing key", func() error { return s.DeleteSigningKey(t.Context(), "nope") }, false, false},
		{"DeleteSigningKey", func() error { return s.DeleteSigningKey(t.Context(), "k1") }, true, true},
	}
	for _, st := range steps {
		before := changeSeq(t, s)
		if err := st.op(); err != nil {
			t.Fatalf("%s: %v", st.name, err)
		}
		after := changeSeq(t, s)
		want := before
		if st.change {
			want.Seq++
			if st.keys {
				want.KeysSeq = want.Seq
			}
		}
		if after != want {
			t.Errorf("%s: ChangeSeq %+v → %+v, want %+v", st.name, before, after, want)
		}
	}
	keys, cs, err := s.ListSigningKeysAt(t.Context())
	if err != nil || len(keys) != 0 || cs != changeSeq(t, s) {
		t.Errorf("ListSigningKeysAt = %d keys at %+v, %v; want none at %+v", len(keys), cs, err, changeSeq(t, s))
	}
}

// testChangeSeqRace adds revocations and keys concurrently while readers
// list them, and checks that no reader ever sees a number before the
// change it stands for: whoever reads Seq n sees every revocation
// numbered up to n. (PostgreSQL sequences, for one, hand out numbers that
// can commit in another order.)
func testChangeSeqRace(t *testing.T, h Harness) {
	s := h.Open(t)
	now := time.Now()
	// A reading of the revocations, or (seen nil) of the keys.
	type reading struct {
		cs   store.ChangeSeq
		seen []int64
	}
	var (
		mu       sync.Mutex
		readings []reading
		stop     = make(chan struct{})
		readers  sync.WaitGroup
	)
	for range 2 {
		readers.Go(func() {
			for {
				select {
				case <-stop:
					return
				default:
				}
				list, cs, err := s.RevocationsAfter(t.Context(), 0, now)
				if err != nil {
					t.Error(err)
					return
				}
				r := reading{cs: cs, seen: []int64{}}
				for _, rev := range list {
					r.seen = append(r.seen, rev.Seq)
				}
				_, kcs, err := s.ListSigningKeysAt(t.Context())
				if err != nil {
					t.Error(err)
					return
				}
				mu.Lock()
				readings = append(readings, r, reading{cs: kcs})
				mu.Unlock()
			}
		})
	}
	revs := make([]*store.Revocation, racers)
	errs := race(t, s, func(i int) error {
		if i%4 == 0 {
			// Keys race to be the first; the loser's refusal is no
			// change.
			s.AddSigningKey(t.Context(), newKey(fmt.Sprintf("k%02d", i), base), "")
			return nil
		}
		revs[i] = newRevocation(fmt.Sprintf("rv%02d", i), store.RevokeToken, fmt.Sprintf("t%d", i), now, now.Add(time.Hour))
		return s.AddRevocation(t.Context(), revs[i])
	})
	close(stop)
	readers.Wait()
	for i, err := range errs {
		if err != nil {
			t.Fatalf("racer %d: %v", i, err)
		}
	}
	var all []int64
	for _, r := range revs {
		if r != nil {
			all = append(all, r.Seq)
		}
	}
	if len(readings) == 0 {
		t.Fatal("no reading made")
	}
	for _, r := range readings {
		for _, seq := range all {
			if r.seen != nil && seq <= r.cs.Seq && !slices.Contains(r.seen, seq) {
				t.Fatalf("a reader at Seq %d did not see revocation %d", r.cs.Seq, seq)
			}
		}
		if r.cs.KeysSeq > r.cs.Seq {
			t.Fatalf("KeysSeq %d after Seq %d", r.cs.KeysSeq, r.cs.Seq)
		}
	}
	if cs := changeSeq(t, s); cs.Seq < int64(len(all)) {
		t.Errorf("ChangeSeq %+v after %d revocations", cs, len(all))
	}
}

// testChanged checks that Changed closes after each change the store
// makes itself.
func testChanged(t *testing.T, h Harness) {
	s := h.Open(t)
	now := time.Now()
	for _, st := range []struct {
		name string
		op   func() error
	}{
		{"AddSigningKey", func() error { return s.AddSigningKey(t.Context(), newKey("k1", base), "") }},
		{"AddRevocation", func() error {
			return s.AddRevocation(t.Context(), newRevocation("rv1", store.RevokeSubject, "alice", now, now.Add(time.Hour)))
		}},
		{"DeleteSigningKey", func() error { return s.DeleteSigningKey(t.Context(), "k1") }},
	} {
		ch := s.Changed()
		if err := st.op(); err != nil {
			t.Fatalf("%s: %v", st.name, err)
		}
		select {
		case <-ch:
		case <-time.After(10 * time.Second):
			t.Errorf("Changed not closed after %s", st.name)
		}
	}
}

// testReopenChangeSeq checks that the sequence survives a restart.
func testReopenChangeSeq(t *testing.T, h Harness) {
	if h.Reopen == nil {
		t.Skip("the store keeps nothing across a restart")
	}
	s := h.Open(t)
	now := time.Now()
	mustAddKey(t, s, newKey("k1", base), "")
	mustAddRevocation(t, s, newRevocation("rv1", store.RevokeSubject, "alice", now, now.Add(time.Hour)))
	before := changeSeq(t, s)
	s = h.Reopen(t, s)
	if after := changeSeq(t, s); after != before {
		t.Fatalf("ChangeSeq after reopening = %+v, want %+v", after, before)
	}
	r := newRevocation("rv2", store.RevokeSubject, "bob", now, now.Add(time.Hour))
	mustAddRevocation(t, s, r)
	if r.Seq != before.Seq+1 {
		t.Errorf("the first change after reopening is %d, want %d", r.Seq, before.Seq+1)
	}
}
