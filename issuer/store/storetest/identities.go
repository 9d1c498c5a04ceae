package storetest

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"testing"
	"time"

	"github.com/meshauth/meshauth/issuer/store"
)

var identityTests = []suiteTest{
	{"IdentityRoundTrip", testIdentityRoundTrip},
	{"LinkIdentityExists", testLinkIdentityExists},
	{"LinkIdentityMissingUser", testLinkIdentityMissingUser},
	{"CreateUserWithIdentity", testCreateUserWithIdentity},
	{"CreateUserWithIdentityRace", testCreateUserWithIdentityRace},
	{"FindUsersByEmail", testFindUsersByEmail},
	{"SetUserDisabled", testSetUserDisabled},
	{"IdentitiesCancelledContext", testIdentitiesCancelledContext},
	{"ReopenIdentities", testReopenIdentities},
}

func newIdentity(issuer, subject, userID string) *store.Identity {
	return &store.Identity{Issuer: issuer, Subject: subject, UserID: userID, CreatedAt: base}
}

func checkIdentity(t *testing.T, got, want *store.Identity) {
	t.Helper()
	checkRecord(t, "identity", got, want,
		func(id *store.Identity) map[string]*time.Time {
			return map[string]*time.Time{"CreatedAt": &id.CreatedAt}
		},
		func(*store.Identity) []*[]string { return nil })
}

func mustLink(t *testing.T, s store.Identities, id *store.Identity) {
	t.Helper()
	if err := s.LinkIdentity(t.Context(), id); err != nil {
		t.Fatalf("LinkIdentity(%q, %q): %v", id.Issuer, id.Subject, err)
	}
}

func mustGetIdentity(t *testing.T, s store.Identities, issuer, subject string) *store.Identity {
	t.Helper()
	got, err := s.GetIdentity(t.Context(), issuer, subject)
	if err != nil {
		t.Fatalf("GetIdentity(%q, %q): %v", issuer, subject, err)
	}
	return got
}

func testIdentityRoundTrip(t *testing.T, h Harness) {
	s := h.Open(t)
	mustCreateUser(t, s, newUser("u1", "alice"))
	mustCreateUser(t, s, newUser("u2", "bob"))
	// The issuer/subject pairs split one string differently: they are two
	// identities, not one.
	a := newIdentity("https://a.example", "bc", "u1")
	b := newIdentity("https://a.exampleb", "c", "u2")
	for _, id := range []*store.Identity{a, b} {
		mustLink(t, s, id)
	}
	checkIdentity(t, mustGetIdentity(t, s, a.Issuer, a.Subject), a)
	checkIdentity(t, mustGetIdentity(t, s, b.Issuer, b.Subject), b)
	for _, key := range [][2]string{{"https://a.example", "c"}, {"https://a.examplebc", ""}, {"https://a.example", "BC"}, {"", ""}} {
		_, err := s.GetIdentity(t.Context(), key[0], key[1])
		wantErr(t, fmt.Sprintf("GetIdentity(%q, %q)", key[0], key[1]), err, store.ErrNotFound)
	}
}

// testLinkIdentityExists checks that an upstream identity links one user
// only, that a user links at most one identity per issuer, and that a
// refused link changes nothing.
func testLinkIdentityExists(t *testing.T, h Harness) {
	s := h.Open(t)
	for _, u := range []*store.User{newUser("u1", "alice"), newUser("u2", "bob")} {
		mustCreateUser(t, s, u)
	}
	want := newIdentity("https://idp.example", "sub-1", "u1")
	mustLink(t, s, want)
	for _, tc := range []struct {
		name string
		id   *store.Identity
	}{
		{"the identity for another user", newIdentity("https://idp.example", "sub-1", "u2")},
		{"the identity again", newIdentity("https://idp.example", "sub-1", "u1")},
		{"a second identity at the issuer for the user", newIdentity("https://idp.example", "sub-2", "u1")},
	} {
		wantErr(t, "LinkIdentity of "+tc.name, s.LinkIdentity(t.Context(), tc.id), store.ErrExists)
	}
	checkIdentity(t, mustGetIdentity(t, s, "https://idp.example", "sub-1"), want)
	_, err := s.GetIdentity(t.Context(), "https://idp.example", "sub-2")
	wantErr(t, "GetIdentity of a refused link", err, store.ErrNotFound)
	// The user may link identities at other issuers, and the refused
	// subject another user.
	mustLink(t, s, newIdentity("https://other.example", "sub-1", "u1"))
	mustLink(t, s, newIdentity("https://idp.example", "sub-2", "u2"))
}

