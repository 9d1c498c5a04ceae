package token

import (
	"crypto/sha256"
	"fmt"
	"strconv"
	"sync"
	"testing"
	"time"
)

// revocableToken returns a token of issuer A for "orders" with every claim
// a revocation matches, issued at iat.
func revocableToken(iat time.Time) []byte {
	return mint("a1", "at+jwt", claimsOf(issuerA, "orders",
		fmt.Sprintf(`"client_id":"web","sid":"g1","iat":%d,`, iat.Unix())))
}

// revocationAt returns a revocation by issuer A of kind and value made at
// t, which lasts ten minutes.
func revocationAt(kind, value string, t time.Time) Revocation {
	return Revocation{Issuer: issuerA, Kind: kind, Value: value, RevokedAt: t, ExpiresAt: t.Add(10 * time.Minute)}
}

// TestRevoke checks which tokens a revocation refuses, with the cache and
// without, before and after the token was cached.
func TestRevoke(t *testing.T) {
	issued := testNow.Add(-time.Minute)
	tok := revocableToken(issued)
	noIat := mint("a1", "at+jwt", claimsOf(issuerA, "orders", `"client_id":"web","sid":"g1",`))
	tests := []struct {
		name    string
		tok     []byte
		revoke  []Revocation
		refused bool
	}{
		{"no revocation", tok, nil, false},
		{"jti", tok, []Revocation{revocationAt(RevokeTokenID, "j-"+issuerA+"-orders", issued)}, true},
		{"client_id", tok, []Revocation{revocationAt(RevokeClientID, "web", issued)}, true},
		{"sub", tok, []Revocation{revocationAt(RevokeSubject, "alice", issued)}, true},
		{"sid", tok, []Revocation{revocationAt(RevokeSession, "g1", issued)}, true},
		{"revoked after issue", tok, []Revocation{revocationAt(RevokeSubject, "alice", issued.Add(time.Second))}, true},
		{"issued after revocation", tok, []Revocation{revocationAt(RevokeSubject, "alice", issued.Add(-time.Second))}, false},
		{"no iat", noIat, []Revocation{revocationAt(RevokeSubject, "alice", issued)}, true},
		{"another value", tok, []Revocation{revocationAt(RevokeSubject, "bob", issued)}, false},
		{"value of another kind", tok, []Revocation{revocationAt(RevokeClientID, "alice", issued)}, false},
		{"unknown kind", tok, []Revocation{revocationAt("aud", "orders", issued)}, false},
		{"another issuer's", tok, []Revocation{{Issuer: issuerB, Kind: RevokeSubject, Value: "alice", RevokedAt: issued, ExpiresAt: issued.Add(10 * time.Minute)}}, false},
		{"no issuer", tok, []Revocation{{Kind: RevokeSubject, Value: "alice", RevokedAt: issued, ExpiresAt: issued.Add(10 * time.Minute)}}, false},
		{"the same value by two issuers", tok, []Revocation{
			{Issuer: issuerB, Kind: RevokeSubject, Value: "alice", RevokedAt: issued, ExpiresAt: issued.Add(10 * time.Minute)},
			revocationAt(RevokeSubject, "alice", issued),
		}, true},
		{"empty value", noIat, []Revocation{revocationAt(RevokeSession, "", issued)}, false},
		{"expired", tok, []Revocation{{Issuer: issuerA, Kind: RevokeSubject, Value: "alice", RevokedAt: issued, ExpiresAt: testNow}}, false},
		{"duplicate", tok, []Revocation{
			revocationAt(RevokeSubject, "alice", issued),
			revocationAt(RevokeSubject, "alice", issued),
		}, true},
		{"older duplicate keeps the later one", tok, []Revocation{
			revocationAt(RevokeSubject, "alice", issued),
			revocationAt(RevokeSubject, "alice", issued.Add(-time.Hour)),
		}, true},
		{"later duplicate covers more", tok, []Revocation{
			revocationAt(RevokeSubject, "alice", issued.Add(-time.Second)),
			revocationAt(RevokeSubject, "alice", issued),
		}, true},
	}
	now := func() time.Time { return testNow }
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			for _, cached := range []bool{false, true} {
				var cache *Cache
				if cached {
					cache = testCache(t, CacheConfig{Now: now})
				}
				a, err := NewAuthenticator(trustIssuers(now), AuthenticatorOptions{Cache: cache, Now: now})
				if err != nil {
					t.Fatal(err)
				}
				var c Claims
				for range 2 { // into the cache's main store, then its front
					if err := a.VerifyInto(tt.tok, &c); err != nil {
						t.Fatal(err)
					}
				}
				for _, r := range tt.revoke {
					a.Revoke(r)
				}
				if cached {
					if dropped := !inFront(cache, tt.tok) && cache.Stats().Entries == 0; dropped != tt.refused {
						t.Errorf("cached: entry dropped %v, want %v", dropped, tt.refused)
					}
				}
				for i := range 2 {
					err := a.VerifyInto(tt.tok, &c)
					if (reasonOf(err) == Revoked) != tt.refused || !tt.refused && err != nil {
						t.Fatalf("cached %v, run %d: error %v, want refused %v", cached, i, err, tt.refused)
					}
				}
				want := RevocationStats{Entries: min(len(tt.revoke), 1)}
				switch tt.name {
				case "unknown kind", "empty value", "expired", "no issuer":
					want.Entries = 0
				case "the same value by two issuers":
					want.Entries = 2
				}
				if tt.refused {
					want.Refused = 2
				}
				if s := a.RevocationStats(); s != want {
					t.Errorf("cached %v: stats %+v, want %+v", cached, s, want)
				}
			}
		})
	}
}

