package storetest

import (
	"context"
	"errors"
	"slices"
	"testing"
	"time"

	"github.com/meshauth/meshauth/issuer/store"
)

var peopleTests = []suiteTest{
	{"ListUsers", testListUsers},
	{"ListIdentities", testListIdentities},
	{"DeleteUser", testDeleteUser},
	{"RevokeUserGrants", testRevokeUserGrants},
	{"PeopleCancelledContext", testPeopleCancelledContext},
}

func userNames(users []*store.User) []string {
	var names []string
	for _, u := range users {
		names = append(names, u.Name)
	}
	return names
}

// testListUsers pages through the users in byte order of their names;
// "a.b" sorts before "a0" ('.' < '0'), and after need not be a name.
func testListUsers(t *testing.T, h Harness) {
	s := h.Open(t)
	if users, err := s.ListUsers(t.Context(), "", 10); err != nil || len(users) != 0 {
		t.Fatalf("ListUsers of no users: %v %v", users, err)
	}
	want := map[string]*store.User{}
	for i, name := range []string{"c", "a0", "b", "a.b", "a"} {
		u := newUser("u"+string(rune('1'+i)), name)
		u.Disabled = name == "b"
		mustCreateUser(t, s, u)
		want[name] = u
	}
	for _, tc := range []struct {
		after string
		limit int
		want  []string
	}{
		{"", 10, []string{"a", "a.b", "a0", "b", "c"}},
		{"", 2, []string{"a", "a.b"}},
		{"a.b", 2, []string{"a0", "b"}},
		{"a.a", 1, []string{"a.b"}},
		{"b", 10, []string{"c"}},
		{"c", 10, nil},
		{"zzz", 10, nil},
	} {
		users, err := s.ListUsers(t.Context(), tc.after, tc.limit)
		if err != nil {
			t.Fatalf("ListUsers(%q, %d): %v", tc.after, tc.limit, err)
		}
		if got := userNames(users); !slices.Equal(got, tc.want) {
			t.Errorf("ListUsers(%q, %d) = %q, want %q", tc.after, tc.limit, got, tc.want)
		}
		for _, u := range users {
			checkUser(t, u, want[u.Name])
		}
	}
}

// testListIdentities lists the links of the users asked for, by user id,
// then issuer in byte order (the longer issuer first here).
func testListIdentities(t *testing.T, h Harness) {
	s := h.Open(t)
	for _, u := range []*store.User{newUser("u1", "alice"), newUser("u2", "bob"), newUser("u3", "carol"), newUser("u10", "dave")} {
		mustCreateUser(t, s, u)
	}
	links := []*store.Identity{
		newIdentity("https://b.example", "alice-at-b", "u1"),
		newIdentity("https://a.example.com", "alice-at-a", "u1"),
		newIdentity("https://a.example.com", "bob-at-a", "u2"),
		newIdentity("https://a.example.com", "dave-at-a", "u10"),
	}
	for _, id := range links {
		mustLink(t, s, id)
	}
	for _, tc := range []struct {
		name    string
		userIDs []string
		want    []*store.Identity
	}{
		{"one user", []string{"u1"}, []*store.Identity{links[1], links[0]}},
		{"users in any order", []string{"u2", "u1"}, []*store.Identity{links[1], links[0], links[2]}},
		{"a user without links", []string{"u3"}, nil},
		{"a missing user", []string{"nobody"}, nil},
		{"no users", nil, nil},
	} {
		got, err := s.ListIdentities(t.Context(), tc.userIDs)
		if err != nil {
			t.Fatalf("%s: ListIdentities: %v", tc.name, err)
		}
		if len(got) != len(tc.want) {
			t.Errorf("%s: %d identities, want %d", tc.name, len(got), len(tc.want))
			continue
		}
		for i := range got {
			checkIdentity(t, got[i], tc.want[i])
		}
	}
}

// testDeleteUser removes the user, its links and its sessions, and
// nothing of another user ("u1" is a prefix of "u10"); the name and the
// upstream identity are free again.
func testDeleteUser(t *testing.T, h Harness) {
	s := h.Open(t)
	exp := time.Now().Add(time.Hour)
	alice, dave := newUser("u1", "alice"), newUser("u10", "dave")
	for _, u := range []*store.User{alice, dave} {
		mustCreateUser(t, s, u)
	}
	mustLink(t, s, newIdentity("https://a.example.com", "alice-at-a", "u1"))
	mustLink(t, s, newIdentity("https://b.example", "alice-at-b", "u1"))
	mustLink(t, s, newIdentity("https://a.example.com", "dave-at-a", "u10"))
	mustCreateSession(t, s, newSession("s1", "u1", exp))
	mustCreateSession(t, s, newSession("s2", "u1", exp))
	mustCreateSession(t, s, newSession("s10", "u10", exp))
	g := newGrant("g1", exp)
	g.Subject = "u1"
	mustCreateGrant(t, s, g)

	if err := s.DeleteUser(t.Context(), "u1"); err != nil {
		t.Fatalf("DeleteUser: %v", err)
	}
	gone := []struct {
		name string
		err  error
	}{
		{"GetUser", notFound(s.GetUser(t.Context(), "u1"))},
		{"GetUserByName", notFound(s.GetUserByName(t.Context(), "alice"))},
		{"GetIdentity at a", notFound(s.GetIdentity(t.Context(), "https://a.example.com", "alice-at-a"))},
		{"GetIdentity at b", notFound(s.GetIdentity(t.Context(), "https://b.example", "alice-at-b"))},
		{"GetSession s1", notFound(s.GetSession(t.Context(), "s1"))},
		{"GetSession s2", notFound(s.GetSession(t.Context(), "s2"))},
	}
	for _, g := range gone {
		if g.err != nil {
			t.Errorf("%s of the deleted user: %v, want not found", g.name, g.err)
		}
	}
	if users, err := s.ListUsers(t.Context(), "", 10); err != nil || !slices.Equal(userNames(users), []string{"dave"}) {
		t.Errorf("ListUsers after the deletion: %q %v", userNames(users), err)
	}
	if ids, err := s.ListIdentities(t.Context(), []string{"u1"}); err != nil || len(ids) != 0 {
		t.Errorf("ListIdentities of the deleted user: %d %v", len(ids), err)
	}
	if u, err := s.GetUser(t.Context(), "u10"); err != nil {
		t.Errorf("the other user: %v", err)
	} else {
		checkUser(t, u, dave)
	}
	mustGetIdentity(t, s, "https://a.example.com", "dave-at-a")
	mustGetSession(t, s, "s10")
	if _, err := s.GetGrant(t.Context(), "g1"); err != nil {
		t.Errorf("GetGrant of the deleted user's grant: %v (grants are left to RevokeUserGrants)", err)
	}
	wantErr(t, "DeleteUser twice", s.DeleteUser(t.Context(), "u1"), store.ErrNotFound)

	// The name and the identity may be taken again, by a new user.
	mustCreateUser(t, s, newUser("u2", "alice"))
	mustLink(t, s, newIdentity("https://a.example.com", "alice-at-a", "u2"))
}

