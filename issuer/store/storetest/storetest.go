// Package storetest is the conformance suite every store.Store
// implementation must pass. An implementation's tests call Run with a Harness
// that opens fresh, empty stores.
package storetest

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"maps"
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

// Run runs the suite. Every test opens its own store, so they run in
// parallel.
func Run(t *testing.T, h Harness) {
	tests := []struct {
		name string
		run  func(t *testing.T, h Harness)
	}{
		{"ClientRoundTrip", testClientRoundTrip},
		{"ClientEmptyLists", testClientEmptyLists},
		{"ClientCopies", testClientCopies},
		{"CreateClientExists", testCreateClientExists},
		{"GetClientNotFound", testGetClientNotFound},
		{"ListClients", testListClients},
		{"DeleteClient", testDeleteClient},
		{"SigningKeyRoundTrip", testSigningKeyRoundTrip},
		{"AddSigningKeyCAS", testAddSigningKeyCAS},
		{"AddSigningKeyNewest", testAddSigningKeyNewest},
		{"AddSigningKeyDuplicateID", testAddSigningKeyDuplicateID},
		{"AddSigningKeyRace", testAddSigningKeyRace},
		{"ListSigningKeysOrder", testListSigningKeysOrder},
		{"DeleteSigningKey", testDeleteSigningKey},
		{"UseOnce", testUseOnce},
		{"UseOnceAfterExpiry", testUseOnceAfterExpiry},
		{"UseOnceRace", testUseOnceRace},
		{"AccessTokenRoundTrip", testAccessTokenRoundTrip},
		{"AccessTokenExists", testAccessTokenExists},
		{"AccessTokenNotFound", testAccessTokenNotFound},
		{"AccessTokenExpired", testAccessTokenExpired},
		{"DeleteAccessToken", testDeleteAccessToken},
		{"UserRoundTrip", testUserRoundTrip},
		{"CreateUserExists", testCreateUserExists},
		{"GetUserNotFound", testGetUserNotFound},
		{"UpdateUserPassword", testUpdateUserPassword},
		{"GrantRoundTrip", testGrantRoundTrip},
		{"CreateGrantExists", testCreateGrantExists},
		{"GetGrantExpired", testGetGrantExpired},
		{"RevokeGrant", testRevokeGrant},
		{"RevokeGrantCascade", testRevokeGrantCascade},
		{"AuthorizationCodeRoundTrip", testCodeRoundTrip},
		{"AuthorizationCodeExists", testCodeExists},
		{"RedeemAuthorizationCodeReplay", testRedeemReplay},
		{"RedeemAuthorizationCodeExpiry", testRedeemExpiry},
		{"RedeemAuthorizationCodeRace", testRedeemRace},
		{"RefreshTokenRoundTrip", testRefreshRoundTrip},
		{"RefreshTokenExists", testRefreshExists},
		{"UseRefreshTokenReplay", testUseRefreshReplay},
		{"UseRefreshTokenExpiry", testUseRefreshExpiry},
		{"UseRefreshTokenRace", testUseRefreshRace},
		{"GetRefreshTokenExpired", testGetRefreshExpired},
		{"DeleteRefreshToken", testDeleteRefreshToken},
		{"AddRevocation", testAddRevocation},
		{"AddRevocationExists", testAddRevocationExists},
		{"AddRevocationRace", testAddRevocationRace},
		{"RevocationsAfter", testRevocationsAfter},
		{"IsRevoked", testIsRevoked},
		{"ChangeSeqCounts", testChangeSeqCounts},
		{"ChangeSeqRace", testChangeSeqRace},
		{"Changed", testChanged},
		{"CancelledContext", testCancelledContext},
		{"Ping", testPing},
		{"Reopen", testReopen},
		{"ReopenGrants", testReopenGrants},
		{"ReopenChangeSeq", testReopenChangeSeq},
	}
	tests = append(tests, sessionTests...)
	tests = append(tests, identityTests...)
	tests = append(tests, peopleTests...)
	tests = append(tests, loginFailureTests...)
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			tt.run(t, h)
		})
	}
}

// base is a fixed instant with sub-microsecond digits and a non-UTC zone, so
// that the round-trip tests see both normalised.
var base = time.Date(2030, 5, 17, 10, 30, 15, 123456789, time.FixedZone("CEST", 2*60*60))

