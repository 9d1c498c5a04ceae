package jwks

import (
	"bytes"
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"testing/synctest"
	"time"

	"github.com/meshauth/meshauth/internal/inprocess"
	"github.com/meshauth/meshauth/internal/testwait"
	"github.com/meshauth/meshauth/token"
)

// ksJWK returns a new P-256 verification key with ID kid and its JWK.
func ksJWK(t testing.TB, kid string) (token.Key, map[string]any) {
	t.Helper()
	_, k, jwk := ksSigningKey(t, kid)
	return k, jwk
}

// ksSigningKey is ksJWK with the private key.
func ksSigningKey(t testing.TB, kid string) (*ecdsa.PrivateKey, token.Key, map[string]any) {
	t.Helper()
	priv, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	point, err := priv.PublicKey.Bytes()
	if err != nil {
		t.Fatal(err)
	}
	enc := base64.RawURLEncoding.EncodeToString
	jwk := map[string]any{
		"kty": "EC", "crv": "P-256", "alg": "ES256", "use": "sig", "kid": kid,
		"x": enc(point[1:33]), "y": enc(point[33:]),
	}
	return priv, token.Key{ID: kid, Algorithm: "ES256", Public: &priv.PublicKey}, jwk
}

// ksDoc returns a JWK Set of jwks.
func ksDoc(t testing.TB, jwks ...map[string]any) []byte {
	t.Helper()
	if jwks == nil {
		jwks = []map[string]any{}
	}
	b, err := json.Marshal(map[string]any{"keys": jwks})
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// ksHas reports whether c finds key k by its ID without refreshing.
func ksHas(c *KeySetCache, k token.Key) bool {
	ks := c.keys.Load()
	if ks == nil {
		return false
	}
	got, ok := ks.Lookup(k.ID)
	return ok && got.Public.(*ecdsa.PublicKey).Equal(k.Public)
}

// ksRefresh runs a refresh, or waits for the one running, and returns its
// error.
func ksRefresh(c *KeySetCache) error {
	f := c.refresh()
	<-f.done
	return f.err
}

// ksWait waits a few seconds at most for cond, for the tests that fetch
// from a real server on loopback.
func ksWait(t testing.TB, what string, cond func() bool) {
	t.Helper()
	testwait.For(t, 5*time.Second, testwait.Holds(what, cond))
}

var ksT0 = time.Date(2030, 1, 1, 0, 0, 0, 0, time.UTC)

// ksClock is a settable clock.
type ksClock struct {
	mu sync.Mutex
	t  time.Time
}

func (c *ksClock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.t
}

func (c *ksClock) Advance(d time.Duration) {
	c.mu.Lock()
	c.t = c.t.Add(d)
	c.mu.Unlock()
}

// ksServer is an issuer for the key set cache to fetch from: a JWK Set at
// /jwks.json, metadata documents and redirects at chosen paths.
type ksServer struct {
	URL string
	// srv serves on loopback; client answers in process instead, for tests
	// in a synctest bubble (newBubbleKSServer).
	srv          *httptest.Server
	client       *http.Client
	jwksHits     atomic.Int64
	metadataHits atomic.Int64

	mu           sync.Mutex
	jwks         []byte
	status       int    // of /jwks.json; 0 means 200
	cacheControl string // of /jwks.json
	gate         chan struct{}
	arrived      chan struct{}
	metadata     map[string][]byte // nil document: status 500
	redirects    map[string]string
}

func newKSServer(t testing.TB) *ksServer {
	s := &ksServer{metadata: map[string][]byte{}, redirects: map[string]string{}}
	s.srv = httptest.NewServer(http.HandlerFunc(s.serve))
	s.URL = s.srv.URL
	t.Cleanup(s.srv.Close)
	return s
}

// newBubbleKSServer is a ksServer that answers its client in process, for
// tests whose timers run on a synctest bubble's clock.
func newBubbleKSServer() *ksServer {
	s := &ksServer{URL: "https://keys.example", metadata: map[string][]byte{}, redirects: map[string]string{}}
	s.client = inprocess.Client(http.HandlerFunc(s.serve))
	return s
}

func (s *ksServer) serve(w http.ResponseWriter, r *http.Request) {
	s.mu.Lock()
	doc, status, cc, gate, arrived := s.jwks, s.status, s.cacheControl, s.gate, s.arrived
	md, isMD := s.metadata[r.URL.Path]
	loc, isRedirect := s.redirects[r.URL.Path]
	s.mu.Unlock()
	switch {
	case r.URL.Path == "/jwks.json":
		s.jwksHits.Add(1)
		if arrived != nil {
			arrived <- struct{}{}
		}
		if gate != nil {
			select {
			case <-gate:
			case <-r.Context().Done():
				return
			}
		}
		if status != 0 {
			http.Error(w, "unavailable", status)
			return
		}
		if cc != "" {
			w.Header().Set("Cache-Control", cc)
		}
		w.Header().Set("Content-Type", "application/jwk-set+json")
		w.Write(doc)
	case isMD:
		s.metadataHits.Add(1)
		if md == nil {
			http.Error(w, "broken", http.StatusInternalServerError)
			return
		}
		w.Header().Set("Content-Type", "application/json")
		w.Write(md)
	case isRedirect:
		http.Redirect(w, r, loc, http.StatusFound)
	default:
		http.NotFound(w, r)
	}
}

func (s *ksServer) setJWKS(doc []byte, status int, cacheControl string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.jwks, s.status, s.cacheControl = doc, status, cacheControl
}

func (s *ksServer) setMetadata(t testing.TB, path, issuer, jwksURI string) {
	t.Helper()
	doc, err := json.Marshal(map[string]string{"issuer": issuer, "jwks_uri": jwksURI})
	if err != nil {
		t.Fatal(err)
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	s.metadata[path] = doc
}

func ksLogger(t testing.TB) *slog.Logger {
	return slog.New(slog.NewTextHandler(t.Output(), nil))
}

func newTestKeySetCache(t testing.TB, cfg KeySetConfig) *KeySetCache {
	t.Helper()
	if cfg.Logger == nil {
		cfg.Logger = ksLogger(t)
	}
	c, err := NewKeySetCache(cfg)
	if err != nil {
		t.Fatal(err)
	}
	return c
}

func TestNewKeySetCache(t *testing.T) {
	for _, tc := range []struct {
		name string
		cfg  KeySetConfig
		err  string // "" if valid
	}{
		{"issuer", KeySetConfig{Issuer: "https://issuer.example"}, ""},
		{"issuer loopback http", KeySetConfig{Issuer: "http://127.0.0.1:8080"}, ""},
		{"issuer localhost http", KeySetConfig{Issuer: "http://localhost:8080/tenant"}, ""},
		{"issuer IPv6 loopback http", KeySetConfig{Issuer: "http://[::1]:8080"}, ""},
		{"jwks url", KeySetConfig{JWKSURL: "https://issuer.example/jwks.json"}, ""},
		{"file", KeySetConfig{JWKSFile: "keys.json", MinRefresh: time.Second, MaxRefresh: time.Second}, ""},
		{"no source", KeySetConfig{}, "exactly one of"},
		{"two sources", KeySetConfig{Issuer: "https://issuer.example", JWKSFile: "keys.json"}, "exactly one of"},
		{"issuer http", KeySetConfig{Issuer: "http://issuer.example"}, "must use https"},
		{"jwks url http", KeySetConfig{JWKSURL: "http://10.0.0.1/jwks.json"}, "must use https"},
		{"issuer relative", KeySetConfig{Issuer: "issuer.example"}, "not an absolute URL"},
		{"issuer query", KeySetConfig{Issuer: "https://issuer.example?tenant=1"}, "query or fragment"},
		{"issuer fragment", KeySetConfig{Issuer: "https://issuer.example#x"}, "query or fragment"},
		{"user information", KeySetConfig{JWKSURL: "https://u:secret@issuer.example/jwks.json"}, "user information"},
		{"negative duration", KeySetConfig{Issuer: "https://issuer.example", FetchTimeout: -time.Second}, "FetchTimeout must not be negative"},
		{"min above max", KeySetConfig{Issuer: "https://issuer.example", MinRefresh: time.Hour, MaxRefresh: time.Minute}, "MinRefresh (1h0m0s) must not exceed MaxRefresh (1m0s)"},
		{"min above default max", KeySetConfig{Issuer: "https://issuer.example", MinRefresh: 2 * time.Hour}, "must not exceed MaxRefresh"},
		{"negative size", KeySetConfig{Issuer: "https://issuer.example", MaxBytes: -1}, "MaxBytes"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c, err := NewKeySetCache(tc.cfg)
			if tc.err == "" {
				if err != nil {
					t.Fatalf("NewKeySetCache: %v", err)
				}
				return
			}
			if err == nil || !strings.Contains(err.Error(), tc.err) {
				t.Fatalf("NewKeySetCache = %v, %v; want error containing %q", c, err, tc.err)
			}
			if strings.Contains(err.Error(), "secret") {
				t.Errorf("error %q shows a password", err)
			}
		})
	}

	c, err := NewKeySetCache(KeySetConfig{Issuer: "https://issuer.example"})
	if err != nil {
		t.Fatal(err)
	}
	if g := c.cfg; g.MinRefresh != time.Minute || g.MaxRefresh != time.Hour || g.UnknownKIDInterval != 30*time.Second ||
		g.FetchTimeout != 5*time.Second || g.MaxBytes != 1<<20 || g.Logger == nil || g.Now == nil {
		t.Errorf("defaults: %+v", g)
	}
	if c.Ready() {
		t.Error("Ready before any load")
	}
	if st := c.Status(); st.Source != "metadata" || st.Keys != 0 || !st.LoadedAt.IsZero() || st.Age != 0 {
		t.Errorf("Status before load = %+v", st)
	}
}

func TestKeySetDiscovery(t *testing.T) {
	k1, j1 := ksJWK(t, "k1")
	const oauth, oidc = "/.well-known/oauth-authorization-server", "/.well-known/openid-configuration"
	for _, tc := range []struct {
		name string
		path string // of the issuer
		// publish sets the server's metadata; iss is the issuer, base the
		// server's URL.
		publish func(t *testing.T, s *ksServer, iss, base string)
		err     string // "" if the keys load
	}{
		{"oauth-authorization-server", "", func(t *testing.T, s *ksServer, iss, base string) {
			s.setMetadata(t, oauth, iss, base+"/jwks.json")
		}, ""},
		{"issuer with path", "/tenant1", func(t *testing.T, s *ksServer, iss, base string) {
			s.setMetadata(t, oauth+"/tenant1", iss, base+"/jwks.json")
		}, ""},
		{"issuer with terminating slash", "/tenant1/", func(t *testing.T, s *ksServer, iss, base string) {
			s.setMetadata(t, oauth+"/tenant1", iss, base+"/jwks.json")
		}, ""},
		{"openid-configuration fallback", "/tenant1", func(t *testing.T, s *ksServer, iss, base string) {
			s.setMetadata(t, "/tenant1"+oidc, iss, base+"/jwks.json")
		}, ""},
		{"issuer mismatch", "", func(t *testing.T, s *ksServer, iss, base string) {
			s.setMetadata(t, oauth, base+"/other", base+"/jwks.json")
		}, `names issuer "` + "BASE" + `/other"`},
		{"issuer mismatch not rescued by fallback", "", func(t *testing.T, s *ksServer, iss, base string) {
			s.setMetadata(t, oauth, iss+"/", base+"/jwks.json")
			s.setMetadata(t, oidc, iss, base+"/jwks.json")
		}, "RFC 8414 §3.3"},
		{"server error not rescued by fallback", "", func(t *testing.T, s *ksServer, iss, base string) {
			s.metadata[oauth] = nil
			s.setMetadata(t, oidc, iss, base+"/jwks.json")
		}, "fetch metadata from BASE" + oauth + ": status 500"},
		{"no metadata", "/t", func(t *testing.T, s *ksServer, iss, base string) {}, "fetch metadata from BASE" + oauth + "/t: status 404; fetch metadata from BASE/t" + oidc + ": status 404"},
		{"no jwks_uri", "", func(t *testing.T, s *ksServer, iss, base string) {
			s.setMetadata(t, oauth, iss, "")
		}, "has no jwks_uri"},
		{"jwks_uri http off loopback", "", func(t *testing.T, s *ksServer, iss, base string) {
			s.setMetadata(t, oauth, iss, "http://keys.example/jwks.json")
		}, `jwks_uri "http://keys.example/jwks.json" must use https`},
		{"jwks_uri relative", "", func(t *testing.T, s *ksServer, iss, base string) {
			s.setMetadata(t, oauth, iss, "/jwks.json")
		}, "not an absolute URL"},
		{"metadata not JSON", "", func(t *testing.T, s *ksServer, iss, base string) {
			s.metadata[oauth] = []byte("<html>")
		}, "metadata from BASE" + oauth},
	} {
		t.Run(tc.name, func(t *testing.T) {
			s := newKSServer(t)
			s.setJWKS(ksDoc(t, j1), 0, "")
			iss := s.URL + tc.path
			tc.publish(t, s, iss, s.URL)
			c := newTestKeySetCache(t, KeySetConfig{Issuer: iss})
			err := ksRefresh(c)
			if tc.err != "" {
				want := strings.ReplaceAll(tc.err, "BASE", s.URL)
				if err == nil || !strings.Contains(err.Error(), want) {
					t.Fatalf("refresh: %v; want an error containing %q", err, want)
				}
				if c.Ready() || c.Status().LastError != err.Error() {
					t.Errorf("after a failed discovery: Ready %v, Status %+v", c.Ready(), c.Status())
				}
				if n := s.jwksHits.Load(); n != 0 {
					t.Errorf("JWKS fetched %d times after a failed discovery", n)
				}
				return
			}
			if err != nil {
				t.Fatalf("refresh: %v", err)
			}
			if _, ok := c.Lookup("k1"); !ok || !ksHas(c, k1) {
				t.Fatal("k1 not found")
			}
			if st := c.Status(); st.Source != "metadata" || st.Keys != 1 || st.LastError != "" || st.Fetches != 1 {
				t.Errorf("Status = %+v", st)
			}

			// The jwks_uri is remembered: a second refresh reads only the
			// JWKS.
			md := s.metadataHits.Load()
			if err := ksRefresh(c); err != nil {
				t.Fatal(err)
			}
			if got := s.metadataHits.Load(); got != md {
				t.Errorf("metadata read again on refresh (%d, then %d requests)", md, got)
			}
		})
	}
}

// TestKeySetDiscoveryMemberNames: the metadata's members are read by
// their exact names, as every other reader of an issuer's metadata in
// meshauth reads them, and a member given twice is refused. (The key-set
// cache read them with encoding/json, which matches names regardless of
// case and takes the last of several: a "JWKS_URI" after "jwks_uri"
// chose the keys.)
func TestKeySetDiscoveryMemberNames(t *testing.T) {
	k1, j1 := ksJWK(t, "k1")
	_, j2 := ksJWK(t, "k2")
	other := newKSServer(t)
	other.setJWKS(ksDoc(t, j2), 0, "")
	s := newKSServer(t)
	s.setJWKS(ksDoc(t, j1), 0, "")
	const path = "/.well-known/oauth-authorization-server"
	s.metadata[path] = []byte(`{"issuer":"` + s.URL + `","jwks_uri":"` + s.URL + `/jwks.json","JWKS_URI":"` + other.URL + `/jwks.json"}`)
	c := newTestKeySetCache(t, KeySetConfig{Issuer: s.URL})
	if err := ksRefresh(c); err != nil {
		t.Fatal(err)
	}
	if !ksHas(c, k1) || other.jwksHits.Load() != 0 {
		t.Fatalf("keys from the member named otherwise: k1 %v, %d fetches elsewhere", ksHas(c, k1), other.jwksHits.Load())
	}

	s.metadata[path] = []byte(`{"issuer":"` + s.URL + `","jwks_uri":"` + s.URL + `/jwks.json","jwks_uri":"` + other.URL + `/jwks.json"}`)
	c = newTestKeySetCache(t, KeySetConfig{Issuer: s.URL})
	if err := ksRefresh(c); err == nil || !strings.Contains(err.Error(), "repeated") {
		t.Fatalf("metadata with jwks_uri twice: %v", err)
	}
	if c.Ready() || other.jwksHits.Load() != 0 {
		t.Fatal("keys loaded from metadata with jwks_uri twice")
	}
}

// TestKeySetRediscovery checks that the metadata is read again once the
// JWKS moved, and after MaxRefresh.
func TestKeySetRediscovery(t *testing.T) {
	_, j1 := ksJWK(t, "k1")
	k2, j2 := ksJWK(t, "k2")
	s := newKSServer(t)
	s.setJWKS(ksDoc(t, j1), 0, "")
	s.setMetadata(t, "/.well-known/oauth-authorization-server", s.URL, s.URL+"/jwks.json")
	clk := &ksClock{t: ksT0}
	c := newTestKeySetCache(t, KeySetConfig{Issuer: s.URL, Now: clk.Now, MinRefresh: time.Minute, MaxRefresh: time.Hour})
	if err := ksRefresh(c); err != nil {
		t.Fatal(err)
	}

	// The JWKS moves: the old URL fails, then the metadata is read again.
	s.mu.Lock()
	s.redirects["/moved.json"] = "/jwks.json"
	s.mu.Unlock()
	s.setMetadata(t, "/.well-known/oauth-authorization-server", s.URL, s.URL+"/moved.json")
	s.setJWKS(ksDoc(t, j1, j2), http.StatusNotFound, "")
	if err := ksRefresh(c); err == nil {
		t.Fatal("refresh succeeded with the JWKS gone")
	}
	s.setJWKS(ksDoc(t, j1, j2), 0, "")
	if err := ksRefresh(c); err != nil {
		t.Fatal(err)
	}
	if !ksHas(c, k2) {
		t.Fatal("k2 not loaded from the moved JWKS")
	}
	if got := s.metadataHits.Load(); got != 2 {
		t.Errorf("metadata read %d times, want 2", got)
	}

	clk.Advance(time.Hour)
	if err := ksRefresh(c); err != nil {
		t.Fatal(err)
	}
	if got := s.metadataHits.Load(); got != 3 {
		t.Errorf("metadata read %d times after MaxRefresh, want 3", got)
	}
}

func TestKeySetJWKSURL(t *testing.T) {
	k1, j1 := ksJWK(t, "k1")
	other := newKSServer(t)
	other.setJWKS(ksDoc(t, j1), 0, "")
	for _, tc := range []struct {
		name     string
		path     string
		status   int
		doc      []byte
		maxBytes int64
		err      string // "" if the keys load
	}{
		{"ok", "/jwks.json", 0, ksDoc(t, j1), 0, ""},
		{"same-origin redirect", "/old.json", 0, ksDoc(t, j1), 0, ""},
		{"redirect to another origin", "/elsewhere.json", 0, ksDoc(t, j1), 0, "redirect to another origin " + other.URL + " refused"},
		{"unavailable", "/jwks.json", http.StatusServiceUnavailable, nil, 0, "fetch JWKS from BASE/jwks.json: status 503"},
		{"not found", "/missing.json", 0, nil, 0, "fetch JWKS from BASE/missing.json: status 404"},
		{"malformed", "/jwks.json", 0, []byte(`{"keys": []`), 0, "JWKS from BASE/jwks.json: token: JWK set is not valid JSON"},
		{"no usable key", "/jwks.json", 0, ksDoc(t, map[string]any{"kty": "EC", "crv": "P-256", "use": "enc", "x": "AA", "y": "AA"}), 0, "no usable signing key"},
		{"empty set", "/jwks.json", 0, ksDoc(t), 0, "no usable signing key"},
		{"symmetric key", "/jwks.json", 0, ksDoc(t, j1, map[string]any{"kty": "oct", "k": "c2VjcmV0"}), 0, "symmetric key"},
		{"too large", "/jwks.json", 0, ksDoc(t, j1), 100, "fetch JWKS from BASE/jwks.json: larger than 100 bytes"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			s := newKSServer(t)
			s.setJWKS(tc.doc, tc.status, "")
			s.redirects["/old.json"] = "/jwks.json"
			s.redirects["/elsewhere.json"] = other.URL + "/jwks.json"
			c := newTestKeySetCache(t, KeySetConfig{JWKSURL: s.URL + tc.path, MaxBytes: tc.maxBytes})
			err := ksRefresh(c)
			if tc.err != "" {
				want := strings.ReplaceAll(tc.err, "BASE", s.URL)
				if err == nil || !strings.Contains(err.Error(), want) {
					t.Fatalf("refresh: %v; want an error containing %q", err, want)
				}
				if c.Ready() {
					t.Error("Ready after a failed load")
				}
				if other.jwksHits.Load() != 0 {
					t.Error("redirect to another origin followed")
				}
				return
			}
			if err != nil {
				t.Fatalf("refresh: %v", err)
			}
			if !c.Ready() || !ksHas(c, k1) {
				t.Fatal("k1 not loaded")
			}
			if st := c.Status(); st.Source != "jwks_url" || st.Keys != 1 {
				t.Errorf("Status = %+v", st)
			}
		})
	}
}

