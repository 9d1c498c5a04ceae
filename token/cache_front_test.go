package token

import (
	"crypto/sha256"
	"fmt"
	"reflect"
	"testing"
	"time"
)

// inFront reports whether the front of c holds the entry of tok.
func inFront(c *Cache, tok []byte) bool {
	sum := sha256.Sum256(tok)
	return c.entries.InFront(&sum)
}

// TestCacheFrontRevoked checks that deleting a token drops it from the
// front as well, so that it is verified again, and refused once its key is
// gone.
func TestCacheFrontRevoked(t *testing.T) {
	now := func() time.Time { return testNow }
	keys := new(swapKeys)
	keys.set.Store(trustKeySet("a1", "shared@a"))
	cache := testCache(t, CacheConfig{Now: now})
	a, err := NewAuthenticator([]Issuer{{
		Policy: Policy{Issuer: issuerA, Audiences: []string{"orders"}, Now: now},
		Keys:   keys,
	}}, AuthenticatorOptions{Cache: cache})
	if err != nil {
		t.Fatal(err)
	}
	tok := mint("a1", "at+jwt", claimsOf(issuerA, "orders", ""))
	var c Claims
	warm := func() {
		t.Helper()
		for range 2 { // into the main store, then the front
			if err := a.VerifyInto(tok, &c); err != nil {
				t.Fatal(err)
			}
		}
		if hit, err := verifyHit(a, tok, &c); !hit || err != nil || !inFront(cache, tok) {
			t.Fatalf("hit %v, error %v, in front %v", hit, err, inFront(cache, tok))
		}
	}

	warm()
	if !cache.DeleteToken(sha256.Sum256(tok)) || inFront(cache, tok) {
		t.Fatal("DeleteToken left the token in the front")
	}
	if hit, err := verifyHit(a, tok, &c); hit || err != nil {
		t.Fatalf("after DeleteToken: hit %v, error %v; want verified again", hit, err)
	}

	warm()
	if n := cache.DeleteFunc(func(c *Claims) bool { return c.ID == "j-"+issuerA+"-orders" }); n != 1 {
		t.Errorf("DeleteFunc dropped %d tokens, want 1", n)
	}
	if inFront(cache, tok) {
		t.Fatal("DeleteFunc left the token in the front")
	}
	keys.set.Store(trustKeySet("shared@a"))
	if hit, err := verifyHit(a, tok, &c); hit || reasonOf(err) != UnknownKey {
		t.Errorf("revoked token with its key removed: hit %v, error %v; want %v", hit, err, UnknownKey)
	}
}

// TestCacheFrontExpiry checks that the front serves an entry neither at
// the token's "exp" nor past MaxAge.
func TestCacheFrontExpiry(t *testing.T) {
	tok := mint("a1", "at+jwt", claimsOf(issuerA, "orders", "")) // exp: testNow + 5 min
	for _, tt := range []struct {
		name   string
		maxAge time.Duration
		at     time.Duration
	}{
		{"exp", time.Hour, 300 * time.Second},
		{"MaxAge", time.Minute, time.Minute},
	} {
		t.Run(tt.name, func(t *testing.T) {
			clock := newTestClock()
			cache := testCache(t, CacheConfig{MaxAge: tt.maxAge, Now: clock.now})
			a := testAuthenticator(t, clock.now, cache)
			var c Claims
			for range 2 {
				if err := a.VerifyInto(tok, &c); err != nil {
					t.Fatal(err)
				}
			}
			clock.set(testNow.Add(tt.at - time.Nanosecond))
			if hit, err := verifyHit(a, tok, &c); !hit || err != nil || !inFront(cache, tok) {
				t.Fatalf("before expiry: hit %v, error %v, in front %v", hit, err, inFront(cache, tok))
			}
			clock.set(testNow.Add(tt.at))
			if hit, err := verifyHit(a, tok, &c); hit || err != nil {
				t.Errorf("at expiry: hit %v, error %v; want verified again", hit, err)
			}
		})
	}
}

// TestCacheFrontCollision shares one front slot among all tokens, and
// checks that none is answered with another's claims.
func TestCacheFrontCollision(t *testing.T) {
	now := func() time.Time { return testNow }
	cache := testCache(t, CacheConfig{Now: now, FrontSlots: 1})
	a := testAuthenticator(t, now, cache)
	var toks [][]byte
	var want []*Claims
	for _, sub := range []string{"alice", "bob-the-second", "carol"} {
		tok := mint("b1", "", fmt.Sprintf(`{"iss":%q,"aud":"payments","exp":1750000300,"sub":%q}`, issuerB, sub))
		w, err := a.trust.Load().verifiers[1].Verify(tok)
		if err != nil {
			t.Fatal(err)
		}
		toks, want = append(toks, tok), append(want, w)
	}
	var c Claims
	// Each token repeated, then all in turn: from the front, then each
	// displacing the other from it. A token enters the front on its
	// first use from the main store, that is its second verification.
	seen, front := map[int]bool{}, -1
	for _, i := range []int{0, 0, 0, 1, 1, 1, 0, 2, 1, 2, 2, 0, 1} {
		if err := a.VerifyInto(toks[i], &c); err != nil {
			t.Fatal(err)
		}
		if !reflect.DeepEqual(&c, want[i]) {
			t.Fatalf("token %d: claims\n%+v\nwant\n%+v", i, c, *want[i])
		}
		if seen[i] {
			front = i
		}
		seen[i] = true
		for j := range toks {
			if inFront(cache, toks[j]) != (j == front) {
				t.Fatalf("after token %d: token %d in front %v", i, j, j != front)
			}
		}
	}
	// A token never verified is not answered from the slot.
	other := mint("b1", "", claimsOf(issuerB, "payments", ""))
	if hit, err := verifyHit(a, other, &c); hit || err != nil || c.Subject != "alice" || c.Audience[0] != "payments" {
		t.Errorf("hit %v, error %v, claims %+v", hit, err, c)
	}
}

// TestCacheNoFront checks a cache without a front.
func TestCacheNoFront(t *testing.T) {
	now := func() time.Time { return testNow }
	cache := testCache(t, CacheConfig{Now: now, FrontSlots: -1})
	a := testAuthenticator(t, now, cache)
	tok := mint("b1", "", claimsOf(issuerB, "payments", ""))
	var c Claims
	for i, wantHit := range []bool{false, true, true} {
		if hit, err := verifyHit(a, tok, &c); hit != wantHit || err != nil {
			t.Errorf("run %d: hit %v, error %v", i, hit, err)
		}
	}
	if !cache.DeleteToken(sha256.Sum256(tok)) || cache.DeleteFunc(func(*Claims) bool { return true }) != 0 {
		t.Error("delete")
	}
}