func newClient(id string) *store.Client {
	return &store.Client{
		ID:                      id,
		SecretHash:              "hash-of-" + id,
		Name:                    "client " + id,
		TokenEndpointAuthMethod: "private_key_jwt",
		GrantTypes:              []string{"client_credentials", "urn:ietf:params:oauth:grant-type:token-exchange"},
		Scope:                   []string{"write", "read"},
		JWKS:                    []byte(`{"keys":[{"kty":"OKP","crv":"Ed25519","x":"11qYAYKxCrfVS_7TyWQHOg7hcvPapiMlrwIaaPcHURo"}]}`),
		AccessTokenFormat:       "jwt",
		AllowedAudiences:        []string{"orders", "billing"},
		RedirectURIs:            []string{"https://example.com/cb"},
		PostLogoutRedirectURIs:  []string{"https://example.com/", "https://example.com/bye"},
		ExchangeScopes:          map[string][]string{"billing": {"read"}},
		MaxDelegationDepth:      3,
		CreatedAt:               base,
	}
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

func newToken(hash string, expiresAt time.Time) *store.AccessToken {
	return &store.AccessToken{
		Hash:      hash,
		ID:        "jti-" + hash,
		ClientID:  "a",
		Subject:   "spiffe://example.org/ns/default/sa/a",
		Audience:  []string{"orders", "billing"},
		Scope:     []string{"read"},
		IssuedAt:  base,
		ExpiresAt: expiresAt,
	}
}

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

func checkClient(t *testing.T, got, want *store.Client) {
	t.Helper()
	checkTime(t, "CreatedAt", got.CreatedAt, want.CreatedAt)
	g, w := *got, *want
	g.CreatedAt, w.CreatedAt = time.Time{}, time.Time{}
	// An absent list or key set reads back empty.
	for _, s := range []*[]string{&w.GrantTypes, &w.Scope, &w.AllowedAudiences, &w.RedirectURIs, &w.PostLogoutRedirectURIs} {
		if *s == nil {
			*s = []string{}
		}
	}
	if len(g.JWKS) == 0 && len(w.JWKS) == 0 {
		g.JWKS, w.JWKS = nil, nil
	}
	if w.ExchangeScopes == nil {
		w.ExchangeScopes = map[string][]string{}
	}
	if !clientsEqual(&g, &w) {
		t.Errorf("client = %+v\nwant %+v", g, w)
	}
}

// clientsEqual compares every field, telling nil slices from empty ones.
func clientsEqual(a, b *store.Client) bool {
	strs := func(x, y []string) bool { return (x == nil) == (y == nil) && slices.Equal(x, y) }
	return a.ID == b.ID && a.SecretHash == b.SecretHash && a.Name == b.Name &&
		a.TokenEndpointAuthMethod == b.TokenEndpointAuthMethod &&
		strs(a.GrantTypes, b.GrantTypes) && strs(a.Scope, b.Scope) &&
		bytes.Equal(a.JWKS, b.JWKS) && a.AccessTokenFormat == b.AccessTokenFormat &&
		strs(a.AllowedAudiences, b.AllowedAudiences) && strs(a.RedirectURIs, b.RedirectURIs) &&
		strs(a.PostLogoutRedirectURIs, b.PostLogoutRedirectURIs) &&
		maps.EqualFunc(a.ExchangeScopes, b.ExchangeScopes, slices.Equal) && (a.ExchangeScopes == nil) == (b.ExchangeScopes == nil) &&
		a.MaxDelegationDepth == b.MaxDelegationDepth && a.CreatedAt.Equal(b.CreatedAt)
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

func checkToken(t *testing.T, got, want *store.AccessToken) {
	t.Helper()
	checkTime(t, "IssuedAt", got.IssuedAt, want.IssuedAt)
	checkTime(t, "ExpiresAt", got.ExpiresAt, want.ExpiresAt)
	nonNil := func(s []string) []string {
		if s == nil {
			return []string{}
		}
		return s
	}
	if got.Hash != want.Hash || got.ID != want.ID || got.GrantID != want.GrantID ||
		got.ClientID != want.ClientID || got.Subject != want.Subject ||
		got.Audience == nil || !slices.Equal(got.Audience, nonNil(want.Audience)) ||
		got.Scope == nil || !slices.Equal(got.Scope, nonNil(want.Scope)) {
		t.Errorf("token = %+v\nwant %+v", got, want)
	}
}

func keyIDs(t *testing.T, s store.Store) []string {
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

func mustCreateClient(t *testing.T, s store.Store, c *store.Client) {
	t.Helper()
	if err := s.CreateClient(t.Context(), c); err != nil {
		t.Fatalf("CreateClient(%q): %v", c.ID, err)
	}
}

func mustAddKey(t *testing.T, s store.Store, k *store.SigningKey, ifNewestID string) {
	t.Helper()
	if err := s.AddSigningKey(t.Context(), k, ifNewestID); err != nil {
		t.Fatalf("AddSigningKey(%q, ifNewestID %q): %v", k.ID, ifNewestID, err)
	}
}

func wantErr(t *testing.T, op string, err, want error) {
	t.Helper()
	if !errors.Is(err, want) {
		t.Errorf("%s: error %v, want %v", op, err, want)
	}
}

func testClientRoundTrip(t *testing.T, h Harness) {
	s := h.Open(t)
	want := newClient("a")
	mustCreateClient(t, s, want)
	got, err := s.GetClient(t.Context(), "a")
	if err != nil {
		t.Fatalf("GetClient: %v", err)
	}
	checkClient(t, got, want)
}

func testClientEmptyLists(t *testing.T, h Harness) {
	tests := []struct {
		name  string
		empty func() []string
		jwks  []byte
	}{
		{"nil", func() []string { return nil }, nil},
		{"empty", func() []string { return []string{} }, []byte{}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			s := h.Open(t)
			c := &store.Client{
				ID:                      "a",
				SecretHash:              "h",
				TokenEndpointAuthMethod: "client_secret_basic",
				GrantTypes:              tt.empty(),
				Scope:                   tt.empty(),
				JWKS:                    tt.jwks,
				AccessTokenFormat:       "reference",
				AllowedAudiences:        tt.empty(),
				RedirectURIs:            tt.empty(),
				CreatedAt:               base,
			}
			mustCreateClient(t, s, c)
			got, err := s.GetClient(t.Context(), "a")
			if err != nil {
				t.Fatalf("GetClient: %v", err)
			}
			checkClient(t, got, c)
			list, err := s.ListClients(t.Context())
			if err != nil || len(list) != 1 {
				t.Fatalf("ListClients: %d clients, %v", len(list), err)
			}
			checkClient(t, list[0], c)
		})
	}
}

// testClientCopies checks that the store keeps no reference to the caller's
// slices, nor hands out references to its own.
func testClientCopies(t *testing.T, h Harness) {
	s := h.Open(t)
	c := newClient("a")
	mustCreateClient(t, s, c)
	c.Scope[0] = "admin"
	c.JWKS[0] = 'X'
	got, err := s.GetClient(t.Context(), "a")
	if err != nil {
		t.Fatalf("GetClient: %v", err)
	}
	checkClient(t, got, newClient("a"))
	got.AllowedAudiences[0] = "everything"
	again, err := s.GetClient(t.Context(), "a")
	if err != nil {
		t.Fatalf("GetClient: %v", err)
	}
	checkClient(t, again, newClient("a"))
}

func testCreateClientExists(t *testing.T, h Harness) {
	s := h.Open(t)
	want := newClient("a")
	mustCreateClient(t, s, want)
	other := newClient("a")
	other.SecretHash = "another hash"
	other.Name = "impostor"
	wantErr(t, "CreateClient of a taken id", s.CreateClient(t.Context(), other), store.ErrExists)
	got, err := s.GetClient(t.Context(), "a")
	if err != nil {
		t.Fatalf("GetClient: %v", err)
	}
	checkClient(t, got, want)
}

func testGetClientNotFound(t *testing.T, h Harness) {
	s := h.Open(t)
	mustCreateClient(t, s, newClient("a"))
	_, err := s.GetClient(t.Context(), "b")
	wantErr(t, "GetClient of a missing id", err, store.ErrNotFound)
}

func testListClients(t *testing.T, h Harness) {
	s := h.Open(t)
	list, err := s.ListClients(t.Context())
	if err != nil || len(list) != 0 {
		t.Fatalf("ListClients on an empty store: %d clients, %v", len(list), err)
	}
	ids := []string{"m", "b", "z", "a", "B"}
	for _, id := range ids {
		mustCreateClient(t, s, newClient(id))
	}
	list, err = s.ListClients(t.Context())
	if err != nil {
		t.Fatalf("ListClients: %v", err)
	}
	var got []string
	for _, c := range list {
		got = append(got, c.ID)
		checkClient(t, c, newClient(c.ID))
	}
	slices.Sort(ids) // byte order, as both Go and PostgreSQL's "C" collation sort
	if !slices.Equal(got, ids) {
		t.Errorf("ListClients ids = %q, want %q", got, ids)
	}
}

func testDeleteClient(t *testing.T, h Harness) {
	s := h.Open(t)
	mustCreateClient(t, s, newClient("a"))
	mustCreateClient(t, s, newClient("b"))
	if err := s.DeleteClient(t.Context(), "a"); err != nil {
		t.Fatalf("DeleteClient: %v", err)
	}
	_, err := s.GetClient(t.Context(), "a")
	wantErr(t, "GetClient after DeleteClient", err, store.ErrNotFound)
	wantErr(t, "DeleteClient again", s.DeleteClient(t.Context(), "a"), store.ErrNotFound)
	wantErr(t, "DeleteClient of a missing id", s.DeleteClient(t.Context(), "nope"), store.ErrNotFound)
	if _, err := s.GetClient(t.Context(), "b"); err != nil {
		t.Errorf("GetClient of the other client: %v", err)
	}
	// The id is free again.
	mustCreateClient(t, s, newClient("a"))
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

func testUseOnce(t *testing.T, h Harness) {
	s := h.Open(t)
	exp := time.Now().Add(time.Hour)
	if err := s.UseOnce(t.Context(), "client-assertion/a/1", exp); err != nil {
		t.Fatalf("first UseOnce: %v", err)
	}
	wantErr(t, "second UseOnce", s.UseOnce(t.Context(), "client-assertion/a/1", exp), store.ErrReplay)
	wantErr(t, "UseOnce with a later expiry", s.UseOnce(t.Context(), "client-assertion/a/1", exp.Add(time.Hour)), store.ErrReplay)
	if err := s.UseOnce(t.Context(), "client-assertion/a/2", exp); err != nil {
		t.Errorf("UseOnce of another value: %v", err)
	}
}

func testUseOnceAfterExpiry(t *testing.T, h Harness) {
	s := h.Open(t)
	// Expiries an hour away from now tolerate clock skew between the test
	// and a database server.
	if err := s.UseOnce(t.Context(), "v", time.Now().Add(-time.Hour)); err != nil {
		t.Fatalf("UseOnce with a past expiry: %v", err)
	}
	if err := s.UseOnce(t.Context(), "v", time.Now().Add(time.Hour)); err != nil {
		t.Fatalf("UseOnce after expiry: %v", err)
	}
	wantErr(t, "UseOnce after reuse", s.UseOnce(t.Context(), "v", time.Now().Add(time.Hour)), store.ErrReplay)
}

func testUseOnceRace(t *testing.T, h Harness) {
	s := h.Open(t)
	for _, name := range []string{"new", "expired"} {
		t.Run(name, func(t *testing.T) {
			if name == "expired" {
				if err := s.UseOnce(t.Context(), name, time.Now().Add(-time.Hour)); err != nil {
					t.Fatalf("UseOnce: %v", err)
				}
			}
			errs := race(t, s, func(int) error { return s.UseOnce(t.Context(), name, time.Now().Add(time.Hour)) })
			checkOneWinner(t, errs, store.ErrReplay)
		})
	}
}

func testAccessTokenRoundTrip(t *testing.T, h Harness) {
	s := h.Open(t)
	want := newToken("h1", time.Now().Add(time.Hour))
	want.GrantID = "g1"
	if err := s.PutAccessToken(t.Context(), want); err != nil {
		t.Fatalf("PutAccessToken: %v", err)
	}
	empty := newToken("h2", time.Now().Add(time.Hour))
	empty.Audience, empty.Scope = nil, nil
	if err := s.PutAccessToken(t.Context(), empty); err != nil {
		t.Fatalf("PutAccessToken: %v", err)
	}
	for _, tok := range []*store.AccessToken{want, empty} {
		got, err := s.GetAccessToken(t.Context(), tok.Hash)
		if err != nil {
			t.Fatalf("GetAccessToken(%q): %v", tok.Hash, err)
		}
		checkToken(t, got, tok)
	}
}

// testAccessTokenExists checks that a token's claims, once stored, cannot be
// replaced.
func testAccessTokenExists(t *testing.T, h Harness) {
	s := h.Open(t)
	want := newToken("h1", time.Now().Add(time.Hour))
	if err := s.PutAccessToken(t.Context(), want); err != nil {
		t.Fatalf("PutAccessToken: %v", err)
	}
	other := newToken("h1", time.Now().Add(2*time.Hour))
	other.Subject = "someone else"
	wantErr(t, "PutAccessToken of a taken hash", s.PutAccessToken(t.Context(), other), store.ErrExists)
	got, err := s.GetAccessToken(t.Context(), "h1")
	if err != nil {
		t.Fatalf("GetAccessToken: %v", err)
	}
	checkToken(t, got, want)
}

func testAccessTokenNotFound(t *testing.T, h Harness) {
	s := h.Open(t)
	_, err := s.GetAccessToken(t.Context(), "nope")
	wantErr(t, "GetAccessToken of a missing hash", err, store.ErrNotFound)
}

func testAccessTokenExpired(t *testing.T, h Harness) {
	s := h.Open(t)
	if err := s.PutAccessToken(t.Context(), newToken("h1", time.Now().Add(-time.Hour))); err != nil {
		t.Fatalf("PutAccessToken: %v", err)
	}
	_, err := s.GetAccessToken(t.Context(), "h1")
	wantErr(t, "GetAccessToken of an expired token", err, store.ErrNotFound)
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
