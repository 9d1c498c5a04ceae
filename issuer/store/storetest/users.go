package storetest

import (
	"fmt"
	"testing"
	"time"

	"github.com/meshauth/meshauth/issuer/store"
)

// userTests are the tests of store.Users.
var userTests = []suiteTest{
	{"UserRoundTrip", testUserRoundTrip},
	{"CreateUserExists", testCreateUserExists},
	{"GetUserNotFound", testGetUserNotFound},
	{"UpdateUserPassword", testUpdateUserPassword},
}

func newUser(id, name string) *store.User {
	return &store.User{
		ID:           id,
		Name:         name,
		PasswordHash: "$argon2id$v=19$m=65536,t=3,p=4$c2FsdHNhbHQ$aGFzaC1vZi0" + id,
		CreatedAt:    base,
		DisplayName:  "User " + name,
		Email:        name + "@example.com",
		// EmailVerified and Disabled are left false here, so that a
		// round trip of true is tested where they are set.
	}
}

func checkUser(t *testing.T, got, want *store.User) {
	t.Helper()
	checkRecord(t, "user", got, want,
		func(u *store.User) map[string]*time.Time { return map[string]*time.Time{"CreatedAt": &u.CreatedAt} },
		func(*store.User) []*[]string { return nil })
}

func mustCreateUser(t *testing.T, s store.Users, u *store.User) {
	t.Helper()
	if err := s.CreateUser(t.Context(), u); err != nil {
		t.Fatalf("CreateUser(%q): %v", u.ID, err)
	}
}

func testUserRoundTrip(t *testing.T, h Harness) {
	s := h.Open(t)
	full := newUser("u1", "alice")
	flags := newUser("u2", "bob")
	flags.EmailVerified, flags.Disabled = true, true
	bare := newUser("u3", "carol")
	bare.PasswordHash, bare.DisplayName, bare.Email = "", "", ""
	for _, want := range []*store.User{full, flags, bare} {
		mustCreateUser(t, s, want)
		got, err := s.GetUser(t.Context(), want.ID)
		if err != nil {
			t.Fatalf("GetUser: %v", err)
		}
		checkUser(t, got, want)
		got, err = s.GetUserByName(t.Context(), want.Name)
		if err != nil {
			t.Fatalf("GetUserByName: %v", err)
		}
		checkUser(t, got, want)
	}
}

// testCreateUserExists checks that ids and names are both unique, and that
// a refused user leaves neither its id nor its name behind.
func testCreateUserExists(t *testing.T, h Harness) {
	s := h.Open(t)
	want := newUser("u1", "alice")
	mustCreateUser(t, s, want)
	tests := []struct {
		name string
		user *store.User
	}{
		{"taken id", newUser("u1", "bob")},
		{"taken name", newUser("u2", "alice")},
		{"both taken", newUser("u1", "alice")},
	}
	for _, tt := range tests {
		tt.user.PasswordHash = "another hash"
		wantErr(t, "CreateUser with a "+tt.name, s.CreateUser(t.Context(), tt.user), store.ErrExists)
	}
	got, err := s.GetUser(t.Context(), "u1")
	if err != nil {
		t.Fatalf("GetUser: %v", err)
	}
	checkUser(t, got, want)
	_, err = s.GetUserByName(t.Context(), "bob")
	wantErr(t, "GetUserByName of a refused user's name", err, store.ErrNotFound)
	_, err = s.GetUser(t.Context(), "u2")
	wantErr(t, "GetUser of a refused user's id", err, store.ErrNotFound)
	mustCreateUser(t, s, newUser("u2", "bob"))
}

func testGetUserNotFound(t *testing.T, h Harness) {
	s := h.Open(t)
	mustCreateUser(t, s, newUser("u1", "alice"))
	// Names match exactly: callers normalise them.
	for _, name := range []string{"Alice", "alice ", "alic", "alicea", "u1", ""} {
		_, err := s.GetUserByName(t.Context(), name)
		wantErr(t, fmt.Sprintf("GetUserByName(%q)", name), err, store.ErrNotFound)
	}
	for _, id := range []string{"u2", "U1", "alice", ""} {
		_, err := s.GetUser(t.Context(), id)
		wantErr(t, fmt.Sprintf("GetUser(%q)", id), err, store.ErrNotFound)
	}
}

func testUpdateUserPassword(t *testing.T, h Harness) {
	s := h.Open(t)
	want := newUser("u1", "alice")
	mustCreateUser(t, s, want)
	mustCreateUser(t, s, newUser("u2", "bob"))
	if err := s.UpdateUserPassword(t.Context(), "u1", "new hash"); err != nil {
		t.Fatalf("UpdateUserPassword: %v", err)
	}
	want.PasswordHash = "new hash"
	got, err := s.GetUserByName(t.Context(), "alice")
	if err != nil {
		t.Fatalf("GetUserByName: %v", err)
	}
	checkUser(t, got, want)
	got, err = s.GetUser(t.Context(), "u2")
	if err != nil {
		t.Fatalf("GetUser: %v", err)
	}
	checkUser(t, got, newUser("u2", "bob"))
	wantErr(t, "UpdateUserPassword of a missing user", s.UpdateUserPassword(t.Context(), "u3", "h"), store.ErrNotFound)
	if _, err := s.GetUser(t.Context(), "u3"); err == nil {
		t.Error("UpdateUserPassword of a missing user created it")
	}
}
