package keys

import (
	"bytes"
	"context"
	"crypto"
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/rsa"
	"crypto/sha256"
	"encoding/base64"
	"encoding/json"
	"errors"
	"log/slog"
	"math/big"
	"net/http"
	"net/http/httptest"
	"slices"
	"strings"
	"sync"
	"testing"
	"testing/synctest"
	"time"

	"github.com/lestrrat-go/jwx/v2/jwk"
	"github.com/lestrrat-go/jwx/v2/jws"
)

var t0 = time.Date(2030, 1, 1, 0, 0, 0, 0, time.UTC)

// clock is a settable time source for KeyringConfig.Now.
type clock struct {
	mu sync.Mutex
	t  time.Time
}

func newClock() *clock { return &clock{t: t0} }

func (c *clock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.t
}

func (c *clock) Set(t time.Time) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.t = t
}

const (
	testRotation = 24 * time.Hour
	testPre      = 10 * time.Minute
	testMaxLife  = time.Hour
)

func testConfig(st KeyStore, clk *clock, s *Sealer) KeyringConfig {
	return KeyringConfig{
		RotationInterval: testRotation,
		PrePublish:       testPre,
		MaxTokenLifetime: testMaxLife,
		Sealer:           s,
		Store:            st,
		Logger:           slog.New(slog.DiscardHandler),
		Now:              clk.Now,
	}
}

func newTestKeyring(t testing.TB, cfg KeyringConfig) *Keyring {
	t.Helper()
	k, err := NewKeyring(cfg)
	if err != nil {
		t.Fatal(err)
	}
	return k
}

func mustLoad(t testing.TB, k *Keyring) {
	t.Helper()
	if err := k.Load(context.Background()); err != nil {
		t.Fatal(err)
	}
}

// jwksKids returns the kids in a JWKS document, in order.
func jwksKids(t testing.TB, doc []byte) []string {
	t.Helper()
	var set struct {
		Keys []struct {
			Kid string `json:"kid"`
		} `json:"keys"`
	}
	if err := json.Unmarshal(doc, &set); err != nil {
		t.Fatalf("JWKS %s: %v", doc, err)
	}
	kids := []string{}
	for _, k := range set.Keys {
		kids = append(kids, k.Kid)
	}
	return kids
}

// verify checks token against the JWKS document twice: with the standard
// library from the JWK's raw key, and with jwx. It returns the protected
// header.
func verify(t testing.TB, token string, doc []byte, payload []byte) map[string]string {
	t.Helper()
	parts := strings.Split(token, ".")
	if len(parts) != 3 {
		t.Fatalf("token has %d parts", len(parts))
	}
	var header map[string]string
	hb, err := base64.RawURLEncoding.DecodeString(parts[0])
	if err != nil {
		t.Fatal(err)
	}
	if err := json.Unmarshal(hb, &header); err != nil {
		t.Fatal(err)
	}
	pb, err := base64.RawURLEncoding.DecodeString(parts[1])
	if err != nil || !bytes.Equal(pb, payload) {
		t.Fatalf("payload %q, %v", pb, err)
	}
	sig, err := base64.RawURLEncoding.DecodeString(parts[2])
	if err != nil {
		t.Fatal(err)
	}

	set, err := jwk.Parse(doc)
	if err != nil {
		t.Fatal(err)
	}
	key, ok := set.LookupKeyID(header["kid"])
	if !ok {
		t.Fatalf("kid %q not in the JWKS", header["kid"])
	}
	if key.Algorithm().String() != header["alg"] {
		t.Fatalf("header alg %q, key alg %q", header["alg"], key.Algorithm())
	}
	var pub any
	if err := key.Raw(&pub); err != nil {
		t.Fatal(err)
	}
	input := []byte(parts[0] + "." + parts[1])
	h := sha256.Sum256(input)
	var valid bool
	switch pub := pub.(type) {
	case *ecdsa.PublicKey:
		valid = len(sig) == 64 && ecdsa.Verify(pub, h[:], new(big.Int).SetBytes(sig[:32]), new(big.Int).SetBytes(sig[32:]))
	case ed25519.PublicKey:
		valid = ed25519.Verify(pub, input, sig)
	case *rsa.PublicKey:
		valid = rsa.VerifyPKCS1v15(pub, crypto.SHA256, h[:], sig) == nil
	default:
		t.Fatalf("key type %T", pub)
	}
	if !valid {
		t.Fatal("signature does not verify with the standard library")
	}
	got, err := jws.Verify([]byte(token), jws.WithKeySet(set))
	if err != nil {
		t.Fatalf("jwx: %v", err)
	}
	if !bytes.Equal(got, payload) {
		t.Fatal("jwx returned another payload")
	}
	return header
}

