package storetest

import (
	"slices"
	"testing"
	"time"

	"github.com/meshauth/meshauth/issuer/store"
)

// accessTokenTests are the tests of store.AccessTokens.
var accessTokenTests = []suiteTest{
	{"AccessTokenRoundTrip", testAccessTokenRoundTrip},
	{"AccessTokenExists", testAccessTokenExists},
	{"AccessTokenNotFound", testAccessTokenNotFound},
	{"AccessTokenExpired", testAccessTokenExpired},
	{"DeleteAccessToken", testDeleteAccessToken},
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

func mustPutToken(t *testing.T, s store.AccessTokens, tok *store.AccessToken) {
	t.Helper()
	if err := s.PutAccessToken(t.Context(), tok); err != nil {
		t.Fatalf("PutAccessToken(%q): %v", tok.Hash, err)
	}
}

func testDeleteAccessToken(t *testing.T, h Harness) {
	s := h.Open(t)
	exp := time.Now().Add(time.Hour)
	mustPutToken(t, s, newToken("h1", exp))
	mustPutToken(t, s, newToken("h2", exp))
	for range 2 {
		if err := s.DeleteAccessToken(t.Context(), "h1"); err != nil {
			t.Fatalf("DeleteAccessToken: %v", err)
		}
	}
	if err := s.DeleteAccessToken(t.Context(), "never"); err != nil {
		t.Errorf("DeleteAccessToken of a missing token: %v", err)
	}
	_, err := s.GetAccessToken(t.Context(), "h1")
	wantErr(t, "GetAccessToken after DeleteAccessToken", err, store.ErrNotFound)
	if _, err := s.GetAccessToken(t.Context(), "h2"); err != nil {
		t.Errorf("GetAccessToken of the other token: %v", err)
	}
	// The hash is free again.
	mustPutToken(t, s, newToken("h1", exp))
}
