package exchange

import (
	"bytes"
	"context"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"net/url"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"testing/synctest"
	"time"

	"github.com/meshauth/meshauth/internal/inprocess"
	"github.com/meshauth/meshauth/token"
)

const (
	// testIssuer is the issuer of testSubject.
	testIssuer   = "https://auth.example.com"
	testClientID = "orders"
	// testSecret needs form-encoding before Basic (RFC 6749 §2.3.1).
	testSecret  = "s3cr:et+/ü"
	testSubject = "eyJhbGciOiJFUzI1NiJ9.eyJpc3MiOiJodHRwczovL2F1dGguZXhhbXBsZS5jb20iLCJzdWIiOiJhbGljZSJ9.c2lnbmF0dXJl"
)

// fakeIssuer is a token endpoint that records the requests it gets and
// answers with answer, by default a fresh token valid for 300 s.
type fakeIssuer struct {
	URL string
	// srv serves on loopback; client answers in process instead, for tests
	// in a synctest bubble (newBubbleIssuer).
	srv    *httptest.Server
	client *http.Client
	t      testing.TB
	calls  atomic.Int64
	mu     sync.Mutex
	forms  []url.Values
	heads  []http.Header
	// answer writes the response to the n-th request (from 1); nil means
	// ok(300).
	answer func(w http.ResponseWriter, form url.Values, n int64)
}

func newFakeIssuer(t testing.TB) *fakeIssuer {
	f := &fakeIssuer{t: t}
	f.srv = httptest.NewServer(f)
	f.URL = f.srv.URL
	t.Cleanup(f.srv.Close)
	return f
}

// newBubbleIssuer is a fakeIssuer that answers its client in process, for
// tests whose timers run on a synctest bubble's clock.
func newBubbleIssuer(t testing.TB) *fakeIssuer {
	f := &fakeIssuer{t: t, URL: "https://issuer.example"}
	f.client = inprocess.Client(f)
	return f
}

// newGatedIssuer is a bubble issuer whose answers wait until release is
// closed.
func newGatedIssuer(t testing.TB) (f *fakeIssuer, release chan struct{}) {
	f, release = newBubbleIssuer(t), make(chan struct{})
	f.setAnswer(func(w http.ResponseWriter, form url.Values, n int64) {
		<-release
		ok(300)(w, form, n)
	})
	return f, release
}

func (f *fakeIssuer) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	n := f.calls.Add(1)
	if err := r.ParseForm(); err != nil {
		f.t.Errorf("fake issuer: %v", err)
	}
	f.mu.Lock()
	f.forms = append(f.forms, r.PostForm)
	f.heads = append(f.heads, r.Header.Clone())
	answer := f.answer
	f.mu.Unlock()
	if answer == nil {
		answer = ok(300)
	}
	answer(w, r.PostForm, n)
}

func (f *fakeIssuer) setAnswer(a func(w http.ResponseWriter, form url.Values, n int64)) {
	f.mu.Lock()
	f.answer = a
	f.mu.Unlock()
}

func (f *fakeIssuer) lastForm() url.Values {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.forms[len(f.forms)-1]
}

func (f *fakeIssuer) lastHeader() http.Header {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.heads[len(f.heads)-1]
}

// issuedToken is the token the fake issuer issues as its n-th answer.
func issuedToken(n int64, form url.Values) string {
	return fmt.Sprintf("tok-%d.%s", n, strings.ReplaceAll(form.Get("audience"), " ", "_"))
}

// ok answers with a fresh token valid for secs seconds.
func ok(secs int) func(http.ResponseWriter, url.Values, int64) {
	return func(w http.ResponseWriter, form url.Values, n int64) {
		resp := map[string]any{"access_token": issuedToken(n, form), "token_type": "Bearer", "expires_in": secs}
		if form.Get("grant_type") == GrantTypeTokenExchange {
			resp["issued_token_type"] = TokenTypeAccessToken
		}
		writeJSON(w, http.StatusOK, resp)
	}
}

