package storetest

import (
	"fmt"
	"testing"
	"time"

	"github.com/meshauth/meshauth/issuer/store"
)

// grantTests are the tests of store.Grants.
var grantTests = []suiteTest{
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
	{"ReopenGrants", testReopenGrants},
}

func newGrant(id string, expiresAt time.Time) *store.Grant {
	return &store.Grant{
		ID:        id,
		ClientID:  "web",
		Subject:   "user-1",
		Scope:     []string{"openid", "read"},
		Audience:  []string{"orders"},
		CreatedAt: base,
		ExpiresAt: expiresAt,
		AuthTime:  base.Add(-time.Minute),
		AMR:       []string{"fed", "pwd"},
		IDP:       "https://idp.example.com",
		Nonce:     "n-0S6_WzA2Mj",
	}
}

func newCode(hash, grantID string, expiresAt time.Time) *store.AuthorizationCode {
	return &store.AuthorizationCode{
		Hash:                hash,
		GrantID:             grantID,
		ClientID:            "web",
		Subject:             "user-1",
		RedirectURI:         "https://web.example.com/cb?x=1",
		Scope:               []string{"openid", "read"},
		Audience:            []string{"orders", "billing"},
		CodeChallenge:       "E9Melhoa2OwvFrEMTJguCHaoeK1t8URWbuGJSstw-cM",
		CodeChallengeMethod: "S256",
		IssuedAt:            base,
		ExpiresAt:           expiresAt,
	}
}

func newRefresh(hash, grantID string, expiresAt time.Time) *store.RefreshToken {
	return &store.RefreshToken{
		Hash:      hash,
		GrantID:   grantID,
		ClientID:  "web",
		Subject:   "user-1",
		Scope:     []string{"openid", "read"},
		Audience:  []string{"orders"},
		IssuedAt:  base,
		ExpiresAt: expiresAt,
	}
}

func checkGrant(t *testing.T, got, want *store.Grant) {
	t.Helper()
	checkRecord(t, "grant", got, want,
		func(g *store.Grant) map[string]*time.Time {
			return map[string]*time.Time{"CreatedAt": &g.CreatedAt, "ExpiresAt": &g.ExpiresAt, "RevokedAt": &g.RevokedAt, "AuthTime": &g.AuthTime}
		},
		func(g *store.Grant) []*[]string { return []*[]string{&g.Scope, &g.Audience, &g.AMR} })
}

func checkCode(t *testing.T, got, want *store.AuthorizationCode) {
	t.Helper()
	checkRecord(t, "authorization code", got, want,
		func(c *store.AuthorizationCode) map[string]*time.Time {
			return map[string]*time.Time{"IssuedAt": &c.IssuedAt, "ExpiresAt": &c.ExpiresAt, "UsedAt": &c.UsedAt}
		},
		func(c *store.AuthorizationCode) []*[]string { return []*[]string{&c.Scope, &c.Audience} })
}

func checkRefresh(t *testing.T, got, want *store.RefreshToken) {
	t.Helper()
	checkRecord(t, "refresh token", got, want,
		func(r *store.RefreshToken) map[string]*time.Time {
			return map[string]*time.Time{"IssuedAt": &r.IssuedAt, "ExpiresAt": &r.ExpiresAt, "UsedAt": &r.UsedAt}
		},
		func(r *store.RefreshToken) []*[]string { return []*[]string{&r.Scope, &r.Audience} })
}

// used returns a copy of v with UsedAt set, as a use returns it.
func used[T store.AuthorizationCode | store.RefreshToken](v *T, at time.Time) *T {
	c := *v
	switch p := any(&c).(type) {
	case *store.AuthorizationCode:
		p.UsedAt = at
	case *store.RefreshToken:
		p.UsedAt = at
	}
	return &c
}

func mustCreateGrant(t *testing.T, s store.Grants, g *store.Grant) {
	t.Helper()
	if err := s.CreateGrant(t.Context(), g); err != nil {
		t.Fatalf("CreateGrant(%q): %v", g.ID, err)
	}
}

func mustPutCode(t *testing.T, s store.Grants, c *store.AuthorizationCode) {
	t.Helper()
	if err := s.PutAuthorizationCode(t.Context(), c); err != nil {
		t.Fatalf("PutAuthorizationCode(%q): %v", c.Hash, err)
	}
}

