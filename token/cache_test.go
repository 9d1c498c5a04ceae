package token

import (
	"bytes"
	"crypto/sha256"
	"encoding/binary"
	"errors"
	"fmt"
	"reflect"
	"runtime"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

// testClock is a clock that tests move.
type testClock struct{ ns atomic.Int64 }

func newTestClock() *testClock {
	c := new(testClock)
	c.set(testNow)
	return c
}

func (c *testClock) now() time.Time  { return time.Unix(0, c.ns.Load()) }
func (c *testClock) set(t time.Time) { c.ns.Store(t.UnixNano()) }

// swapKeys are Keys that a test replaces, as a key-set refresh would.
type swapKeys struct{ set atomic.Pointer[KeySet] }

func (k *swapKeys) Lookup(kid string) (Key, bool) { return k.set.Load().Lookup(kid) }

func testCache(tb testing.TB, cfg CacheConfig) *Cache {
	tb.Helper()
	c, err := NewCache(cfg)
	if err != nil {
		tb.Fatal(err)
	}
	return c
}

// verifyHit verifies tok with a and reports whether the cache answered.
func verifyHit(a *Authenticator, tok []byte, c *Claims) (bool, error) {
	hits := a.cache.Stats().Hits
	err := a.VerifyInto(tok, c)
	return a.cache.Stats().Hits > hits, err
}

func reasonOf(err error) Reason {
	var e *Error
	if errors.As(err, &e) {
		return e.Reason
	}
	return 0
}

// TestCacheClaims checks that a hit yields the claims that verifying
// yields, and keeps no bearer token.
func TestCacheClaims(t *testing.T) {
	tests := []struct{ name, claims string }{
		{"minimal", `{"iss":"https://b.example","aud":"payments","exp":1750000300}`},
		{"every claim", `{"iss":"https:\/\/b.example","sub":"al\u0069ce","aud":["x","payments"],` +
			`"exp":1750000300.25,"nbf":1749999990,"iat":1749999990.5,"jti":"j1","client_id":"web",` +
			`"scope":"read write","sid":"g\u0031","act":{"sub":"orders","act":{"sub":"edge"}},"may_act":{"sub":"payments"},` +
			`"other":[1,{"x":null}],"sub_":"ünïcødé"}`},
		{"empty strings", `{"iss":"https://b.example","sub":"","aud":["payments",""],"exp":1750000300,"scope":""}`},
	}
	now := func() time.Time { return testNow }
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			a := testAuthenticator(t, now, testCache(t, CacheConfig{Now: now}))
			tok := mint("b1", "", tt.claims)
			want, err := a.trust.Load().verifiers[1].Verify(tok)
			if err != nil {
				t.Fatal(err)
			}
			for i, wantHit := range []bool{false, true, true} { // miss, main store, front
				var c Claims
				hit, err := verifyHit(a, tok, &c)
				if err != nil || hit != wantHit {
					t.Fatalf("run %d: hit %v, error %v", i, hit, err)
				}
				if !reflect.DeepEqual(&c, want) {
					t.Errorf("run %d: claims\n%+v\nwant\n%+v", i, c, *want)
				}
				if pos, ok := offsetIn(c.Raw, c.Act); !ok || (pos == 0) != (c.Act == nil) {
					t.Errorf("run %d: act is not a slice of raw", i)
				}
			}
			sig := tok[bytes.LastIndexByte(tok, '.')+1:]
			a.cache.entries.DeleteFunc(func(v []byte) bool {
				if bytes.Contains(v, sig) {
					t.Error("the cache holds the token")
				}
				return false
			})
			if n := a.cache.Stats().Entries; n != 1 || !a.cache.DeleteToken(sha256.Sum256(tok)) {
				t.Errorf("%d entries, none under the token's digest", n)
			}
		})
	}
}

// TestCacheReusedClaims checks that strings returned earlier do not change
// when the Claims they came in are reused, from the cache or not.
func TestCacheReusedClaims(t *testing.T) {
	now := func() time.Time { return testNow }
	a := testAuthenticator(t, now, testCache(t, CacheConfig{Now: now}))
	toks := make([][]byte, 2)
	for i, sub := range []string{"alice", "bob-the-second"} {
		toks[i] = mint("b1", "", fmt.Sprintf(`{"iss":%q,"aud":"payments","exp":1750000300,"sub":%q,"act":{"sub":%q}}`, issuerB, sub, sub))
	}
	var c Claims
	var subs, acts []string
	for i := range 6 { // misses, then hits
		if err := a.VerifyInto(toks[i%2], &c); err != nil {
			t.Fatal(err)
		}
		subs = append(subs, c.Subject)
		acts = append(acts, string(c.Act))
	}
	for i, s := range subs {
		want := []string{"alice", "bob-the-second"}[i%2]
		if s != want || acts[i] != fmt.Sprintf(`{"sub":%q}`, want) {
			t.Errorf("result %d: sub %q, act %s, want %q", i, s, acts[i], want)
		}
	}
}

