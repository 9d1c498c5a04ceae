package proxy

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"net/url"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/meshauth/meshauth/exchange"
	"github.com/meshauth/meshauth/token"
)

const (
	egressClientID = "orders"
	egressSecret   = "orders-secret"
)

// tokenEndpoint is a fake issuer token endpoint: it records the forms it
// gets and answers each with answer, by default a token for 300 s.
type tokenEndpoint struct {
	*httptest.Server
	calls  atomic.Int64
	mu     sync.Mutex
	forms  []url.Values
	answer func(w http.ResponseWriter, form url.Values, n int64)
}

func newTokenEndpoint(tb testing.TB) *tokenEndpoint {
	te := &tokenEndpoint{}
	te.Server = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		n := te.calls.Add(1)
		id, secret, ok := r.BasicAuth()
		if err := r.ParseForm(); err != nil || !ok || id != egressClientID || secret != egressSecret {
			tb.Errorf("fake issuer: bad request: %v, client %q", err, id)
		}
		te.mu.Lock()
		te.forms = append(te.forms, r.PostForm)
		answer := te.answer
		te.mu.Unlock()
		if answer == nil {
			answer = issue(300)
		}
		answer(w, r.PostForm, n)
	}))
	tb.Cleanup(te.Close)
	return te
}

func (te *tokenEndpoint) set(answer func(http.ResponseWriter, url.Values, int64)) {
	te.mu.Lock()
	te.answer = answer
	te.mu.Unlock()
}

// form returns the form of the i-th request, from 1.
func (te *tokenEndpoint) form(i int) url.Values {
	te.mu.Lock()
	defer te.mu.Unlock()
	return te.forms[i-1]
}

// issuedFor is the token the fake issuer issues as its n-th answer.
func issuedFor(n int64, audience string) string {
	return fmt.Sprintf("issued-%d-for-%s", n, audience)
}

// issue answers with a token valid for secs seconds.
func issue(secs int) func(http.ResponseWriter, url.Values, int64) {
	return func(w http.ResponseWriter, form url.Values, n int64) {
		resp := jsonObject{"access_token": issuedFor(n, form.Get("audience")), "token_type": "Bearer", "expires_in": secs}
		if form.Get("grant_type") != "client_credentials" {
			resp["issued_token_type"] = "urn:ietf:params:oauth:token-type:access_token"
		}
		writeTokenJSON(w, 200, resp)
	}
}

func refuseWith(status int, code, desc string) func(http.ResponseWriter, url.Values, int64) {
	return func(w http.ResponseWriter, _ url.Values, _ int64) {
		writeTokenJSON(w, status, jsonObject{"error": code, "error_description": desc})
	}
}

func writeTokenJSON(w http.ResponseWriter, status int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	json.NewEncoder(w).Encode(v)
}

// testClock is the exchange client's settable clock.
type testClock struct {
	mu  sync.Mutex
	now time.Time
}

func (c *testClock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.now
}

func (c *testClock) advance(d time.Duration) {
	c.mu.Lock()
	c.now = c.now.Add(d)
	c.mu.Unlock()
}

// recorder is a service behind a route that records every Authorization
// it receives.
type recorder struct {
	*upstream
	mu    sync.Mutex
	authz []string
}

func newRecorder(t *testing.T, h http.HandlerFunc) *recorder {
	rec := &recorder{}
	rec.upstream = newUpstream(t, func(w http.ResponseWriter, r *http.Request) {
		rec.mu.Lock()
		rec.authz = append(rec.authz, r.Header.Values("Authorization")...)
		rec.mu.Unlock()
		if h != nil {
			h(w, r)
			return
		}
		io.WriteString(w, "upstream says hi")
	})
	return rec
}

func (rec *recorder) authorizations() []string {
	rec.mu.Lock()
	defer rec.mu.Unlock()
	return append([]string(nil), rec.authz...)
}

// egressEnv is an Egress with routes payments and ledger, a real
// exchange.Client and a fake issuer.
type egressEnv struct {
	issuer           *tokenEndpoint
	clock            *testClock
	payments, ledger *recorder
	egress           *Egress
	base             string
}

func newEgressEnv(t *testing.T, edit func(*EgressConfig)) *egressEnv {
	t.Helper()
	env := newStoppedEgressEnv(t, edit)
	env.base = serve(t, env.egress)
	return env
}