// TestRevokeExpiry checks that a revocation stops refusing at ExpiresAt,
// and is forgotten by the next Revoke.
func TestRevokeExpiry(t *testing.T) {
	clock := newTestClock()
	a, err := NewAuthenticator(trustIssuers(clock.now), AuthenticatorOptions{Now: clock.now})
	if err != nil {
		t.Fatal(err)
	}
	// A token that outlives its revocation, which no issuer of meshauth
	// mints, shows when the revocation ends.
	tok := mint("a1", "at+jwt", fmt.Sprintf(`{"iss":%q,"aud":"orders","exp":%d,"sub":"alice","iat":%d}`,
		issuerA, testNow.Add(time.Hour).Unix(), testNow.Unix()))
	r := revocationAt(RevokeSubject, "alice", testNow)
	a.Revoke(r)
	var c Claims
	if err := a.VerifyInto(tok, &c); reasonOf(err) != Revoked {
		t.Fatalf("before ExpiresAt: error %v, want %v", err, Revoked)
	}
	clock.set(r.ExpiresAt)
	if err := a.VerifyInto(tok, &c); err != nil {
		t.Fatalf("at ExpiresAt: %v", err)
	}
	if n := a.RevocationStats().Entries; n != 1 {
		t.Errorf("%d entries before the next Revoke, want 1", n)
	}
	a.Revoke(revocationAt(RevokeSubject, "bob", r.ExpiresAt))
	if n := a.RevocationStats().Entries; n != 1 {
		t.Errorf("%d entries after the next Revoke, want 1", n)
	}
}