// TestCacheExpiry checks that an entry is used neither at or after the
// token's "exp" nor past MaxAge, while the Verifier still applies its
// leeway.
func TestCacheExpiry(t *testing.T) {
	clock := newTestClock()
	a := testAuthenticator(t, clock.now, testCache(t, CacheConfig{MaxAge: time.Minute, Now: clock.now}))
	tok := mint("a1", "at+jwt", claimsOf(issuerA, "orders", "")) // exp: testNow + 5 min
	steps := []struct {
		at     time.Duration
		hit    bool
		reason Reason
	}{
		{0, false, 0},
		{0, true, 0},
		{59 * time.Second, true, 0},
		{60 * time.Second, false, 0}, // MaxAge: verified and cached again
		{61 * time.Second, true, 0},
		{299 * time.Second, false, 0},
		{299*time.Second + 999*time.Millisecond, true, 0},
		{300 * time.Second, false, 0}, // exp: only the Verifier's leeway admits it
		{310 * time.Second, false, 0},
		{330 * time.Second, false, Expired},
	}
	for _, s := range steps {
		clock.set(testNow.Add(s.at))
		var c Claims
		hit, err := verifyHit(a, tok, &c)
		if hit != s.hit || reasonOf(err) != s.reason {
			t.Errorf("at +%v: hit %v, error %v; want hit %v, %v", s.at, hit, err, s.hit, s.reason)
		}
	}
}

// TestCacheKeyRemoved checks that an entry stops being used as soon as its
// key leaves the issuer's key set.
func TestCacheKeyRemoved(t *testing.T) {
	tests := []struct {
		name   string
		keys   *KeySet
		reason Reason
	}{
		{"kid removed", trustKeySet("shared@a"), UnknownKey},
		{"kid now names a key of another algorithm", NewKeySet([]Key{{ID: "a1", Algorithm: "ES384", Public: trustKeys()["shared@a"].Public()}}), UnsupportedAlgorithm},
	}
	now := func() time.Time { return testNow }
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			keys := new(swapKeys)
			keys.set.Store(trustKeySet("a1", "shared@a"))
			a, err := NewAuthenticator([]Issuer{{
				Policy: Policy{Issuer: issuerA, Audiences: []string{"orders"}, Now: now},
				Keys:   keys,
			}}, AuthenticatorOptions{Cache: testCache(t, CacheConfig{Now: now})})
			if err != nil {
				t.Fatal(err)
			}
			tok := mint("a1", "at+jwt", claimsOf(issuerA, "orders", ""))
			var c Claims
			for range 3 { // miss, main store, front
				if err := a.VerifyInto(tok, &c); err != nil {
					t.Fatal(err)
				}
			}
			if !inFront(a.cache, tok) {
				t.Fatal("not in the front")
			}
			keys.set.Store(tt.keys)
			hit, err := verifyHit(a, tok, &c)
			if hit || reasonOf(err) != tt.reason {
				t.Errorf("hit %v, error %v, want %v", hit, err, tt.reason)
			}
		})
	}
}

func TestCacheDelete(t *testing.T) {
	var toks [][]byte
	for i := range 3 {
		toks = append(toks, mint("b1", "", fmt.Sprintf(
			`{"iss":%q,"aud":"payments","exp":1750000300,"jti":"j%d","sub":"s%d","client_id":"c%d"}`, issuerB, i, i, i)))
	}
	tests := []struct {
		name    string
		delete  func(*Cache) int
		dropped int // index into toks
	}{
		{"by jti", func(c *Cache) int { return c.DeleteFunc(func(c *Claims) bool { return c.ID == "j0" }) }, 0},
		{"by sub", func(c *Cache) int { return c.DeleteFunc(func(c *Claims) bool { return c.Subject == "s1" }) }, 1},
		{"by client_id", func(c *Cache) int { return c.DeleteFunc(func(c *Claims) bool { return c.ClientID == "c2" }) }, 2},
		{"by token digest", func(c *Cache) int {
			if c.DeleteToken(sha256.Sum256(toks[1])) && !c.DeleteToken(sha256.Sum256(toks[1])) {
				return 1
			}
			return 0
		}, 1},
	}
	now := func() time.Time { return testNow }
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			cache := testCache(t, CacheConfig{Now: now})
			a := testAuthenticator(t, now, cache)
			var c Claims
			for _, tok := range toks {
				for range 2 { // into the main store, then the front
					if err := a.VerifyInto(tok, &c); err != nil {
						t.Fatal(err)
					}
				}
				if !inFront(cache, tok) {
					t.Fatal("not in the front")
				}
			}
			if n := tt.delete(cache); n != 1 {
				t.Errorf("deleted %d entries, want 1", n)
			}
			if inFront(cache, toks[tt.dropped]) {
				t.Error("deleted token still in the front")
			}
			for i, tok := range toks {
				hit, err := verifyHit(a, tok, &c)
				if err != nil || hit != (i != tt.dropped) {
					t.Errorf("token %d: hit %v, error %v", i, hit, err)
				}
			}
		})
	}
}