// signerKid signs with k and returns the kid in the header.
func signerKid(t testing.TB, k *Keyring) string {
	t.Helper()
	payload := []byte(`{"sub":"x"}`)
	token, err := k.Sign("at+jwt", payload)
	if err != nil {
		t.Fatal(err)
	}
	return verify(t, token, k.JWKS(), payload)["kid"]
}

func TestKeyringLoadAndSign(t *testing.T) {
	for _, alg := range algs {
		t.Run(alg, func(t *testing.T) {
			st, clk := newFakeStore(), newClock()
			cfg := testConfig(st, clk, newTestSealer(t))
			cfg.Algorithm = alg
			k := newTestKeyring(t, cfg)
			if k.Ready() || k.JWKS() != nil {
				t.Fatal("ready before Load")
			}
			if _, err := k.Sign("at+jwt", []byte("{}")); !errors.Is(err, ErrNotReady) {
				t.Fatalf("Sign before Load: %v", err)
			}

			mustLoad(t, k)
			ids := st.ids()
			if len(ids) != 1 {
				t.Fatalf("store has %d keys after the first Load", len(ids))
			}
			if !k.Ready() {
				t.Fatal("not ready after Load")
			}
			if kids := jwksKids(t, k.JWKS()); !slices.Equal(kids, ids) {
				t.Fatalf("JWKS kids %v, store %v", kids, ids)
			}

			payload := []byte(`{"iss":"https://issuer.example","sub":"orders","aud":"payments"}`)
			for _, typ := range []string{"at+jwt", "token-introspection+jwt", "", "at+jwt"} {
				token, err := k.Sign(typ, payload)
				if err != nil {
					t.Fatal(err)
				}
				header := verify(t, token, k.JWKS(), payload)
				want := map[string]string{"alg": alg, "kid": ids[0], "typ": typ}
				if typ == "" {
					delete(want, "typ")
				}
				if !mapsEqual(header, want) {
					t.Errorf("header %v, want %v", header, want)
				}
			}

			// Another replica loads the same key rather than making one.
			k2 := newTestKeyring(t, cfg)
			mustLoad(t, k2)
			if ids2 := st.ids(); !slices.Equal(ids2, ids) {
				t.Fatalf("second Load changed the store: %v", ids2)
			}
			if !bytes.Equal(k2.JWKS(), k.JWKS()) {
				t.Fatal("replicas serve different JWKS")
			}
		})
	}
}

func mapsEqual(a, b map[string]string) bool {
	if len(a) != len(b) {
		return false
	}
	for k, v := range a {
		if bv, ok := b[k]; !ok || bv != v {
			return false
		}
	}
	return true
}