func mustPutRefresh(t *testing.T, s store.Grants, r *store.RefreshToken) {
	t.Helper()
	if err := s.PutRefreshToken(t.Context(), r); err != nil {
		t.Fatalf("PutRefreshToken(%q): %v", r.Hash, err)
	}
}

func testGrantRoundTrip(t *testing.T, h Harness) {
	s := h.Open(t)
	exp := time.Now().Add(time.Hour)
	full := newGrant("g1", exp)
	empty := newGrant("g2", exp)
	empty.Scope, empty.Audience, empty.AMR, empty.AuthTime, empty.IDP, empty.Nonce = nil, nil, nil, time.Time{}, "", ""
	revoked := newGrant("g3", exp)
	revoked.RevokedAt = base.Add(time.Minute)
	for _, want := range []*store.Grant{full, empty, revoked} {
		mustCreateGrant(t, s, want)
		got, err := s.GetGrant(t.Context(), want.ID)
		if err != nil {
			t.Fatalf("GetGrant(%q): %v", want.ID, err)
		}
		checkGrant(t, got, want)
	}
}

func testCreateGrantExists(t *testing.T, h Harness) {
	s := h.Open(t)
	want := newGrant("g1", time.Now().Add(time.Hour))
	mustCreateGrant(t, s, want)
	other := newGrant("g1", time.Now().Add(2*time.Hour))
	other.Subject = "someone else"
	wantErr(t, "CreateGrant of a taken id", s.CreateGrant(t.Context(), other), store.ErrExists)
	got, err := s.GetGrant(t.Context(), "g1")
	if err != nil {
		t.Fatalf("GetGrant: %v", err)
	}
	checkGrant(t, got, want)
}

func testGetGrantExpired(t *testing.T, h Harness) {
	s := h.Open(t)
	mustCreateGrant(t, s, newGrant("g1", time.Now().Add(-time.Hour)))
	_, err := s.GetGrant(t.Context(), "g1")
	wantErr(t, "GetGrant of an expired grant", err, store.ErrNotFound)
	_, err = s.GetGrant(t.Context(), "g2")
	wantErr(t, "GetGrant of a missing grant", err, store.ErrNotFound)
}

// testRevokeGrant checks that the first revocation time is kept and that
// revoking a missing grant neither fails nor creates it.
func testRevokeGrant(t *testing.T, h Harness) {
	s := h.Open(t)
	want := newGrant("g1", time.Now().Add(time.Hour))
	mustCreateGrant(t, s, want)
	mustCreateGrant(t, s, newGrant("g2", time.Now().Add(time.Hour)))
	first := time.Now()
	for _, at := range []time.Time{first, first.Add(time.Minute), first.Add(-time.Minute)} {
		if err := s.RevokeGrant(t.Context(), "g1", at); err != nil {
			t.Fatalf("RevokeGrant: %v", err)
		}
		got, err := s.GetGrant(t.Context(), "g1")
		if err != nil {
			t.Fatalf("GetGrant of a revoked grant: %v", err)
		}
		want.RevokedAt = first
		checkGrant(t, got, want)
	}
	other, err := s.GetGrant(t.Context(), "g2")
	if err != nil {
		t.Fatalf("GetGrant: %v", err)
	}
	if !other.RevokedAt.IsZero() {
		t.Errorf("the other grant's RevokedAt = %v, want zero", other.RevokedAt)
	}
	if err := s.RevokeGrant(t.Context(), "nope", first); err != nil {
		t.Errorf("RevokeGrant of a missing grant: %v", err)
	}
	_, err = s.GetGrant(t.Context(), "nope")
	wantErr(t, "GetGrant after revoking a missing grant", err, store.ErrNotFound)
}

