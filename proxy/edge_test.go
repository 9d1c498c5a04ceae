package proxy

import (
	"context"
	"fmt"
	"net"
	"net/http"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/meshauth/meshauth/exchange"
	"github.com/meshauth/meshauth/token"
)

// fakeIssuer dereferences the reference tokens it knows into JWTs signed
// with the test key, and counts the dereferences that reach it.
type fakeIssuer struct {
	calls   atomic.Int64
	delay   time.Duration
	down    atomic.Bool
	mu      sync.Mutex
	tokens  map[string]jsonObject // reference token → claims of its JWT form
	release chan struct{}         // if not nil, each dereference waits for it
}

func newFakeIssuer() *fakeIssuer {
	return &fakeIssuer{tokens: map[string]jsonObject{}}
}

// add makes ref a live reference token of sub, whose JWT form has jti.
func (f *fakeIssuer) add(ref, sub, jti string) {
	f.mu.Lock()
	defer f.mu.Unlock()
	c := validClaims()
	c["sub"], c["jti"], c["client_id"], c["sid"] = sub, jti, "mobile", "grant-"+sub
	f.tokens[ref] = c
}

func (f *fakeIssuer) remove(ref string) {
	f.mu.Lock()
	defer f.mu.Unlock()
	delete(f.tokens, ref)
}

func (f *fakeIssuer) Dereference(ctx context.Context, ref, audience string) (exchange.Token, error) {
	f.calls.Add(1)
	if f.release != nil {
		<-f.release
	}
	if f.down.Load() {
		return exchange.Token{}, fmt.Errorf("%w: connection refused", exchange.ErrUnavailable)
	}
	if audience != testAudience {
		return exchange.Token{}, &exchange.RefusedError{Code: "invalid_target", Status: 400}
	}
	f.mu.Lock()
	c, ok := f.tokens[ref]
	f.mu.Unlock()
	if !ok {
		return exchange.Token{}, &exchange.RefusedError{Code: "invalid_grant", Status: 400}
	}
	return exchange.Token{AccessToken: signES256(testKey(), validHeader(), c), ExpiresAt: time.Now().Add(5 * time.Minute)}, nil
}

func edgeConfig(t *testing.T, up string, f *fakeIssuer) EdgeConfig {
	return EdgeConfig{Upstream: up, Audience: testAudience, Dereferencer: f, Verifier: testVerifier(t), CacheBytes: 1 << 20}
}

func startEdge(t *testing.T, cfg EdgeConfig) (*Edge, string) {
	t.Helper()
	e, err := NewEdge(cfg)
	if err != nil {
		t.Fatal(err)
	}
	return e, serve(t, e)
}

func TestEdgeReplacesReferenceToken(t *testing.T) {
	up := newUpstream(t, nil)
	f := newFakeIssuer()
	f.add("ref-alice", "alice", "j-alice")
	e, base := startEdge(t, edgeConfig(t, up.URL, f))

	for i := range 3 {
		resp := get(t, base, "/orders/1", bearer("ref-alice"), "X-Meshauth-Subject: mallory")
		if resp.status != 200 {
			t.Fatalf("request %d: %d %q", i, resp.status, resp.body)
		}
		r, _ := up.lastRequest()
		jwt, ok := strings.CutPrefix(r.Header.Get("Authorization"), "Bearer ")
		if !ok {
			t.Fatalf("upstream saw Authorization %q", r.Header.Get("Authorization"))
		}
		c, err := testVerifier(t).Verify([]byte(jwt))
		if err != nil || c.Subject != "alice" {
			t.Fatalf("upstream's token: %v %+v", err, c)
		}
		if got := r.Header.Get("X-Meshauth-Subject"); got != "" {
			t.Errorf("an identity field from outside reached the upstream: %q", got)
		}
	}
	if s := e.Stats(); f.calls.Load() != 1 || s.Hits != 2 || s.Misses != 1 || s.Entries != 1 {
		t.Errorf("%d dereferences, stats %+v; want 1, 2 hits", f.calls.Load(), s)
	}
}

