package issuer

import (
	"bytes"
	"cmp"
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/sha256"
	"encoding/base64"
	"encoding/json"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"net/url"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/meshauth/meshauth/issuer/keys"
	"github.com/meshauth/meshauth/issuer/store"
	"github.com/meshauth/meshauth/issuer/store/filestore"
)

const testAdminToken = "test-admin-token-0123456789abcdef"

// env is an issuer served over loopback on a real embedded store.
type env struct {
	t      *testing.T
	url    string
	store  store.Store
	keys   *keys.Keyring
	srv    *Server
	logs   *syncBuffer
	dir    string
	sealer *keys.Sealer
	// skew moves the issuer's clock (nanoseconds ahead of the real one).
	skew atomic.Int64
}

// advance moves the issuer's clock d ahead of real time until t (the test
// or subtest) ends.
func (e *env) advance(t *testing.T, d time.Duration) {
	e.skew.Store(int64(d))
	t.Cleanup(func() { e.skew.Store(0) })
}

type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
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

var testKEK = bytes.Repeat([]byte{7}, 32)

func newEnv(t *testing.T) *env {
	t.Helper()
	return newEnvOn(t, t.TempDir(), nil)
}

// newEnvOn serves an issuer on the store in dir; wrap, if not nil, wraps the
// store (to inject failures).
func newEnvOn(t *testing.T, dir string, wrap func(store.Store) store.Store) *env {
	t.Helper()
	fst, err := filestore.Open(dir)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { fst.Close() })
	var st store.Store = fst
	if wrap != nil {
		st = wrap(st)
	}
	e := serveEnv(t, fst, st, "")
	e.dir = dir
	return e
}

// serveEnv serves an issuer on st, loading its signing keys from keyStore
// (st unwrapped, so that injected failures spare the keys). Several may
// serve one store, as replicas do: a replica is given the issuer URL of the
// first, while its env's url stays its own address.
func serveEnv(t *testing.T, keyStore, st store.Store, issuerURL string) *env {
	t.Helper()
	return serveEnvWith(t, keyStore, st, issuerURL, nil)
}

// serveEnvWith is serveEnv with configure, if not nil, changing the
// issuer's Config once the env's url is known.
func serveEnvWith(t *testing.T, keyStore, st store.Store, issuerURL string, configure func(*env, *Config)) *env {
	t.Helper()
	sealer, err := keys.NewSealer(testKEK)
	if err != nil {
		t.Fatal(err)
	}
	logs := &syncBuffer{}
	log := slog.New(slog.NewTextHandler(logs, &slog.HandlerOptions{Level: slog.LevelDebug}))
	keyring, err := keys.NewKeyring(keys.KeyringConfig{Store: keyStore, Sealer: sealer, Logger: log, MaxTokenLifetime: 5 * time.Minute})
	if err != nil {
		t.Fatal(err)
	}
	if err := keyring.Load(context.Background()); err != nil {
		t.Fatal(err)
	}
	e := &env{t: t, store: st, keys: keyring, logs: logs, sealer: sealer}
	hs := httptest.NewUnstartedServer(nil)
	e.url = "http://" + hs.Listener.Addr().String()
	cfg := Config{IssuerURL: cmp.Or(issuerURL, e.url), Store: st, Keys: keyring, AdminToken: testAdminToken, Logger: log,
		Now: func() time.Time { return time.Now().Add(time.Duration(e.skew.Load())) }}
	if configure != nil {
		configure(e, &cfg)
	}
	e.srv, err = New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	hs.Config.Handler = e.srv
	hs.Start()
	t.Cleanup(func() {
		hs.Close()
		if strings.Contains(logs.String(), testAdminToken) {
			t.Error("the admin token appeared in the logs")
		}
	})
	return e
}

// register registers md with the admin token and returns the registration.
func (e *env) register(md ClientMetadata) *Registration {
	e.t.Helper()
	status, body := e.do(http.MethodPost, "/register", "application/json", mustJSON(e.t, md), "Bearer "+testAdminToken)
	if status != http.StatusCreated {
		e.t.Fatalf("register: %d %s", status, body)
	}
	var reg Registration
	if err := json.Unmarshal(body, &reg); err != nil {
		e.t.Fatal(err)
	}
	if reg.ClientSecret != "" && strings.Contains(e.logs.String(), reg.ClientSecret) {
		e.t.Error("a client secret appeared in the logs")
	}
	return &reg
}

// do sends one request and returns the status and body.
func (e *env) do(method, path, contentType string, body []byte, authz string) (int, []byte) {
	e.t.Helper()
	status, _, b := e.doHeader(method, path, contentType, body, authz)
	return status, b
}