func TestKeySetFile(t *testing.T) {
	k1, j1 := ksJWK(t, "k1")
	k2, j2 := ksJWK(t, "k2")
	path := filepath.Join(t.TempDir(), "jwks.json")
	mtime := time.Now().Add(-time.Hour)
	write := func(doc []byte) {
		t.Helper()
		if err := os.WriteFile(path, doc, 0o600); err != nil {
			t.Fatal(err)
		}
		// Some file systems keep coarse times; make each change visible.
		mtime = mtime.Add(time.Second)
		if err := os.Chtimes(path, mtime, mtime); err != nil {
			t.Fatal(err)
		}
	}
	clk := &ksClock{t: ksT0}
	c := newTestKeySetCache(t, KeySetConfig{JWKSFile: path, Now: clk.Now})

	if err := ksRefresh(c); err == nil || !strings.Contains(err.Error(), "no such file") {
		t.Fatalf("refresh without the file: %v", err)
	}

	write(ksDoc(t, j1))
	if err := ksRefresh(c); err != nil {
		t.Fatal(err)
	}
	if !ksHas(c, k1) {
		t.Fatal("k1 not loaded")
	}
	if st := c.Status(); st.Source != "file" || st.Keys != 1 || !st.LoadedAt.Equal(ksT0) || st.LastError != "" {
		t.Errorf("Status = %+v", st)
	}

	// Unchanged: not read again, but known to be current.
	before := c.keys.Load()
	clk.Advance(time.Minute)
	if err := ksRefresh(c); err != nil {
		t.Fatal(err)
	}
	if c.keys.Load() != before {
		t.Error("unchanged file loaded again")
	}
	if st := c.Status(); !st.LoadedAt.Equal(ksT0.Add(time.Minute)) || st.Age != 0 {
		t.Errorf("Status after an unchanged check = %+v", st)
	}

	// Rotated.
	write(ksDoc(t, j2))
	if err := ksRefresh(c); err != nil {
		t.Fatal(err)
	}
	if !ksHas(c, k2) || ksHas(c, k1) {
		t.Fatal("rotation in the file not picked up")
	}

	// Broken, then gone: k2 stays.
	write([]byte(`{"keys": [{"kty": "EC"`))
	if err := ksRefresh(c); err == nil || !strings.Contains(err.Error(), "JWKS file "+path) {
		t.Fatalf("refresh of a broken file: %v", err)
	}
	if err := os.Remove(path); err != nil {
		t.Fatal(err)
	}
	if err := ksRefresh(c); err == nil {
		t.Fatal("refresh of a removed file succeeded")
	}
	if !ksHas(c, k2) {
		t.Fatal("last good keys dropped")
	}
	if _, ok := c.Lookup("k2"); !ok {
		t.Fatal("Lookup(k2) failed with the last good keys")
	}
	if st := c.Status(); !strings.Contains(st.LastError, "no such file") {
		t.Errorf("LastError = %q", st.LastError)
	}
}