// TestKeyringRotation follows keys through pending, active, retiring and
// deleted, moving the clock and running Run's step by hand.
func TestKeyringRotation(t *testing.T) {
	ctx := context.Background()
	st, clk := newFakeStore(), newClock()
	var logs bytes.Buffer
	cfg := testConfig(st, clk, newTestSealer(t))
	cfg.Logger = slog.New(slog.NewJSONHandler(&logs, &slog.HandlerOptions{Level: slog.LevelDebug}))
	k := newTestKeyring(t, cfg)
	mustLoad(t, k)
	a := st.ids()[0]

	rotateAt := t0.Add(testRotation)
	activateB := rotateAt.Add(testPre)
	deleteA := activateB.Add(testMaxLife + retireMargin)

	// A token signed by A just before B takes over, which must verify
	// until A is deleted.
	var lastOfA string
	payload := []byte(`{"sub":"late"}`)

	names := map[string]string{"A": a}
	for _, step := range []struct {
		name      string
		at        time.Time
		tick      bool
		published []string
		signer    string
	}{
		{"before rotation is due", rotateAt.Add(-time.Second), true, []string{"A"}, "A"},
		{"rotation adds B, pending", rotateAt, true, []string{"A", "B"}, "A"},
		{"B still pending", activateB.Add(-time.Nanosecond), false, []string{"A", "B"}, "A"},
		{"B active on time without a reload", activateB, false, []string{"A", "B"}, "B"},
		{"A retiring", activateB.Add(time.Minute), true, []string{"A", "B"}, "B"},
		{"A kept until its tokens expire", deleteA.Add(-time.Second), true, []string{"A", "B"}, "B"},
		{"A deleted", deleteA, true, []string{"B"}, "B"},
		{"nothing more to do", deleteA.Add(time.Hour), true, []string{"B"}, "B"},
	} {
		clk.Set(step.at)
		if step.tick {
			k.tick(ctx)
		}
		ids := st.ids()
		if _, ok := names["B"]; !ok && len(ids) == 2 {
			names["B"] = ids[1]
		}
		var want []string
		for _, n := range step.published {
			want = append(want, names[n])
		}
		if got := jwksKids(t, k.JWKS()); !slices.Equal(got, want) {
			t.Fatalf("%s: JWKS %v, want %v", step.name, got, want)
		}
		if !slices.Equal(ids, want) {
			t.Fatalf("%s: store %v, want %v", step.name, ids, want)
		}
		if got := signerKid(t, k); got != names[step.signer] {
			t.Fatalf("%s: signed with %s, want %s", step.name, got, step.signer)
		}
		if step.name == "B still pending" {
			var err error
			if lastOfA, err = k.Sign("at+jwt", payload); err != nil {
				t.Fatal(err)
			}
		}
		if lastOfA != "" && slices.Contains(step.published, "A") {
			verify(t, lastOfA, k.JWKS(), payload)
		}
	}
	b := names["B"]

	for _, msg := range []string{`"msg":"signing key created","kid":"` + b, `"msg":"signing key deleted","kid":"` + a} {
		if !strings.Contains(logs.String(), msg) {
			t.Errorf("logs lack %s:\n%s", msg, logs.String())
		}
	}
	if strings.Contains(logs.String(), "PRIVATE") || strings.Contains(logs.String(), `"d":`) {
		t.Errorf("logs hold key material:\n%s", logs.String())
	}
}

func TestKeyringRotate(t *testing.T) {
	ctx := context.Background()
	st, clk := newFakeStore(), newClock()
	k := newTestKeyring(t, testConfig(st, clk, newTestSealer(t)))
	mustLoad(t, k)
	a := st.ids()[0]

	// A forced, scheduled rotation: B is published now, signs after PrePublish.
	now := t0.Add(time.Hour)
	clk.Set(now)
	b, err := k.Rotate(ctx, false)
	if err != nil {
		t.Fatal(err)
	}
	if !b.ActivateAt.Equal(now.Add(testPre)) {
		t.Fatalf("B activates at %v", b.ActivateAt)
	}
	if got := jwksKids(t, k.JWKS()); !slices.Equal(got, []string{a, b.ID}) {
		t.Fatalf("JWKS %v", got)
	}
	if got := signerKid(t, k); got != a {
		t.Fatalf("signed with %s before B's activation", got)
	}

	// A compromise: C signs at once, and pending B is withdrawn.
	now = now.Add(time.Minute)
	clk.Set(now)
	c, err := k.Rotate(ctx, true)
	if err != nil {
		t.Fatal(err)
	}
	if !c.ActivateAt.Equal(now) {
		t.Fatalf("C activates at %v", c.ActivateAt)
	}
	if got := signerKid(t, k); got != c.ID {
		t.Fatalf("signed with %s after immediate rotation, want C", got)
	}
	if got := jwksKids(t, k.JWKS()); !slices.Equal(got, []string{a, c.ID}) {
		t.Fatalf("JWKS %v, want A and C", got)
	}
	if got := st.ids(); !slices.Equal(got, []string{a, c.ID}) {
		t.Fatalf("store %v, want A and C", got)
	}

	// A is deleted once its last tokens have expired.
	clk.Set(now.Add(testMaxLife + retireMargin))
	k.tick(ctx)
	if got := jwksKids(t, k.JWKS()); !slices.Equal(got, []string{c.ID}) {
		t.Fatalf("JWKS %v, want C only", got)
	}

	// An immediate rotation in the same microsecond as the newest key's
	// activation still makes the new key the newest.
	d, err := k.Rotate(ctx, true)
	if err != nil {
		t.Fatal(err)
	}
	if !d.ActivateAt.After(c.ActivateAt) {
		t.Fatalf("D activates at %v, not after C (%v)", d.ActivateAt, c.ActivateAt)
	}
}