// TestRevokeLimit checks that revocations beyond MaxRevocations are
// forgotten soonest-expiring first, and that the tokens they refused stay
// refused.
func TestRevokeLimit(t *testing.T) {
	clock := newTestClock()
	const limit = 4
	a, err := NewAuthenticator(trustIssuers(clock.now), AuthenticatorOptions{MaxRevocations: limit, Now: clock.now})
	if err != nil {
		t.Fatal(err)
	}
	// Six subjects, revoked a second apart from testNow-10s: the first
	// two are forgotten.
	start := testNow.Add(-10 * time.Second)
	for i := range 6 {
		a.Revoke(revocationAt(RevokeSubject, "user"+strconv.Itoa(i), start.Add(time.Duration(i)*time.Second)))
	}
	if s := a.RevocationStats(); s.Entries != limit || s.Forgotten != 2 {
		t.Fatalf("stats %+v, want %d entries and 2 forgotten", s, limit)
	}
	tokenOf := func(sub string, iat time.Time) []byte {
		return mint("a1", "at+jwt", fmt.Sprintf(`{"iss":%q,"aud":"orders","exp":%d,"sub":%q,"iat":%d}`,
			issuerA, testNow.Add(time.Hour).Unix(), sub, iat.Unix()))
	}
	tests := []struct {
		name    string
		tok     []byte
		refused bool
	}{
		{"forgotten, issued before", tokenOf("user0", start), true},
		{"another subject issued before the last forgotten", tokenOf("carol", start.Add(time.Second)), true},
		{"another subject issued after the last forgotten", tokenOf("carol", start.Add(2*time.Second)), false},
		{"held, issued before", tokenOf("user5", start.Add(5*time.Second)), true},
		{"held, issued after", tokenOf("user5", start.Add(6*time.Second)), false},
	}
	for _, tt := range tests {
		var c Claims
		if err := a.VerifyInto(tt.tok, &c); (reasonOf(err) == Revoked) != tt.refused || !tt.refused && err != nil {
			t.Errorf("%s: error %v, want refused %v", tt.name, err, tt.refused)
		}
	}
	// Once the forgotten revocations would have expired, so does what
	// they refused.
	clock.set(start.Add(4*time.Second + 10*time.Minute))
	a.Revoke(revocationAt(RevokeSubject, "user6", clock.now()))
	if s := a.RevocationStats(); s.Entries != 2 {
		t.Errorf("stats %+v, want user5 and user6 held", s)
	}
	var c Claims
	if err := a.VerifyInto(tokenOf("carol", start), &c); err != nil {
		t.Errorf("after the forgotten revocations expired: %v", err)
	}
}

// TestAddIssuer checks that an issuer added at run time is trusted, and
// that replacing one applies its new policy to tokens cached before.
func TestAddIssuer(t *testing.T) {
	now := func() time.Time { return testNow }
	cache := testCache(t, CacheConfig{Now: now})
	a, err := NewAuthenticator(trustIssuers(now)[:1], AuthenticatorOptions{Cache: cache, Now: now})
	if err != nil {
		t.Fatal(err)
	}
	tokA := mint("a1", "at+jwt", claimsOf(issuerA, "orders", ""))
	tokB := mint("b1", "", claimsOf(issuerB, "payments", ""))
	verify := func(tok []byte) error {
		var c Claims
		return a.VerifyInto(tok, &c)
	}
	if err := verify(tokB); reasonOf(err) != BadIssuer {
		t.Fatalf("B before AddIssuer: error %v, want %v", err, BadIssuer)
	}
	if err := a.AddIssuer(trustIssuers(now)[1]); err != nil {
		t.Fatal(err)
	}
	for range 3 {
		if err := verify(tokB); err != nil {
			t.Fatalf("B after AddIssuer: %v", err)
		}
		if err := verify(tokA); err != nil {
			t.Fatalf("A after AddIssuer: %v", err)
		}
	}
	// A now accepts only tokens for "shipping".
	if err := a.AddIssuer(Issuer{
		Policy: Policy{Issuer: issuerA, Audiences: []string{"shipping"}, Now: now},
		Keys:   trustKeySet("a1"),
	}); err != nil {
		t.Fatal(err)
	}
	if err := verify(tokA); reasonOf(err) != BadAudience {
		t.Errorf("A's cached token after A's policy changed: error %v, want %v", err, BadAudience)
	}
	if err := verify(tokB); err != nil {
		t.Errorf("B after A was replaced: %v", err)
	}
	if err := verify(mint("a1", "at+jwt", claimsOf(issuerA, "shipping", ""))); err != nil {
		t.Errorf("A for shipping: %v", err)
	}
	if err := a.AddIssuer(Issuer{Policy: Policy{Issuer: issuerA}, Keys: trustKeySet("a1")}); err == nil {
		t.Error("AddIssuer accepted a policy without audience")
	}
	if err := verify(mint("a1", "at+jwt", claimsOf(issuerA, "shipping", ""))); err != nil {
		t.Errorf("A after a refused AddIssuer: %v", err)
	}
}