func TestRefreshInterval(t *testing.T) {
	const lo, hi = time.Minute, time.Hour
	for _, tc := range []struct {
		cacheControl []string
		age          string
		want         time.Duration
	}{
		{nil, "", hi},
		{[]string{"max-age=300"}, "", 300 * time.Second},
		{[]string{"public, max-age=300"}, "", 300 * time.Second},
		{[]string{"public", "max-age=300"}, "", 300 * time.Second},
		{[]string{`max-age="300"`}, "", 300 * time.Second},
		{[]string{"Max-Age=300"}, "", 300 * time.Second},
		{[]string{"max-age=300, max-age=10"}, "", 300 * time.Second},
		{[]string{"max-age=300"}, "100", 200 * time.Second},
		{[]string{"max-age=300"}, "1000", lo},
		{[]string{"max-age=300"}, "x", 300 * time.Second},
		{[]string{"max-age=10"}, "", lo},
		{[]string{"max-age=0"}, "", lo},
		{[]string{"max-age=86400"}, "", hi},
		{[]string{"max-age=99999999999999999999"}, "", hi},
		{[]string{"max-age=-5"}, "", hi},
		{[]string{"max-age=abc"}, "", hi},
		{[]string{"s-maxage=300"}, "", hi},
		{[]string{"no-cache"}, "", lo},
		{[]string{"max-age=300, no-store"}, "", lo},
		{[]string{"private", "no-cache"}, "", lo},
	} {
		h := http.Header{}
		for _, v := range tc.cacheControl {
			h.Add("Cache-Control", v)
		}
		if tc.age != "" {
			h.Set("Age", tc.age)
		}
		if got := refreshInterval(h, lo, hi); got != tc.want {
			t.Errorf("Cache-Control %q, Age %q: interval %v, want %v", tc.cacheControl, tc.age, got, tc.want)
		}
	}
}