// testRevokeGrantCascade checks that revoking a grant deletes its refresh
// tokens (used or not) and reference access tokens, and nothing else. "g1"
// is a prefix of "g10", which must not be caught up.
func testRevokeGrantCascade(t *testing.T, h Harness) {
	s := h.Open(t)
	exp := time.Now().Add(time.Hour)
	for _, id := range []string{"g1", "g10"} {
		mustCreateGrant(t, s, newGrant(id, exp))
	}
	refresh := []*store.RefreshToken{
		newRefresh("r1a", "g1", exp), newRefresh("r1b", "g1", exp), newRefresh("r10", "g10", exp),
	}
	for _, r := range refresh {
		mustPutRefresh(t, s, r)
	}
	if _, err := s.UseRefreshToken(t.Context(), "r1a", time.Now()); err != nil {
		t.Fatalf("UseRefreshToken: %v", err)
	}
	tokens := []*store.AccessToken{newToken("a1", exp), newToken("a10", exp), newToken("a0", exp)}
	tokens[0].GrantID, tokens[1].GrantID = "g1", "g10"
	for _, tok := range tokens {
		mustPutToken(t, s, tok)
	}
	mustPutCode(t, s, newCode("c1", "g1", exp))

	if err := s.RevokeGrant(t.Context(), "g1", time.Now()); err != nil {
		t.Fatalf("RevokeGrant: %v", err)
	}
	tests := []struct {
		name string
		get  func() error
		gone bool
	}{
		{"used refresh token of the grant", func() error { _, err := s.GetRefreshToken(t.Context(), "r1a"); return err }, true},
		{"refresh token of the grant", func() error { _, err := s.GetRefreshToken(t.Context(), "r1b"); return err }, true},
		{"access token of the grant", func() error { _, err := s.GetAccessToken(t.Context(), "a1"); return err }, true},
		{"refresh token of another grant", func() error { _, err := s.GetRefreshToken(t.Context(), "r10"); return err }, false},
		{"access token of another grant", func() error { _, err := s.GetAccessToken(t.Context(), "a10"); return err }, false},
		{"access token of no grant", func() error { _, err := s.GetAccessToken(t.Context(), "a0"); return err }, false},
		{"other grant", func() error { _, err := s.GetGrant(t.Context(), "g10"); return err }, false},
	}
	for _, tt := range tests {
		err := tt.get()
		switch {
		case tt.gone:
			wantErr(t, tt.name+" after RevokeGrant", err, store.ErrNotFound)
		case err != nil:
			t.Errorf("%s after RevokeGrant: %v", tt.name, err)
		}
	}
	_, err := s.UseRefreshToken(t.Context(), "r1b", time.Now())
	wantErr(t, "UseRefreshToken of a revoked grant's token", err, store.ErrNotFound)
	// Deleted with the grant: the hashes are free again (and the index
	// holds nothing stale that a second revocation would trip over).
	mustPutRefresh(t, s, newRefresh("r1a", "g1", exp))
	if err := s.RevokeGrant(t.Context(), "g1", time.Now()); err != nil {
		t.Fatalf("second RevokeGrant: %v", err)
	}
	_, err = s.GetRefreshToken(t.Context(), "r1a")
	wantErr(t, "GetRefreshToken after the second RevokeGrant", err, store.ErrNotFound)
}

func testCodeRoundTrip(t *testing.T, h Harness) {
	s := h.Open(t)
	exp := time.Now().Add(time.Hour)
	full := newCode("c1", "g1", exp)
	empty := newCode("c2", "g2", exp)
	empty.Scope, empty.Audience, empty.CodeChallenge, empty.CodeChallengeMethod = nil, nil, "", ""
	for _, want := range []*store.AuthorizationCode{full, empty} {
		mustPutCode(t, s, want)
		at := time.Now()
		got, err := s.RedeemAuthorizationCode(t.Context(), want.Hash, at)
		if err != nil {
			t.Fatalf("RedeemAuthorizationCode(%q): %v", want.Hash, err)
		}
		checkCode(t, got, used(want, at))
	}
}

func testCodeExists(t *testing.T, h Harness) {
	s := h.Open(t)
	want := newCode("c1", "g1", time.Now().Add(time.Hour))
	mustPutCode(t, s, want)
	other := newCode("c1", "g2", time.Now().Add(2*time.Hour))
	wantErr(t, "PutAuthorizationCode of a taken hash", s.PutAuthorizationCode(t.Context(), other), store.ErrExists)
	at := time.Now()
	got, err := s.RedeemAuthorizationCode(t.Context(), "c1", at)
	if err != nil {
		t.Fatalf("RedeemAuthorizationCode: %v", err)
	}
	checkCode(t, got, used(want, at))
}

