package token

import (
	"crypto"
	"crypto/elliptic"
	"errors"
	"fmt"
	"reflect"
	"strings"
	"sync"
	"testing"
	"time"
)

const (
	issuerA = "https://a.example"
	issuerB = "https://b.example"
)

// trustKeys are the signing keys of the two test issuers, by name: A signs
// ES256 with "a1", B signs EdDSA with "b1", and each has an ES384 key of
// its own under the kid "shared".
var trustKeys = sync.OnceValue(func() map[string]crypto.Signer {
	k := fixture()
	return map[string]crypto.Signer{
		"a1":       k.es256,
		"b1":       k.ed,
		"shared@a": k.es384,
		"shared@b": testECKey(elliptic.P384(), "shared@b"),
	}
})

func trustKeySet(names ...string) *KeySet {
	algs := map[string]string{"a1": "ES256", "b1": "EdDSA", "shared@a": "ES384", "shared@b": "ES384"}
	var keys []Key
	for _, n := range names {
		kid, _, _ := strings.Cut(n, "@")
		keys = append(keys, Key{ID: kid, Algorithm: algs[n], Public: trustKeys()[n].Public()})
	}
	return NewKeySet(keys)
}

// trustIssuers returns issuer A, which accepts at+jwt tokens for "orders",
// and issuer B, which accepts untyped or "JWT" tokens for "payments" and
// qualifies its names with its URL, both on the clock now.
func trustIssuers(now func() time.Time) []Issuer {
	return []Issuer{
		{
			Policy: Policy{Issuer: issuerA, Audiences: []string{"orders"}, Now: now},
			Keys:   trustKeySet("a1", "shared@a"),
		},
		{
			Policy: Policy{Issuer: issuerB, Audiences: []string{"payments"}, Types: []string{"", "JWT"}, Now: now, SubjectPrefix: issuerB + "#"},
			Keys:   trustKeySet("b1", "shared@b"),
		},
	}
}

// mint returns a token signed by the named key, whose kid is the name up
// to '@', with the given typ (none if empty) and claims.
func mint(key, typ, claims string) []byte {
	kid, _, _ := strings.Cut(key, "@")
	alg := map[string]string{"a1": "ES256", "b1": "EdDSA", "shared": "ES384"}[kid]
	h := fmt.Sprintf(`{"alg":%q,"kid":%q`, alg, kid)
	if typ != "" {
		h += fmt.Sprintf(`,"typ":%q`, typ)
	}
	return compact(h+"}", claims, alg, trustKeys()[key])
}

// claimsOf returns a claims set for iss and aud valid at testNow, with
// extra members spliced in first.
func claimsOf(iss, aud, extra string) string {
	return fmt.Sprintf(`{%s"iss":%q,"aud":%q,"exp":%d,"sub":"alice","jti":"j-%s-%s"}`,
		extra, iss, aud, testNow.Unix()+300, iss, aud)
}

func testAuthenticator(tb testing.TB, now func() time.Time, cache *Cache) *Authenticator {
	tb.Helper()
	a, err := NewAuthenticator(trustIssuers(now), AuthenticatorOptions{Cache: cache})
	if err != nil {
		tb.Fatal(err)
	}
	return a
}