// TestKeyringRotateOnly is the CLI's path: NewKeyring and Rotate, no Load.
func TestKeyringRotateOnly(t *testing.T) {
	ctx := context.Background()
	st, clk := newFakeStore(), newClock()
	s := newTestSealer(t)

	first, err := newTestKeyring(t, testConfig(st, clk, s)).Rotate(ctx, false)
	if err != nil {
		t.Fatal(err)
	}
	if !first.ActivateAt.Equal(t0) {
		t.Fatalf("first key activates at %v, want at once", first.ActivateAt)
	}
	second, err := newTestKeyring(t, testConfig(st, clk, s)).Rotate(ctx, false)
	if err != nil {
		t.Fatal(err)
	}
	if !second.ActivateAt.Equal(t0.Add(testPre)) {
		t.Fatalf("second key activates at %v", second.ActivateAt)
	}
	if got := st.ids(); !slices.Equal(got, []string{first.ID, second.ID}) {
		t.Fatalf("store %v", got)
	}

	other, err := NewSealer(bytes.Repeat([]byte{9}, KEKSize))
	if err != nil {
		t.Fatal(err)
	}
	_, err = newTestKeyring(t, testConfig(st, clk, other)).Rotate(ctx, true)
	if err == nil || !strings.Contains(err.Error(), "wrong key-encryption key") {
		t.Fatalf("Rotate with the wrong KEK: %v", err)
	}
	if got := st.ids(); len(got) != 2 {
		t.Fatalf("Rotate with the wrong KEK changed the store: %v", got)
	}
}

func TestKeyringLoadWrongKEK(t *testing.T) {
	st, clk := newFakeStore(), newClock()
	mustLoad(t, newTestKeyring(t, testConfig(st, clk, newTestSealer(t))))

	other, err := NewSealer(bytes.Repeat([]byte{9}, KEKSize))
	if err != nil {
		t.Fatal(err)
	}
	k := newTestKeyring(t, testConfig(st, clk, other))
	err = k.Load(context.Background())
	want := "load signing keys: decrypt signing key " + st.ids()[0] + ": wrong key-encryption key or corrupted data"
	if err == nil || err.Error() != want {
		t.Fatalf("Load error %v, want %q", err, want)
	}
	if k.Ready() {
		t.Fatal("ready after a failed Load")
	}

	// Nor does it rotate: a key it made would be one the others cannot open.
	clk.Set(t0.Add(testRotation))
	k.tick(context.Background())
	if got := st.ids(); len(got) != 1 {
		t.Fatalf("a replica with the wrong KEK changed the store: %v", got)
	}
}

// TestKeyringRace has replicas on one store race to create the first key
// and then to rotate: exactly one wins each time, and all agree.
func TestKeyringRace(t *testing.T) {
	const replicas = 4
	st, clk := newFakeStore(), newClock()
	s := newTestSealer(t)
	var ks []*Keyring
	for range replicas {
		ks = append(ks, newTestKeyring(t, testConfig(st, clk, s)))
	}

	race := func(f func(k *Keyring) error) {
		// Every replica reads the store before any writes.
		st.beforeAdd = barrier(replicas)
		defer func() { st.beforeAdd = nil }()
		var wg sync.WaitGroup
		errs := make([]error, replicas)
		for i, k := range ks {
			wg.Go(func() { errs[i] = f(k) })
		}
		wg.Wait()
		if err := errors.Join(errs...); err != nil {
			t.Fatal(err)
		}
	}
	agree := func(want int) {
		t.Helper()
		ids := st.ids()
		if len(ids) != want {
			t.Fatalf("store has %d keys, want %d", len(ids), want)
		}
		for i, k := range ks {
			if got := jwksKids(t, k.JWKS()); !slices.Equal(got, ids) {
				t.Fatalf("replica %d publishes %v, store has %v", i, got, ids)
			}
		}
	}

	race(func(k *Keyring) error { return k.Load(context.Background()) })
	agree(1)

	clk.Set(t0.Add(testRotation))
	race(func(k *Keyring) error { k.tick(context.Background()); return nil })
	agree(2)
}

// barrier returns a function that blocks until n calls have reached it.
func barrier(n int) func() {
	var mu sync.Mutex
	arrived := 0
	all := make(chan struct{})
	return func() {
		mu.Lock()
		if arrived++; arrived == n {
			close(all)
		}
		mu.Unlock()
		select {
		case <-all:
		case <-time.After(5 * time.Second):
		}
	}
}