// newStoppedEgressEnv is newEgressEnv without serving the Egress yet.
func newStoppedEgressEnv(t *testing.T, edit func(*EgressConfig)) *egressEnv {
	t.Helper()
	env := &egressEnv{issuer: newTokenEndpoint(t), clock: &testClock{now: time.Now()}}
	x, err := exchange.NewClient(exchange.ClientConfig{
		TokenURL: env.issuer.URL + "/token", ClientID: egressClientID, ClientSecret: egressSecret,
		Now: env.clock.Now, Timeout: 2 * time.Second,
	})
	if err != nil {
		t.Fatal(err)
	}
	env.payments, env.ledger = newRecorder(t, nil), newRecorder(t, nil)
	cfg := EgressConfig{
		Routes:    map[string]string{"payments": env.payments.URL, "ledger": env.ledger.URL},
		Scopes:    map[string]string{"payments": "payments.charge"},
		Exchanger: x,
	}
	if edit != nil {
		edit(&cfg)
	}
	if env.egress, err = NewEgress(cfg); err != nil {
		t.Fatal(err)
	}
	return env
}

// call sends a GET for target with Host host and the given fields to the
// egress.
func (env *egressEnv) call(t *testing.T, target, host string, fields ...string) rawResponse {
	t.Helper()
	req := "GET " + target + " HTTP/1.1\nHost: " + host + "\nConnection: close\n"
	for _, f := range fields {
		req += f + "\n"
	}
	return rawRequest(t, env.base, req+"\n")
}

// neverForwarded fails if the service saw tok anywhere.
func neverForwarded(t *testing.T, rec *recorder, tok string) {
	t.Helper()
	r, body := rec.lastRequest()
	if r == nil {
		return
	}
	if strings.Contains(r.RequestURI, tok) || strings.Contains(string(body), tok) {
		t.Errorf("the inbound token reached the service")
	}
	for name, values := range r.Header {
		for _, v := range values {
			if strings.Contains(v, tok) {
				t.Errorf("the inbound token reached the service in %s", name)
			}
		}
	}
}

func TestEgressExchangesToken(t *testing.T) {
	for _, tc := range []struct {
		name, target, host string
		want               string // the request URI the service sees
	}{
		{"path", "/payments/charge?x=1", "127.0.0.1", "/charge?x=1"},
		{"path, route only", "/payments", "egress", "/"},
		{"path, route and query", "/payments?x=1", "egress", "/?x=1"},
		{"path, case", "/PayMents/charge", "egress", "/charge"},
		{"path, encoded", "/payments/a%20b/c%3Fd", "egress", "/a%20b/c%3Fd"},
		{"path, dot segments", "/payments/x/../y", "egress", "/y"},
		{"host", "/charge?x=1", "payments", "/charge?x=1"},
		{"host with port and case", "/charge?x=1", "Payments:15001", "/charge?x=1"},
		{"host wins over path", "/ledger/charge", "payments", "/ledger/charge"},
		{"forward proxy", "http://payments/charge?x=1", "payments", "/charge?x=1"},
		{"forward proxy, Host ignored", "http://payments/charge?x=1", "ledger", "/charge?x=1"},
		{"forward proxy with port", "http://payments:8080/charge", "payments:8080", "/charge"},
		{"forward proxy, https target", "HTTPS://payments/charge", "payments", "/charge"},
		{"forward proxy, root", "http://payments", "payments", "/"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			env := newEgressEnv(t, nil)
			inbound := validToken()
			resp := env.call(t, tc.target, tc.host, bearer(inbound))
			if resp.status != 200 || resp.body != "upstream says hi" {
				t.Fatalf("got %d %q", resp.status, resp.body)
			}
			if env.payments.hits.Load() != 1 || env.ledger.hits.Load() != 0 {
				t.Fatalf("payments %d, ledger %d hits", env.payments.hits.Load(), env.ledger.hits.Load())
			}
			r, _ := env.payments.lastRequest()
			if r.RequestURI != tc.want {
				t.Errorf("service saw %q, want %q", r.RequestURI, tc.want)
			}
			if want := strings.TrimPrefix(env.payments.URL, "http://"); r.Host != want {
				t.Errorf("service saw Host %q, want %q", r.Host, want)
			}
			if got, want := r.Header.Values("Authorization"), []string{"Bearer " + issuedFor(1, "payments")}; !equalStrings(got, want) {
				t.Errorf("service saw Authorization %q, want %q", got, want)
			}
			neverForwarded(t, env.payments, inbound)
			want := url.Values{
				"grant_type":           {"urn:ietf:params:oauth:grant-type:token-exchange"},
				"subject_token":        {inbound},
				"subject_token_type":   {"urn:ietf:params:oauth:token-type:access_token"},
				"requested_token_type": {"urn:ietf:params:oauth:token-type:access_token"},
				"audience":             {"payments"},
				"scope":                {"payments.charge"},
			}
			if got := env.issuer.form(1); got.Encode() != want.Encode() {
				t.Errorf("issuer got %v, want %v", got, want)
			}
		})
	}
}