func (e *env) doHeader(method, path, contentType string, body []byte, authz string) (int, http.Header, []byte) {
	e.t.Helper()
	h := http.Header{}
	if contentType != "" {
		h.Set("Content-Type", contentType)
	}
	if authz != "" {
		h.Set("Authorization", authz)
	}
	return e.send(method, path, body, h)
}

// send sends one request with the header h and returns the status, header
// and body of the answer.
func (e *env) send(method, path string, body []byte, h http.Header) (int, http.Header, []byte) {
	e.t.Helper()
	req, err := http.NewRequest(method, e.url+path, bytes.NewReader(body))
	if err != nil {
		e.t.Fatal(err)
	}
	req.Header = h
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		e.t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, resp.Header, b
}

// tokenRequest posts form to the token endpoint.
func (e *env) tokenRequest(form url.Values, authz string) (int, http.Header, map[string]any) {
	e.t.Helper()
	status, h, b := e.doHeader(http.MethodPost, "/token", "application/x-www-form-urlencoded", []byte(form.Encode()), authz)
	var m map[string]any
	if err := json.Unmarshal(b, &m); err != nil {
		e.t.Fatalf("token answer is not JSON: %d %q", status, b)
	}
	return status, h, m
}

func basic(id, secret string) string {
	return "Basic " + base64.StdEncoding.EncodeToString([]byte(url.QueryEscape(id)+":"+url.QueryEscape(secret)))
}

func mustJSON(t *testing.T, v any) []byte {
	t.Helper()
	b, err := json.Marshal(v)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// clientKey is a client's ES256 key for private_key_jwt.
type clientKey struct {
	kid  string
	priv *ecdsa.PrivateKey
}

func newClientKey(t *testing.T, kid string) *clientKey {
	t.Helper()
	k, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	return &clientKey{kid: kid, priv: k}
}

// jwks returns the public JWK Set of the key.
func (k *clientKey) jwks() json.RawMessage {
	point, err := k.priv.PublicKey.Bytes() // 0x04 || X || Y
	if err != nil {
		panic(err)
	}
	enc := base64.RawURLEncoding.EncodeToString
	doc := map[string]any{"keys": []any{map[string]string{
		"kty": "EC", "crv": "P-256", "kid": k.kid, "alg": "ES256", "use": "sig", "x": enc(point[1:33]), "y": enc(point[33:]),
	}}}
	b, _ := json.Marshal(doc)
	return b
}

// sign returns a compact ES256 JWS over claims with the given header fields.
func (k *clientKey) sign(t *testing.T, header, claims map[string]any) string {
	t.Helper()
	h := map[string]any{"alg": "ES256", "kid": k.kid}
	for name, v := range header {
		if v == nil {
			delete(h, name)
		} else {
			h[name] = v
		}
	}
	input := b64json(t, h) + "." + b64json(t, claims)
	sum := sha256.Sum256([]byte(input))
	r, s, err := ecdsa.Sign(rand.Reader, k.priv, sum[:])
	if err != nil {
		t.Fatal(err)
	}
	sig := append(r.FillBytes(make([]byte, 32)), s.FillBytes(make([]byte, 32))...)
	return input + "." + base64.RawURLEncoding.EncodeToString(sig)
}

func b64json(t *testing.T, v any) string {
	return base64.RawURLEncoding.EncodeToString(mustJSON(t, v))
}

// failingStore fails every call once broken is set, as an unreachable
// database would.
type failingStore struct {
	store.Store
	mu     sync.Mutex
	broken bool
}

func (f *failingStore) set(broken bool) {
	f.mu.Lock()
	f.broken = broken
	f.mu.Unlock()
}

func (f *failingStore) fail() bool {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.broken
}

var errDown = io.ErrUnexpectedEOF

func (f *failingStore) CreateClient(ctx context.Context, c *store.Client) error {
	if f.fail() {
		return errDown
	}
	return f.Store.CreateClient(ctx, c)
}

func (f *failingStore) GetClient(ctx context.Context, id string) (*store.Client, error) {
	if f.fail() {
		return nil, errDown
	}
	return f.Store.GetClient(ctx, id)
}

func (f *failingStore) UseOnce(ctx context.Context, v string, exp time.Time) error {
	if f.fail() {
		return errDown
	}
	return f.Store.UseOnce(ctx, v, exp)
}

func (f *failingStore) PutAccessToken(ctx context.Context, t *store.AccessToken) error {
	if f.fail() {
		return errDown
	}
	return f.Store.PutAccessToken(ctx, t)
}

func (f *failingStore) Ping(ctx context.Context) error {
	if f.fail() {
		return errDown
	}
	return f.Store.Ping(ctx)
}