// TestKeySetRefreshSchedule checks that the background refresh follows
// Cache-Control within [MinRefresh, MaxRefresh].
func TestKeySetRefreshSchedule(t *testing.T) {
	_, j1 := ksJWK(t, "k1")
	const run = 500 * time.Millisecond
	cases := []struct {
		name                   string
		cacheControl           string
		minRefresh, maxRefresh time.Duration
		// JWKS requests in run, the first at once.
		lo, hi int64
		s      *ksServer
	}{
		{name: "max-age raised to MinRefresh", cacheControl: "max-age=0", minRefresh: 50 * time.Millisecond, maxRefresh: time.Hour, lo: 3, hi: 11},
		{name: "no-store at MinRefresh", cacheControl: "no-store", minRefresh: 50 * time.Millisecond, maxRefresh: time.Hour, lo: 3, hi: 11},
		{name: "max-age lowered to MaxRefresh", cacheControl: "max-age=3600", minRefresh: 50 * time.Millisecond, maxRefresh: 100 * time.Millisecond, lo: 2, hi: 6},
		{name: "max-age honoured", cacheControl: "max-age=3600", minRefresh: 50 * time.Millisecond, maxRefresh: 2 * time.Hour, lo: 1, hi: 1},
		{name: "no max-age at MaxRefresh", minRefresh: 50 * time.Millisecond, maxRefresh: 100 * time.Millisecond, lo: 2, hi: 6},
	}
	synctest.Test(t, func(t *testing.T) {
		ctx, cancel := context.WithCancel(t.Context())
		defer cancel()
		for i := range cases {
			tc := &cases[i]
			tc.s = newBubbleKSServer()
			tc.s.setJWKS(ksDoc(t, j1), 0, tc.cacheControl)
			c := newTestKeySetCache(t, KeySetConfig{JWKSURL: tc.s.URL + "/jwks.json", HTTPClient: tc.s.client, MinRefresh: tc.minRefresh, MaxRefresh: tc.maxRefresh})
			c.Start(ctx)
		}
		time.Sleep(run)
		synctest.Wait()
		for _, tc := range cases {
			if n := tc.s.jwksHits.Load(); n < tc.lo || n > tc.hi {
				t.Errorf("%s: %d JWKS requests in %v, want %d to %d", tc.name, n, run, tc.lo, tc.hi)
			}
		}
	})
}