func TestEgressClientCredentials(t *testing.T) {
	env := newEgressEnv(t, nil)
	for range 2 {
		if resp := env.call(t, "/ledger/entries", "egress"); resp.status != 200 {
			t.Fatalf("got %d %q", resp.status, resp.body)
		}
	}
	want := url.Values{"grant_type": {"client_credentials"}, "audience": {"ledger"}}
	if n := env.issuer.calls.Load(); n != 1 {
		t.Errorf("%d token requests, want 1 (cached)", n)
	} else if got := env.issuer.form(1); got.Encode() != want.Encode() {
		t.Errorf("issuer got %v, want %v", got, want)
	}
	tok := "Bearer " + issuedFor(1, "ledger")
	if got := env.ledger.authorizations(); !equalStrings(got, []string{tok, tok}) {
		t.Errorf("service saw %q", got)
	}
}

func TestEgressBurstCostsOneExchange(t *testing.T) {
	env := newEgressEnv(t, nil)
	release := make(chan struct{})
	env.issuer.set(func(w http.ResponseWriter, form url.Values, n int64) {
		<-release
		issue(300)(w, form, n)
	})
	inbound := validToken()
	const callers = 50
	var wg sync.WaitGroup
	errs := make(chan error, callers)
	for range callers {
		wg.Go(func() {
			req, _ := http.NewRequest("POST", env.base+"/payments/charge", strings.NewReader("{}"))
			req.Header.Set("Authorization", "Bearer "+inbound)
			resp, err := http.DefaultClient.Do(req)
			if err != nil {
				errs <- err
				return
			}
			resp.Body.Close()
			if resp.StatusCode != 200 {
				errs <- fmt.Errorf("status %d", resp.StatusCode)
			}
		})
	}
	for env.issuer.calls.Load() == 0 {
		time.Sleep(time.Millisecond)
	}
	time.Sleep(50 * time.Millisecond) // the others pile up behind it
	close(release)
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Error(err)
	}
	if n := env.issuer.calls.Load(); n != 1 {
		t.Errorf("%d exchanges for %d identical calls, want 1", n, callers)
	}
	got := env.payments.authorizations()
	if len(got) != callers {
		t.Fatalf("service got %d calls, want %d", len(got), callers)
	}
	for _, a := range got {
		if a != "Bearer "+issuedFor(1, "payments") {
			t.Fatalf("service saw %q", a)
		}
	}
	neverForwarded(t, env.payments, inbound)
}

func TestEgressCacheEntries(t *testing.T) {
	env := newEgressEnv(t, nil)
	t1, t2 := validToken(), tokenWith(func(_, c jsonObject) { c["jti"] = "j2" })
	calls := []struct {
		path, inbound string
	}{
		{"/payments/a", t1},
		{"/ledger/a", t1}, // another audience
		{"/payments/a", t2},
		{"/payments/b", ""}, // the service's own token
	}
	for round := range 2 {
		for i, c := range calls {
			var fields []string
			if c.inbound != "" {
				fields = append(fields, bearer(c.inbound))
			}
			if resp := env.call(t, c.path, "egress", fields...); resp.status != 200 {
				t.Fatalf("round %d call %d: %d %q", round, i, resp.status, resp.body)
			}
		}
		if n := env.issuer.calls.Load(); n != int64(len(calls)) {
			t.Errorf("round %d: %d token requests, want %d", round, n, len(calls))
		}
	}
	want := []string{"Bearer " + issuedFor(1, "payments"), "Bearer " + issuedFor(3, "payments"), "Bearer " + issuedFor(4, "payments")}
	want = append(want, want...)
	if got := env.payments.authorizations(); !sameSet(got, want) || len(got) != len(want) {
		t.Errorf("payments saw %q, want %q", got, want)
	}
}