// trustCases are tokens for the issuers of trustIssuers, with the issuer
// that accepts them or the Reason they are refused for.
func trustCases() []struct {
	name   string
	tok    []byte
	issuer string
	reason Reason
} {
	tooLarge := mint("a1", "at+jwt", claimsOf(issuerA, "orders", fmt.Sprintf(`"pad":%q,`, strings.Repeat("x", DefaultMaxSize))))
	return []struct {
		name   string
		tok    []byte
		issuer string
		reason Reason
	}{
		{"A by A's policy", mint("a1", "at+jwt", claimsOf(issuerA, "orders", "")), issuerA, 0},
		{"B untyped by B's policy", mint("b1", "", claimsOf(issuerB, "payments", "")), issuerB, 0},
		{"B typed JWT by B's policy", mint("b1", "JWT", claimsOf(issuerB, "payments", "")), issuerB, 0},
		{"A untyped", mint("a1", "", claimsOf(issuerA, "orders", "")), "", BadType},
		{"A for B's audience", mint("a1", "at+jwt", claimsOf(issuerA, "payments", "")), "", BadAudience},
		{"B for A's audience", mint("b1", "", claimsOf(issuerB, "orders", "")), "", BadAudience},
		{"A's key claiming B", mint("a1", "", claimsOf(issuerB, "payments", "")), "", UnknownKey},
		{"B's key claiming A", mint("b1", "at+jwt", claimsOf(issuerA, "orders", "")), "", UnknownKey},
		{"A's shared kid claiming B", mint("shared@a", "", claimsOf(issuerB, "payments", "")), "", BadSignature},
		{"B's shared kid", mint("shared@b", "", claimsOf(issuerB, "payments", "")), issuerB, 0},
		{"unknown issuer", mint("a1", "at+jwt", claimsOf("https://c.example", "orders", "")), "", BadIssuer},
		{"issuer in another case", mint("a1", "at+jwt", claimsOf("https://A.example", "orders", "")), "", BadIssuer},
		{"escaped issuer", mint("a1", "at+jwt", `{"iss":"https:\/\/a.exampl\u0065","aud":"orders","exp":1750000300}`), issuerA, 0},
		{"iss of act is not the issuer", mint("b1", "", claimsOf(issuerB, "payments", `"act":{"iss":"https://a.example"},`)), issuerB, 0},
		{"duplicate iss", mint("b1", "", claimsOf(issuerB, "payments", `"iss":"https://b.example",`)), "", Malformed},
		{"duplicate iss naming another issuer", mint("b1", "", claimsOf(issuerA, "payments", `"iss":"https://b.example",`)), "", Malformed},
		{"no iss", mint("a1", "at+jwt", `{"aud":"orders","exp":1750000300}`), "", MissingClaim},
		{"iss not a string", mint("a1", "at+jwt", `{"iss":["https://a.example"],"aud":"orders","exp":1750000300}`), "", Malformed},
		{"claims not an object", mint("a1", "at+jwt", `["https://a.example"]`), "", Malformed},
		{"expired", mint("a1", "at+jwt", `{"iss":"https://a.example","aud":"orders","exp":1749999000}`), "", Expired},
		{"two segments", []byte("eyJhbGciOiJFUzI1NiJ9.e30"), "", Malformed},
		{"payload not base64url", []byte("eyJhbGciOiJFUzI1NiJ9.e30=.AA"), "", Malformed},
		{"too large", tooLarge, "", TooLarge},
	}
}

func TestAuthenticator(t *testing.T) {
	now := func() time.Time { return testNow }
	cache, err := NewCache(CacheConfig{Now: now})
	if err != nil {
		t.Fatal(err)
	}
	plain := testAuthenticator(t, now, nil)
	cached := testAuthenticator(t, now, cache)
	accepted := 0
	for _, tt := range trustCases() {
		t.Run(tt.name, func(t *testing.T) {
			// Twice through the cache: the second answer may come from it.
			for i, a := range []*Authenticator{plain, cached, cached} {
				var c Claims
				err := a.VerifyInto(tt.tok, &c)
				if tt.reason == 0 {
					if err != nil {
						t.Fatalf("run %d: %v", i, err)
					}
					if c.Issuer != tt.issuer {
						t.Fatalf("run %d: issuer %q, want %q", i, c.Issuer, tt.issuer)
					}
					continue
				}
				var e *Error
				if !errors.As(err, &e) || e.Reason != tt.reason {
					t.Fatalf("run %d: error %v, want %v", i, err, tt.reason)
				}
			}
		})
		if tt.reason == 0 {
			accepted++
		}
	}
	// Every accepted token was cached once and then hit; no refused one
	// was cached.
	s := cache.Stats()
	if s.Entries != accepted || s.Hits != uint64(accepted) {
		t.Errorf("stats %+v, want %d entries and hits", s, accepted)
	}
}

func TestNewAuthenticatorErrors(t *testing.T) {
	now := func() time.Time { return testNow }
	used, err := NewCache(CacheConfig{})
	if err != nil {
		t.Fatal(err)
	}
	testAuthenticator(t, now, used)
	tests := []struct {
		name    string
		issuers []Issuer
		cache   *Cache
	}{
		{"no issuer", nil, nil},
		{"duplicate issuer", append(trustIssuers(now), trustIssuers(now)[0]), nil},
		{"invalid policy", []Issuer{{Policy: Policy{Issuer: issuerA}, Keys: trustKeySet("a1")}}, nil},
		{"no keys", []Issuer{{Policy: Policy{Issuer: issuerA, Audiences: []string{"orders"}}}}, nil},
		{"cache of another Authenticator", trustIssuers(now), used},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if _, err := NewAuthenticator(tt.issuers, AuthenticatorOptions{Cache: tt.cache}); err == nil {
				t.Error("NewAuthenticator succeeded")
			}
		})
	}
}