// TestCacheBounded fills a small cache far beyond its size.
func TestCacheBounded(t *testing.T) {
	const maxBytes = 1 << 20
	now := func() time.Time { return testNow }
	tok := mint("b1", "", claimsOf(issuerB, "payments", ""))
	var before, after runtime.MemStats
	runtime.GC()
	runtime.ReadMemStats(&before)

	cache := testCache(t, CacheConfig{MaxBytes: maxBytes, Shards: 16, Now: now})
	a := testAuthenticator(t, now, cache)
	var c Claims
	if err := a.VerifyInto(tok, &c); err != nil {
		t.Fatal(err)
	}
	hdr := tok[:bytes.IndexByte(tok, '.')]
	const n = 50_000
	for i := range n {
		var sum [sha256.Size]byte
		binary.LittleEndian.PutUint64(sum[:], uint64(i)*0x9e3779b97f4a7c15) // spread over the shards
		cache.store(&sum, 1, a.trust.Load().verifiers[1], hdr, &c)
	}

	runtime.GC()
	runtime.ReadMemStats(&after)
	s := cache.Stats()
	if s.Bytes > maxBytes || s.Entries == 0 || s.Entries >= n {
		t.Errorf("stats %+v after %d entries in %d bytes", s, n, maxBytes)
	}
	// The byte arrays, plus the shards' indexes and buffers.
	if grown := int64(after.HeapAlloc) - int64(before.HeapAlloc); grown > maxBytes*3/2 {
		t.Errorf("heap grew by %d bytes", grown)
	}
	runtime.KeepAlive(cache)
}

func TestCacheHitAllocs(t *testing.T) {
	now := func() time.Time { return testNow }
	a := testAuthenticator(t, now, testCache(t, CacheConfig{Now: now}))
	tok := mint("a1", "at+jwt", claimsOf(issuerA, "orders", `"act":{"sub":"orders"},`))
	var c Claims
	if err := a.VerifyInto(tok, &c); err != nil {
		t.Fatal(err)
	}
	// The first run, uncounted, moves the entry into the front; a hit
	// there lends c the entry's memory and reuses c.Raw.
	if n := testing.AllocsPerRun(100, func() { a.VerifyInto(tok, &c) }); n != 0 {
		t.Errorf("front hit: %v allocations, want 0", n)
	}
	if !inFront(a.cache, tok) {
		t.Error("not in the front")
	}
	// Without a front, bigcache's Get copies the key it compares and the
	// entry it returns: the strings of c share the latter.
	a = testAuthenticator(t, now, testCache(t, CacheConfig{Now: now, FrontSlots: -1}))
	if err := a.VerifyInto(tok, &c); err != nil {
		t.Fatal(err)
	}
	if n := testing.AllocsPerRun(100, func() { a.VerifyInto(tok, &c) }); n >= 3 {
		t.Errorf("cache hit without front: %v allocations, want 2", n)
	}
}

func TestNewCacheErrors(t *testing.T) {
	tests := []struct {
		name string
		cfg  CacheConfig
	}{
		{"MaxBytes below 1 MiB", CacheConfig{MaxBytes: 1<<20 - 1}},
		{"negative MaxBytes", CacheConfig{MaxBytes: -1}},
		{"Shards not a power of two", CacheConfig{Shards: 3}},
		{"negative Shards", CacheConfig{Shards: -4}},
		{"shards too small", CacheConfig{MaxBytes: 1 << 20, Shards: 128}},
		{"negative MaxAge", CacheConfig{MaxAge: -time.Second}},
		{"FrontSlots not a power of two", CacheConfig{FrontSlots: 3}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if _, err := NewCache(tt.cfg); err == nil {
				t.Error("NewCache succeeded")
			}
		})
	}
}

func TestCacheConcurrent(t *testing.T) {
	clock := newTestClock()
	cache := testCache(t, CacheConfig{Now: clock.now})
	a := testAuthenticator(t, clock.now, cache)
	var cases []struct {
		tok    []byte
		issuer string
		reason Reason
	}
	for _, tt := range trustCases() {
		cases = append(cases, struct {
			tok    []byte
			issuer string
			reason Reason
		}{tt.tok, tt.issuer, tt.reason})
	}
	var wg sync.WaitGroup
	stop := make(chan struct{})
	wg.Go(func() { // revocations and metrics meanwhile
		for {
			select {
			case <-stop:
				return
			default:
			}
			cache.DeleteFunc(func(c *Claims) bool { return c.Issuer == issuerB })
			cache.Stats()
		}
	})
	var workers sync.WaitGroup
	for g := range 8 {
		workers.Go(func() {
			var c Claims
			for i := range 300 {
				tt := cases[(g+i)%len(cases)]
				err := a.VerifyInto(tt.tok, &c)
				if reasonOf(err) != tt.reason || err == nil && c.Issuer != tt.issuer {
					t.Errorf("error %v, issuer %q; want %v, %q", err, c.Issuer, tt.reason, tt.issuer)
					return
				}
			}
		})
	}
	workers.Wait()
	close(stop)
	wg.Wait()
	if s := cache.Stats(); s.Hits == 0 {
		t.Errorf("no hit: %+v", s)
	}
}