// issueJWT answers with a JWT valid for 300 s, as the issuer does: its jti
// is "x-" and the answer's number, its sub and client_id the exchanging
// service's, so that a revocation can name it apart from the inbound
// token.
func issueJWT(w http.ResponseWriter, form url.Values, n int64) {
	tok := tokenWith(func(_, c jsonObject) {
		c["aud"], c["jti"], c["sub"], c["client_id"] = form.Get("audience"), fmt.Sprintf("x-%d", n), egressClientID, egressClientID
		delete(c, "sid")
	})
	writeTokenJSON(w, 200, jsonObject{"access_token": tok, "token_type": "Bearer", "expires_in": 300,
		"issued_token_type": "urn:ietf:params:oauth:token-type:access_token"})
}

// TestEgressEvict checks that Evict drops the exchanged tokens that a
// revocation names, by the inbound token's identity or by their own, so
// that the next call is exchanged again, and only those.
func TestEgressEvict(t *testing.T) {
	inbound := tokenWith(func(_, c jsonObject) { c["sid"] = "g1" }) // jti j1, sub alice, client_id web
	other := tokenWith(func(_, c jsonObject) { c["jti"], c["sub"], c["client_id"] = "j2", "bob", "mobile" })
	tests := []struct {
		kind, value string
		evicted     bool
	}{
		{token.RevokeTokenID, "j1", true},
		{token.RevokeSubject, "alice", true},
		{token.RevokeClientID, "web", true},
		{token.RevokeSession, "g1", true},
		{token.RevokeTokenID, "x-1", true},           // the exchanged token itself
		{token.RevokeClientID, egressClientID, true}, // every token this service obtained
		{token.RevokeSubject, "carol", false},
		{token.RevokeTokenID, "alice", false}, // a value of another kind
		{token.RevokeSession, "", false},
		{"aud", "payments", false},
	}
	for _, tt := range tests {
		t.Run(tt.kind+"="+tt.value, func(t *testing.T) {
			reg := prometheus.NewRegistry()
			m, err := NewEgressMetrics(reg)
			if err != nil {
				t.Fatal(err)
			}
			env := newEgressEnv(t, func(cfg *EgressConfig) { cfg.Metrics = m })
			env.issuer.set(issueJWT)
			call := func(tok string) string {
				t.Helper()
				if resp := env.call(t, "/payments/x", "egress", bearer(tok)); resp.status != 200 {
					t.Fatalf("%d %q", resp.status, resp.body)
				}
				got := env.payments.authorizations()
				return got[len(got)-1]
			}
			first, otherFirst := call(inbound), call(other)
			if again := call(inbound); again != first || env.issuer.calls.Load() != 2 {
				t.Fatalf("not cached: %q then %q, %d exchanges", first, again, env.issuer.calls.Load())
			}

			env.egress.Evict(token.Revocation{Issuer: testIssuer, Kind: tt.kind, Value: tt.value})
			wantEvicted := 0
			if tt.evicted {
				wantEvicted = 1
				if tt.value == egressClientID {
					wantEvicted = 2 // both callers' tokens
				}
			}
			admin := httptest.NewServer(NewAdminHandler(reg, func(context.Context) error { return nil }))
			defer admin.Close()
			if _, body := fetch(t, admin.URL+"/metrics"); !strings.Contains(body, fmt.Sprintf("meshauth_egress_revocation_evictions_total %d\n", wantEvicted)) {
				t.Errorf("/metrics lacks %d evictions:\n%s", wantEvicted, body)
			}
			if again := call(inbound); (again != first) != tt.evicted {
				t.Errorf("after the revocation: %q, first %q; want evicted %v", again, first, tt.evicted)
			}
			if again := call(other); (again != otherFirst) != (wantEvicted == 2) {
				t.Errorf("another caller's token: %q, first %q", again, otherFirst)
			}
		})
	}
}