// TestSubjectPrefix checks that the claims of a token carry the namespace
// of the issuer that vouched for it, whether verified or from the cache.
func TestSubjectPrefix(t *testing.T) {
	now := func() time.Time { return testNow }
	a := testAuthenticator(t, now, testCache(t, CacheConfig{Now: now}))
	for _, tt := range []struct {
		tok             []byte
		prefix, sub     string
		client, actorID string
	}{
		{mint("a1", "at+jwt", claimsOf(issuerA, "orders", `"client_id":"web",`)), "", "alice", "web", "orders"},
		{mint("b1", "", claimsOf(issuerB, "payments", `"client_id":"web",`)), issuerB + "#", issuerB + "#alice", issuerB + "#web", issuerB + "#orders"},
		{mint("b1", "", claimsOf(issuerB, "payments", "")), issuerB + "#", issuerB + "#alice", "", issuerB + "#orders"},
	} {
		for run := range 2 { // verified, then from the cache
			var c Claims
			if err := a.VerifyInto(tt.tok, &c); err != nil {
				t.Fatal(err)
			}
			if c.SubjectPrefix != tt.prefix || c.Subject != "alice" {
				t.Errorf("run %d: prefix %q, sub %q", run, c.SubjectPrefix, c.Subject)
			}
			for _, x := range []struct{ id, want string }{{c.Subject, tt.sub}, {c.ClientID, tt.client}, {"orders", tt.actorID}} {
				if got := string(c.AppendQualified([]byte("|"), x.id)); got != "|"+x.want {
					t.Errorf("run %d: %q qualified as %q, want %q", run, x.id, got, "|"+x.want)
				}
			}
		}
	}
	if s := a.cache.Stats(); s.Hits != 3 {
		t.Errorf("%d cache hits, want 3", s.Hits)
	}
	if _, err := NewVerifier(Policy{Issuer: issuerA, Audiences: []string{"orders"}, SubjectPrefix: "a\n"}, trustKeySet("a1")); err == nil {
		t.Error("a prefix with a line feed accepted")
	}
}

// TestAuthenticatorAllocs checks that choosing the issuer allocates
// nothing beyond what its Verifier allocates.
func TestAuthenticatorAllocs(t *testing.T) {
	now := func() time.Time { return testNow }
	a := testAuthenticator(t, now, nil)
	for i, tok := range [][]byte{
		mint("a1", "at+jwt", claimsOf(issuerA, "orders", "")),
		mint("b1", "", claimsOf(issuerB, "payments", "")),
		mint("b1", "", claimsOf("https://c.example", "payments", "")), // refused
	} {
		var c Claims
		want := testing.AllocsPerRun(50, func() { a.trust.Load().verifiers[min(i, 1)].VerifyInto(tok, &c) })
		if got := testing.AllocsPerRun(50, func() { a.VerifyInto(tok, &c) }); got > want {
			t.Errorf("token %d: %v allocations, Verifier %v", i, got, want)
		}
	}
}

// FuzzAuthenticator checks that an Authenticator, with a cache or not,
// accepts exactly the tokens that one of its Verifiers accepts, with the
// claims that Verifier returns.
func FuzzAuthenticator(f *testing.F) {
	for _, tt := range trustCases() {
		f.Add(tt.tok)
	}
	now := func() time.Time { return testNow }
	plain := testAuthenticator(f, now, nil)
	cached := testAuthenticator(f, now, testCache(f, CacheConfig{Now: now}))
	f.Fuzz(func(t *testing.T, tok []byte) {
		var want *Claims
		for _, v := range plain.trust.Load().verifiers {
			if c, err := v.Verify(tok); err == nil {
				want = c
			}
		}
		for i, a := range []*Authenticator{plain, cached, cached} {
			var c Claims
			err := a.VerifyInto(tok, &c)
			if (err == nil) != (want != nil) || err == nil && !reflect.DeepEqual(&c, want) {
				t.Fatalf("run %d: error %v, claims %+v; want %+v", i, err, c, want)
			}
		}
	})
}