// refuse answers with an RFC 6749 §5.2 error.
func refuse(status int, code, desc string) func(http.ResponseWriter, url.Values, int64) {
	return func(w http.ResponseWriter, _ url.Values, _ int64) {
		writeJSON(w, status, map[string]string{"error": code, "error_description": desc})
	}
}

// raw answers with status, content type and body as given.
func raw(status int, contentType, body string) func(http.ResponseWriter, url.Values, int64) {
	return func(w http.ResponseWriter, _ url.Values, _ int64) {
		w.Header().Set("Content-Type", contentType)
		w.WriteHeader(status)
		io.WriteString(w, body)
	}
}

func writeJSON(w http.ResponseWriter, status int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.Header().Set("Cache-Control", "no-store")
	w.WriteHeader(status)
	json.NewEncoder(w).Encode(v)
}

// clock is a settable time source.
type clock struct {
	mu  sync.Mutex
	now time.Time
}

func newClock() *clock { return &clock{now: time.Unix(1_800_000_000, 0)} }

func (c *clock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.now
}

func (c *clock) advance(d time.Duration) {
	c.mu.Lock()
	c.now = c.now.Add(d)
	c.mu.Unlock()
}

func newTestClient(t testing.TB, f *fakeIssuer, edit func(*ClientConfig)) *Client {
	t.Helper()
	cfg := ClientConfig{TokenURL: f.URL + "/token", ClientID: testClientID, ClientSecret: testSecret, HTTPClient: f.client}
	if edit != nil {
		edit(&cfg)
	}
	c, err := NewClient(cfg)
	if err != nil {
		t.Fatal(err)
	}
	return c
}

func TestClientRequests(t *testing.T) {
	for _, tc := range []struct {
		name string
		call func(*Client) (Token, error)
		want url.Values
	}{
		{
			"exchange",
			func(c *Client) (Token, error) {
				return c.Exchange(context.Background(), []byte(testSubject), "payments", "payments.charge payments.read")
			},
			url.Values{
				"grant_type":           {"urn:ietf:params:oauth:grant-type:token-exchange"},
				"subject_token":        {testSubject},
				"subject_token_type":   {"urn:ietf:params:oauth:token-type:access_token"},
				"requested_token_type": {"urn:ietf:params:oauth:token-type:access_token"},
				"audience":             {"payments"},
				"scope":                {"payments.charge payments.read"},
			},
		},
		{
			"exchange without scope",
			func(c *Client) (Token, error) {
				return c.Exchange(context.Background(), []byte(testSubject), "payments", "")
			},
			url.Values{
				"grant_type":           {"urn:ietf:params:oauth:grant-type:token-exchange"},
				"subject_token":        {testSubject},
				"subject_token_type":   {"urn:ietf:params:oauth:token-type:access_token"},
				"requested_token_type": {"urn:ietf:params:oauth:token-type:access_token"},
				"audience":             {"payments"},
			},
		},
		{
			"client credentials",
			func(c *Client) (Token, error) {
				return c.ClientCredentials(context.Background(), "ledger", "ledger.write")
			},
			url.Values{"grant_type": {"client_credentials"}, "audience": {"ledger"}, "scope": {"ledger.write"}},
		},
		{
			"client credentials without scope",
			func(c *Client) (Token, error) { return c.ClientCredentials(context.Background(), "ledger", "") },
			url.Values{"grant_type": {"client_credentials"}, "audience": {"ledger"}},
		},
	} {
		t.Run(tc.name, func(t *testing.T) {
			f := newFakeIssuer(t)
			clk := newClock()
			c := newTestClient(t, f, func(cfg *ClientConfig) { cfg.Now = clk.Now })
			tok, err := tc.call(c)
			if err != nil {
				t.Fatal(err)
			}
			if want := issuedToken(1, tc.want); tok.AccessToken != want {
				t.Errorf("token %q, want %q", tok.AccessToken, want)
			}
			if want := clk.Now().Add(300 * time.Second); !tok.ExpiresAt.Equal(want) {
				t.Errorf("expires at %v, want %v", tok.ExpiresAt, want)
			}
			if got := f.lastForm(); !equalForms(got, tc.want) {
				t.Errorf("form %v, want %v", got, tc.want)
			}
			h := f.lastHeader()
			if ct := h.Get("Content-Type"); ct != "application/x-www-form-urlencoded" {
				t.Errorf("Content-Type %q", ct)
			}
			wantAuth := "Basic " + base64.StdEncoding.EncodeToString([]byte(url.QueryEscape(testClientID)+":"+url.QueryEscape(testSecret)))
			if got := h.Get("Authorization"); got != wantAuth {
				t.Errorf("Authorization %q, want %q", got, wantAuth)
			}
		})
	}
}

