package proxy

import (
	"bufio"
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/sha256"
	"encoding/base64"
	"encoding/json"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/meshauth/meshauth/token"
)

const (
	testIssuer   = "https://issuer.example"
	testAudience = "orders"
	testKID      = "k1"
)

// testKey is the ES256 key the tests sign with, made once per run.
var testKey = sync.OnceValue(func() *ecdsa.PrivateKey {
	k, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		panic(err)
	}
	return k
})

var b64 = base64.RawURLEncoding

// signES256 returns a JWS compact serialization of header and claims,
// signed by key with ES256 (RFC 7518 §3.4: R||S, 32 bytes each), built
// with the standard library only. It signs whatever it is given, so that
// tests can build hostile tokens.
func signES256(key *ecdsa.PrivateKey, header, claims any) string {
	msg := b64.EncodeToString(mustJSON(header)) + "." + b64.EncodeToString(mustJSON(claims))
	h := sha256.Sum256([]byte(msg))
	r, s, err := ecdsa.Sign(rand.Reader, key, h[:])
	if err != nil {
		panic(err)
	}
	sig := make([]byte, 64)
	r.FillBytes(sig[:32])
	s.FillBytes(sig[32:])
	return msg + "." + b64.EncodeToString(sig)
}

func mustJSON(v any) []byte {
	if s, ok := v.(string); ok {
		return []byte(s)
	}
	b, err := json.Marshal(v)
	if err != nil {
		panic(err)
	}
	return b
}

type jsonObject = map[string]any

func validHeader() jsonObject {
	return jsonObject{"alg": "ES256", "typ": "at+jwt", "kid": testKID}
}

func validClaims() jsonObject {
	now := time.Now().Unix()
	return jsonObject{
		"iss": testIssuer, "aud": testAudience, "exp": now + 300, "iat": now - 10,
		"sub": "alice", "client_id": "web", "scope": "orders:read orders:write", "jti": "j1",
	}
}

// tokenWith returns a token with the valid header and claims, changed by
// edit.
func tokenWith(edit func(h, c jsonObject)) string {
	h, c := validHeader(), validClaims()
	if edit != nil {
		edit(h, c)
	}
	return signES256(testKey(), h, c)
}

func validToken() string { return tokenWith(nil) }

func testVerifier(tb testing.TB) *token.Verifier {
	tb.Helper()
	keys := token.NewKeySet([]token.Key{{ID: testKID, Algorithm: "ES256", Public: &testKey().PublicKey}})
	v, err := token.NewVerifier(token.Policy{Issuer: testIssuer, Audiences: []string{testAudience}}, keys)
	if err != nil {
		tb.Fatal(err)
	}
	return v
}

// testPolicy: /public is open, writes to /orders need orders:write,
// /admin needs admin, anything else a valid token.
func testPolicy() Policy {
	return Policy{
		Routes: []Route{
			{PathPrefix: "/public", Public: true},
			{PathPrefix: "/orders", Methods: []string{"POST", "DELETE"}, Scopes: []string{"orders:write"}},
			{PathPrefix: "/admin", Scopes: []string{"admin", "orders:read"}},
		},
	}
}

func testConfig(tb testing.TB) Config {
	return Config{Verifier: testVerifier(tb), Rules: mustRules(tb, testPolicy())}
}

// mustRules compiles p.
func mustRules(tb testing.TB, p Policy) *Rules {
	tb.Helper()
	r, err := NewRules(p)
	if err != nil {
		tb.Fatal(err)
	}
	return r
}

// upstream is a loopback service that records what reaches it.
type upstream struct {
	*httptest.Server
	hits atomic.Int64
	mu   sync.Mutex
	last *http.Request
	body []byte
}

func newUpstream(t *testing.T, h http.HandlerFunc) *upstream {
	t.Helper()
	u := &upstream{}
	u.Server = httptest.NewServer(u.record(h))
	t.Cleanup(u.Close)
	return u
}

// record returns a handler that records each request, then runs h or
// answers "upstream says hi".
func (u *upstream) record(h http.HandlerFunc) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		body, _ := io.ReadAll(r.Body)
		u.mu.Lock()
		u.last, u.body = r, body
		u.mu.Unlock()
		u.hits.Add(1)
		if h != nil {
			h(w, r)
			return
		}
		w.Header().Set("Content-Type", "text/plain")
		io.WriteString(w, "upstream says hi")
	})
}

func (u *upstream) lastRequest() (*http.Request, []byte) {
	u.mu.Lock()
	defer u.mu.Unlock()
	return u.last, u.body
}

// listen returns a loopback listener.
func listen(t *testing.T) net.Listener {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	return ln
}

// server is what Sidecar and AuthServer share.
type server interface {
	Serve(net.Listener) error
	Shutdown(context.Context) error
}

// serve runs s on a loopback listener until the test ends and returns its
// base URL.
func serve(t *testing.T, s server) string {
	t.Helper()
	ln := listen(t)
	done := make(chan error, 1)
	go func() { done <- s.Serve(ln) }()
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		if err := s.Shutdown(ctx); err != nil {
			t.Errorf("Shutdown: %v", err)
		}
		if err := <-done; err != nil {
			t.Errorf("Serve: %v", err)
		}
	})
	return "http://" + ln.Addr().String()
}

// runSidecar starts a Sidecar that the test shuts down itself; served
// gets what Serve returns.
func runSidecar(t *testing.T, cfg SidecarConfig) (s *Sidecar, base string, served <-chan error) {
	t.Helper()
	s, err := NewSidecar(cfg)
	if err != nil {
		t.Fatal(err)
	}
	ln := listen(t)
	done := make(chan error, 1)
	go func() { done <- s.Serve(ln) }()
	return s, "http://" + ln.Addr().String(), done
}

func startSidecar(t *testing.T, cfg SidecarConfig) string {
	t.Helper()
	s, err := NewSidecar(cfg)
	if err != nil {
		t.Fatal(err)
	}
	return serve(t, s)
}

// rawResponse is a response read off the wire.
type rawResponse struct {
	status int
	header http.Header
	body   string
}

// rawRequest sends request, raw HTTP/1.1 text with "\n" line ends, to
// addr (a base URL) and reads the response: the tests need fields that
// net/http would not send as written (repeated, hop-by-hop, odd paths).
func rawRequest(t *testing.T, base, request string) rawResponse {
	t.Helper()
	conn, err := net.Dial("tcp", strings.TrimPrefix(base, "http://"))
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	conn.SetDeadline(time.Now().Add(10 * time.Second))
	if _, err := io.WriteString(conn, strings.ReplaceAll(request, "\n", "\r\n")); err != nil {
		t.Fatal(err)
	}
	method, _, _ := strings.Cut(request, " ")
	resp, err := http.ReadResponse(bufio.NewReader(conn), &http.Request{Method: method})
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	return rawResponse{resp.StatusCode, resp.Header, string(body)}
}

// get sends a GET with the given header fields, each "Name: value".
func get(t *testing.T, base, target string, fields ...string) rawResponse {
	t.Helper()
	req := "GET " + target + " HTTP/1.1\nHost: svc\nConnection: close\n"
	for _, f := range fields {
		req += f + "\n"
	}
	return rawRequest(t, base, req+"\n")
}

func bearer(tok string) string { return "Authorization: Bearer " + tok }

// syncBuffer is a log destination safe for the goroutines of a
// DecisionLog or a PolicyFile.
type syncBuffer struct {
	mu sync.Mutex
	b  strings.Builder
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}