// TestEgressUnreadableSubjectNotCached checks that a token obtained for an
// inbound token whose claims cannot be read, which no revocation could
// name, is not cached: each call is exchanged, and the issuer decides.
func TestEgressUnreadableSubjectNotCached(t *testing.T) {
	env := newEgressEnv(t, nil)
	for i := range 3 {
		if resp := env.call(t, "/payments/x", "egress", bearer("opaque-token")); resp.status != 200 {
			t.Fatalf("call %d: %d %q", i, resp.status, resp.body)
		}
	}
	if n := env.issuer.calls.Load(); n != 3 {
		t.Errorf("%d exchanges for three calls, want 3", n)
	}
}

func TestEgressRefreshesBeforeExpiry(t *testing.T) {
	env := newEgressEnv(t, nil)
	inbound := validToken()
	sees := func(want string) {
		t.Helper()
		if resp := env.call(t, "/payments/x", "egress", bearer(inbound)); resp.status != 200 {
			t.Fatalf("got %d %q", resp.status, resp.body)
		}
		got := env.payments.authorizations()
		if last := got[len(got)-1]; last != "Bearer "+want {
			t.Errorf("service saw %q, want %q", last, "Bearer "+want)
		}
	}
	sees(issuedFor(1, "payments"))
	env.clock.advance(269 * time.Second) // expires_in 300, DefaultRefreshBefore 30 s
	sees(issuedFor(1, "payments"))
	env.clock.advance(time.Second)
	sees(issuedFor(2, "payments"))
	if n := env.issuer.calls.Load(); n != 2 {
		t.Errorf("%d exchanges, want 2", n)
	}
}

func TestEgressExchangeRefused(t *testing.T) {
	for _, tc := range []struct {
		code      string
		status    int // the issuer's
		want      int // the egress's
		challenge string
	}{
		{"invalid_grant", 400, 401, `Bearer realm="meshauth", error="invalid_token"`},
		{"invalid_target", 400, 403, ""},
		{"invalid_scope", 400, 403, ""},
		{"invalid_request", 400, 403, ""},
		{"invalid_client", 401, 403, ""},
	} {
		t.Run(tc.code, func(t *testing.T) {
			env := newEgressEnv(t, nil)
			desc := `audience "payments": ` + tc.code
			env.issuer.set(refuseWith(tc.status, tc.code, desc))
			inbound := validToken()
			resp := env.call(t, "/payments/charge", "egress", bearer(inbound))
			if resp.status != tc.want || resp.header.Get("WWW-Authenticate") != tc.challenge {
				t.Errorf("got %d %q, want %d %q", resp.status, resp.header.Get("WWW-Authenticate"), tc.want, tc.challenge)
			}
			var body struct{ Error, Error_description string }
			if err := json.Unmarshal([]byte(resp.body), &body); err != nil || body.Error != tc.code || body.Error_description != desc {
				t.Errorf("body %q (%v), want the issuer's code and description", resp.body, err)
			}
			if resp.header.Get("Content-Type") != "application/json" || resp.header.Get("Cache-Control") != "no-store" {
				t.Errorf("header %v", resp.header)
			}
			if env.payments.hits.Load() != 0 || strings.Contains(resp.body, inbound) {
				t.Errorf("service called %d times; body %q", env.payments.hits.Load(), resp.body)
			}
		})
	}
}

func TestEgressIssuerUnavailable(t *testing.T) {
	for _, tc := range []struct {
		name string
		down func(*tokenEndpoint)
	}{
		{"503", func(te *tokenEndpoint) { te.set(refuseWith(503, "temporarily_unavailable", "store down")) }},
		{"closed", func(te *tokenEndpoint) { te.Close() }},
	} {
		t.Run(tc.name+", cold cache", func(t *testing.T) {
			env := newEgressEnv(t, nil)
			tc.down(env.issuer)
			resp := env.call(t, "/payments/charge", "egress", bearer(validToken()))
			if resp.status != 503 || resp.header.Get("Retry-After") != "5" || !strings.Contains(resp.body, `"temporarily_unavailable"`) {
				t.Errorf("got %d %v %q, want 503 with Retry-After: 5", resp.status, resp.header, resp.body)
			}
			if env.payments.hits.Load() != 0 {
				t.Error("the service was called")
			}
		})
		t.Run(tc.name+", warm cache", func(t *testing.T) {
			env := newEgressEnv(t, nil)
			inbound := validToken()
			for i, down := range []bool{false, true} {
				if down {
					tc.down(env.issuer)
				}
				if resp := env.call(t, "/payments/charge", "egress", bearer(inbound)); resp.status != 200 {
					t.Fatalf("call %d: %d %q", i, resp.status, resp.body)
				}
			}
			env.clock.advance(270 * time.Second)
			if resp := env.call(t, "/payments/charge", "egress", bearer(inbound)); resp.status != 503 {
				t.Errorf("past the refresh time: %d %q, want 503", resp.status, resp.body)
			}
			if n := env.payments.hits.Load(); n != 2 {
				t.Errorf("service called %d times, want 2", n)
			}
			neverForwarded(t, env.payments, inbound)
		})
	}
}