func equalForms(a, b url.Values) bool { return a.Encode() == b.Encode() }

func TestClientCacheKeys(t *testing.T) {
	f := newFakeIssuer(t)
	c := newTestClient(t, f, nil)
	ctx := context.Background()
	type call struct{ subject, audience, scope string } // subject "" means client credentials
	calls := []call{
		{testSubject, "payments", ""},
		{testSubject, "payments", "a"},
		{testSubject, "payments", "a b"},
		{testSubject, "ledger", ""},
		{testSubject + "x", "payments", ""},
		{"", "payments", ""},
		{"", "payments", "a"},
		{"", "ledger", ""},
		// Audience and scope are delimited: these differ from {"pay",
		// "ments"} and the like.
		{testSubject, "pay", "ments"},
		{testSubject, "paymentsa", ""},
	}
	do := func(k call) Token {
		var tok Token
		var err error
		if k.subject == "" {
			tok, err = c.ClientCredentials(ctx, k.audience, k.scope)
		} else {
			tok, err = c.Exchange(ctx, []byte(k.subject), k.audience, k.scope)
		}
		if err != nil {
			t.Fatalf("%+v: %v", k, err)
		}
		return tok
	}
	first := map[call]string{}
	for _, k := range calls {
		first[k] = do(k).AccessToken
	}
	if n := f.calls.Load(); n != int64(len(calls)) {
		t.Fatalf("%d requests for %d distinct calls", n, len(calls))
	}
	seen := map[string]bool{}
	for _, k := range calls {
		if seen[first[k]] {
			t.Errorf("%+v shares a token with another call", k)
		}
		seen[first[k]] = true
		if got := do(k).AccessToken; got != first[k] {
			t.Errorf("%+v: second call got %q, want cached %q", k, got, first[k])
		}
	}
	if n := f.calls.Load(); n != int64(len(calls)) {
		t.Errorf("%d requests after repeating every call, want %d", n, len(calls))
	}
}

func TestClientRefresh(t *testing.T) {
	f := newFakeIssuer(t)
	clk := newClock()
	c := newTestClient(t, f, func(cfg *ClientConfig) { cfg.Now = clk.Now })
	ctx := context.Background()
	get := func() string {
		t.Helper()
		tok, err := c.Exchange(ctx, []byte(testSubject), "payments", "")
		if err != nil {
			t.Fatal(err)
		}
		return tok.AccessToken
	}
	first := get()
	// expires_in 300, RefreshBefore 30 s: used until 270 s.
	clk.advance(269*time.Second + 999*time.Millisecond)
	if got := get(); got != first || f.calls.Load() != 1 {
		t.Fatalf("at 269.999 s: %q after %d requests, want the cached %q", got, f.calls.Load(), first)
	}
	clk.advance(time.Millisecond)
	second := get()
	if second == first || f.calls.Load() != 2 {
		t.Fatalf("at 270 s: %q after %d requests, want a new token", second, f.calls.Load())
	}
	if got := get(); got != second || f.calls.Load() != 2 {
		t.Errorf("the refreshed token is not cached: %q, %d requests", got, f.calls.Load())
	}
}