// TestEdgeConnectionNamesAuthorization checks that a client's Connection
// field naming Authorization (hop-by-hop, so removed) does not strip the
// internal JWT the edge puts there.
func TestEdgeConnectionNamesAuthorization(t *testing.T) {
	up := newUpstream(t, nil)
	f := newFakeIssuer()
	f.add("ref-alice", "alice", "j-alice")
	_, base := startEdge(t, edgeConfig(t, up.URL, f))
	if resp := get(t, base, "/orders/1", bearer("ref-alice"), "Connection: keep-alive, Authorization"); resp.status != 200 {
		t.Fatalf("status %d %q", resp.status, resp.body)
	}
	r, _ := up.lastRequest()
	jwt, ok := strings.CutPrefix(r.Header.Get("Authorization"), "Bearer ")
	if !ok {
		t.Fatalf("upstream saw Authorization %q", r.Header.Get("Authorization"))
	}
	if c, err := testVerifier(t).Verify([]byte(jwt)); err != nil || c.Subject != "alice" {
		t.Fatalf("upstream's token: %v %+v", err, c)
	}
}

func TestEdgeRefusals(t *testing.T) {
	up := newUpstream(t, nil)
	f := newFakeIssuer()
	f.add("ref-alice", "alice", "j-alice")
	_, base := startEdge(t, edgeConfig(t, up.URL, f))
	_, withJWT := startEdge(t, func() EdgeConfig { c := edgeConfig(t, up.URL, f); c.AcceptInternalJWT = true; return c }())

	tests := []struct {
		name   string
		base   string
		target string
		fields []string
		status int
		www    string
	}{
		{"no token", base, "/", nil, 401, bareChallenge},
		{"other scheme", base, "/", []string{"Authorization: Basic YTpi"}, 401, bareChallenge},
		{"two tokens", base, "/", []string{bearer("ref-alice"), bearer("ref-alice")}, 400, invalidReq},
		{"malformed", base, "/", []string{"Authorization: Bearer a b"}, 400, invalidReq},
		{"token in query", base, "/?access_token=ref-alice", []string{bearer("ref-alice")}, 400, invalidReq},
		{"unknown reference token", base, "/", []string{bearer("ref-nobody")}, 401, invalidToken},
		{"internal JWT from outside", base, "/", []string{bearer(validToken())}, 401, invalidToken},
		{"invalid JWT where accepted", withJWT, "/", []string{bearer(tokenWith(func(_, c jsonObject) { c["aud"] = "ledger" }))}, 401, invalidToken},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			before := up.hits.Load()
			resp := get(t, tc.base, tc.target, tc.fields...)
			if resp.status != tc.status || !strings.HasPrefix(resp.header.Get("WWW-Authenticate"), tc.www) {
				t.Errorf("got %d %q %q, want %d %q", resp.status, resp.header.Get("WWW-Authenticate"), resp.body, tc.status, tc.www)
			}
			if strings.Contains(resp.body, "ref-") {
				t.Errorf("the answer quotes the token: %q", resp.body)
			}
			if up.hits.Load() != before {
				t.Error("a refused request reached the upstream")
			}
		})
	}

	tok := validToken()
	if resp := get(t, withJWT, "/", bearer(tok)); resp.status != 200 {
		t.Fatalf("valid internal JWT where accepted: %d %q", resp.status, resp.body)
	}
	if r, _ := up.lastRequest(); r.Header.Get("Authorization") != "Bearer "+tok {
		t.Errorf("upstream saw %q", r.Header.Get("Authorization"))
	}
}