// TestKeyringReloadFailure: a failed reload keeps the last good keys.
func TestKeyringReloadFailure(t *testing.T) {
	ctx := context.Background()
	st, clk := newFakeStore(), newClock()
	s := newTestSealer(t)
	k := newTestKeyring(t, testConfig(st, clk, s))
	mustLoad(t, k)
	a := st.ids()[0]
	before := k.JWKS()

	// The store is down when rotation is due.
	clk.Set(t0.Add(testRotation))
	st.setFail(errors.New("connection refused"))
	k.tick(ctx)
	if !bytes.Equal(k.JWKS(), before) || signerKid(t, k) != a {
		t.Fatal("a failed reload changed the keys")
	}
	st.setFail(nil)

	// Another replica, misconfigured with another KEK, adds a key this one
	// cannot open.
	other, err := NewSealer(bytes.Repeat([]byte{9}, KEKSize))
	if err != nil {
		t.Fatal(err)
	}
	bad, err := GenerateKey(ES256, clk.Now(), clk.Now().Add(testPre), other)
	if err != nil {
		t.Fatal(err)
	}
	st.put(bad)
	k.tick(ctx)
	if !bytes.Equal(k.JWKS(), before) || signerKid(t, k) != a {
		t.Fatal("a reload that could not open a key changed the keys")
	}

	st.DeleteSigningKey(ctx, bad.ID)
	k.tick(ctx)
	if got := jwksKids(t, k.JWKS()); len(got) != 2 || got[0] != a {
		t.Fatalf("after recovery JWKS %v, want A and a new key", got)
	}
}

// TestKeyringRun runs the loop for real: it picks up a key another replica
// made, and stops with its context.
func TestKeyringRun(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		st := newFakeStore()
		s := newTestSealer(t)
		cfg := KeyringConfig{
			MaxTokenLifetime: time.Hour,
			ReloadInterval:   5 * time.Millisecond,
			Sealer:           s,
			Store:            st,
			Logger:           slog.New(slog.DiscardHandler),
		}
		k := newTestKeyring(t, cfg)
		mustLoad(t, k)

		ctx, cancel := context.WithCancel(t.Context())
		done := make(chan struct{})
		go func() {
			k.Run(ctx)
			close(done)
		}()

		nk, err := newTestKeyring(t, cfg).Rotate(context.Background(), false)
		if err != nil {
			t.Fatal(err)
		}
		time.Sleep(cfg.ReloadInterval)
		synctest.Wait()
		if !slices.Contains(jwksKids(t, k.JWKS()), nk.ID) {
			t.Fatal("Run did not pick up the new key")
		}

		cancel()
		synctest.Wait()
		select {
		case <-done:
		default:
			t.Fatal("Run did not stop")
		}
	})
}

func TestNewKeyring(t *testing.T) {
	st, clk, s := newFakeStore(), newClock(), newTestSealer(t)
	k, err := NewKeyring(KeyringConfig{MaxTokenLifetime: time.Hour, Sealer: s, Store: st})
	if err != nil {
		t.Fatal(err)
	}
	c := k.cfg
	if c.Algorithm != ES256 || c.RotationInterval != 24*time.Hour || c.PrePublish != 10*time.Minute ||
		c.ReloadInterval != 30*time.Second || c.JWKSMaxAge != 5*time.Minute || c.Logger == nil || c.Now == nil {
		t.Fatalf("defaults not applied: %+v", c)
	}

	for _, tc := range []struct {
		name string
		mod  func(*KeyringConfig)
		want string
	}{
		{"HMAC", func(c *KeyringConfig) { c.Algorithm = "HS256" }, `unsupported signing algorithm "HS256"`},
		{"none", func(c *KeyringConfig) { c.Algorithm = "none" }, `unsupported signing algorithm "none"`},
		{"no max lifetime", func(c *KeyringConfig) { c.MaxTokenLifetime = 0 }, "MaxTokenLifetime must be set"},
		{"negative", func(c *KeyringConfig) { c.RotationInterval = -time.Hour }, "RotationInterval must not be negative"},
		{"slow reload", func(c *KeyringConfig) { c.ReloadInterval = 10 * time.Minute }, "must be less than PrePublish"},
		{"long max-age", func(c *KeyringConfig) { c.JWKSMaxAge = 10 * time.Minute }, "must be less than PrePublish"},
		{"sum too long", func(c *KeyringConfig) { c.ReloadInterval, c.JWKSMaxAge = time.Minute, 9*time.Minute }, "ReloadInterval (1m0s) + JWKSMaxAge (9m0s) must be less than PrePublish (10m0s)"},
		{"no sealer", func(c *KeyringConfig) { c.Sealer = nil }, "a Sealer is required"},
		{"no store", func(c *KeyringConfig) { c.Store = nil }, "a Store is required"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			cfg := testConfig(st, clk, s)
			tc.mod(&cfg)
			_, err := NewKeyring(cfg)
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("error %v, want %q", err, tc.want)
			}
		})
	}
}