// jwtAnswer answers with a token whose claims name it: jti "x-" and the
// answer's number, client_id the exchanging client.
func jwtAnswer(w http.ResponseWriter, form url.Values, n int64) {
	claims := base64.RawURLEncoding.EncodeToString(fmt.Appendf(nil, `{"iss":%q,"jti":"x-%d","client_id":%q,"sub":%q}`, testIssuer, n, testClientID, testClientID))
	resp := map[string]any{"access_token": "eyJhbGciOiJFUzI1NiJ9." + claims + ".c2ln", "token_type": "Bearer", "expires_in": 300}
	if form.Get("grant_type") == GrantTypeTokenExchange {
		resp["issued_token_type"] = TokenTypeAccessToken
	}
	writeJSON(w, http.StatusOK, resp)
}

// TestClientEvict checks which cached tokens a revocation drops: those
// whose subject token it names, and those it names themselves.
func TestClientEvict(t *testing.T) {
	// testSubject's claims are {"iss":testIssuer,"sub":"alice"}.
	tests := []struct {
		name    string
		r       token.Revocation
		evicted []string // of the calls below
	}{
		{"subject of the subject token", token.Revocation{Issuer: testIssuer, Kind: token.RevokeSubject, Value: "alice"}, []string{"exchange"}},
		{"jti of an exchanged token", token.Revocation{Issuer: testIssuer, Kind: token.RevokeTokenID, Value: "x-1"}, []string{"exchange"}},
		{"jti of the own token", token.Revocation{Issuer: testIssuer, Kind: token.RevokeTokenID, Value: "x-2"}, []string{"own"}},
		{"the client itself", token.Revocation{Issuer: testIssuer, Kind: token.RevokeClientID, Value: testClientID}, []string{"exchange", "own"}},
		{"another subject", token.Revocation{Issuer: testIssuer, Kind: token.RevokeSubject, Value: "bob"}, nil},
		{"empty value", token.Revocation{Issuer: testIssuer, Kind: token.RevokeTokenID}, nil},
		{"another issuer's", token.Revocation{Issuer: "https://other.example", Kind: token.RevokeSubject, Value: "alice"}, nil},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			f := newFakeIssuer(t)
			f.setAnswer(jwtAnswer)
			c := newTestClient(t, f, nil)
			ctx := context.Background()
			calls := map[string]func() (Token, error){
				"exchange": func() (Token, error) { return c.Exchange(ctx, []byte(testSubject), "payments", "") },
				"own":      func() (Token, error) { return c.ClientCredentials(ctx, "payments", "") },
			}
			first := map[string]string{}
			for _, name := range []string{"exchange", "own"} {
				tok, err := calls[name]()
				if err != nil {
					t.Fatal(err)
				}
				first[name] = tok.AccessToken
			}
			if n := c.Evict(tt.r); n != len(tt.evicted) {
				t.Errorf("Evict dropped %d tokens, want %d", n, len(tt.evicted))
			}
			for name, call := range calls {
				tok, err := call()
				if err != nil {
					t.Fatal(err)
				}
				if evicted := slices.Contains(tt.evicted, name); (tok.AccessToken != first[name]) != evicted {
					t.Errorf("%s: %q after %q, want evicted %v", name, tok.AccessToken, first[name], evicted)
				}
			}
		})
	}
}

// TestClientEvictDuringExchange checks that a token obtained by a request
// that a revocation overtook is handed out but not cached: the revocation
// may name it.
func TestClientEvictDuringExchange(t *testing.T) {
	f := newFakeIssuer(t)
	asked, release := make(chan struct{}), make(chan struct{})
	f.setAnswer(func(w http.ResponseWriter, form url.Values, n int64) {
		if n == 1 {
			close(asked)
			<-release
		}
		ok(300)(w, form, n)
	})
	c := newTestClient(t, f, nil)
	exchange := func() string {
		t.Helper()
		tok, err := c.Exchange(context.Background(), []byte(testSubject), "payments", "")
		if err != nil {
			t.Fatal(err)
		}
		return tok.AccessToken
	}
	done := make(chan string)
	go func() { done <- exchange() }()
	<-asked
	c.Evict(token.Revocation{Issuer: testIssuer, Kind: token.RevokeSubject, Value: "alice"})
	close(release)
	first := <-done
	second, third := exchange(), exchange()
	if first == second || second != third || f.calls.Load() != 2 {
		t.Errorf("tokens %q, %q, %q after %d requests: want the first not cached", first, second, third, f.calls.Load())
	}
}