// TestKeySetStart checks that the first load is retried until it succeeds
// and that refreshing stops with the context.
func TestKeySetStart(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		k1, j1 := ksJWK(t, "k1")
		s := newBubbleKSServer()
		s.setJWKS(nil, http.StatusServiceUnavailable, "")
		c := newTestKeySetCache(t, KeySetConfig{JWKSURL: s.URL + "/jwks.json", HTTPClient: s.client, MinRefresh: 50 * time.Millisecond, MaxRefresh: 50 * time.Millisecond})
		ctx, cancel := context.WithCancel(t.Context())
		defer cancel()
		c.Start(ctx)
		c.Start(ctx) // a second call does nothing
		// The retries wait at most MinRefresh each.
		time.Sleep(150 * time.Millisecond)
		synctest.Wait()
		if n := s.jwksHits.Load(); n < 3 {
			t.Fatalf("%d attempts in 150ms, want 3 or more", n)
		}
		if c.Ready() {
			t.Fatal("Ready without keys")
		}
		if st := c.Status(); !strings.Contains(st.LastError, "status 503") {
			t.Errorf("LastError = %q", st.LastError)
		}
		s.setJWKS(ksDoc(t, j1), 0, "")
		time.Sleep(50 * time.Millisecond)
		synctest.Wait()
		if !c.Ready() || !ksHas(c, k1) {
			t.Fatal("k1 not loaded")
		}
		if st := c.Status(); st.LastError != "" {
			t.Errorf("LastError = %q after a good load", st.LastError)
		}

		cancel()
		synctest.Wait() // a refresh running ends
		n := s.jwksHits.Load()
		time.Sleep(150 * time.Millisecond)
		synctest.Wait()
		if got := s.jwksHits.Load(); got != n {
			t.Errorf("%d JWKS requests after the context ended", got-n)
		}
	})
}