// testRedeemReplay checks that every later redemption returns the code as
// first redeemed, with ErrReplay (RFC 6749 §4.1.2).
func testRedeemReplay(t *testing.T, h Harness) {
	s := h.Open(t)
	code := newCode("c1", "g1", time.Now().Add(time.Hour))
	mustPutCode(t, s, code)
	first := time.Now()
	if _, err := s.RedeemAuthorizationCode(t.Context(), "c1", first); err != nil {
		t.Fatalf("RedeemAuthorizationCode: %v", err)
	}
	for i := range 2 {
		got, err := s.RedeemAuthorizationCode(t.Context(), "c1", first.Add(time.Duration(i+1)*time.Second))
		wantErr(t, "RedeemAuthorizationCode again", err, store.ErrReplay)
		checkCode(t, got, used(code, first))
	}
}

// expiryCases are uses relative to a record's expiry: a record whose expiry
// equals the time of use has expired.
var expiryCases = []struct {
	name    string
	offset  time.Duration
	expired bool
}{
	{"a millisecond before expiry", -time.Millisecond, false},
	{"at expiry", 0, true},
	{"a millisecond after expiry", time.Millisecond, true},
	{"an hour after expiry", time.Hour, true},
}

func testRedeemExpiry(t *testing.T, h Harness) {
	s := h.Open(t)
	exp := time.Now().Add(time.Hour)
	for i, tc := range expiryCases {
		hash := fmt.Sprintf("c%d", i)
		mustPutCode(t, s, newCode(hash, "g1", exp))
		got, err := s.RedeemAuthorizationCode(t.Context(), hash, exp.Add(tc.offset))
		if !tc.expired {
			if err != nil {
				t.Errorf("RedeemAuthorizationCode %s: %v", tc.name, err)
			}
			continue
		}
		wantErr(t, "RedeemAuthorizationCode "+tc.name, err, store.ErrNotFound)
		if got != nil {
			t.Errorf("RedeemAuthorizationCode %s returned a code", tc.name)
		}
		// The refused redemption did not mark the code used.
		if _, err := s.RedeemAuthorizationCode(t.Context(), hash, exp.Add(-time.Millisecond)); err != nil {
			t.Errorf("RedeemAuthorizationCode before expiry, after one %s: %v", tc.name, err)
		}
	}
	_, err := s.RedeemAuthorizationCode(t.Context(), "nope", time.Now())
	wantErr(t, "RedeemAuthorizationCode of a missing code", err, store.ErrNotFound)
}

// testRedeemRace checks that of concurrent redemptions exactly one wins and
// every other one gets the code and ErrReplay. A few rounds, since a broken
// store may win a single race by luck.
func testRedeemRace(t *testing.T, h Harness) {
	s := h.Open(t)
	for round := range 3 {
		hash := fmt.Sprintf("c%d", round)
		mustPutCode(t, s, newCode(hash, "g1", time.Now().Add(time.Hour)))
		errs := race(t, s, func(int) error {
			c, err := s.RedeemAuthorizationCode(t.Context(), hash, time.Now())
			if c == nil || c.Hash != hash || c.UsedAt.IsZero() {
				t.Errorf("RedeemAuthorizationCode(%q) returned %+v, %v; want the used code", hash, c, err)
			}
			return err
		})
		checkOneWinner(t, errs, store.ErrReplay)
	}
}

func testRefreshRoundTrip(t *testing.T, h Harness) {
	s := h.Open(t)
	exp := time.Now().Add(time.Hour)
	full := newRefresh("r1", "g1", exp)
	empty := newRefresh("r2", "g1", exp)
	empty.Scope, empty.Audience = nil, nil
	for _, want := range []*store.RefreshToken{full, empty} {
		mustPutRefresh(t, s, want)
		got, err := s.GetRefreshToken(t.Context(), want.Hash)
		if err != nil {
			t.Fatalf("GetRefreshToken(%q): %v", want.Hash, err)
		}
		checkRefresh(t, got, want)
		at := time.Now()
		got, err = s.UseRefreshToken(t.Context(), want.Hash, at)
		if err != nil {
			t.Fatalf("UseRefreshToken(%q): %v", want.Hash, err)
		}
		checkRefresh(t, got, used(want, at))
		got, err = s.GetRefreshToken(t.Context(), want.Hash)
		if err != nil {
			t.Fatalf("GetRefreshToken(%q) of a used token: %v", want.Hash, err)
		}
		checkRefresh(t, got, used(want, at))
	}
}