// TestClientUnreadableSubject checks that the token obtained for a subject
// token whose claims cannot be read is not cached: no revocation could
// reach it.
func TestClientUnreadableSubject(t *testing.T) {
	f := newFakeIssuer(t)
	c := newTestClient(t, f, nil)
	for i := range 2 {
		if _, err := c.Exchange(context.Background(), []byte("opaque-reference-token"), "payments", ""); err != nil {
			t.Fatal(err)
		}
		if n := f.calls.Load(); n != int64(i+1) {
			t.Errorf("call %d: %d requests", i, n)
		}
	}
}

func TestClientShortLivedNotCached(t *testing.T) {
	f := newFakeIssuer(t)
	f.setAnswer(ok(30)) // not more than RefreshBefore
	c := newTestClient(t, f, nil)
	for i := range 3 {
		tok, err := c.ClientCredentials(context.Background(), "payments", "")
		if err != nil || tok.AccessToken == "" {
			t.Fatalf("call %d: %q, %v", i, tok.AccessToken, err)
		}
	}
	if n := f.calls.Load(); n != 3 {
		t.Errorf("%d requests, want 3: a token that would be refreshed at once is not cached", n)
	}
}

func TestClientBurstCostsOneRequest(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		f, release := newGatedIssuer(t)
		c := newTestClient(t, f, nil)
		const callers = 50
		var wg sync.WaitGroup
		tokens := make([]string, callers)
		errs := make([]error, callers)
		for i := range callers {
			wg.Go(func() {
				tok, err := c.Exchange(context.Background(), []byte(testSubject), "payments", "payments.charge")
				tokens[i], errs[i] = tok.AccessToken, err
			})
		}
		// Every caller waits on the one request; then it is answered.
		synctest.Wait()
		close(release)
		wg.Wait()
		for i := range callers {
			if errs[i] != nil || tokens[i] != tokens[0] {
				t.Fatalf("caller %d: %q, %v; caller 0: %q", i, tokens[i], errs[i], tokens[0])
			}
		}
		if n := f.calls.Load(); n != 1 {
			t.Errorf("%d requests for a burst of %d identical calls, want 1", n, callers)
		}
	})
}

func TestClientRefused(t *testing.T) {
	for _, tc := range []struct {
		name   string
		answer func(http.ResponseWriter, url.Values, int64)
		want   RefusedError
	}{
		{"invalid_grant", refuse(400, "invalid_grant", "subject_token is not valid (token expired)"),
			RefusedError{"invalid_grant", "subject_token is not valid (token expired)", 400}},
		{"invalid_target", refuse(400, "invalid_target", `audience not allowed: "ledger" is not in this client's allowed_audiences`),
			RefusedError{"invalid_target", `audience not allowed: "ledger" is not in this client's allowed_audiences`, 400}},
		{"invalid_scope without description", raw(400, "application/json", `{"error":"invalid_scope"}`),
			RefusedError{"invalid_scope", "", 400}},
		{"invalid_client", refuse(401, "invalid_client", "client authentication failed"),
			RefusedError{"invalid_client", "client authentication failed", 401}},
		{"description sanitized", raw(400, "application/json; charset=utf-8", `{"error":"invalid_request","error_description":"a\nb\u00e9c\u0000","error_uri":"https://x"}`),
			RefusedError{"invalid_request", "a?b?c?", 400}},
		{"description bounded", refuse(400, "invalid_request", strings.Repeat("d", 1000)),
			RefusedError{"invalid_request", strings.Repeat("d", 256), 400}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			f := newFakeIssuer(t)
			f.setAnswer(tc.answer)
			c := newTestClient(t, f, nil)
			for i := range 2 {
				_, err := c.Exchange(context.Background(), []byte(testSubject), "payments", "")
				var re *RefusedError
				if !errors.As(err, &re) || *re != tc.want {
					t.Fatalf("call %d: %v, want %+v", i, err, tc.want)
				}
				if errors.Is(err, ErrUnavailable) {
					t.Errorf("a refusal is not ErrUnavailable")
				}
			}
			if n := f.calls.Load(); n != 2 {
				t.Errorf("%d requests for two refused calls: refusals are not cached", n)
			}
		})
	}
}