func TestKeySetBackoff(t *testing.T) {
	c := newTestKeySetCache(t, KeySetConfig{JWKSFile: "x", MinRefresh: 10 * time.Second, MaxRefresh: time.Minute})
	for n, want := range []time.Duration{time.Second, 2 * time.Second, 4 * time.Second, 8 * time.Second, 10 * time.Second, 10 * time.Second} {
		for range 20 {
			if got := c.backoff(n); got < want/2 || got > want {
				t.Fatalf("backoff(%d) = %v, want %v to %v", n, got, want/2, want)
			}
		}
	}
	if got := c.backoff(1000); got > 10*time.Second {
		t.Errorf("backoff(1000) = %v", got)
	}
}

func TestKeySetUnknownKID(t *testing.T) {
	_, j1 := ksJWK(t, "k1")
	k2, j2 := ksJWK(t, "k2")
	s := newKSServer(t)
	s.setJWKS(ksDoc(t, j1), 0, "max-age=3600")
	clk := &ksClock{t: ksT0}
	c := newTestKeySetCache(t, KeySetConfig{JWKSURL: s.URL + "/jwks.json", Now: clk.Now, UnknownKIDInterval: time.Minute})
	c.Start(t.Context())
	ksWait(t, "Ready", c.Ready)

	// The issuer rotates: a token signed with the new key finds it after
	// one refresh.
	s.setJWKS(ksDoc(t, j1, j2), 0, "max-age=3600")
	k, ok := c.Lookup("k2")
	if !ok || !k.Public.(*ecdsa.PublicKey).Equal(k2.Public) {
		t.Fatal("k2 not found after rotation")
	}
	if n := s.jwksHits.Load(); n != 2 {
		t.Errorf("%d JWKS requests, want 2", n)
	}

	// Within the interval another unknown kid fails at once.
	start := time.Now()
	if _, ok := c.Lookup("k3"); ok {
		t.Fatal("k3 found")
	}
	if d := time.Since(start); d > time.Second {
		t.Errorf("rate-limited miss took %v", d)
	}
	if n := s.jwksHits.Load(); n != 2 {
		t.Errorf("%d JWKS requests after a rate-limited miss, want 2", n)
	}

	// After it, the next one refreshes again.
	clk.Advance(time.Minute)
	if _, ok := c.Lookup("k3"); ok {
		t.Fatal("k3 found")
	}
	if n := s.jwksHits.Load(); n != 3 {
		t.Errorf("%d JWKS requests after the interval, want 3", n)
	}
	if st := c.Status(); st.Fetches != 3 {
		t.Errorf("Fetches = %d, want 3", st.Fetches)
	}
}

// TestKeySetUnknownKIDFlood checks that a flood of random kids causes at
// most one fetch per UnknownKIDInterval.
func TestKeySetUnknownKIDFlood(t *testing.T) {
	_, j1 := ksJWK(t, "k1")
	s := newKSServer(t)
	s.setJWKS(ksDoc(t, j1), 0, "")
	c := newTestKeySetCache(t, KeySetConfig{JWKSURL: s.URL + "/jwks.json", UnknownKIDInterval: time.Minute})
	c.Start(t.Context())
	ksWait(t, "Ready", c.Ready)

	var wg sync.WaitGroup
	var found atomic.Int64
	for g := range 50 {
		wg.Go(func() {
			for i := range 20 {
				if _, ok := c.Lookup(fmt.Sprintf("random-%d-%d", g, i)); ok {
					found.Add(1)
				}
			}
		})
	}
	wg.Wait()
	if n := found.Load(); n != 0 {
		t.Errorf("%d random kids found", n)
	}
	if n := s.jwksHits.Load(); n > 2 {
		t.Errorf("%d JWKS requests for 1000 unknown kids, want at most 2", n)
	}
	if st := c.Status(); st.Fetches > 2 {
		t.Errorf("Fetches = %d, want at most 2", st.Fetches)
	}
	if _, ok := c.Lookup("k1"); !ok {
		t.Error("k1 lost")
	}
}

// TestKeySetUnknownKIDShared checks that concurrent misses wait for one
// fetch and that the wait is bounded by FetchTimeout.
func TestKeySetUnknownKIDShared(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		k1, j1 := ksJWK(t, "k1")
		s := newBubbleKSServer()
		s.setJWKS(ksDoc(t, j1), 0, "")
		gate, arrived := make(chan struct{}), make(chan struct{}, 100)
		s.gate, s.arrived = gate, arrived
		c := newTestKeySetCache(t, KeySetConfig{JWKSURL: s.URL + "/jwks.json", HTTPClient: s.client, FetchTimeout: 2 * time.Second})

		var wg sync.WaitGroup
		var found atomic.Int64
		for range 20 {
			wg.Go(func() {
				if k, ok := c.Lookup("k1"); ok && k.Public.(*ecdsa.PublicKey).Equal(k1.Public) {
					found.Add(1)
				}
			})
		}
		<-arrived
		synctest.Wait() // every other lookup waits for the one fetch
		close(gate)
		wg.Wait()
		if n := found.Load(); n != 20 {
			t.Errorf("%d of 20 waiting lookups found k1", n)
		}
		if n := s.jwksHits.Load(); n != 1 {
			t.Errorf("%d JWKS requests, want 1", n)
		}

		// A fetch that hangs: the lookup gives up after FetchTimeout.
		hang := newBubbleKSServer()
		hang.setJWKS(ksDoc(t, j1), 0, "")
		hang.gate = make(chan struct{})
		c = newTestKeySetCache(t, KeySetConfig{JWKSURL: hang.URL + "/jwks.json", HTTPClient: hang.client, FetchTimeout: 100 * time.Millisecond})
		start := time.Now()
		if _, ok := c.Lookup("k1"); ok {
			t.Fatal("k1 found from a hanging server")
		}
		if d := time.Since(start); d != 100*time.Millisecond {
			t.Errorf("lookup waited %v with a FetchTimeout of 100ms", d)
		}
		synctest.Wait()
		if st := c.Status(); !strings.Contains(st.LastError, "deadline exceeded") {
			t.Errorf("the hanging refresh ended with LastError %q", st.LastError)
		}
	})
}