func testLinkIdentityMissingUser(t *testing.T, h Harness) {
	s := h.Open(t)
	err := s.LinkIdentity(t.Context(), newIdentity("https://idp.example", "sub-1", "nobody"))
	wantErr(t, "LinkIdentity to a missing user", err, store.ErrNotFound)
	_, err = s.GetIdentity(t.Context(), "https://idp.example", "sub-1")
	wantErr(t, "GetIdentity after a refused link", err, store.ErrNotFound)
}

// testCreateUserWithIdentity checks that the user and the link are stored
// together or not at all.
func testCreateUserWithIdentity(t *testing.T, h Harness) {
	s := h.Open(t)
	u := newUser("u1", "idp.alice")
	u.PasswordHash = ""
	id := newIdentity("https://idp.example", "sub-1", "u1")
	if err := s.CreateUserWithIdentity(t.Context(), u, id); err != nil {
		t.Fatalf("CreateUserWithIdentity: %v", err)
	}
	got, err := s.GetUser(t.Context(), "u1")
	if err != nil {
		t.Fatalf("GetUser: %v", err)
	}
	checkUser(t, got, u)
	checkIdentity(t, mustGetIdentity(t, s, id.Issuer, id.Subject), id)

	// A taken identity: the new user is not stored.
	err = s.CreateUserWithIdentity(t.Context(), newUser("u2", "idp.bob"), newIdentity("https://idp.example", "sub-1", "u2"))
	wantErr(t, "CreateUserWithIdentity of a taken identity", err, store.ErrExists)
	_, err = s.GetUser(t.Context(), "u2")
	wantErr(t, "GetUser of a user refused with its identity", err, store.ErrNotFound)
	_, err = s.GetUserByName(t.Context(), "idp.bob")
	wantErr(t, "GetUserByName of a user refused with its identity", err, store.ErrNotFound)

	// A taken name: the link is not stored.
	err = s.CreateUserWithIdentity(t.Context(), newUser("u3", "idp.alice"), newIdentity("https://idp.example", "sub-3", "u3"))
	wantErr(t, "CreateUserWithIdentity of a taken name", err, store.ErrExists)
	_, err = s.GetIdentity(t.Context(), "https://idp.example", "sub-3")
	wantErr(t, "GetIdentity of a link refused with its user", err, store.ErrNotFound)
	if err := s.CreateUserWithIdentity(t.Context(), newUser("u3", "idp.carol"), newIdentity("https://idp.example", "sub-3", "u3")); err != nil {
		t.Errorf("CreateUserWithIdentity after the refusals: %v", err)
	}
}

// testCreateUserWithIdentityRace is two first sign-ins of one upstream
// identity at once: one user is created, the others refused.
func testCreateUserWithIdentityRace(t *testing.T, h Harness) {
	s := h.Open(t)
	errs := race(t, s, func(i int) error {
		id := fmt.Sprintf("u%d", i)
		return s.CreateUserWithIdentity(t.Context(), newUser(id, "idp.user"+id), newIdentity("https://idp.example", "sub-1", id))
	})
	won := checkOneWinner(t, errs, store.ErrExists)
	if got := mustGetIdentity(t, s, "https://idp.example", "sub-1"); got.UserID != fmt.Sprintf("u%d", won) {
		t.Errorf("identity links %q, want the winner u%d", got.UserID, won)
	}
	for i := range racers {
		if i == won {
			continue
		}
		_, err := s.GetUser(t.Context(), fmt.Sprintf("u%d", i))
		wantErr(t, "GetUser of a losing racer", err, store.ErrNotFound)
	}
}