func TestClientUnavailable(t *testing.T) {
	for _, tc := range []struct {
		name   string
		answer func(http.ResponseWriter, url.Values, int64)
		down   bool
	}{
		{"500", raw(500, "text/plain", "boom"), false},
		{"503 temporarily_unavailable", refuse(503, "temporarily_unavailable", "store down"), false},
		{"502 from a proxy", raw(502, "text/html", "<html>"), false},
		{"429", raw(429, "application/json", `{"error":"slow_down"}`), false},
		{"timeout", func(w http.ResponseWriter, form url.Values, n int64) {
			time.Sleep(300 * time.Millisecond)
			ok(300)(w, form, n)
		}, false},
		{"connection refused", nil, true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			synctest.Test(t, func(t *testing.T) {
				f := newBubbleIssuer(t)
				if tc.down {
					f = newFakeIssuer(t)
					f.srv.Close()
				}
				f.setAnswer(tc.answer)
				c := newTestClient(t, f, func(cfg *ClientConfig) { cfg.Timeout = 100 * time.Millisecond })
				_, err := c.Exchange(context.Background(), []byte(testSubject), "payments", "")
				if !errors.Is(err, ErrUnavailable) {
					t.Fatalf("got %v, want ErrUnavailable", err)
				}
				var re *RefusedError
				if errors.As(err, &re) {
					t.Errorf("unavailable is not a refusal: %v", err)
				}
				time.Sleep(time.Second) // the answer that came too late ends
			})
		})
	}
}

func TestClientMalformedAnswers(t *testing.T) {
	good := func(edit func(m map[string]any)) string {
		m := map[string]any{"access_token": "abc.def", "token_type": "Bearer", "expires_in": 300,
			"issued_token_type": TokenTypeAccessToken}
		edit(m)
		b, _ := json.Marshal(m)
		return string(b)
	}
	for _, tc := range []struct {
		name   string
		status int
		ctype  string
		body   string
	}{
		{"not JSON", 200, "text/html", "<html>"},
		{"JSON body, wrong type", 200, "text/plain", good(func(map[string]any) {})},
		{"no access_token", 200, "application/json", good(func(m map[string]any) { delete(m, "access_token") })},
		{"empty access_token", 200, "application/json", good(func(m map[string]any) { m["access_token"] = "" })},
		{"access_token not a string", 200, "application/json", good(func(m map[string]any) { m["access_token"] = 5 })},
		{"access_token with a space", 200, "application/json", good(func(m map[string]any) { m["access_token"] = "a b" })},
		{"access_token with CRLF", 200, "application/json", good(func(m map[string]any) { m["access_token"] = "a\r\nX-Evil: 1" })},
		{"no token_type", 200, "application/json", good(func(m map[string]any) { delete(m, "token_type") })},
		{"token_type N_A", 200, "application/json", good(func(m map[string]any) { m["token_type"] = "N_A" })},
		{"token_type DPoP", 200, "application/json", good(func(m map[string]any) { m["token_type"] = "DPoP" })},
		{"no expires_in", 200, "application/json", good(func(m map[string]any) { delete(m, "expires_in") })},
		{"expires_in 0", 200, "application/json", good(func(m map[string]any) { m["expires_in"] = 0 })},
		{"expires_in negative", 200, "application/json", good(func(m map[string]any) { m["expires_in"] = -5 })},
		{"expires_in string", 200, "application/json", good(func(m map[string]any) { m["expires_in"] = "300" })},
		{"expires_in fraction", 200, "application/json", good(func(m map[string]any) { m["expires_in"] = 1.5 })},
		{"expires_in huge", 200, "application/json", good(func(m map[string]any) { m["expires_in"] = 1 << 40 })},
		{"no issued_token_type", 200, "application/json", good(func(m map[string]any) { delete(m, "issued_token_type") })},
		{"issued_token_type jwt", 200, "application/json", good(func(m map[string]any) {
			m["issued_token_type"] = "urn:ietf:params:oauth:token-type:jwt"
		})},
		{"repeated access_token", 200, "application/json", `{"access_token":"a","access_token":"b","token_type":"Bearer","expires_in":300,"issued_token_type":"` + TokenTypeAccessToken + `"}`},
		{"member names differ in case", 200, "application/json", `{"ACCESS_TOKEN":"a","token_type":"Bearer","expires_in":300,"issued_token_type":"` + TokenTypeAccessToken + `"}`},
		{"trailing data", 200, "application/json", good(func(map[string]any) {}) + "{}"},
		{"array", 200, "application/json", "[]"},
		{"over 64 KiB", 200, "application/json", good(func(m map[string]any) { m["pad"] = strings.Repeat("x", 64<<10) })},
		{"redirect", 302, "application/json", "{}"},
		{"404 page", 404, "text/html", "not found"},
		{"400 without error", 400, "application/json", `{"error_description":"x"}`},
		{"400 error not a string", 400, "application/json", `{"error":400}`},
		{"400 error with a quote", 400, "application/json", `{"error":"bad\"code"}`},
	} {
		t.Run(tc.name, func(t *testing.T) {
			f := newFakeIssuer(t)
			f.setAnswer(raw(tc.status, tc.ctype, tc.body))
			c := newTestClient(t, f, nil)
			tok, err := c.Exchange(context.Background(), []byte(testSubject), "payments", "")
			var re *RefusedError
			if err == nil || errors.Is(err, ErrUnavailable) || errors.As(err, &re) {
				t.Fatalf("got %q, %v; want an error that is neither unavailable nor a refusal", tok.AccessToken, err)
			}
		})
	}
}

