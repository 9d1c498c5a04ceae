package main

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"golang.org/x/term"

	"github.com/meshauth/meshauth/issuer"
	"github.com/meshauth/meshauth/issuer/store"
	"github.com/meshauth/meshauth/issuer/store/filestore"
)

// users runs meshauth users with args and returns what it printed.
func users(args ...string) (string, error) {
	var out bytes.Buffer
	err := run(context.Background(), append([]string{"users"}, args...), &out, io.Discard)
	return out.String(), err
}

func TestUsers(t *testing.T) {
	dir := t.TempDir()
	storeURL := "file:" + dir
	ctx := context.Background()

	t.Setenv(envUserPassword, "a passphrase long enough")
	id, err := users("add", "--store", storeURL, "--name", "Alice")
	if err != nil || len(strings.TrimSpace(id)) < 16 || strings.Contains(id, "passphrase") {
		t.Fatalf("users add: %q %v", id, err)
	}
	if _, err := users("add", "--store", storeURL, "--name", "alice"); err == nil || !strings.Contains(err.Error(), "already exists") {
		t.Errorf("duplicate name: %v", err)
	}
	t.Setenv(envUserPassword, "too short")
	if _, err := users("add", "--store", storeURL, "--name", "bob"); err == nil || !strings.Contains(err.Error(), "too weak") {
		t.Errorf("weak password: %v", err)
	}
	if _, err := users("add", "--store", storeURL); err == nil || !strings.Contains(err.Error(), "--name") {
		t.Errorf("no name: %v", err)
	}

	file := filepath.Join(t.TempDir(), "pw")
	if err := os.WriteFile(file, []byte("another long passphrase\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	if _, err := users("passwd", "--store", storeURL, "--name", "alice", "--password-file", file); err == nil || !strings.Contains(err.Error(), "both") {
		t.Errorf("password in both the environment and a file: %v", err)
	}
	t.Setenv(envUserPassword, "")
	st, err := filestore.Open(dir)
	if err != nil {
		t.Fatal(err)
	}
	before, err := st.GetUserByName(ctx, "alice")
	st.Close()
	if err != nil || before.ID != strings.TrimSpace(id) {
		t.Fatalf("stored user %+v: %v", before, err)
	}
	if out, err := users("passwd", "--store", storeURL, "--name", "ALICE", "--password-file", file); err != nil || !strings.Contains(out, "changed") {
		t.Fatalf("users passwd: %q %v", out, err)
	}
	st, err = filestore.Open(dir)
	if err != nil {
		t.Fatal(err)
	}
	after, err := st.GetUserByName(ctx, "alice")
	st.Close()
	if err != nil || after.PasswordHash == before.PasswordHash || strings.Contains(after.PasswordHash, "another") {
		t.Errorf("password not replaced: %v", err)
	}
	if _, err := users("passwd", "--store", storeURL, "--name", "nobody", "--password-file", file); err == nil {
		t.Error("passwd of a missing user succeeded")
	}
	if !term.IsTerminal(int(os.Stdin.Fd())) {
		if _, err := users("add", "--store", storeURL, "--name", "carol"); err == nil || !strings.Contains(err.Error(), envUserPassword) {
			t.Errorf("no password and no terminal: %v", err)
		}
	}

	help := captureStderr(t, func() {
		if err := run(ctx, []string{"users", "add", "--help"}, io.Discard, io.Discard); err == nil {
			t.Error("--help did not stop")
		}
	})
	for _, want := range []string{"--store", "--name", "--password-file", "MESHAUTH_"} {
		if !strings.Contains(help, want) {
			t.Errorf("help lacks %s:\n%s", want, help)
		}
	}
}

// TestBrowserDemoSetUp: meshauth dev makes the demo user and client once,
// and a second start keeps them and the password file.
func TestBrowserDemoSetUp(t *testing.T) {
	dir := t.TempDir()
	storeURL := "file:" + filepath.Join(dir, "store")
	log := slog.New(slog.NewTextHandler(io.Discard, nil))
	ctx := context.Background()
	if err := setUpBrowserDemo(ctx, storeURL, dir, log); err != nil {
		t.Fatal(err)
	}
	first, err := os.ReadFile(filepath.Join(dir, "demo-user-password"))
	if err != nil || len(strings.TrimSpace(string(first))) < 12 {
		t.Fatalf("password file %q: %v", first, err)
	}
	if err := setUpBrowserDemo(ctx, storeURL, dir, log); err != nil {
		t.Fatalf("second start: %v", err)
	}
	second, _ := os.ReadFile(filepath.Join(dir, "demo-user-password"))
	if !bytes.Equal(first, second) {
		t.Error("the second start replaced the demo password")
	}
	st, err := filestore.Open(filepath.Join(dir, "store"))
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	c, err := st.GetClient(ctx, demoClientID)
	if err != nil || c.TokenEndpointAuthMethod != "none" || c.RedirectURIs[0] != demoRedirectURI {
		t.Errorf("demo client %+v: %v", c, err)
	}
	if _, err := st.GetUserByName(ctx, demoUser); err != nil {
		t.Errorf("demo user: %v", err)
	}
}

// TestUsersProfileAndDisable: users add sets the standard claims the user
// record has; disable keeps a user out and ends their sessions, enable
// lets them in again.
func TestUsersProfileAndDisable(t *testing.T) {
	dir := t.TempDir()
	storeURL := "file:" + dir
	ctx := context.Background()
	t.Setenv(envUserPassword, "a passphrase long enough")
	if _, err := users("add", "--store", storeURL, "--name", "dana", "--email", "not an address"); err == nil || !strings.Contains(err.Error(), "email") {
		t.Errorf("bad email: %v", err)
	}
	if _, err := users("add", "--store", storeURL, "--name", "dana", "--email-verified"); err == nil {
		t.Error("a verified email without an email was accepted")
	}
	id, err := users("add", "--store", storeURL, "--name", "dana", "--display-name", "Dana Scully", "--email", "Dana@FBI.example", "--email-verified")
	if err != nil {
		t.Fatal(err)
	}
	t.Setenv(envUserPassword, "")
	if _, err := users("disable", "--store", storeURL, "--password-file", "x", "--name", "dana"); err == nil {
		t.Error("disable took a password flag")
	}
	st, err := filestore.Open(dir)
	if err != nil {
		t.Fatal(err)
	}
	if err := st.CreateSession(ctx, &store.Session{Hash: "h", UserID: strings.TrimSpace(id), ExpiresAt: time.Now().Add(time.Hour)}); err != nil {
		t.Fatal(err)
	}
	st.Close()
	if out, err := users("disable", "--store", storeURL, "--name", "DANA"); err != nil || !strings.Contains(out, "disabled") {
		t.Fatalf("users disable: %q %v", out, err)
	}
	st, err = filestore.Open(dir)
	if err != nil {
		t.Fatal(err)
	}
	u, err := st.GetUserByName(ctx, "dana")
	_, sessErr := st.GetSession(ctx, "h")
	st.Close()
	if err != nil || u.DisplayName != "Dana Scully" || u.Email != "dana@fbi.example" || !u.EmailVerified || !u.Disabled {
		t.Errorf("user after disable: %+v %v", u, err)
	}
	if !errors.Is(sessErr, store.ErrNotFound) {
		t.Errorf("the disabled user's session: %v", sessErr)
	}
	if out, err := users("enable", "--store", storeURL, "--name", "dana"); err != nil || !strings.Contains(out, "enabled") {
		t.Fatalf("users enable: %q %v", out, err)
	}
	if _, err := users("disable", "--store", storeURL, "--name", "nobody"); err == nil {
		t.Error("disable of a missing user succeeded")
	}

	// link: the identity dana signs in as at an upstream provider.
	if out, err := users("link", "--store", storeURL, "--name", "dana", "--issuer", "https://sso.example", "--subject", "s-1"); err != nil || !strings.Contains(out, "signs in as s-1") {
		t.Fatalf("users link: %q %v", out, err)
	}
	for _, args := range [][]string{
		{"--name", "dana", "--issuer", "https://sso.example", "--subject", "s-2"}, // dana has an identity there
		{"--name", "dana", "--issuer", "https://sso.example"},                     // no subject
		{"--name", "nobody", "--issuer", "https://sso.example", "--subject", "s-3"},
	} {
		if _, err := users(append([]string{"link", "--store", storeURL}, args...)...); err == nil {
			t.Errorf("users link %q succeeded", args)
		}
	}
	st, err = filestore.Open(dir)
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	if link, err := st.GetIdentity(ctx, "https://sso.example", "s-1"); err != nil || link.UserID != u.ID {
		t.Errorf("link %+v %v", link, err)
	}
}

// TestUsersManage lists and shows users from the store and through the
// issuer, revokes one by name and deletes them.
func TestUsersManage(t *testing.T) {
	storeURL := "file:" + filepath.Join(t.TempDir(), "store")
	t.Setenv(envUserPassword, "a passphrase long enough")
	aliceID, err := users("add", "--store", storeURL, "--name", "alice", "--display-name", "Alice Liddell", "--email", "Alice@example.com")
	if err != nil {
		t.Fatal(err)
	}
	aliceID = strings.TrimSpace(aliceID)
	if _, err := users("add", "--store", storeURL, "--name", "bob"); err != nil {
		t.Fatal(err)
	}
	if _, err := users("link", "--store", storeURL, "--name", "alice", "--issuer", "https://idp.example", "--subject", "a-1"); err != nil {
		t.Fatal(err)
	}
	checkList := func(where, out string) {
		t.Helper()
		var list []issuer.UserInfo
		if err := json.Unmarshal([]byte(out), &list); err != nil || len(list) != 2 {
			t.Fatalf("%s: list %v: %s", where, err, out)
		}
		a := list[0]
		if a.Name != "alice" || a.ID != aliceID || a.DisplayName != "Alice Liddell" || a.Email != "alice@example.com" || !a.Password ||
			len(a.Identities) != 1 || a.Identities[0].Subject != "a-1" || list[1].Name != "bob" {
			t.Errorf("%s: list %+v", where, list)
		}
		if strings.Contains(out, "argon2") || strings.Contains(out, "passphrase") {
			t.Errorf("%s: the list shows a password: %s", where, out)
		}
	}
	out, err := users("list", "--store", storeURL)
	if err != nil {
		t.Fatal(err)
	}
	checkList("--store", out)
	if out, err := users("show", "--store", storeURL, "--name", "ALICE"); err != nil || !strings.Contains(out, aliceID) {
		t.Errorf("show --store: %v %s", err, out)
	}

	issuerURL := startIssuerWith(t, func(f *issuerFlags) { f.storeURL = storeURL })
	t.Setenv(envAdminToken, "admin-test-token")
	if out, err = users("list", "--issuer", issuerURL); err != nil {
		t.Fatal(err)
	}
	checkList("--issuer", out)
	var alice issuer.UserInfo
	if out, err := users("show", "--issuer", issuerURL, "--name", "alice"); err != nil || json.Unmarshal([]byte(out), &alice) != nil || alice.ID != aliceID {
		t.Errorf("show --issuer: %v %s", err, out)
	}

	revoke := func(args ...string) (string, string, error) {
		var out strings.Builder
		var err error
		stderr := captureStderr(t, func() {
			err = run(context.Background(), append([]string{"revoke"}, append(args, "--issuer", issuerURL)...), &out, io.Discard)
		})
		return out.String(), stderr, err
	}
	if out, stderr, err := revoke("subject", "alice"); err != nil || !strings.Contains(stderr, "warning:") || !strings.Contains(stderr, "revoke user alice") {
		t.Errorf("revoke subject alice: %v %q, stderr %q: want a warning naming revoke user alice", err, out, stderr)
	}
	if out, stderr, err := revoke("user", "Alice"); err != nil || !strings.HasPrefix(out, "revoked user alice (sub "+aliceID+") ") || stderr != "" {
		t.Errorf("revoke user Alice: %v %q %q", err, out, stderr)
	}
	if _, _, err := revoke("user", "carol"); err == nil || !strings.Contains(err.Error(), "404") {
		t.Errorf("revoke user carol: %v, want 404", err)
	}

	if out, err := users("delete", "--issuer", issuerURL, "--name", "alice"); err != nil || !strings.HasPrefix(out, "deleted user alice ("+aliceID+"); their tokens are refused until ") {
		t.Fatalf("delete: %v %q", err, out)
	}
	for _, tc := range []struct {
		name string
		args []string
		want string
	}{
		{"show a deleted user", []string{"show", "--name", "alice", "--issuer", issuerURL}, "404"},
		{"delete twice", []string{"delete", "--name", "alice", "--issuer", issuerURL}, "404"},
		{"show without a name", []string{"show", "--issuer", issuerURL}, "needs --name"},
		{"list without issuer or store", []string{"list"}, "exactly one of --issuer"},
		{"list with both", []string{"list", "--issuer", issuerURL, "--store", storeURL}, "exactly one of --issuer"},
		{"delete from a store", []string{"delete", "--name", "bob", "--store", storeURL}, "-store"},
		{"delete without an issuer", []string{"delete", "--name", "bob"}, "--issuer is required"},
		{"unknown command", []string{"rename"}, `unknown users command "rename"`},
		{"no command", nil, "usage"},
	} {
		if _, err := users(tc.args...); err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%s: error %v, want one containing %q", tc.name, err, tc.want)
		}
	}
	if out, err := users("list", "--issuer", issuerURL); err != nil || strings.Contains(out, "alice") || !strings.Contains(out, "bob") {
		t.Errorf("list after the deletion: %v %s", err, out)
	}
}
