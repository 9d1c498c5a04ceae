package main

import (
	"context"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"net/http/httputil"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/meshauth/meshauth/internal/flagconf"
	"github.com/meshauth/meshauth/internal/natstest"
	"github.com/meshauth/meshauth/proxy"
	"github.com/meshauth/meshauth/token"
)

// tokenEndpointFront stands between the edge and the issuer's token
// endpoint: it counts the requests that reach it, and closing it makes the
// endpoint unreachable.
type tokenEndpointFront struct {
	*httptest.Server
	requests atomic.Int64
}

func newTokenEndpointFront(t *testing.T, issuerURL string) *tokenEndpointFront {
	t.Helper()
	target, err := url.Parse(issuerURL)
	if err != nil {
		t.Fatal(err)
	}
	f := &tokenEndpointFront{}
	rp := httputil.NewSingleHostReverseProxy(target)
	f.Server = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		f.requests.Add(1)
		rp.ServeHTTP(w, r)
	}))
	t.Cleanup(f.Close)
	return f
}

// edgeSetup is an issuer, a service "orders" that checks its tokens with a
// real Verifier, and an edge in front of it whose token endpoint is
// behind a tokenEndpointFront.
type edgeSetup struct {
	issuerURL, base string
	admin           string // the admin listener's base URL
	front           *tokenEndpointFront
	edge            *proxy.Edge
	mobileSecret    string
	seen            atomic.Value // *token.Claims the service last verified
}

func startEdgeSetup(t *testing.T, mod func(*edgeFlags)) *edgeSetup {
	t.Helper()
	return startEdgeSetupWith(t, nil, mod)
}

// startEdgeSetupWith is startEdgeSetup with the issuer's flags changed by
// setIssuer, if not nil.
func startEdgeSetupWith(t *testing.T, setIssuer func(*issuerFlags), mod func(*edgeFlags)) *edgeSetup {
	t.Helper()
	s := &edgeSetup{issuerURL: startIssuerWith(t, setIssuer)}
	s.mobileSecret = register(t, s.issuerURL, "--id", "mobile", "--access-token-format", "reference", "--scope", "orders.read profile", "--allowed-audience", "orders")
	register(t, s.issuerURL, "--id", "orders")
	edgeSecret := register(t, s.issuerURL, "--id", "edge", "--scope", "dereference",
		"--grant-type", "urn:ietf:params:oauth:grant-type:token-exchange", "--allowed-audience", "orders")

	keys, err := fetchKeys(s.issuerURL)
	if err != nil {
		t.Fatal(err)
	}
	verifier, err := token.NewVerifier(token.Policy{Issuer: s.issuerURL, Audiences: []string{"orders"}}, keys)
	if err != nil {
		t.Fatal(err)
	}
	svc := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		tok, _ := strings.CutPrefix(r.Header.Get("Authorization"), "Bearer ")
		c, err := verifier.Verify([]byte(tok))
		if err != nil {
			http.Error(w, err.Error(), http.StatusUnauthorized)
			return
		}
		s.seen.Store(c)
		io.WriteString(w, "hello "+c.Subject)
	}))
	t.Cleanup(svc.Close)

	s.front = newTokenEndpointFront(t, s.issuerURL)
	admin := freeAddr(t)
	f := &edgeFlags{listen: "127.0.0.1:0", upstream: svc.URL, issuer: s.issuerURL, audience: "orders", clientID: "edge",
		tokenURL: s.front.URL + "/token", adminListen: admin, cacheMiB: 1, maxCacheLifetime: time.Minute,
		negativeLifetime: 10 * time.Second, negativeEntries: 1024, dereferenceRate: 0.01, dereferenceBurst: 5, rateLimitedAddresses: 1024,
		dereferenceTimeout: 2 * time.Second, upstreamTimeout: 5 * time.Second}
	if mod != nil {
		mod(f)
	}
	ctx, cancel := context.WithCancel(context.Background())
	type started struct {
		addr string
		edge *proxy.Edge
	}
	startc := make(chan started, 1)
	errc := make(chan error, 1)
	go func() {
		errc <- serveEdge(ctx, f, edgeSecret, slog.New(slog.NewTextHandler(io.Discard, nil)), func(a string, e *proxy.Edge) { startc <- started{a, e} })
	}()
	select {
	case st := <-startc:
		s.base, s.edge = "http://"+st.addr, st.edge
	case err := <-errc:
		cancel()
		t.Fatal(err)
	}
	t.Cleanup(func() {
		cancel()
		if err := <-errc; err != nil {
			t.Errorf("edge stop: %v", err)
		}
	})
	s.admin = "http://" + admin
	waitReady(t, s.admin+"/readyz")
	return s
}

// fetchKeys reads the issuer's JWKS.
func fetchKeys(issuerURL string) (*token.KeySet, error) {
	resp, err := http.Get(issuerURL + "/jwks.json")
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	if err != nil {
		return nil, err
	}
	keys, err := token.ParseJWKS(body)
	if err != nil {
		return nil, err
	}
	return token.NewKeySet(keys), nil
}