func TestEgressBadIssuerAnswer(t *testing.T) {
	env := newEgressEnv(t, nil)
	env.issuer.set(func(w http.ResponseWriter, _ url.Values, _ int64) {
		w.Header().Set("Content-Type", "text/html")
		io.WriteString(w, "<html>login</html>")
	})
	resp := env.call(t, "/payments/charge", "egress", bearer(validToken()))
	if resp.status != 502 || !strings.Contains(resp.body, `"bad_gateway"`) || env.payments.hits.Load() != 0 {
		t.Errorf("got %d %q, %d calls; want 502 and no call", resp.status, resp.body, env.payments.hits.Load())
	}
}

func TestEgressRefusesRequests(t *testing.T) {
	tok := validToken()
	for _, tc := range []struct {
		name    string
		request string
		status  int
	}{
		{"unknown route", "GET /nope/x HTTP/1.1\nHost: egress\n" + bearer(tok), 404},
		{"no route at all", "GET / HTTP/1.1\nHost: egress", 404},
		{"forward proxy to an unknown host", "GET http://nope/payments/x HTTP/1.1\nHost: payments\n" + bearer(tok), 404},
		{"route name as a prefix only", "GET /paymentsx/y HTTP/1.1\nHost: egress", 404},
		{"basic", "GET /payments/x HTTP/1.1\nHost: egress\nAuthorization: Basic eDp5", 400},
		{"bearer without token", "GET /payments/x HTTP/1.1\nHost: egress\nAuthorization: Bearer", 400},
		{"bearer with two tokens", "GET /payments/x HTTP/1.1\nHost: egress\nAuthorization: Bearer a b", 400},
		{"two authorizations", "GET /payments/x HTTP/1.1\nHost: egress\n" + bearer(tok) + "\n" + bearer(tok), 400},
		{"token in the query", "GET /payments/x?access_token=" + tok + " HTTP/1.1\nHost: egress", 400},
		{"connect", "CONNECT payments:443 HTTP/1.1\nHost: payments:443", 405},
	} {
		t.Run(tc.name, func(t *testing.T) {
			env := newEgressEnv(t, nil)
			resp := rawRequest(t, env.base, tc.request+"\nConnection: close\n\n")
			if resp.status != tc.status {
				t.Errorf("got %d %q, want %d", resp.status, resp.body, tc.status)
			}
			if tc.status == 405 && !strings.Contains(resp.header.Get("Allow"), "GET") {
				t.Errorf("405 without Allow: %v", resp.header)
			}
			for _, leak := range []string{tok, "payments", "ledger", "127.0.0.1"} {
				if strings.Contains(resp.body, leak) {
					t.Errorf("body %q contains %q", resp.body, leak)
				}
			}
			if n := env.issuer.calls.Load() + env.payments.hits.Load() + env.ledger.hits.Load(); n != 0 {
				t.Errorf("%d calls to the issuer or the services", n)
			}
		})
	}
}