func TestEdgeNegativeCacheAndRateLimit(t *testing.T) {
	up := newUpstream(t, nil)
	f := newFakeIssuer()
	cfg := edgeConfig(t, up.URL, f)
	cfg.DereferenceRate, cfg.DereferenceBurst = 0.001, 5
	e, base := startEdge(t, cfg)

	// One bad token repeated: one dereference.
	for range 10 {
		if resp := get(t, base, "/", bearer("garbage")); resp.status != 401 {
			t.Fatalf("garbage: %d", resp.status)
		}
	}
	if n := f.calls.Load(); n != 1 {
		t.Fatalf("a repeated bad token reached the issuer %d times", n)
	}
	// Distinct bad tokens: the burst, then 429.
	var limited int
	for i := range 20 {
		resp := get(t, base, "/", bearer(fmt.Sprintf("garbage%d", i)))
		switch resp.status {
		case 401:
		case 429:
			limited++
			if resp.header.Get("Retry-After") == "" {
				t.Error("429 without Retry-After")
			}
		default:
			t.Fatalf("garbage%d: %d", i, resp.status)
		}
	}
	if n := f.calls.Load(); n != 5 || limited != 16 {
		t.Errorf("%d dereferences, %d limited; want 5 (the burst), 16", n, limited)
	}
	if s := e.Stats(); s.NegativeHits != 9 || s.RateLimited != 16 || s.Refused != 5 {
		t.Errorf("stats %+v", s)
	}
	if up.hits.Load() != 0 {
		t.Error("garbage reached the upstream")
	}
}

func TestEdgeTrustedProxyAddress(t *testing.T) {
	_, loop, _ := net.ParseCIDR("127.0.0.0/8")
	peer := net.ParseIP("127.0.0.1").To4()
	tests := []struct {
		name    string
		xff     []string
		trusted []*net.IPNet
		want    string
	}{
		{"no proxy configured", []string{"192.0.2.1"}, nil, "127.0.0.1"},
		{"last of the field", []string{"198.51.100.7, 192.0.2.1"}, []*net.IPNet{loop}, "192.0.2.1"},
		{"last field", []string{"198.51.100.7", " 192.0.2.9 "}, []*net.IPNet{loop}, "192.0.2.9"},
		{"ipv6", []string{"2001:db8::1"}, []*net.IPNet{loop}, "2001:db8::1"},
		{"not an address", []string{"192.0.2.1, unknown"}, []*net.IPNet{loop}, "127.0.0.1"},
		{"none", nil, []*net.IPNet{loop}, "127.0.0.1"},
	}
	for _, tc := range tests {
		var xff [][]byte
		for _, v := range tc.xff {
			xff = append(xff, []byte(v))
		}
		if got := net.IP(clientAddr(peer, xff, tc.trusted)).String(); got != tc.want {
			t.Errorf("%s: %s, want %s", tc.name, got, tc.want)
		}
	}
}

func TestEdgeSingleflight(t *testing.T) {
	up := newUpstream(t, nil)
	f := newFakeIssuer()
	f.add("ref-burst", "bob", "j-bob")
	f.release = make(chan struct{})
	_, base := startEdge(t, edgeConfig(t, up.URL, f))

	const n = 20
	var wg sync.WaitGroup
	statuses := make([]int, n)
	for i := range n {
		wg.Go(func() { statuses[i] = get(t, base, "/", bearer("ref-burst")).status })
	}
	// Let the requests pile up on the one dereference, then answer it.
	time.Sleep(200 * time.Millisecond)
	close(f.release)
	wg.Wait()
	for i, s := range statuses {
		if s != 200 {
			t.Errorf("request %d: %d", i, s)
		}
	}
	if c := f.calls.Load(); c != 1 {
		t.Errorf("%d concurrent requests with one new token cost %d dereferences, want 1", n, c)
	}
}

func TestEdgeIssuerDown(t *testing.T) {
	up := newUpstream(t, nil)
	f := newFakeIssuer()
	f.add("ref-alice", "alice", "j-alice")
	f.add("ref-carol", "carol", "j-carol")
	_, base := startEdge(t, edgeConfig(t, up.URL, f))
	if resp := get(t, base, "/", bearer("ref-alice")); resp.status != 200 {
		t.Fatalf("warm-up: %d", resp.status)
	}
	f.down.Store(true)
	if resp := get(t, base, "/", bearer("ref-alice")); resp.status != 200 {
		t.Errorf("cached token with the issuer down: %d", resp.status)
	}
	resp := get(t, base, "/", bearer("ref-carol"))
	if resp.status != 503 || resp.header.Get("Retry-After") == "" {
		t.Errorf("new token with the issuer down: %d %v", resp.status, resp.header)
	}
	// Not remembered as refused: it works once the issuer is back.
	f.down.Store(false)
	if resp := get(t, base, "/", bearer("ref-carol")); resp.status != 200 {
		t.Errorf("after the issuer came back: %d", resp.status)
	}
}