// testRevokeUserGrants revokes the grants of one subject ("user-1" is a
// prefix of "user-10") and deletes their tokens; a grant revoked before
// keeps its time and is not counted again.
func testRevokeUserGrants(t *testing.T, h Harness) {
	s := h.Open(t)
	exp := time.Now().Add(time.Hour)
	earlier := time.Now().Add(-time.Minute).UTC()
	grants := map[string]string{"g1": "user-1", "g2": "user-1", "g3": "user-1", "g10": "user-10"}
	for id, sub := range grants {
		g := newGrant(id, exp)
		g.Subject = sub
		mustCreateGrant(t, s, g)
		mustPutRefresh(t, s, newRefresh("r-"+id, id, exp))
		tok := newToken("a-"+id, exp)
		tok.GrantID = id
		mustPutToken(t, s, tok)
	}
	if err := s.RevokeGrant(t.Context(), "g3", earlier); err != nil {
		t.Fatal(err)
	}
	mustPutToken(t, s, newToken("a-none", exp))

	at := time.Now()
	n, err := s.RevokeUserGrants(t.Context(), "user-1", at)
	if err != nil || n != 2 {
		t.Fatalf("RevokeUserGrants = %d, %v; want 2 grants newly revoked", n, err)
	}
	for id, sub := range grants {
		g, err := s.GetGrant(t.Context(), id)
		if err != nil {
			t.Fatalf("GetGrant(%q): %v", id, err)
		}
		_, refreshErr := s.GetRefreshToken(t.Context(), "r-"+id)
		_, accessErr := s.GetAccessToken(t.Context(), "a-"+id)
		switch {
		case sub != "user-1":
			if !g.RevokedAt.IsZero() || refreshErr != nil || accessErr != nil {
				t.Errorf("grant %s of another subject: revoked at %v, refresh token %v, access token %v", id, g.RevokedAt, refreshErr, accessErr)
			}
			continue
		case id == "g3":
			checkTime(t, "RevokedAt of the grant revoked before", g.RevokedAt, earlier)
		default:
			checkTime(t, "RevokedAt of "+id, g.RevokedAt, at)
		}
		wantErr(t, "GetRefreshToken of a revoked grant "+id, refreshErr, store.ErrNotFound)
		wantErr(t, "GetAccessToken of a revoked grant "+id, accessErr, store.ErrNotFound)
	}
	if _, err := s.GetAccessToken(t.Context(), "a-none"); err != nil {
		t.Errorf("access token of no grant: %v", err)
	}
	if n, err := s.RevokeUserGrants(t.Context(), "user-1", time.Now()); err != nil || n != 0 {
		t.Errorf("second RevokeUserGrants = %d, %v; want 0", n, err)
	}
	if n, err := s.RevokeUserGrants(t.Context(), "nobody", time.Now()); err != nil || n != 0 {
		t.Errorf("RevokeUserGrants of a subject without grants = %d, %v; want 0", n, err)
	}
}

func testPeopleCancelledContext(t *testing.T, h Harness) {
	s := h.Open(t)
	exp := time.Now().Add(time.Hour)
	mustCreateUser(t, s, newUser("u1", "alice"))
	g := newGrant("g1", exp)
	g.Subject = "u1"
	mustCreateGrant(t, s, g)
	ctx, cancel := context.WithCancel(t.Context())
	cancel()
	ops := []struct {
		name string
		call func() error
	}{
		{"ListUsers", func() error { _, err := s.ListUsers(ctx, "", 10); return err }},
		{"ListIdentities", func() error { _, err := s.ListIdentities(ctx, []string{"u1"}); return err }},
		{"DeleteUser", func() error { return s.DeleteUser(ctx, "u1") }},
		{"RevokeUserGrants", func() error { _, err := s.RevokeUserGrants(ctx, "u1", time.Now()); return err }},
	}
	for _, op := range ops {
		if err := op.call(); !errors.Is(err, context.Canceled) {
			t.Errorf("%s with a cancelled context: error %v, want %v", op.name, err, context.Canceled)
		}
	}
	if _, err := s.GetUser(t.Context(), "u1"); err != nil {
		t.Errorf("user after DeleteUser with a cancelled context: %v", err)
	}
	if g, err := s.GetGrant(t.Context(), "g1"); err != nil || !g.RevokedAt.IsZero() {
		t.Errorf("grant after RevokeUserGrants with a cancelled context: %+v %v", g, err)
	}
}