func testRefreshExists(t *testing.T, h Harness) {
	s := h.Open(t)
	want := newRefresh("r1", "g1", time.Now().Add(time.Hour))
	mustPutRefresh(t, s, want)
	other := newRefresh("r1", "g2", time.Now().Add(2*time.Hour))
	wantErr(t, "PutRefreshToken of a taken hash", s.PutRefreshToken(t.Context(), other), store.ErrExists)
	got, err := s.GetRefreshToken(t.Context(), "r1")
	if err != nil {
		t.Fatalf("GetRefreshToken: %v", err)
	}
	checkRefresh(t, got, want)
	// The refused token was not indexed under its grant either.
	if err := s.RevokeGrant(t.Context(), "g2", time.Now()); err != nil {
		t.Fatalf("RevokeGrant: %v", err)
	}
	if _, err := s.GetRefreshToken(t.Context(), "r1"); err != nil {
		t.Errorf("GetRefreshToken after revoking the refused token's grant: %v", err)
	}
}

// testUseRefreshReplay checks that every later use returns the token as
// first used, with ErrReplay (RFC 9700 §4.14.2).
func testUseRefreshReplay(t *testing.T, h Harness) {
	s := h.Open(t)
	tok := newRefresh("r1", "g1", time.Now().Add(time.Hour))
	mustPutRefresh(t, s, tok)
	first := time.Now()
	if _, err := s.UseRefreshToken(t.Context(), "r1", first); err != nil {
		t.Fatalf("UseRefreshToken: %v", err)
	}
	for i := range 2 {
		got, err := s.UseRefreshToken(t.Context(), "r1", first.Add(time.Duration(i+1)*time.Second))
		wantErr(t, "UseRefreshToken again", err, store.ErrReplay)
		checkRefresh(t, got, used(tok, first))
	}
}

func testUseRefreshExpiry(t *testing.T, h Harness) {
	s := h.Open(t)
	exp := time.Now().Add(time.Hour)
	for i, tc := range expiryCases {
		hash := fmt.Sprintf("r%d", i)
		mustPutRefresh(t, s, newRefresh(hash, "g1", exp))
		got, err := s.UseRefreshToken(t.Context(), hash, exp.Add(tc.offset))
		if !tc.expired {
			if err != nil {
				t.Errorf("UseRefreshToken %s: %v", tc.name, err)
			}
			continue
		}
		wantErr(t, "UseRefreshToken "+tc.name, err, store.ErrNotFound)
		if got != nil {
			t.Errorf("UseRefreshToken %s returned a token", tc.name)
		}
		if _, err := s.UseRefreshToken(t.Context(), hash, exp.Add(-time.Millisecond)); err != nil {
			t.Errorf("UseRefreshToken before expiry, after one %s: %v", tc.name, err)
		}
	}
	_, err := s.UseRefreshToken(t.Context(), "nope", time.Now())
	wantErr(t, "UseRefreshToken of a missing token", err, store.ErrNotFound)
}

func testUseRefreshRace(t *testing.T, h Harness) {
	s := h.Open(t)
	for round := range 3 {
		hash := fmt.Sprintf("r%d", round)
		mustPutRefresh(t, s, newRefresh(hash, "g1", time.Now().Add(time.Hour)))
		errs := race(t, s, func(int) error {
			r, err := s.UseRefreshToken(t.Context(), hash, time.Now())
			if r == nil || r.Hash != hash || r.UsedAt.IsZero() {
				t.Errorf("UseRefreshToken(%q) returned %+v, %v; want the used token", hash, r, err)
			}
			return err
		})
		checkOneWinner(t, errs, store.ErrReplay)
	}
}

func testGetRefreshExpired(t *testing.T, h Harness) {
	s := h.Open(t)
	mustPutRefresh(t, s, newRefresh("r1", "g1", time.Now().Add(-time.Hour)))
	_, err := s.GetRefreshToken(t.Context(), "r1")
	wantErr(t, "GetRefreshToken of an expired token", err, store.ErrNotFound)
	_, err = s.GetRefreshToken(t.Context(), "nope")
	wantErr(t, "GetRefreshToken of a missing token", err, store.ErrNotFound)
}