func testFindUsersByEmail(t *testing.T, h Harness) {
	s := h.Open(t)
	a, b, c := newUser("u1", "alice"), newUser("u2", "alice2"), newUser("u3", "carol")
	b.Email = a.Email
	for _, u := range []*store.User{a, b, c} {
		mustCreateUser(t, s, u)
	}
	nobody := newUser("u4", "dave")
	nobody.Email = ""
	mustCreateUser(t, s, nobody)
	ids := func(email string) []string {
		users, err := s.FindUsersByEmail(t.Context(), email)
		if err != nil {
			t.Fatalf("FindUsersByEmail(%q): %v", email, err)
		}
		var out []string
		for _, u := range users {
			out = append(out, u.ID)
			if u.Email != email {
				t.Errorf("FindUsersByEmail(%q) found a user with email %q", email, u.Email)
			}
		}
		slices.Sort(out)
		return out
	}
	for email, want := range map[string][]string{
		a.Email: {"u1", "u2"}, c.Email: {"u3"}, "ALICE@example.com": nil, "alice@example": nil, "": nil,
	} {
		if got := ids(email); !slices.Equal(got, want) {
			t.Errorf("FindUsersByEmail(%q) = %q, want %q", email, got, want)
		}
	}
	users, err := s.FindUsersByEmail(t.Context(), c.Email)
	if err != nil || len(users) != 1 {
		t.Fatalf("FindUsersByEmail: %d users, %v", len(users), err)
	}
	checkUser(t, users[0], c)
}

func testSetUserDisabled(t *testing.T, h Harness) {
	s := h.Open(t)
	want := newUser("u1", "alice")
	mustCreateUser(t, s, want)
	mustCreateUser(t, s, newUser("u2", "bob"))
	for _, disabled := range []bool{true, true, false, true} {
		if err := s.SetUserDisabled(t.Context(), "u1", disabled); err != nil {
			t.Fatalf("SetUserDisabled(%v): %v", disabled, err)
		}
		want.Disabled = disabled
		got, err := s.GetUserByName(t.Context(), "alice")
		if err != nil {
			t.Fatal(err)
		}
		checkUser(t, got, want)
	}
	if got, err := s.GetUser(t.Context(), "u2"); err != nil || got.Disabled {
		t.Errorf("the other user: %+v %v", got, err)
	}
	wantErr(t, "SetUserDisabled of a missing user", s.SetUserDisabled(t.Context(), "u3", true), store.ErrNotFound)
	_, err := s.GetUser(t.Context(), "u3")
	wantErr(t, "GetUser after SetUserDisabled of a missing user", err, store.ErrNotFound)
}

func testIdentitiesCancelledContext(t *testing.T, h Harness) {
	s := h.Open(t)
	mustCreateUser(t, s, newUser("u1", "alice"))
	ctx, cancel := context.WithCancel(t.Context())
	cancel()
	ops := []struct {
		name string
		call func() error
	}{
		{"LinkIdentity", func() error { return s.LinkIdentity(ctx, newIdentity("https://idp.example", "sub-1", "u1")) }},
		{"CreateUserWithIdentity", func() error {
			return s.CreateUserWithIdentity(ctx, newUser("u2", "bob"), newIdentity("https://idp.example", "sub-2", "u2"))
		}},
		{"GetIdentity", func() error { _, err := s.GetIdentity(ctx, "https://idp.example", "sub-1"); return err }},
		{"FindUsersByEmail", func() error { _, err := s.FindUsersByEmail(ctx, "alice@example.com"); return err }},
		{"SetUserDisabled", func() error { return s.SetUserDisabled(ctx, "u1", true) }},
	}
	for _, op := range ops {
		if err := op.call(); !errors.Is(err, context.Canceled) {
			t.Errorf("%s with a cancelled context: error %v, want %v", op.name, err, context.Canceled)
		}
	}
	for _, sub := range []string{"sub-1", "sub-2"} {
		_, err := s.GetIdentity(t.Context(), "https://idp.example", sub)
		wantErr(t, "GetIdentity of a link made with a cancelled context", err, store.ErrNotFound)
	}
	_, err := s.GetUser(t.Context(), "u2")
	wantErr(t, "GetUser of a user created with a cancelled context", err, store.ErrNotFound)
	if u, err := s.GetUser(t.Context(), "u1"); err != nil || u.Disabled {
		t.Errorf("user after SetUserDisabled with a cancelled context: %+v %v", u, err)
	}
}

func testReopenIdentities(t *testing.T, h Harness) {
	if h.Reopen == nil {
		t.Skip("the store does not keep data across a restart")
	}
	s := h.Open(t)
	mustCreateUser(t, s, newUser("u1", "alice"))
	want := newIdentity("https://idp.example", "sub-1", "u1")
	mustLink(t, s, want)
	s = h.Reopen(t, s)
	checkIdentity(t, mustGetIdentity(t, s, want.Issuer, want.Subject), want)
	err := s.LinkIdentity(t.Context(), newIdentity("https://idp.example", "sub-2", "u1"))
	wantErr(t, "a second link to the issuer after reopening", err, store.ErrExists)
}
