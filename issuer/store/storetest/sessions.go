package storetest

import (
	"context"
	"errors"
	"testing"
	"time"

	"github.com/meshauth/meshauth/issuer/store"
)

var sessionTests = []suiteTest{
	{"SessionRoundTrip", testSessionRoundTrip},
	{"CreateSessionExists", testCreateSessionExists},
	{"GetSessionExpired", testGetSessionExpired},
	{"UpdateSession", testUpdateSession},
	{"UpdateSessionEnded", testUpdateSessionEnded},
	{"DeleteSession", testDeleteSession},
	{"DeleteUserSessions", testDeleteUserSessions},
	{"SessionsCancelledContext", testSessionsCancelledContext},
	{"ReopenSessions", testReopenSessions},
}

func newSession(hash, userID string, expiresAt time.Time) *store.Session {
	return &store.Session{
		Hash:     hash,
		UserID:   userID,
		AuthTime: base,
		AMR:      []string{"pwd"},
		IDP:      "",
		Consents: []store.Consent{
			{ClientID: "web", Scope: []string{"openid", "profile"}, Audience: []string{"https://issuer.example.com"}},
			{ClientID: "app", Scope: []string{"orders.read"}, Audience: []string{"orders", "billing"}},
		},
		LastSeenAt: base.Add(time.Minute),
		ExpiresAt:  expiresAt,
	}
}

// checkSession compares every field: times to the microsecond in UTC, lists
// non-nil after the round trip, consents in order.
func checkSession(t *testing.T, got, want *store.Session) {
	t.Helper()
	checkRecord(t, "session", got, want,
		func(s *store.Session) map[string]*time.Time {
			return map[string]*time.Time{"AuthTime": &s.AuthTime, "LastSeenAt": &s.LastSeenAt, "ExpiresAt": &s.ExpiresAt}
		},
		func(s *store.Session) []*[]string {
			lists := []*[]string{&s.AMR}
			if s.Consents == nil {
				s.Consents = []store.Consent{}
			}
			for i := range s.Consents {
				lists = append(lists, &s.Consents[i].Scope, &s.Consents[i].Audience)
			}
			return lists
		})
}

func mustCreateSession(t *testing.T, s store.Sessions, sess *store.Session) {
	t.Helper()
	if err := s.CreateSession(t.Context(), sess); err != nil {
		t.Fatalf("CreateSession(%q): %v", sess.Hash, err)
	}
}

func mustGetSession(t *testing.T, s store.Sessions, hash string) *store.Session {
	t.Helper()
	got, err := s.GetSession(t.Context(), hash)
	if err != nil {
		t.Fatalf("GetSession(%q): %v", hash, err)
	}
	return got
}

func testSessionRoundTrip(t *testing.T, h Harness) {
	s := h.Open(t)
	exp := time.Now().Add(time.Hour)
	full := newSession("s1", "u1", exp)
	full.AMR, full.IDP = []string{"fed", "mfa"}, "https://idp.example.com"
	bare := newSession("s2", "u1", exp)
	bare.AMR, bare.Consents = nil, nil
	empty := newSession("s3", "u2", exp)
	empty.Consents = []store.Consent{{ClientID: "c"}}
	for _, want := range []*store.Session{full, bare, empty} {
		mustCreateSession(t, s, want)
		checkSession(t, mustGetSession(t, s, want.Hash), want)
	}
	_, err := s.GetSession(t.Context(), "nope")
	wantErr(t, "GetSession of a missing hash", err, store.ErrNotFound)
}

func testCreateSessionExists(t *testing.T, h Harness) {
	s := h.Open(t)
	want := newSession("s1", "u1", time.Now().Add(time.Hour))
	mustCreateSession(t, s, want)
	other := newSession("s1", "u2", time.Now().Add(2*time.Hour))
	wantErr(t, "CreateSession of a taken hash", s.CreateSession(t.Context(), other), store.ErrExists)
	checkSession(t, mustGetSession(t, s, "s1"), want)
	// The refused session's user has no session to delete, and deleting
	// it leaves the stored one alone.
	if err := s.DeleteUserSessions(t.Context(), "u2"); err != nil {
		t.Fatalf("DeleteUserSessions: %v", err)
	}
	checkSession(t, mustGetSession(t, s, "s1"), want)
}

func testGetSessionExpired(t *testing.T, h Harness) {
	s := h.Open(t)
	mustCreateSession(t, s, newSession("s1", "u1", time.Now().Add(-time.Hour)))
	_, err := s.GetSession(t.Context(), "s1")
	wantErr(t, "GetSession of an expired session", err, store.ErrNotFound)
}

// testUpdateSession checks that an update changes LastSeenAt and Consents
// and nothing else.
func testUpdateSession(t *testing.T, h Harness) {
	s := h.Open(t)
	exp := time.Now().Add(time.Hour)
	want := newSession("s1", "u1", exp)
	mustCreateSession(t, s, want)
	mustCreateSession(t, s, newSession("s2", "u1", exp))
	update := newSession("s1", "someone else", exp.Add(time.Hour))
	update.AuthTime, update.AMR, update.IDP = base.Add(time.Hour), []string{"otp"}, "https://other.example.com"
	update.LastSeenAt = base.Add(time.Hour)
	update.Consents = []store.Consent{{ClientID: "new", Scope: []string{"a"}, Audience: []string{"b"}}}
	if err := s.UpdateSession(t.Context(), update); err != nil {
		t.Fatalf("UpdateSession: %v", err)
	}
	want.LastSeenAt, want.Consents = update.LastSeenAt, update.Consents
	checkSession(t, mustGetSession(t, s, "s1"), want)
	checkSession(t, mustGetSession(t, s, "s2"), newSession("s2", "u1", exp))

	update.Consents = nil
	if err := s.UpdateSession(t.Context(), update); err != nil {
		t.Fatalf("UpdateSession without consents: %v", err)
	}
	want.Consents = nil
	checkSession(t, mustGetSession(t, s, "s1"), want)
}