func TestClientKeepsSecrets(t *testing.T) {
	var logs bytes.Buffer
	logger := slog.New(slog.NewTextHandler(&logs, &slog.HandlerOptions{Level: slog.LevelDebug}))
	var errs []error
	for _, answer := range []func(http.ResponseWriter, url.Values, int64){
		ok(300), refuse(401, "invalid_client", "bad secret"), raw(500, "text/plain", "x"),
		raw(200, "application/json", "{"), raw(302, "application/json", "{}"),
	} {
		f := newFakeIssuer(t)
		f.setAnswer(answer)
		c := newTestClient(t, f, func(cfg *ClientConfig) { cfg.Logger = logger })
		tok, err := c.Exchange(context.Background(), []byte(testSubject), "payments", "")
		errs = append(errs, err)
		logger.Info("token", "token", tok)
		if s := fmt.Sprint(tok); tok.AccessToken != "" && strings.Contains(s, tok.AccessToken) {
			t.Errorf("Token prints its access token: %s", s)
		}
	}
	errs = append(errs, func() error {
		_, err := NewClient(ClientConfig{TokenURL: "http://example.com/token", ClientID: "a", ClientSecret: testSecret})
		return err
	}())
	for _, secret := range []string{testSecret, url.QueryEscape(testSecret), testSubject, "tok-1"} {
		if strings.Contains(logs.String(), secret) {
			t.Errorf("logs contain %q:\n%s", secret, logs.String())
		}
		for _, err := range errs {
			if err != nil && strings.Contains(err.Error(), secret) {
				t.Errorf("error contains %q: %v", secret, err)
			}
		}
	}
	if !strings.Contains(logs.String(), "exchange: token request") {
		t.Errorf("no debug record of the requests:\n%s", logs.String())
	}
}

