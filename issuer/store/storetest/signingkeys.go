package storetest

import (
	"bytes"
	"fmt"
	"slices"
	"testing"
	"time"

	"github.com/meshauth/meshauth/issuer/store"
)

// signingKeyTests are the tests of store.SigningKeys.
var signingKeyTests = []suiteTest{
	{"SigningKeyRoundTrip", testSigningKeyRoundTrip},
	{"AddSigningKeyCAS", testAddSigningKeyCAS},
	{"AddSigningKeyNewest", testAddSigningKeyNewest},
	{"AddSigningKeyDuplicateID", testAddSigningKeyDuplicateID},
	{"AddSigningKeyRace", testAddSigningKeyRace},
	{"ListSigningKeysOrder", testListSigningKeysOrder},
	{"DeleteSigningKey", testDeleteSigningKey},
}

func newKey(id string, activateAt time.Time) *store.SigningKey {
	return &store.SigningKey{
		ID:                  id,
		Algorithm:           "ES256",
		PublicJWK:           []byte(`{"kty":"EC","kid":"` + id + `"}`),
		EncryptedPrivateKey: []byte{0, 1, 2, 0xff, 0xfe, byte(len(id))},
		CreatedAt:           base,
		ActivateAt:          activateAt,
	}
}

func checkKey(t *testing.T, got, want *store.SigningKey) {
	t.Helper()
	if got.ID != want.ID || got.Algorithm != want.Algorithm ||
		!bytes.Equal(got.PublicJWK, want.PublicJWK) ||
		!bytes.Equal(got.EncryptedPrivateKey, want.EncryptedPrivateKey) {
		// The private key is sealed, but keep even that out of test logs.
		t.Errorf("key %q: got id %q alg %q jwk %s, want alg %q jwk %s (or the private key differs)",
			want.ID, got.ID, got.Algorithm, got.PublicJWK, want.Algorithm, want.PublicJWK)
	}
	checkTime(t, "CreatedAt", got.CreatedAt, want.CreatedAt)
	checkTime(t, "ActivateAt", got.ActivateAt, want.ActivateAt)
}

func keyIDs(t *testing.T, s store.SigningKeys) []string {
	t.Helper()
	keys, err := s.ListSigningKeys(t.Context())
	if err != nil {
		t.Fatalf("ListSigningKeys: %v", err)
	}
	ids := []string{}
	for _, k := range keys {
		ids = append(ids, k.ID)
	}
	return ids
}

func mustAddKey(t *testing.T, s store.SigningKeys, k *store.SigningKey, ifNewestID string) {
	t.Helper()
	if err := s.AddSigningKey(t.Context(), k, ifNewestID); err != nil {
		t.Fatalf("AddSigningKey(%q, ifNewestID %q): %v", k.ID, ifNewestID, err)
	}
}

func testSigningKeyRoundTrip(t *testing.T, h Harness) {
	s := h.Open(t)
	if ids := keyIDs(t, s); len(ids) != 0 {
		t.Fatalf("ListSigningKeys on an empty store = %q", ids)
	}
	want := newKey("k1", base.Add(time.Hour))
	mustAddKey(t, s, want, "")
	keys, err := s.ListSigningKeys(t.Context())
	if err != nil || len(keys) != 1 {
		t.Fatalf("ListSigningKeys: %d keys, %v", len(keys), err)
	}
	checkKey(t, keys[0], want)
}

func testAddSigningKeyCAS(t *testing.T, h Harness) {
	s := h.Open(t)
	wantErr(t, "AddSigningKey to an empty store with ifNewestID set",
		s.AddSigningKey(t.Context(), newKey("k1", base), "k0"), store.ErrConflict)
	if ids := keyIDs(t, s); len(ids) != 0 {
		t.Fatalf("after a conflict, keys = %q, want none", ids)
	}
	mustAddKey(t, s, newKey("k1", base), "")
	mustAddKey(t, s, newKey("k2", base.Add(time.Hour)), "k1")

	tests := []struct {
		name       string
		ifNewestID string
	}{
		{"none", ""},
		{"stale", "k1"},
		{"unknown", "k9"},
		{"the new key's own id", "k3"},
	}
	for _, tt := range tests {
		err := s.AddSigningKey(t.Context(), newKey("k3", base.Add(2*time.Hour)), tt.ifNewestID)
		wantErr(t, "AddSigningKey with ifNewestID "+tt.name, err, store.ErrConflict)
	}
	if ids := keyIDs(t, s); !slices.Equal(ids, []string{"k1", "k2"}) {
		t.Fatalf("after conflicts, keys = %q, want [k1 k2]", ids)
	}
	mustAddKey(t, s, newKey("k3", base.Add(2*time.Hour)), "k2")
}

