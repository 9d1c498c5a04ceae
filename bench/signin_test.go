package bench

import (
	"context"
	"fmt"
	"io"
	"net/http"
	"net/http/cookiejar"
	"net/url"
	"regexp"
	"runtime"
	"strings"
	"testing"
	"time"

	"github.com/meshauth/meshauth/issuer"
	"github.com/meshauth/meshauth/issuer/store"
)

// Sign-in measurements: a person's authorization through the browser flow
// over loopback, from the first one (the login page, the argon2id password
// check, the consent page) to those of someone signed in (the session
// cookie: no password, no consent page, a redirect with a code at once).

const (
	signInUser     = "bench-user"
	signInPassword = "a bench passphrase long enough"
	signInRedirect = "http://127.0.0.1:9/callback"
	// The RFC 7636 Appendix B pair.
	signInChallenge = "E9Melhoa2OwvFrEMTJguCHaoeK1t8URWbuGJSstw-cM"
)

var signInFormToken = regexp.MustCompile(`name="form_token" value="([^"]+)"`)

// BenchmarkAuthorize measures authorizations per second, each ending in a
// redirect with a code: "first-sign-in" by a new browser, "session" by a
// browser signed in and having allowed the request before.
func BenchmarkAuthorize(b *testing.B) {
	eachStore(b, func(b *testing.B, st store.Store) {
		issuerURL := startBenchIssuer(b, st)
		suffix := fmt.Sprintf("%d", time.Now().UnixNano())
		if _, err := issuer.CreateUser(context.Background(), st, signInUser+suffix, signInPassword, time.Now()); err != nil {
			b.Fatal(err)
		}
		client := "bench-web-" + suffix
		registerBench(b, st, issuer.ClientMetadata{ClientID: client, TokenEndpointAuthMethod: "none",
			GrantTypes: []string{issuer.GrantTypeAuthorizationCode}, RedirectURIs: []string{signInRedirect}, Scope: "openid profile"})
		authorizeURL := issuerURL + "/authorize?" + url.Values{"response_type": {"code"}, "client_id": {client}, "redirect_uri": {signInRedirect},
			"scope": {"openid profile"}, "state": {"s"}, "nonce": {"n"}, "code_challenge": {signInChallenge}, "code_challenge_method": {"S256"}}.Encode()
		transport := &http.Transport{MaxIdleConnsPerHost: 64}
		signIn := func(b *testing.B, br *http.Client) {
			page := benchGet(b, br, authorizeURL, http.StatusOK)
			page = benchPost(b, br, issuerURL+"/authorize/login", page, url.Values{"username": {signInUser + suffix}, "password": {signInPassword}, "action": {"login"}}, http.StatusOK)
			benchPost(b, br, issuerURL+"/authorize/consent", page, url.Values{"action": {"allow"}}, http.StatusSeeOther)
		}
		b.Run("first-sign-in", func(b *testing.B) {
			b.ReportAllocs()
			b.RunParallel(func(pb *testing.PB) {
				for pb.Next() {
					signIn(b, newBenchBrowser(b, transport))
				}
			})
		})
		b.Run("session", func(b *testing.B) {
			// A browser signed in for each of RunParallel's goroutines.
			browsers := make(chan *http.Client, runtime.GOMAXPROCS(0))
			for range cap(browsers) {
				br := newBenchBrowser(b, transport)
				signIn(b, br)
				browsers <- br
			}
			b.ReportAllocs()
			b.ResetTimer()
			b.RunParallel(func(pb *testing.PB) {
				br := <-browsers
				for pb.Next() {
					benchGet(b, br, authorizeURL, http.StatusFound)
				}
			})
		})
	})
}

// newBenchBrowser is a browser: cookies kept, redirects not followed.
func newBenchBrowser(b *testing.B, transport http.RoundTripper) *http.Client {
	jar, err := cookiejar.New(nil)
	if err != nil {
		b.Fatal(err)
	}
	return &http.Client{Transport: transport, Jar: jar, CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }}
}

func benchGet(b *testing.B, br *http.Client, target string, want int) string {
	resp, err := br.Get(target)
	return benchAnswer(b, resp, err, want)
}

// benchPost posts the form of page with fields.
func benchPost(b *testing.B, br *http.Client, target, page string, fields url.Values, want int) string {
	m := signInFormToken.FindStringSubmatch(page)
	if m == nil {
		b.Fatalf("no form on the page:\n%s", page)
	}
	fields.Set("form_token", m[1])
	req, _ := http.NewRequest(http.MethodPost, target, strings.NewReader(fields.Encode()))
	req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	resp, err := br.Do(req)
	return benchAnswer(b, resp, err, want)
}

func benchAnswer(b *testing.B, resp *http.Response, err error, want int) string {
	if err != nil {
		b.Fatal(err)
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(resp.Body)
	if resp.StatusCode != want {
		b.Fatalf("%s answered %d, want %d", resp.Request.URL.Path, resp.StatusCode, want)
	}
	return string(body)
}