// TestKeySetKeepsGoodKeys checks that no failed refresh replaces the keys.
func TestKeySetKeepsGoodKeys(t *testing.T) {
	k1, j1 := ksJWK(t, "k1")
	for _, tc := range []struct {
		name string
		fail func(s *ksServer)
		err  string
	}{
		{"server error", func(s *ksServer) { s.setJWKS(nil, http.StatusInternalServerError, "") }, "status 500"},
		{"malformed JWKS", func(s *ksServer) { s.setJWKS([]byte(`{"keys":[]`), 0, "") }, "not valid JSON"},
		{"no usable key", func(s *ksServer) { s.setJWKS([]byte(`{"keys":[]}`), 0, "") }, "no usable signing key"},
		{"private key", func(s *ksServer) {
			j := map[string]any{"d": "AAAA"}
			for k, v := range j1 {
				j[k] = v
			}
			s.setJWKS(ksDoc(t, j), 0, "")
		}, "private key member"},
		{"issuer down", func(s *ksServer) { s.srv.Close() }, "connect"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			s := newKSServer(t)
			s.setJWKS(ksDoc(t, j1), 0, "")
			clk := &ksClock{t: ksT0}
			c := newTestKeySetCache(t, KeySetConfig{JWKSURL: s.URL + "/jwks.json", Now: clk.Now, UnknownKIDInterval: time.Minute})
			if err := ksRefresh(c); err != nil {
				t.Fatal(err)
			}
			tc.fail(s)
			clk.Advance(10 * time.Second)
			if err := ksRefresh(c); err == nil || !strings.Contains(err.Error(), tc.err) {
				t.Fatalf("refresh: %v; want an error containing %q", err, tc.err)
			}
			if k, ok := c.Lookup("k1"); !ok || !k.Public.(*ecdsa.PublicKey).Equal(k1.Public) {
				t.Fatal("k1 lost")
			}
			if _, ok := c.Lookup("k9"); ok {
				t.Fatal("k9 found")
			}
			st := c.Status()
			if !c.Ready() || st.Keys != 1 || st.Source != "jwks_url" || !st.LoadedAt.Equal(ksT0) || st.Age != 10*time.Second {
				t.Errorf("Status = %+v", st)
			}
			if !strings.Contains(st.LastError, tc.err) {
				t.Errorf("LastError = %q, want it to contain %q", st.LastError, tc.err)
			}
		})
	}
}

func TestKeySetSet(t *testing.T) {
	k1, j1 := ksJWK(t, "k1")
	k2, _ := ksJWK(t, "k2")
	k3, _ := ksJWK(t, "k3")
	s := newKSServer(t)
	s.setJWKS(ksDoc(t, j1), 0, "")
	clk := &ksClock{t: ksT0}
	c := newTestKeySetCache(t, KeySetConfig{JWKSURL: s.URL + "/jwks.json", Now: clk.Now})
	if err := ksRefresh(c); err != nil {
		t.Fatal(err)
	}

	clk.Advance(time.Second)
	c.Set([]token.Key{k2}, "nats")
	if !ksHas(c, k2) || ksHas(c, k1) {
		t.Fatal("Set did not replace the keys")
	}
	if st := c.Status(); st.Source != "nats" || st.Keys != 1 || !st.LoadedAt.Equal(ksT0.Add(time.Second)) {
		t.Errorf("Status = %+v", st)
	}

	c.Set(nil, "nats")
	if !ksHas(c, k2) {
		t.Fatal("an empty Set dropped the keys")
	}

	// A fetch that started before Set does not undo it.
	gate, arrived := make(chan struct{}), make(chan struct{}, 1)
	s.mu.Lock()
	s.gate, s.arrived = gate, arrived
	s.mu.Unlock()
	f := c.refresh()
	<-arrived
	c.Set([]token.Key{k3}, "nats")
	close(gate)
	<-f.done
	if f.err != nil {
		t.Fatal(f.err)
	}
	if !ksHas(c, k3) || ksHas(c, k1) || c.Status().Source != "nats" {
		t.Fatal("a fetch older than Set replaced its keys")
	}

	// A later fetch does replace them.
	s.mu.Lock()
	s.gate, s.arrived = nil, nil
	s.mu.Unlock()
	if err := ksRefresh(c); err != nil {
		t.Fatal(err)
	}
	if !ksHas(c, k1) || c.Status().Source != "jwks_url" {
		t.Fatal("fetch after Set did not load the keys")
	}
}

// TestKeySetSetResetsRefresh checks that keys pushed by Set postpone the
// next fetch.
func TestKeySetSetResetsRefresh(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		k1, j1 := ksJWK(t, "k1")
		s := newBubbleKSServer()
		s.setJWKS(ksDoc(t, j1), 0, "")
		c := newTestKeySetCache(t, KeySetConfig{JWKSURL: s.URL + "/jwks.json", HTTPClient: s.client, MinRefresh: 50 * time.Millisecond, MaxRefresh: 300 * time.Millisecond})
		ctx, cancel := context.WithCancel(t.Context())
		defer cancel()
		c.Start(ctx)
		synctest.Wait()
		if !c.Ready() {
			t.Fatal("not loaded")
		}
		for range 12 {
			c.Set([]token.Key{k1}, "nats")
			time.Sleep(30 * time.Millisecond)
		}
		synctest.Wait()
		if n := s.jwksHits.Load(); n != 1 {
			t.Errorf("%d JWKS requests while keys were pushed every 30ms for longer than MaxRefresh, want 1", n)
		}
	})
}