func TestEdgeEvict(t *testing.T) {
	up := newUpstream(t, nil)
	f := newFakeIssuer()
	for _, who := range []string{"alice", "bob", "carol", "dave"} {
		f.add("ref-"+who, who, "j-"+who)
	}
	e, base := startEdge(t, edgeConfig(t, up.URL, f))
	for _, who := range []string{"alice", "bob", "carol", "dave"} {
		if resp := get(t, base, "/", bearer("ref-"+who)); resp.status != 200 {
			t.Fatalf("%s: %d", who, resp.status)
		}
	}
	revocations := []struct {
		r   token.Revocation
		ref string
	}{
		{token.Revocation{Issuer: testIssuer, Kind: token.RevokeTokenID, Value: "j-alice"}, "ref-alice"},
		{token.Revocation{Issuer: testIssuer, Kind: token.RevokeSubject, Value: "bob"}, "ref-bob"},
		{token.Revocation{Issuer: testIssuer, Kind: token.RevokeSession, Value: "grant-carol"}, "ref-carol"},
	}
	for _, rv := range revocations {
		// The issuer forgets the token as the revocation is published.
		f.remove(rv.ref)
		e.Evict(rv.r)
		if resp := get(t, base, "/", bearer(rv.ref)); resp.status != 401 {
			t.Errorf("%s after %s=%s: %d, want 401", rv.ref, rv.r.Kind, rv.r.Value, resp.status)
		}
	}
	if resp := get(t, base, "/", bearer("ref-dave")); resp.status != 200 {
		t.Errorf("an unrelated token was evicted: %d", resp.status)
	}
	// Another issuer's revocation of the same value reaches nothing here.
	e.Evict(token.Revocation{Issuer: "https://other.example", Kind: token.RevokeClientID, Value: "mobile"})
	if resp := get(t, base, "/", bearer("ref-dave")); resp.status != 200 {
		t.Errorf("another issuer's revocation evicted a token: %d", resp.status)
	}
	e.Evict(token.Revocation{Issuer: testIssuer, Kind: token.RevokeClientID, Value: "mobile"})
	if s := e.Stats(); s.Evictions != 4 || s.Entries != 0 {
		t.Errorf("stats %+v, want 4 evictions and no entry left", s)
	}
	if c := f.calls.Load(); c != 7 {
		t.Errorf("%d dereferences, want 4 + 3 after evictions", c)
	}
}

func TestEdgeMaxCacheLifetime(t *testing.T) {
	up := newUpstream(t, nil)
	f := newFakeIssuer()
	f.add("ref-alice", "alice", "j-alice")
	var now atomic.Int64
	now.Store(time.Now().UnixNano())
	cfg := edgeConfig(t, up.URL, f)
	cfg.MaxCacheLifetime = time.Minute
	cfg.Now = func() time.Time { return time.Unix(0, now.Load()) }
	_, base := startEdge(t, cfg)
	get(t, base, "/", bearer("ref-alice"))
	get(t, base, "/", bearer("ref-alice"))
	now.Add(int64(61 * time.Second))
	get(t, base, "/", bearer("ref-alice"))
	if c := f.calls.Load(); c != 2 {
		t.Errorf("%d dereferences, want 2: the entry ends after MaxCacheLifetime", c)
	}
}

func TestEdgeRefusesHugeHeaders(t *testing.T) {
	up := newUpstream(t, nil)
	_, base := startEdge(t, edgeConfig(t, up.URL, newFakeIssuer()))
	resp := get(t, base, "/", bearer(strings.Repeat("a", 20<<10)))
	if resp.status != http.StatusRequestHeaderFieldsTooLarge {
		t.Errorf("huge header: %d", resp.status)
	}
}
