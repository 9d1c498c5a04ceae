package main

import (
	"bufio"
	"context"
	"html"
	"io"
	"net/http"
	"net/http/cookiejar"
	"net/url"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
)

// devBrowser is a browser for the dev stack: cookies, redirects followed.
type devBrowser struct {
	t *testing.T
	c *http.Client
}

// page fetches (GET) or posts (form != nil) and returns the final URL and
// body.
func (b *devBrowser) page(target string, form url.Values) (string, string) {
	b.t.Helper()
	var resp *http.Response
	var err error
	if form == nil {
		resp, err = b.c.Get(target)
	} else {
		resp, err = b.c.PostForm(target, form)
	}
	if err != nil {
		b.t.Fatal(err)
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(resp.Body)
	return resp.Request.URL.String(), string(body)
}

var (
	devFormAction = regexp.MustCompile(`<form method="post" action="([^"]+)">`)
	devFormToken  = regexp.MustCompile(`name="form_token" value="([^"]+)"`)
	devUpstream   = regexp.MustCompile(`href="([^"]*/authorize/upstream\?[^"]*)"`)
)

// submit posts the page's form with fields, at the origin of the page's
// URL at.
func (b *devBrowser) submit(at, body string, fields url.Values) (string, string) {
	b.t.Helper()
	action, token := devFormAction.FindStringSubmatch(body), devFormToken.FindStringSubmatch(body)
	if action == nil || token == nil {
		b.t.Fatalf("no form at %s:\n%s", at, body)
	}
	u, _ := url.Parse(at)
	fields.Set("form_token", html.UnescapeString(token[1]))
	return b.page(u.Scheme+"://"+u.Host+action[1], fields)
}

// TestDevSignIn runs meshauth dev and signs in to its demo web application
// through its issuer, with the button of the upstream issuer: the page
// shows the ID Token and userinfo; sign-out ends the issuer's session.
func TestDevSignIn(t *testing.T) {
	dir := t.TempDir()
	t.Setenv(envAdminToken, "")
	t.Setenv(envKEK, "")
	addr := func() string { return freeAddr(t) }
	issuerAddr, rpAddr, upstreamAddr := addr(), addr(), addr()
	args := []string{"--dir", dir, "--listen", issuerAddr, "--nats-listen", addr(), "--sidecar-listen", addr(), "--orders-listen", addr(),
		"--edge-listen", addr(), "--rp-listen", rpAddr, "--upstream-listen", upstreamAddr, "--log-level", "warn"}
	ctx, cancel := context.WithCancel(context.Background())
	out, w := io.Pipe()
	done := make(chan error, 1)
	go func() { done <- runDev(ctx, args, w); w.Close() }()
	t.Cleanup(func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("meshauth dev: %v", err)
		}
	})
	// Wait for the quick start, whose last part names the web app.
	sc := bufio.NewScanner(out)
	var printed strings.Builder
	for sc.Scan() && !strings.Contains(printed.String(), "no password (the issuer's session)") {
		printed.WriteString(sc.Text() + "\n")
	}
	go io.Copy(io.Discard, out)
	for _, want := range []string{"web app  http://" + rpAddr, "Sign in with the dev upstream issuer", "at http://" + upstreamAddr, "upstream-user-password"} {
		if !strings.Contains(printed.String(), want) {
			t.Fatalf("the quick start does not say %q:\n%s", want, printed.String())
		}
	}

	jar, _ := cookiejar.New(nil)
	b := &devBrowser{t: t, c: &http.Client{Jar: jar}}
	at, body := b.page("http://"+rpAddr+"/login", nil)
	link := devUpstream.FindStringSubmatch(body)
	if !strings.HasPrefix(at, "http://"+issuerAddr+"/authorize") || link == nil {
		t.Fatalf("the web app's sign-in led to %s:\n%s", at, body)
	}
	at, body = b.page("http://"+issuerAddr+html.UnescapeString(link[1]), nil)
	if !strings.HasPrefix(at, "http://"+upstreamAddr+"/authorize") {
		t.Fatalf("the upstream button led to %s", at)
	}
	password, err := os.ReadFile(filepath.Join(dir, "upstream-user-password"))
	if err != nil {
		t.Fatal(err)
	}
	at, body = b.submit(at, body, url.Values{"username": {"upstream-demo"}, "password": {strings.TrimSpace(string(password))}, "action": {"login"}})
	at, body = b.submit(at, body, url.Values{"action": {"allow"}}) // at the upstream issuer
	at, body = b.submit(at, body, url.Values{"action": {"allow"}}) // at the dev issuer
	if at != "http://"+rpAddr+"/" || !strings.Contains(body, "Signed in as") || !strings.Contains(body, `&#34;idp&#34;: &#34;http://`+upstreamAddr) ||
		!strings.Contains(body, `&#34;email&#34;: &#34;upstream-demo@example.com`) || !strings.Contains(body, "dev-upstream.upstream-demo") {
		t.Fatalf("the web app after sign-in, at %s:\n%s", at, body)
	}

	// Sign out: here and at the issuer, whose login page asks again.
	at, body = b.page("http://"+rpAddr+"/logout", nil)
	if !strings.HasPrefix(at, "http://"+rpAddr+"/?state=") || !strings.Contains(body, "Nobody is signed in") {
		t.Fatalf("after sign-out at %s:\n%s", at, body)
	}
	if at, _ := b.page("http://"+rpAddr+"/login", nil); !strings.HasPrefix(at, "http://"+issuerAddr+"/authorize") {
		t.Errorf("after sign-out, signing in went to %s without the login page", at)
	}
}