func TestKeySetLookupAllocs(t *testing.T) {
	k1, _ := ksJWK(t, "k1")
	k2, _ := ksJWK(t, "k2")
	c := newTestKeySetCache(t, KeySetConfig{JWKSFile: "unused"})
	c.Set([]token.Key{k1, k2}, "test")
	if n := testing.AllocsPerRun(1000, func() {
		if _, ok := c.Lookup("k2"); !ok {
			t.Fatal("k2 not found")
		}
	}); n != 0 {
		t.Errorf("Lookup hit: %v allocations", n)
	}
	c.Set([]token.Key{k1}, "test")
	if n := testing.AllocsPerRun(1000, func() {
		if _, ok := c.Lookup(""); !ok {
			t.Fatal("only key not found")
		}
	}); n != 0 {
		t.Errorf("Lookup of the only key: %v allocations", n)
	}
}

func BenchmarkKeySetLookup(b *testing.B) {
	var keys []token.Key
	for i := range 4 {
		k, _ := ksJWK(b, fmt.Sprintf("k%d", i))
		keys = append(keys, k)
	}
	c := newTestKeySetCache(b, KeySetConfig{JWKSFile: "unused"})
	c.Set(keys, "test")
	b.Run("serial", func(b *testing.B) {
		b.ReportAllocs()
		for b.Loop() {
			if _, ok := c.Lookup("k2"); !ok {
				b.Fatal("k2 not found")
			}
		}
	})
	b.Run("parallel", func(b *testing.B) {
		b.ReportAllocs()
		b.RunParallel(func(pb *testing.PB) {
			for pb.Next() {
				if _, ok := c.Lookup("k2"); !ok {
					b.Error("k2 not found")
					return
				}
			}
		})
	})
}

func TestKeySetDocument(t *testing.T) {
	k1, j1 := ksJWK(t, "k1")
	s := newKSServer(t)
	doc := ksDoc(t, j1)
	s.setJWKS(doc, 0, "")
	c := newTestKeySetCache(t, KeySetConfig{JWKSURL: s.URL + "/jwks.json"})
	if d, _, _ := c.Document(); d != nil {
		t.Fatal("a document before the first load")
	}
	if err := ksRefresh(c); err != nil {
		t.Fatal(err)
	}
	d, at, _ := c.Document()
	if !bytes.Equal(d, doc) || at.IsZero() {
		t.Fatalf("Document() = %s, %v; want the served document", d, at)
	}
	// Keys from elsewhere have no document here.
	c.Set([]token.Key{k1}, "nats")
	if d, _, _ := c.Document(); d != nil {
		t.Fatal("a document after Set")
	}
}

// TestKeySetMaxStale: with MaxStale, a source that is down, serves
// garbage or names another issuer in its metadata keeps its last good
// keys trusted for MaxStale after the last good load, then not at all;
// a good load brings them back.
func TestKeySetMaxStale(t *testing.T) {
	for _, tc := range []struct {
		name string
		fail func(s *keyDoc)
	}{
		{"down", func(d *keyDoc) { d.status = http.StatusServiceUnavailable }},
		{"garbage", func(d *keyDoc) { d.jwks = `{"keys":` }},
		{"names another issuer", func(d *keyDoc) { d.issuer = "https://other.example" }},
	} {
		t.Run(tc.name, func(t *testing.T) {
			synctest.Test(t, func(t *testing.T) {
				_, j1 := ksJWK(t, "k1")
				doc, err := json.Marshal(map[string]any{"keys": []any{j1}})
				if err != nil {
					t.Fatal(err)
				}
				d := &keyDoc{issuer: issuerURL, jwks: string(doc)}
				c := newTestKeySetCache(t, KeySetConfig{Issuer: issuerURL, HTTPClient: inprocess.Client(d), MinRefresh: time.Minute, MaxRefresh: 10 * time.Minute, MaxStale: time.Hour, Logger: slog.New(slog.DiscardHandler)})
				ctx, cancel := context.WithCancel(t.Context())
				defer cancel()
				c.Start(ctx)
				synctest.Wait()
				if !c.Ready() {
					t.Fatal("not loaded")
				}
				d.set(tc.fail)
				// The metadata is read again at the latest after
				// MaxRefresh: the last good load is then at most that old.
				time.Sleep(10*time.Minute + time.Second)
				synctest.Wait()
				st := c.Status()
				if !c.Ready() || st.LastError == "" || !st.ExpiresAt.Equal(st.LoadedAt.Add(time.Hour)) {
					t.Fatalf("failing: Ready %v, %+v", c.Ready(), st)
				}
				time.Sleep(time.Until(st.ExpiresAt) - time.Second)
				synctest.Wait()
				if !c.Ready() {
					t.Fatal("dropped before MaxStale")
				}
				time.Sleep(time.Second)
				synctest.Wait()
				if st := c.Status(); c.Ready() || st.Keys != 0 || st.Dropped == "" {
					t.Fatalf("after MaxStale: Ready %v, %+v", c.Ready(), st)
				}
				if _, ok := c.Lookup("k1"); ok {
					t.Fatal("a dropped key still verifies")
				}
				d.set(func(d *keyDoc) { d.issuer, d.jwks, d.status = issuerURL, string(doc), 0 })
				time.Sleep(time.Minute)
				synctest.Wait()
				if st := c.Status(); !c.Ready() || st.Dropped != "" {
					t.Fatalf("after the source recovered: Ready %v, %+v", c.Ready(), st)
				}
			})
		})
	}
}

// keyDoc serves an issuer's metadata and JWKS, as set.
type keyDoc struct {
	mu     sync.Mutex
	issuer string
	jwks   string
	status int
}

func (d *keyDoc) set(f func(*keyDoc)) {
	d.mu.Lock()
	defer d.mu.Unlock()
	f(d)
}

func (d *keyDoc) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	d.mu.Lock()
	defer d.mu.Unlock()
	if d.status != 0 {
		http.Error(w, "", d.status)
		return
	}
	switch r.URL.Path {
	case "/.well-known/oauth-authorization-server":
		fmt.Fprintf(w, `{"issuer":%q,"jwks_uri":%q}`, d.issuer, issuerURL+"/jwks.json")
	case "/jwks.json":
		w.Header().Set("Cache-Control", "max-age=60")
		w.Write([]byte(d.jwks))
	default:
		http.NotFound(w, r)
	}
}