func TestClientCallerGivesUp(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		f, release := newGatedIssuer(t)
		c := newTestClient(t, f, nil)
		ctx, cancel := context.WithCancel(context.Background())
		first := make(chan error, 1)
		go func() {
			_, err := c.Exchange(ctx, []byte(testSubject), "payments", "")
			first <- err
		}()
		synctest.Wait() // the request is at the issuer
		second := make(chan Token, 1)
		go func() {
			tok, err := c.Exchange(context.Background(), []byte(testSubject), "payments", "")
			if err != nil {
				t.Error(err)
			}
			second <- tok
		}()
		synctest.Wait() // the second caller waits on the same request
		cancel()
		if err := <-first; !errors.Is(err, context.Canceled) {
			t.Fatalf("the caller that gave up got %v", err)
		}
		close(release)
		if tok := <-second; tok.AccessToken != issuedToken(1, url.Values{"audience": {"payments"}}) {
			t.Errorf("the other caller got %q: the shared request must outlive the first caller", tok.AccessToken)
		}
		if n := f.calls.Load(); n != 1 {
			t.Errorf("%d requests, want 1", n)
		}
	})
}

func TestNewClientRefusesBadConfig(t *testing.T) {
	good := ClientConfig{TokenURL: "https://auth.example/token", ClientID: "orders", ClientSecret: "s"}
	for _, tc := range []struct {
		name string
		edit func(*ClientConfig)
	}{
		{"no token URL", func(c *ClientConfig) { c.TokenURL = "" }},
		{"relative token URL", func(c *ClientConfig) { c.TokenURL = "/token" }},
		{"plain http elsewhere", func(c *ClientConfig) { c.TokenURL = "http://auth.example/token" }},
		{"user in URL", func(c *ClientConfig) { c.TokenURL = "https://u:p@auth.example/token" }},
		{"fragment", func(c *ClientConfig) { c.TokenURL = "https://auth.example/token#x" }},
		{"other scheme", func(c *ClientConfig) { c.TokenURL = "ftp://auth.example/token" }},
		{"no client id", func(c *ClientConfig) { c.ClientID = "" }},
		{"no secret", func(c *ClientConfig) { c.ClientSecret = "" }},
		{"tiny cache", func(c *ClientConfig) { c.CacheBytes = 1 << 19 }},
		{"negative refresh", func(c *ClientConfig) { c.RefreshBefore = -time.Second }},
		{"negative timeout", func(c *ClientConfig) { c.Timeout = -time.Second }},
	} {
		t.Run(tc.name, func(t *testing.T) {
			cfg := good
			tc.edit(&cfg)
			if _, err := NewClient(cfg); err == nil {
				t.Error("accepted")
			}
		})
	}
	for _, u := range []string{"https://auth.example/token?tenant=a", "http://127.0.0.1:8080/token", "http://[::1]:8080/token", "http://localhost/token"} {
		cfg := good
		cfg.TokenURL = u
		if _, err := NewClient(cfg); err != nil {
			t.Errorf("%s: %v", u, err)
		}
	}
}

func TestClientRefusesBadArguments(t *testing.T) {
	f := newFakeIssuer(t)
	c := newTestClient(t, f, nil)
	ctx := context.Background()
	if _, err := c.Exchange(ctx, nil, "payments", ""); err == nil {
		t.Error("empty subject token accepted")
	}
	if _, err := c.Exchange(ctx, []byte(testSubject), "", ""); err == nil {
		t.Error("empty audience accepted")
	}
	if _, err := c.ClientCredentials(ctx, "", ""); err == nil {
		t.Error("empty audience accepted")
	}
	if n := f.calls.Load(); n != 0 {
		t.Errorf("%d requests sent", n)
	}
}

// BenchmarkClientCached measures an exchange answered from the cache.
func BenchmarkClientCached(b *testing.B) {
	f := newFakeIssuer(b)
	c := newTestClient(b, f, nil)
	ctx := context.Background()
	subject := []byte(testSubject + strings.Repeat("A", 600)) // the size of a real JWT
	if _, err := c.Exchange(ctx, subject, "payments", "payments.charge"); err != nil {
		b.Fatal(err)
	}
	b.ReportAllocs()
	for b.Loop() {
		if _, err := c.Exchange(ctx, subject, "payments", "payments.charge"); err != nil {
			b.Fatal(err)
		}
	}
	if n := f.calls.Load(); n != 1 {
		b.Fatalf("%d requests", n)
	}
}