func TestKeyringServeHTTP(t *testing.T) {
	st, clk := newFakeStore(), newClock()
	k := newTestKeyring(t, testConfig(st, clk, newTestSealer(t)))

	get := func(method string) *httptest.ResponseRecorder {
		w := httptest.NewRecorder()
		k.ServeHTTP(w, httptest.NewRequest(method, "/jwks", nil))
		return w
	}
	if w := get(http.MethodGet); w.Code != http.StatusServiceUnavailable {
		t.Fatalf("before Load: %d", w.Code)
	}
	mustLoad(t, k)
	w := get(http.MethodGet)
	if w.Code != http.StatusOK || !bytes.Equal(w.Body.Bytes(), k.JWKS()) {
		t.Fatalf("GET: %d %s", w.Code, w.Body)
	}
	for name, want := range map[string]string{
		"Content-Type":  "application/jwk-set+json",
		"Cache-Control": "public, max-age=300",
	} {
		if got := w.Header().Get(name); got != want {
			t.Errorf("%s: %q, want %q", name, got, want)
		}
	}
	if w := get(http.MethodHead); w.Code != http.StatusOK || w.Body.Len() != 0 {
		t.Fatalf("HEAD: %d, %d bytes", w.Code, w.Body.Len())
	}
	if w := get(http.MethodPost); w.Code != http.StatusMethodNotAllowed || w.Header().Get("Allow") != "GET, HEAD" {
		t.Fatalf("POST: %d", w.Code)
	}
}

// updateKid signs a key-set update with k and returns the kid in the
// header.
func updateKid(t testing.TB, k *Keyring) string {
	t.Helper()
	payload := []byte(`{"ver":1}`)
	msg, err := k.SignUpdate("jwks-update+jwt", payload)
	if err != nil {
		t.Fatal(err)
	}
	return verify(t, msg, k.JWKS(), payload)["kid"]
}

func TestKeyringSignUpdateAndChanged(t *testing.T) {
	ctx := context.Background()
	st, clk := newFakeStore(), newClock()
	k := newTestKeyring(t, testConfig(st, clk, newTestSealer(t)))
	if _, err := k.SignUpdate("jwks-update+jwt", []byte("{}")); !errors.Is(err, ErrNotReady) {
		t.Fatalf("SignUpdate before Load: %v", err)
	}
	if doc, seq := k.Published(); doc != nil || seq != 0 {
		t.Fatal("Published before Load")
	}
	changed := k.Changed()
	mustLoad(t, k)
	select {
	case <-changed:
	default:
		t.Fatal("Changed not closed by the first Load")
	}
	a := st.ids()[0]
	if got := updateKid(t, k); got != a {
		t.Fatalf("update signed with %s, want A", got)
	}

	// An immediate rotation: tokens are signed by B at once, updates still
	// by A, which every verifier holds.
	changed = k.Changed()
	now := t0.Add(time.Hour)
	clk.Set(now)
	b, err := k.Rotate(ctx, true)
	if err != nil {
		t.Fatal(err)
	}
	select {
	case <-changed:
	default:
		t.Fatal("Changed not closed by the rotation")
	}
	if doc, seq := k.Published(); !bytes.Equal(doc, k.JWKS()) || seq != st.seq.KeysSeq {
		t.Fatalf("Published current at key change %d, the store at %d", seq, st.seq.KeysSeq)
	}
	if got := signerKid(t, k); got != b.ID {
		t.Fatalf("token signed with %s, want B", got)
	}
	if got := updateKid(t, k); got != a {
		t.Fatalf("update signed with %s after the rotation, want A", got)
	}

	// A reload that finds the same keys changes nothing.
	changed = k.Changed()
	k.tick(ctx)
	select {
	case <-changed:
		t.Fatal("Changed closed without a change")
	default:
	}

	// Once A is deleted, updates are signed by B.
	clk.Set(now.Add(testMaxLife + retireMargin))
	k.tick(ctx)
	select {
	case <-changed:
	default:
		t.Fatal("Changed not closed by the deletion")
	}
	if got := updateKid(t, k); got != b.ID {
		t.Fatalf("update signed with %s after A's deletion, want B", got)
	}
}