// call sends GET / to the edge with Authorization: Bearer tok and returns
// the status and the response.
func call(t *testing.T, base, tok string) (int, http.Header, string) {
	t.Helper()
	req, _ := http.NewRequest(http.MethodGet, base+"/", nil)
	req.Header.Set("Authorization", "Bearer "+tok)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, resp.Header, string(body)
}

func TestEdgeOpaqueInJWTOut(t *testing.T) {
	s := startEdgeSetup(t, nil)
	ref := tokenFor(t, s.issuerURL, "mobile", s.mobileSecret, "orders")
	if strings.Contains(ref, ".") {
		t.Fatalf("mobile's token is not a reference token: %q", ref)
	}
	for range 3 {
		if status, _, body := call(t, s.base, ref); status != 200 || body != "hello mobile" {
			t.Fatalf("%d %q", status, body)
		}
	}
	c := s.seen.Load().(*token.Claims)
	if c.Subject != "mobile" || c.ClientID != "mobile" || len(c.Audience) != 1 || c.Audience[0] != "orders" || c.Scope != "orders.read profile" {
		t.Errorf("the service verified %+v", c)
	}
	if n := s.front.requests.Load(); n != 1 {
		t.Errorf("3 requests with one token cost %d dereferences, want 1", n)
	}
	metrics := fetchBody(t, s.admin+"/metrics")
	for _, want := range []string{"meshauth_edge_cache_hits_total 2", "meshauth_edge_cache_misses_total 1", "meshauth_edge_dereferences_total 1",
		"meshauth_edge_issuer_duration_seconds_count 1", "meshauth_edge_cache_entries 1"} {
		if !strings.Contains(metrics, want+"\n") {
			t.Errorf("metrics lack %q:\n%s", want, grepLines(metrics, "meshauth_edge"))
		}
	}

	// The JWT the service got, sent from outside, is refused.
	jwt := tokenFor(t, s.issuerURL, "web", register(t, s.issuerURL, "--id", "web", "--allowed-audience", "orders"), "orders")
	if status, h, _ := call(t, s.base, jwt); status != 401 || !strings.Contains(h.Get("WWW-Authenticate"), "invalid_token") {
		t.Errorf("internal JWT from outside: %d %v", status, h)
	}
}

func TestEdgeAcceptsInternalJWTWhenConfigured(t *testing.T) {
	s := startEdgeSetup(t, func(f *edgeFlags) { f.acceptInternalJWT = true })
	webSecret := register(t, s.issuerURL, "--id", "web", "--allowed-audience", "orders")
	if status, _, body := call(t, s.base, tokenFor(t, s.issuerURL, "web", webSecret, "orders")); status != 200 || body != "hello web" {
		t.Errorf("internal JWT where accepted: %d %q", status, body)
	}
}

func TestEdgeIssuerUnreachable(t *testing.T) {
	s := startEdgeSetup(t, nil)
	cached := tokenFor(t, s.issuerURL, "mobile", s.mobileSecret, "orders")
	fresh := tokenFor(t, s.issuerURL, "mobile", s.mobileSecret, "orders")
	if status, _, _ := call(t, s.base, cached); status != 200 {
		t.Fatalf("warm-up: %d", status)
	}
	s.front.Close()
	if status, _, _ := call(t, s.base, cached); status != 200 {
		t.Errorf("cached token with the issuer unreachable: %d", status)
	}
	status, h, _ := call(t, s.base, fresh)
	if status != 503 || h.Get("Retry-After") == "" {
		t.Errorf("new token with the issuer unreachable: %d %v", status, h)
	}
}

func TestEdgeGarbageFlood(t *testing.T) {
	s := startEdgeSetup(t, nil)
	const n = 200
	limited := 0
	for i := range n {
		status, h, body := call(t, s.base, fmt.Sprintf("garbage-%d", i%50))
		switch {
		case status == 401 && strings.Contains(h.Get("WWW-Authenticate"), "invalid_token"):
		case status == 429:
			limited++
		default:
			t.Fatalf("garbage %d: %d %q", i, status, body)
		}
	}
	// The burst of 5 dereferences, then nothing at 0.01/s: the negative
	// cache answers the tokens seen, the rate limit the others.
	if got := s.front.requests.Load(); got > 5 {
		t.Errorf("%d garbage requests reached the issuer %d times, want at most the burst", n, got)
	}
	if limited == 0 {
		t.Error("nothing was rate-limited")
	}
	st := s.edge.Stats()
	if st.NegativeHits == 0 || st.Refused == 0 {
		t.Errorf("stats %+v", st)
	}
}