func TestEgressHopByHop(t *testing.T) {
	env := newEgressEnv(t, nil)
	env.payments.upstream.Close()
	env.payments = newRecorder(t, func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Connection", "X-Up-Hop")
		w.Header().Set("X-Up-Hop", "secret")
		w.Header().Set("Keep-Alive", "timeout=5")
		w.Header().Set("X-Up-End", "kept")
		io.WriteString(w, "ok")
	})
	e, err := NewEgress(EgressConfig{Routes: map[string]string{"payments": env.payments.URL}, Exchanger: env.egress.x})
	if err != nil {
		t.Fatal(err)
	}
	base := serve(t, e)
	inbound := validToken()
	resp := rawRequest(t, base, "POST /payments/charge HTTP/1.1\nHost: egress\n"+bearer(inbound)+"\n"+
		"Connection: X-Custom, keep-alive, Authorization\nX-Custom: 1\nKeep-Alive: timeout=5\n"+
		"TE: trailers\nUpgrade: websocket\nProxy-Authorization: Basic eDp5\nProxy-Connection: keep-alive\n"+
		"X-Meshauth-Subject: mallory\nX_Meshauth_Scope: admin\nx-meshauth-client: web\n"+
		"X-End: kept\nTransfer-Encoding: chunked\n\n5\nhello\n6\n world\n0\n\n")
	if resp.status != 200 {
		t.Fatalf("status %d: %s", resp.status, resp.body)
	}
	r, body := env.payments.lastRequest()
	for name, v := range r.Header {
		if identityHeader([]byte(name)) {
			t.Errorf("service saw identity field %s: %q", name, v)
		}
	}
	for _, name := range []string{"Connection", "X-Custom", "Keep-Alive", "Te", "Upgrade", "Proxy-Authorization", "Proxy-Connection", "Transfer-Encoding"} {
		if v, ok := r.Header[name]; ok {
			t.Errorf("service saw hop-by-hop %s: %q", name, v)
		}
	}
	if got := r.Header.Values("Authorization"); !equalStrings(got, []string{"Bearer " + issuedFor(1, "payments")}) {
		t.Errorf("service saw Authorization %q", got)
	}
	if r.Header.Get("X-End") != "kept" || string(body) != "hello world" {
		t.Errorf("end-to-end content lost: %v %q", r.Header, body)
	}
	if resp.header.Get("X-Up-Hop") != "" || resp.header.Get("Keep-Alive") != "" {
		t.Errorf("client saw the service's hop-by-hop fields: %v", resp.header)
	}
	if resp.header.Get("X-Up-End") != "kept" || resp.body != "ok" {
		t.Errorf("response lost end-to-end content: %v %q", resp.header, resp.body)
	}
	neverForwarded(t, env.payments, inbound)
}

func TestEgressRouteDown(t *testing.T) {
	ln := listen(t)
	addr := ln.Addr().String()
	ln.Close()
	env := newEgressEnv(t, func(cfg *EgressConfig) { cfg.Routes["payments"] = "http://" + addr })
	inbound := validToken()
	resp := env.call(t, "/payments/charge", "egress", bearer(inbound))
	if resp.status != 502 || !strings.Contains(resp.body, `"bad_gateway"`) || strings.Contains(resp.body, inbound) {
		t.Errorf("got %d %q, want a short 502", resp.status, resp.body)
	}
}

func TestEgressHTTPSRoute(t *testing.T) {
	var gotAuthz, gotHost string
	svc := httptest.NewTLSServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		gotAuthz, gotHost = r.Header.Get("Authorization"), r.Host
		io.WriteString(w, "tls says hi "+r.URL.RequestURI())
	}))
	defer svc.Close()
	env := newStoppedEgressEnv(t, func(cfg *EgressConfig) { cfg.Routes["payments"] = svc.URL })
	roots := x509.NewCertPool()
	roots.AddCert(svc.Certificate())
	env.egress.routes["payments"].client.TLSConfig = &tls.Config{RootCAs: roots, ServerName: "example.com"}
	env.base = serve(t, env.egress)

	resp := env.call(t, "http://payments/charge?x=1", "payments", bearer(validToken()))
	if resp.status != 200 || resp.body != "tls says hi /charge?x=1" {
		t.Fatalf("got %d %q", resp.status, resp.body)
	}
	if gotAuthz != "Bearer "+issuedFor(1, "payments") || gotHost != strings.TrimPrefix(svc.URL, "https://") {
		t.Errorf("service saw Authorization %q, Host %q", gotAuthz, gotHost)
	}
}