func testDeleteRefreshToken(t *testing.T, h Harness) {
	s := h.Open(t)
	exp := time.Now().Add(time.Hour)
	mustPutRefresh(t, s, newRefresh("r1", "g1", exp))
	mustPutRefresh(t, s, newRefresh("r2", "g1", exp))
	for range 2 {
		if err := s.DeleteRefreshToken(t.Context(), "r1"); err != nil {
			t.Fatalf("DeleteRefreshToken: %v", err)
		}
	}
	if err := s.DeleteRefreshToken(t.Context(), "never"); err != nil {
		t.Errorf("DeleteRefreshToken of a missing token: %v", err)
	}
	_, err := s.GetRefreshToken(t.Context(), "r1")
	wantErr(t, "GetRefreshToken after DeleteRefreshToken", err, store.ErrNotFound)
	if _, err := s.GetRefreshToken(t.Context(), "r2"); err != nil {
		t.Errorf("GetRefreshToken of the other token: %v", err)
	}
	mustPutRefresh(t, s, newRefresh("r1", "g1", exp))
}

// testReopenGrants checks that users, grants, codes, refresh tokens and
// revocations survive a restart, used marks and sequence included.
func testReopenGrants(t *testing.T, h Harness) {
	if h.Reopen == nil {
		t.Skip("the store does not keep data across a restart")
	}
	s := h.Open(t)
	exp := time.Now().Add(time.Hour)
	user := newUser("u1", "alice")
	mustCreateUser(t, s, user)
	grant := newGrant("g1", exp)
	mustCreateGrant(t, s, grant)
	code := newCode("c1", "g1", exp)
	mustPutCode(t, s, code)
	at := time.Now()
	if _, err := s.RedeemAuthorizationCode(t.Context(), "c1", at); err != nil {
		t.Fatalf("RedeemAuthorizationCode: %v", err)
	}
	refresh := newRefresh("r1", "g1", exp)
	mustPutRefresh(t, s, refresh)
	tok := newToken("a1", exp)
	tok.GrantID = "g1"
	mustPutToken(t, s, tok)
	rev := newRevocation("rv1", store.RevokeSubject, "user-1", at, exp)
	mustAddRevocation(t, s, rev)

	s = h.Reopen(t, s)
	got, err := s.GetUserByName(t.Context(), "alice")
	if err != nil {
		t.Fatalf("GetUserByName after reopening: %v", err)
	}
	checkUser(t, got, user)
	g, err := s.GetGrant(t.Context(), "g1")
	if err != nil {
		t.Fatalf("GetGrant after reopening: %v", err)
	}
	checkGrant(t, g, grant)
	c, err := s.RedeemAuthorizationCode(t.Context(), "c1", time.Now())
	wantErr(t, "RedeemAuthorizationCode after reopening", err, store.ErrReplay)
	checkCode(t, c, used(code, at))
	r, err := s.GetRefreshToken(t.Context(), "r1")
	if err != nil {
		t.Fatalf("GetRefreshToken after reopening: %v", err)
	}
	checkRefresh(t, r, refresh)
	revs, _, err := s.RevocationsAfter(t.Context(), 0, time.Now())
	if err != nil || len(revs) != 1 {
		t.Fatalf("RevocationsAfter after reopening: %d revocations, %v", len(revs), err)
	}
	checkRevocation(t, revs[0], rev)
	next := newRevocation("rv2", store.RevokeSubject, "user-2", at, exp)
	mustAddRevocation(t, s, next)
	if next.Seq <= rev.Seq {
		t.Errorf("Seq after reopening = %d, want more than %d", next.Seq, rev.Seq)
	}
	// The grant index survived too.
	if err := s.RevokeGrant(t.Context(), "g1", time.Now()); err != nil {
		t.Fatalf("RevokeGrant after reopening: %v", err)
	}
	_, err = s.GetRefreshToken(t.Context(), "r1")
	wantErr(t, "GetRefreshToken after RevokeGrant", err, store.ErrNotFound)
	_, err = s.GetAccessToken(t.Context(), "a1")
	wantErr(t, "GetAccessToken after RevokeGrant", err, store.ErrNotFound)
	if revoked, err := s.IsRevoked(t.Context(), []store.RevocationKey{{Kind: store.RevokeSubject, Value: "user-1"}}, at, time.Now()); err != nil || !revoked {
		t.Errorf("IsRevoked after reopening = %v, %v; want true", revoked, err)
	}
}