// testUpdateSessionEnded checks that an update never brings back a session
// that was deleted, has expired, or never was.
func testUpdateSessionEnded(t *testing.T, h Harness) {
	s := h.Open(t)
	mustCreateSession(t, s, newSession("deleted", "u1", time.Now().Add(time.Hour)))
	if err := s.DeleteSession(t.Context(), "deleted"); err != nil {
		t.Fatal(err)
	}
	mustCreateSession(t, s, newSession("expired", "u1", time.Now().Add(-time.Hour)))
	for _, hash := range []string{"deleted", "expired", "never"} {
		update := newSession(hash, "u1", time.Now().Add(time.Hour))
		wantErr(t, "UpdateSession of a "+hash+" session", s.UpdateSession(t.Context(), update), store.ErrNotFound)
		_, err := s.GetSession(t.Context(), hash)
		wantErr(t, "GetSession after updating a "+hash+" session", err, store.ErrNotFound)
	}
}

func testDeleteSession(t *testing.T, h Harness) {
	s := h.Open(t)
	exp := time.Now().Add(time.Hour)
	mustCreateSession(t, s, newSession("s1", "u1", exp))
	mustCreateSession(t, s, newSession("s2", "u1", exp))
	for range 2 {
		if err := s.DeleteSession(t.Context(), "s1"); err != nil {
			t.Fatalf("DeleteSession: %v", err)
		}
	}
	if err := s.DeleteSession(t.Context(), "never"); err != nil {
		t.Errorf("DeleteSession of a missing session: %v", err)
	}
	_, err := s.GetSession(t.Context(), "s1")
	wantErr(t, "GetSession after DeleteSession", err, store.ErrNotFound)
	mustGetSession(t, s, "s2")
	// The hash is free again, and the user's index holds no stale entry.
	mustCreateSession(t, s, newSession("s1", "u2", exp))
	if err := s.DeleteUserSessions(t.Context(), "u1"); err != nil {
		t.Fatal(err)
	}
	mustGetSession(t, s, "s1")
}

// testDeleteUserSessions checks that a user's sessions, live or expired, go
// and no other user's do. "u1" is a prefix of "u10".
func testDeleteUserSessions(t *testing.T, h Harness) {
	s := h.Open(t)
	exp := time.Now().Add(time.Hour)
	mustCreateSession(t, s, newSession("a", "u1", exp))
	mustCreateSession(t, s, newSession("b", "u1", exp))
	mustCreateSession(t, s, newSession("c", "u1", time.Now().Add(-time.Hour)))
	mustCreateSession(t, s, newSession("d", "u10", exp))
	if err := s.DeleteUserSessions(t.Context(), "u1"); err != nil {
		t.Fatalf("DeleteUserSessions: %v", err)
	}
	for _, hash := range []string{"a", "b", "c"} {
		_, err := s.GetSession(t.Context(), hash)
		wantErr(t, "GetSession of a deleted user session", err, store.ErrNotFound)
	}
	mustGetSession(t, s, "d")
	if err := s.DeleteUserSessions(t.Context(), "nobody"); err != nil {
		t.Errorf("DeleteUserSessions of a user without sessions: %v", err)
	}
	// The expired session's hash is free again too.
	mustCreateSession(t, s, newSession("c", "u1", exp))
}

func testSessionsCancelledContext(t *testing.T, h Harness) {
	s := h.Open(t)
	exp := time.Now().Add(time.Hour)
	want := newSession("s1", "u1", exp)
	mustCreateSession(t, s, want)
	ctx, cancel := context.WithCancel(t.Context())
	cancel()
	update := newSession("s1", "u1", exp)
	update.Consents = nil
	ops := []struct {
		name string
		call func() error
	}{
		{"CreateSession", func() error { return s.CreateSession(ctx, newSession("s2", "u1", exp)) }},
		{"GetSession", func() error { _, err := s.GetSession(ctx, "s1"); return err }},
		{"UpdateSession", func() error { return s.UpdateSession(ctx, update) }},
		{"DeleteSession", func() error { return s.DeleteSession(ctx, "s1") }},
		{"DeleteUserSessions", func() error { return s.DeleteUserSessions(ctx, "u1") }},
	}
	for _, op := range ops {
		if err := op.call(); !errors.Is(err, context.Canceled) {
			t.Errorf("%s with a cancelled context: error %v, want %v", op.name, err, context.Canceled)
		}
	}
	checkSession(t, mustGetSession(t, s, "s1"), want)
	_, err := s.GetSession(t.Context(), "s2")
	wantErr(t, "GetSession of a session created with a cancelled context", err, store.ErrNotFound)
}

func testReopenSessions(t *testing.T, h Harness) {
	if h.Reopen == nil {
		t.Skip("the store does not keep data across a restart")
	}
	s := h.Open(t)
	want := newSession("s1", "u1", time.Now().Add(time.Hour))
	mustCreateSession(t, s, want)
	s = h.Reopen(t, s)
	checkSession(t, mustGetSession(t, s, "s1"), want)
	if err := s.DeleteUserSessions(t.Context(), "u1"); err != nil {
		t.Fatal(err)
	}
	_, err := s.GetSession(t.Context(), "s1")
	wantErr(t, "GetSession after DeleteUserSessions after reopening", err, store.ErrNotFound)
}