// TestRevokeConcurrent verifies tokens while others revoke and trust
// issuers (run it with -race).
func TestRevokeConcurrent(t *testing.T) {
	clock := newTestClock()
	cache := testCache(t, CacheConfig{Now: clock.now})
	a, err := NewAuthenticator(trustIssuers(clock.now), AuthenticatorOptions{Cache: cache, MaxRevocations: 64, Now: clock.now})
	if err != nil {
		t.Fatal(err)
	}
	issued := testNow.Add(-time.Minute)
	keep := mint("b1", "", claimsOf(issuerB, "payments", fmt.Sprintf(`"iat":%d,`, issued.Unix())))
	revoked := revocableToken(issued)
	// The revocations made meanwhile, of tokens issued earlier, go over
	// the limit: those forgotten expire before this one.
	a.Revoke(Revocation{Issuer: issuerA, Kind: RevokeSession, Value: "g1", RevokedAt: testNow, ExpiresAt: testNow.Add(2 * time.Hour)})
	var wg sync.WaitGroup
	stop := make(chan struct{})
	wg.Go(func() {
		for i := 0; ; i++ {
			select {
			case <-stop:
				return
			default:
			}
			a.Revoke(Revocation{
				Issuer: issuerA, Kind: RevokeTokenID, Value: strconv.Itoa(i),
				RevokedAt: issued.Add(-time.Second), ExpiresAt: testNow.Add(time.Hour + time.Duration(i)*time.Millisecond),
			})
			a.RevocationStats()
			if i%50 == 0 {
				if err := a.AddIssuer(trustIssuers(clock.now)[1]); err != nil {
					t.Error(err)
					return
				}
			}
		}
	})
	var workers sync.WaitGroup
	for range 4 {
		workers.Go(func() {
			var c Claims
			for range 300 {
				if err := a.VerifyInto(keep, &c); err != nil {
					t.Errorf("kept token: %v", err)
					return
				}
				if err := a.VerifyInto(revoked, &c); reasonOf(err) != Revoked {
					t.Errorf("revoked token: error %v", err)
					return
				}
			}
		})
	}
	workers.Wait()
	close(stop)
	wg.Wait()
}

// TestRevokedCacheHitAllocs checks that a cache hit allocates nothing
// with many revocations held.
func TestRevokedCacheHitAllocs(t *testing.T) {
	now := func() time.Time { return testNow }
	cache := testCache(t, CacheConfig{Now: now})
	a, err := NewAuthenticator(trustIssuers(now), AuthenticatorOptions{Cache: cache, Now: now})
	if err != nil {
		t.Fatal(err)
	}
	revokeMany(a, 1000, testNow)
	tok := revocableToken(testNow.Add(-time.Minute))
	var c Claims
	if err := a.VerifyInto(tok, &c); err != nil {
		t.Fatal(err)
	}
	if n := testing.AllocsPerRun(100, func() { a.VerifyInto(tok, &c) }); n != 0 {
		t.Errorf("front hit: %v allocations, want 0", n)
	}
	a.Revoke(revocationAt(RevokeSession, "g1", testNow))
	if n := testing.AllocsPerRun(100, func() { a.VerifyInto(tok, &c) }); n != 0 {
		t.Errorf("refused: %v allocations, want 0", n)
	}
}

// revokeMany revokes n values of every kind, none of a token of the tests.
func revokeMany(a *Authenticator, n int, at time.Time) {
	for i := range n {
		for _, kind := range [...]string{RevokeTokenID, RevokeClientID, RevokeSubject, RevokeSession} {
			a.Revoke(revocationAt(kind, fmt.Sprintf("%x", sha256.Sum256([]byte(kind+strconv.Itoa(i))))[:20], at))
		}
	}
}