func TestEgressMetrics(t *testing.T) {
	reg := prometheus.NewRegistry()
	m, err := NewEgressMetrics(reg)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := NewEgressMetrics(reg); err == nil {
		t.Error("registering twice succeeded")
	}
	env := newEgressEnv(t, func(cfg *EgressConfig) { cfg.Metrics = m })
	tok := validToken()
	env.call(t, "/payments/x", "egress", bearer(tok))
	env.call(t, "/payments/x", "egress", bearer(tok))
	env.call(t, "/ledger/x", "egress")
	env.call(t, "/nope/x", "egress")
	env.call(t, "/ledger/x", "egress", "Authorization: Basic eDp5")
	env.issuer.set(refuseWith(400, "invalid_grant", "expired"))
	env.call(t, "/ledger/x", "egress", bearer(tok))

	admin := httptest.NewServer(NewAdminHandler(reg, func(context.Context) error { return nil }))
	defer admin.Close()
	_, body := fetch(t, admin.URL+"/metrics")
	for _, want := range []string{
		`meshauth_egress_requests_total{outcome="exchanged",route="payments"} 2`,
		`meshauth_egress_requests_total{outcome="client_credentials",route="ledger"} 1`,
		`meshauth_egress_requests_total{outcome="unknown_route",route=""} 1`,
		`meshauth_egress_requests_total{outcome="bad_request",route="ledger"} 1`,
		`meshauth_egress_requests_total{outcome="refused",route="ledger"} 1`,
		`meshauth_egress_requests_total{outcome="unavailable",route="payments"} 0`,
	} {
		if !strings.Contains(body, want+"\n") {
			t.Errorf("/metrics lacks %s", want)
		}
	}
}

func TestNewEgressRefusesBadConfig(t *testing.T) {
	x := &exchange.Client{}
	for _, tc := range []struct {
		name string
		cfg  EgressConfig
	}{
		{"no exchanger", EgressConfig{Routes: map[string]string{"a": "http://127.0.0.1:1"}}},
		{"no routes", EgressConfig{Exchanger: x}},
		{"bad name", EgressConfig{Exchanger: x, Routes: map[string]string{"a/b": "http://127.0.0.1:1"}}},
		{"name with a port", EgressConfig{Exchanger: x, Routes: map[string]string{"a:80": "http://127.0.0.1:1"}}},
		{"name starting with a dot", EgressConfig{Exchanger: x, Routes: map[string]string{".a": "http://127.0.0.1:1"}}},
		{"names differing in case", EgressConfig{Exchanger: x, Routes: map[string]string{"a": "http://127.0.0.1:1", "A": "http://127.0.0.1:2"}}},
		{"URL with a path", EgressConfig{Exchanger: x, Routes: map[string]string{"a": "http://127.0.0.1:1/api"}}},
		{"URL with a query", EgressConfig{Exchanger: x, Routes: map[string]string{"a": "http://127.0.0.1:1?x"}}},
		{"URL with a user", EgressConfig{Exchanger: x, Routes: map[string]string{"a": "http://u:p@127.0.0.1:1"}}},
		{"URL of another scheme", EgressConfig{Exchanger: x, Routes: map[string]string{"a": "ftp://127.0.0.1:1"}}},
		{"relative URL", EgressConfig{Exchanger: x, Routes: map[string]string{"a": "127.0.0.1:1"}}},
		{"scope of no route", EgressConfig{Exchanger: x, Routes: map[string]string{"a": "http://127.0.0.1:1"}, Scopes: map[string]string{"b": "s"}}},
		{"bad scope", EgressConfig{Exchanger: x, Routes: map[string]string{"a": "http://127.0.0.1:1"}, Scopes: map[string]string{"a": "s  t"}}},
		{"scope with a quote", EgressConfig{Exchanger: x, Routes: map[string]string{"a": "http://127.0.0.1:1"}, Scopes: map[string]string{"a": `s"`}}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if _, err := NewEgress(tc.cfg); err == nil {
				t.Error("accepted")
			}
		})
	}
	e, err := NewEgress(EgressConfig{Exchanger: x, Routes: map[string]string{
		"payments-v2": "https://payments.internal", "ledger_1.eu": "http://10.0.0.1:8000/",
	}, Scopes: map[string]string{"payments-v2": "a b:c"}})
	if err != nil {
		t.Fatal(err)
	}
	if c := e.routes["payments-v2"].client; c.Addr != "payments.internal:443" || !c.IsTLS {
		t.Errorf("https route: %s, TLS %v", c.Addr, c.IsTLS)
	}
	if r := e.routes["ledger_1.eu"]; r.client.Addr != "10.0.0.1:8000" || r.base != "http://10.0.0.1:8000" {
		t.Errorf("http route: %s, %s", r.client.Addr, r.base)
	}
}