// testAddSigningKeyNewest checks that "newest" means greatest ActivateAt,
// then greatest ID, not the key added last.
func testAddSigningKeyNewest(t *testing.T, h Harness) {
	s := h.Open(t)
	later := base.Add(time.Hour)
	steps := []struct {
		key        *store.SigningKey
		ifNewestID string
		conflict   bool
	}{
		{newKey("k", later), "", false},
		// An earlier key added after a later one leaves the later one newest.
		{newKey("e", base), "k", false},
		{newKey("x", base), "e", true},
		// Equal ActivateAt: the greater ID is the newer.
		{newKey("b", later), "k", false},
		{newKey("x", base), "b", true},
		{newKey("m", later), "k", false},
		{newKey("x", base), "k", true},
		// A millisecond is enough.
		{newKey("a", later.Add(time.Millisecond)), "m", false},
		{newKey("x", base), "m", true},
		{newKey("x", base), "a", false},
	}
	for _, st := range steps {
		err := s.AddSigningKey(t.Context(), st.key, st.ifNewestID)
		switch {
		case st.conflict:
			wantErr(t, fmt.Sprintf("AddSigningKey(%q, ifNewestID %q)", st.key.ID, st.ifNewestID), err, store.ErrConflict)
		case err != nil:
			t.Fatalf("AddSigningKey(%q, ifNewestID %q): %v", st.key.ID, st.ifNewestID, err)
		}
	}
}

func testAddSigningKeyDuplicateID(t *testing.T, h Harness) {
	s := h.Open(t)
	want := newKey("k1", base)
	mustAddKey(t, s, want, "")
	dup := newKey("k1", base.Add(time.Hour))
	dup.Algorithm = "RS256"
	wantErr(t, "AddSigningKey of a taken id", s.AddSigningKey(t.Context(), dup, "k1"), store.ErrExists)
	keys, err := s.ListSigningKeys(t.Context())
	if err != nil || len(keys) != 1 {
		t.Fatalf("ListSigningKeys: %d keys, %v", len(keys), err)
	}
	checkKey(t, keys[0], want)
}

// testAddSigningKeyRace is replicas racing to rotate: exactly one wins. A
// few rounds, since a broken store may win a single race by luck.
func testAddSigningKeyRace(t *testing.T, h Harness) {
	s := h.Open(t)
	mustAddKey(t, s, newKey("k0", base), "")
	want := []string{"k0"}
	for round := range 5 {
		id := func(i int) string { return fmt.Sprintf("r%dk%02d", round, i) }
		errs := race(t, s, func(i int) error {
			return s.AddSigningKey(t.Context(), newKey(id(i), base.Add(time.Duration(round+1)*time.Hour)), want[len(want)-1])
		})
		want = append(want, id(checkOneWinner(t, errs, store.ErrConflict)))
		if ids := keyIDs(t, s); !slices.Equal(ids, want) {
			t.Fatalf("round %d: keys = %q, want %q", round, ids, want)
		}
	}
}

func testListSigningKeysOrder(t *testing.T, h Harness) {
	s := h.Open(t)
	// Added newest first (each one older than the newest, so every CAS
	// names "k4"), listed oldest first.
	adds := []*store.SigningKey{
		newKey("k4", base.Add(4*time.Hour)),
		newKey("k1", base.Add(time.Hour)),
		newKey("k3", base.Add(3*time.Hour)),
		newKey("k2", base.Add(2*time.Hour)),
		newKey("k0", base.Add(-24*time.Hour)),
	}
	newest := ""
	for _, k := range adds {
		mustAddKey(t, s, k, newest)
		newest = "k4"
	}
	keys, err := s.ListSigningKeys(t.Context())
	if err != nil {
		t.Fatalf("ListSigningKeys: %v", err)
	}
	var ids []string
	for _, k := range keys {
		ids = append(ids, k.ID)
	}
	if want := []string{"k0", "k1", "k2", "k3", "k4"}; !slices.Equal(ids, want) {
		t.Fatalf("ListSigningKeys ids = %q, want %q", ids, want)
	}
	for _, k := range keys {
		i := slices.IndexFunc(adds, func(a *store.SigningKey) bool { return a.ID == k.ID })
		checkKey(t, k, adds[i])
	}
}

func testDeleteSigningKey(t *testing.T, h Harness) {
	s := h.Open(t)
	mustAddKey(t, s, newKey("k1", base), "")
	mustAddKey(t, s, newKey("k2", base.Add(time.Hour)), "k1")
	for range 2 {
		if err := s.DeleteSigningKey(t.Context(), "k2"); err != nil {
			t.Fatalf("DeleteSigningKey: %v", err)
		}
	}
	if err := s.DeleteSigningKey(t.Context(), "never"); err != nil {
		t.Errorf("DeleteSigningKey of a missing key: %v", err)
	}
	if ids := keyIDs(t, s); !slices.Equal(ids, []string{"k1"}) {
		t.Errorf("keys = %q, want [k1]", ids)
	}
	// The deleted key no longer counts as the newest.
	mustAddKey(t, s, newKey("k3", base.Add(time.Hour)), "k1")
}