// TestRevocationMatches is the rule every cache shares: which tokens a
// revocation reaches.
func TestRevocationMatches(t *testing.T) {
	at := testNow
	r := func(kind, value string) Revocation {
		return Revocation{Issuer: issuerA, Kind: kind, Value: value, RevokedAt: at, ExpiresAt: at.Add(time.Hour)}
	}
	tests := []struct {
		name string
		r    Revocation
		iss  string
		iat  time.Time
		want bool
	}{
		{"jti", r(RevokeTokenID, "j1"), issuerA, at, true},
		{"client_id", r(RevokeClientID, "web"), issuerA, at, true},
		{"sub", r(RevokeSubject, "alice"), issuerA, at, true},
		{"sid", r(RevokeSession, "g1"), issuerA, at, true},
		{"issued before", r(RevokeSubject, "alice"), issuerA, at.Add(-time.Hour), true},
		{"issued after", r(RevokeSubject, "alice"), issuerA, at.Add(time.Second), false},
		{"no iat", r(RevokeSubject, "alice"), issuerA, time.Time{}, true},
		{"another issuer", r(RevokeSubject, "alice"), issuerB, at, false},
		{"another value", r(RevokeSubject, "bob"), issuerA, at, false},
		{"value in another claim", r(RevokeClientID, "alice"), issuerA, at, false},
		{"unknown kind", r("aud", "orders"), issuerA, at, false},
		{"no issuer", Revocation{Kind: RevokeSubject, Value: "alice", RevokedAt: at}, "", at, false},
		{"empty value", r(RevokeSession, ""), issuerA, at, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			sid := "g1"
			if tt.name == "empty value" {
				sid = ""
			}
			if got := tt.r.Matches(Identity{Issuer: tt.iss, TokenID: "j1", ClientID: "web", Subject: "alice", Session: sid}, tt.iat); got != tt.want {
				t.Errorf("Matches = %v, want %v", got, tt.want)
			}
		})
	}
}

// TestRevokeSameValueTwoIssuers checks that the revocations of one value
// by two issuers are kept apart: each refuses its issuer's token, and each
// goes when it expires, leaving the other.
func TestRevokeSameValueTwoIssuers(t *testing.T) {
	clock := newTestClock()
	cache := testCache(t, CacheConfig{Now: clock.now})
	a, err := NewAuthenticator(trustIssuers(clock.now), AuthenticatorOptions{Cache: cache, Now: clock.now})
	if err != nil {
		t.Fatal(err)
	}
	tokenOf := func(iss, kid, aud string) []byte {
		return mint(kid, map[string]string{issuerA: "at+jwt", issuerB: ""}[iss], fmt.Sprintf(`{"iss":%q,"aud":%q,"exp":%d,"sub":"alice","iat":%d}`,
			iss, aud, testNow.Add(time.Hour).Unix(), testNow.Add(-time.Minute).Unix()))
	}
	tokA, tokB := tokenOf(issuerA, "a1", "orders"), tokenOf(issuerB, "b1", "payments")
	verify := func(tok []byte) error {
		var c Claims
		return a.VerifyInto(tok, &c)
	}
	for _, tok := range [][]byte{tokA, tokB} {
		if err := verify(tok); err != nil {
			t.Fatal(err)
		}
	}
	a.Revoke(Revocation{Issuer: issuerA, Kind: RevokeSubject, Value: "alice", RevokedAt: testNow, ExpiresAt: testNow.Add(10 * time.Minute)})
	if err := verify(tokB); err != nil {
		t.Errorf("B's alice after A revoked its alice: %v", err)
	}
	a.Revoke(Revocation{Issuer: issuerB, Kind: RevokeSubject, Value: "alice", RevokedAt: testNow, ExpiresAt: testNow.Add(5 * time.Minute)})
	for name, tok := range map[string][]byte{"A": tokA, "B": tokB} {
		if err := verify(tok); reasonOf(err) != Revoked {
			t.Errorf("%s's alice with both revocations: error %v, want %v", name, err, Revoked)
		}
	}
	// B's revocation, at the head of the chain, expires first.
	clock.set(testNow.Add(6 * time.Minute))
	a.Revoke(revocationAt(RevokeSubject, "bob", clock.now()))
	if err := verify(tokB); err != nil {
		t.Errorf("B's alice after B's revocation expired: %v", err)
	}
	if err := verify(tokA); reasonOf(err) != Revoked {
		t.Errorf("A's alice after B's revocation expired: error %v, want %v", err, Revoked)
	}
	if n := a.RevocationStats().Entries; n != 2 {
		t.Errorf("%d entries, want A's alice and bob", n)
	}
}
