package main

import (
	"bytes"
	"context"
	"encoding/json"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

func TestHelpDocumentsEveryFlag(t *testing.T) {
	for _, cmd := range [][]string{{"issuer"}, {"dev"}, {"sidecar"}, {"edge"}, {"xds"}, {"clients", "create"}, {"clients", "list"}, {"clients", "show"}, {"clients", "delete"},
		{"keys", "rotate"}, {"revoke"}, {"users", "add"}, {"users", "passwd"}, {"users", "disable"}, {"users", "enable"}, {"users", "link"},
		{"users", "list"}, {"users", "show"}, {"users", "delete"}} {
		t.Run(strings.Join(cmd, " "), func(t *testing.T) {
			out := captureStderr(t, func() {
				if err := run(context.Background(), append(cmd, "--help"), io.Discard, io.Discard); err == nil || !strings.Contains(err.Error(), "help") {
					t.Errorf("--help: err = %v", err)
				}
			})
			// Each flag: "  --name type", then its usage, then its
			// environment variable.
			lines := strings.Split(out, "\n")
			flags := 0
			for i, line := range lines {
				name, ok := strings.CutPrefix(line, "  --")
				if !ok {
					continue
				}
				flags++
				name, _, _ = strings.Cut(name, " ")
				env := "MESHAUTH_" + strings.ToUpper(strings.ReplaceAll(name, "-", "_"))
				if i+2 >= len(lines) || strings.TrimSpace(lines[i+1]) == "" || !strings.Contains(lines[i+2], "env "+env) {
					t.Errorf("--%s lacks its usage or %s:\n%s", name, env, strings.Join(lines[i:min(i+3, len(lines))], "\n"))
				}
			}
			if flags < 2 {
				t.Errorf("help lists %d flags:\n%s", flags, out)
			}
		})
	}
}

// captureStderr collects what fn writes to os.Stderr (flag usage goes there).
func captureStderr(t *testing.T, fn func()) string {
	t.Helper()
	r, w, err := os.Pipe()
	if err != nil {
		t.Fatal(err)
	}
	old := os.Stderr
	os.Stderr = w
	done := make(chan string)
	go func() { b, _ := io.ReadAll(r); done <- string(b) }()
	fn()
	os.Stderr = old
	w.Close()
	return <-done
}

func TestUnknownCommand(t *testing.T) {
	if err := run(context.Background(), []string{"frobnicate"}, io.Discard, io.Discard); err == nil || !strings.Contains(err.Error(), "frobnicate") {
		t.Errorf("err = %v", err)
	}
}

// TestIssuerServesAndStops wires the issuer as the binary does, gets a token
// through the CLI's registration path, and stops it by cancelling.
func TestIssuerServesAndStops(t *testing.T) {
	dir := t.TempDir()
	t.Setenv(envAdminToken, "admin-test-token")
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := ln.Addr().String()
	ln.Close()
	f := issuerFlags{listen: addr, issuerURL: "http://" + addr, storeURL: "file:" + filepath.Join(dir, "store"), algorithm: "ES256",
		tokenLifetime: 5 * time.Minute, keyRotation: 24 * time.Hour, keyPrePublish: 10 * time.Minute, jwksMaxAge: 5 * time.Minute}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	ready := make(chan struct{})
	errc := make(chan error, 1)
	log := slog.New(slog.NewTextHandler(io.Discard, nil))
	go func() {
		errc <- serveIssuer(ctx, &f, "admin-test-token", "BwcHBwcHBwcHBwcHBwcHBwcHBwcHBwcHBwcHBwcHBwc=", log, func(string) { close(ready) })
	}()
	select {
	case <-ready:
	case err := <-errc:
		t.Fatal(err)
	}
	var out bytes.Buffer
	if err := run(ctx, []string{"clients", "create", "--issuer", f.issuerURL, "--id", "svc", "--allowed-audience", "api"}, &out, io.Discard); err != nil {
		t.Fatal(err)
	}
	var reg struct {
		ClientSecret string `json:"client_secret"`
	}
	if err := json.Unmarshal(out.Bytes(), &reg); err != nil || reg.ClientSecret == "" {
		t.Fatalf("registration output %q: %v", out.String(), err)
	}
	resp, err := http.PostForm(f.issuerURL+"/token", url.Values{"grant_type": {"client_credentials"}, "audience": {"api"},
		"client_id": {"svc"}, "client_secret": {reg.ClientSecret}})
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	// svc is registered for client_secret_basic, so the post form is refused.
	if resp.StatusCode != http.StatusUnauthorized {
		t.Errorf("client_secret_post for a basic client: %d", resp.StatusCode)
	}
	req, _ := http.NewRequest(http.MethodPost, f.issuerURL+"/token", strings.NewReader("grant_type=client_credentials&audience=api"))
	req.SetBasicAuth("svc", reg.ClientSecret)
	req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	resp, err = http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		t.Errorf("token: %d", resp.StatusCode)
	}
	out.Reset()
	if err := run(ctx, []string{"keys", "rotate", "--issuer", f.issuerURL, "--immediate"}, &out, io.Discard); err != nil || !strings.Contains(out.String(), "new signing key") {
		t.Errorf("keys rotate: %v %q", err, out.String())
	}
	cancel()
	if err := <-errc; err != nil {
		t.Fatalf("stop: %v", err)
	}
}