// TestEdgeRevocationEvicts: with the issuer and the edge on NATS, a
// reference token revoked by its client (RFC 7009) or through the admin
// API is refused at the edge as soon as the revocation arrives, long
// before --max-cache-lifetime.
func TestEdgeRevocationEvicts(t *testing.T) {
	ns := natstest.Start(t, t.TempDir(), -1)
	s := startEdgeSetupWith(t, func(f *issuerFlags) { f.nats.URLs = ns.ClientURL() },
		func(f *edgeFlags) { f.nats.URLs = ns.ClientURL(); f.maxCacheLifetime = time.Hour })
	byClient := tokenFor(t, s.issuerURL, "mobile", s.mobileSecret, "orders")
	other := tokenFor(t, s.issuerURL, "mobile", s.mobileSecret, "orders")
	for _, tok := range []string{byClient, other} {
		if status, _, _ := call(t, s.base, tok); status != 200 {
			t.Fatalf("warm-up: %d", status)
		}
	}

	req, _ := http.NewRequest(http.MethodPost, s.issuerURL+"/revoke", strings.NewReader(url.Values{"token": {byClient}}.Encode()))
	req.SetBasicAuth("mobile", s.mobileSecret)
	req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	resp, err := http.DefaultClient.Do(req)
	if err != nil || resp.StatusCode != 200 {
		t.Fatalf("RFC 7009 revocation: %v %v", err, resp)
	}
	resp.Body.Close()
	revoked := time.Now()
	waitFor(t, "the revocation to reach the edge", func() bool { status, _, _ := call(t, s.base, byClient); return status == 401 })
	t.Logf("RFC 7009 revocation refused at the edge after %v", time.Since(revoked))
	if status, _, _ := call(t, s.base, other); status != 200 {
		t.Errorf("another token of the client: %d", status)
	}

	if err := run(context.Background(), []string{"revoke", "subject", "mobile", "--issuer", s.issuerURL}, io.Discard, io.Discard); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "the subject's revocation to reach the edge", func() bool { status, _, _ := call(t, s.base, other); return status == 401 })
	if st := s.edge.Stats(); st.Evictions < 2 {
		t.Errorf("stats %+v: want the two tokens evicted", st)
	}
}

// TestEdgeForeignIssuer: an edge in front of clients of another vendor's
// authorization server. The issuer, configured (through its config file)
// with that server's RFC 7662 endpoint and its credentials there,
// introspects each token itself and mints the internal JWT.
func TestEdgeForeignIssuer(t *testing.T) {
	var introspections atomic.Int64
	exp := time.Now().Add(time.Minute).Unix()
	vendor := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		introspections.Add(1)
		id, secret, _ := r.BasicAuth()
		w.Header().Set("Content-Type", "application/json")
		if id != "meshauth" || secret != "vendor-secret" || r.PostFormValue("token") != "vendor-token" {
			io.WriteString(w, `{"active":false}`)
			return
		}
		fmt.Fprintf(w, `{"active":true,"sub":"carol","client_id":"vendor-app","scope":"orders.read","exp":%d}`, exp)
	}))
	defer vendor.Close()

	dir := t.TempDir()
	secretFile := filepath.Join(dir, "vendor-secret")
	configFile := filepath.Join(dir, "issuer.yaml")
	if err := os.WriteFile(secretFile, []byte("vendor-secret\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	config := "foreign_issuers:\n  - issuer: https://vendor.example\n    introspection_url: " + vendor.URL +
		"\n    client_id: meshauth\n    client_secret_file: " + secretFile + "\n    audiences: [orders]\n"
	if err := os.WriteFile(configFile, []byte(config), 0o600); err != nil {
		t.Fatal(err)
	}
	fs := flag.NewFlagSet("issuer", flag.ContinueOnError)
	var parsed issuerFlags
	parsed.register(fs, ":8080")
	var file issuerFile
	if err := flagconf.ParseWith(fs, []string{"--config", configFile}, func(string) string { return "" }, &file); err != nil {
		t.Fatal(err)
	}
	foreign, err := file.foreignIssuers()
	if err != nil || len(foreign) != 1 || foreign[0].ClientSecret != "vendor-secret" {
		t.Fatalf("foreign issuers from the config file: %v %+v", err, foreign)
	}

	s := startEdgeSetupWith(t, func(f *issuerFlags) { f.foreign = foreign }, func(f *edgeFlags) { f.subjectIssuer = "https://vendor.example" })
	for range 2 {
		if status, _, body := call(t, s.base, "vendor-token"); status != 200 || body != "hello https://vendor.example#carol" {
			t.Fatalf("vendor token: %d %q", status, body)
		}
	}
	if c := s.seen.Load().(*token.Claims); c.ClientID != "https://vendor.example#vendor-app" || c.Scope != "orders.read" || c.Issuer != s.issuerURL {
		t.Errorf("the service verified %+v", c)
	}
	if n := introspections.Load(); n != 1 {
		t.Errorf("%d introspections at the vendor, want 1 (then cached)", n)
	}
	if status, _, _ := call(t, s.base, "forged"); status != 401 {
		t.Errorf("a token the vendor does not vouch for: %d", status)
	}
}
