package token

import (
	"bytes"
	"errors"
	"fmt"
	"reflect"
	"strings"
	"testing"
	"time"
)

func TestVerifyValid(t *testing.T) {
	v := testVerifier(t, testPolicy())
	for _, alg := range algNames[1:] {
		t.Run(alg, func(t *testing.T) {
			c, err := v.Verify(validToken(alg))
			if err != nil {
				t.Fatal(err)
			}
			want := Claims{
				Issuer:    testIssuer,
				Subject:   "alice",
				Audience:  []string{testAudience},
				ExpiresAt: testNow.Add(300 * time.Second),
				IssuedAt:  testNow.Add(-10 * time.Second),
				ID:        "j1",
				ClientID:  "web",
				Scope:     "read write",
			}
			if c.Issuer != want.Issuer || c.Subject != want.Subject || fmt.Sprint(c.Audience) != fmt.Sprint(want.Audience) ||
				!c.ExpiresAt.Equal(want.ExpiresAt) || !c.IssuedAt.Equal(want.IssuedAt) || !c.NotBefore.IsZero() ||
				c.ID != want.ID || c.ClientID != want.ClientID || c.Scope != want.Scope || c.Act != nil || c.MayAct != nil {
				t.Errorf("claims = %+v, want %+v", c, want)
			}
			if string(c.Raw) != claimsJSON("") {
				t.Errorf("Raw = %s", c.Raw)
			}
		})
	}
}

func TestVerifyValidVariants(t *testing.T) {
	k := fixture()
	es := func(header, claims string) []byte { return compact(header, claims, "ES256", k.es256) }
	hdr := header("ES256")
	soleKey := NewKeySet([]Key{{Algorithm: "ES256", Public: k.es256.Public()}})
	tests := []struct {
		name   string
		policy func(*Policy)
		keys   Keys // default: all the test keys
		tok    []byte
		check  func(*Claims) error
	}{
		{name: "typ with application prefix", tok: es(`{"alg":"ES256","typ":"application/at+jwt","kid":"key-ES256"}`, claimsJSON(""))},
		{name: "typ in upper case", tok: es(`{"alg":"ES256","typ":"AT+JWT","kid":"key-ES256"}`, claimsJSON(""))},
		{
			name:   "typ absent allowed",
			policy: func(p *Policy) { p.Types = []string{"", "JWT"} },
			tok:    es(`{"alg":"ES256","kid":"key-ES256"}`, claimsJSON("")),
		},
		{
			name:   "typ JWT allowed",
			policy: func(p *Policy) { p.Types = []string{"", "application/jwt"} },
			tok:    es(`{"alg":"ES256","typ":"JWT","kid":"key-ES256"}`, claimsJSON("")),
		},
		{name: "unknown header members ignored", tok: es(`{"alg":"ES256","typ":"at+jwt","kid":"key-ES256","x5t":"abc","b64":true,"ext":{"a":[1,2,{"b":null}]}}`, claimsJSON(""))},
		{name: "escaped header names", tok: es(`{"\u0061lg":"ES256","typ":"at\u002bjwt","k\u0069d":"key-ES256"}`, claimsJSON(""))},
		{name: "white space", tok: es(" {\n\t\"alg\" : \"ES256\" ,\"typ\":\"at+jwt\",\"kid\":\"key-ES256\"}\r\n ", " "+claimsJSON("")+"\n")},
		{
			name: "aud array",
			tok:  es(hdr, fmt.Sprintf(`{"iss":%q,"aud":["a","payments","b"],"exp":%d}`, testIssuer, testNow.Unix()+1)),
			check: func(c *Claims) error {
				if fmt.Sprint(c.Audience) != "[a payments b]" {
					return fmt.Errorf("aud %q", c.Audience)
				}
				return nil
			},
		},
		{
			name: "fractional dates",
			tok:  es(hdr, fmt.Sprintf(`{"iss":%q,"aud":"orders","exp":%d.5,"nbf":%d.25e0,"iat":1.7e9}`, testIssuer, testNow.Unix()+1, testNow.Unix())),
			check: func(c *Claims) error {
				if c.ExpiresAt.UnixNano() != testNow.Add(1500*time.Millisecond).UnixNano() ||
					c.NotBefore.UnixNano() != testNow.Add(250*time.Millisecond).UnixNano() || c.IssuedAt.Unix() != 1.7e9 {
					return fmt.Errorf("dates %v %v %v", c.ExpiresAt, c.NotBefore, c.IssuedAt)
				}
				return nil
			},
		},
		{name: "expired within leeway", tok: es(hdr, fmt.Sprintf(`{"iss":%q,"aud":"orders","exp":%d}`, testIssuer, testNow.Unix()-29))},
		{name: "nbf within leeway", tok: es(hdr, fmt.Sprintf(`{"iss":%q,"aud":"orders","exp":%d,"nbf":%d,"iat":%d}`, testIssuer, testNow.Unix()+60, testNow.Unix()+30, testNow.Unix()+30))},
		{
			name: "escaped and unicode strings",
			tok:  es(hdr, fmt.Sprintf(`{"iss":"https:\/\/issuer.example","aud":"orders","exp":%d,"sub":"\u00e9l\u00e8ve \ud83d\ude00 \"q\"","scope":"a\tb","x":"ok"}`, testNow.Unix()+60)),
			check: func(c *Claims) error {
				if c.Subject != "élève 😀 \"q\"" || c.Scope != "a\tb" {
					return fmt.Errorf("sub %q scope %q", c.Subject, c.Scope)
				}
				return nil
			},
		},
		{
			name: "act and may_act kept raw",
			tok:  es(hdr, claimsJSON(`"act":{"sub":"orders","act":{"sub":"edge"}},"may_act":{"sub":"payments"}`)),
			check: func(c *Claims) error {
				if string(c.Act) != `{"sub":"orders","act":{"sub":"edge"}}` || string(c.MayAct) != `{"sub":"payments"}` {
					return fmt.Errorf("act %s may_act %s", c.Act, c.MayAct)
				}
				return nil
			},
		},
		{
			name: "only key without kid",
			keys: soleKey,
			tok:  es(`{"alg":"ES256","typ":"at+jwt"}`, claimsJSON("")),
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			p := testPolicy()
			if tt.policy != nil {
				tt.policy(&p)
			}
			var keys Keys = k.set
			if tt.keys != nil {
				keys = tt.keys
			}
			v, err := NewVerifier(p, keys)
			if err != nil {
				t.Fatal(err)
			}
			c, err := v.Verify(tt.tok)
			if err != nil {
				t.Fatal(err)
			}
			if tt.check != nil {
				if err := tt.check(c); err != nil {
					t.Error(err)
				}
			}
		})
	}
}

// hostileTokens returns tokens that must be refused, with the reason.
func hostileTokens() []struct {
	name   string
	tok    []byte
	reason Reason
} {
	k := fixture()
	es := func(header, claims string) []byte { return compact(header, claims, "ES256", k.es256) }
	hdr := header("ES256")
	claims := claimsJSON("")
	valid := string(validToken("ES256"))
	parts := strings.Split(valid, ".")
	other := strings.Split(string(es(hdr, claimsJSON(`"admin":true`))), ".")
	now := testNow.Unix()
	withClaims := func(format string, args ...any) []byte {
		return es(hdr, fmt.Sprintf(format, args...))
	}
	return []struct {
		name   string
		tok    []byte
		reason Reason
	}{
		{"alg none", []byte(enc.EncodeToString([]byte(`{"alg":"none","typ":"at+jwt","kid":"key-ES256"}`)) + "." + enc.EncodeToString([]byte(claims)) + "."), UnsupportedAlgorithm},
		{"alg none without kid", []byte(enc.EncodeToString([]byte(`{"alg":"none","typ":"at+jwt"}`)) + "." + enc.EncodeToString([]byte(claims)) + "."), UnsupportedAlgorithm},
		{"HS256 keyed with the RSA public key", compact(`{"alg":"HS256","typ":"at+jwt","kid":"key-RS256"}`, claims, "HS256", k.rsa), UnsupportedAlgorithm},
		{"HS256 keyed with the EC public key", compact(`{"alg":"HS256","typ":"at+jwt","kid":"key-ES256"}`, claims, "HS256", k.es256), UnsupportedAlgorithm},
		{"alg lower case", compact(`{"alg":"es256","typ":"at+jwt","kid":"key-ES256"}`, claims, "ES256", k.es256), UnsupportedAlgorithm},
		{"alg missing", compact(`{"typ":"at+jwt","kid":"key-ES256"}`, claims, "ES256", k.es256), UnsupportedAlgorithm},
		{"alg not a string", compact(`{"alg":["ES256"],"typ":"at+jwt","kid":"key-ES256"}`, claims, "ES256", k.es256), Malformed},
		{"ES384 header with a P-256 key", compact(`{"alg":"ES384","typ":"at+jwt","kid":"key-ES256"}`, claims, "ES384", k.es256), UnsupportedAlgorithm},
		{"ES256 header with a P-384 key", compact(`{"alg":"ES256","typ":"at+jwt","kid":"key-ES384"}`, claims, "ES256", k.es384), UnsupportedAlgorithm},
		{"RS256 header on an EC key", compact(`{"alg":"RS256","typ":"at+jwt","kid":"key-ES256"}`, claims, "RS256", k.rsa), UnsupportedAlgorithm},
		{"PS256 header on an RS256 key", compact(`{"alg":"PS256","typ":"at+jwt","kid":"key-RS256"}`, claims, "PS256", k.rsa), UnsupportedAlgorithm},
		{"EdDSA header on an EC key", compact(`{"alg":"EdDSA","typ":"at+jwt","kid":"key-ES256"}`, claims, "EdDSA", k.ed), UnsupportedAlgorithm},
		{"jku", es(`{"alg":"ES256","typ":"at+jwt","kid":"key-ES256","jku":"https://evil.example/jwks"}`, claims), ForbiddenHeader},
		{"x5u", es(`{"alg":"ES256","typ":"at+jwt","kid":"key-ES256","x5u":"https://evil.example/cert"}`, claims), ForbiddenHeader},
		{"jwk", es(`{"alg":"ES256","typ":"at+jwt","kid":"key-ES256","jwk":{"kty":"EC","crv":"P-256","x":"AA","y":"AA"}}`, claims), ForbiddenHeader},
		{"x5c", es(`{"alg":"ES256","typ":"at+jwt","kid":"key-ES256","x5c":["MIIB"]}`, claims), ForbiddenHeader},
		{"jku escaped", es(`{"alg":"ES256","typ":"at+jwt","kid":"key-ES256","\u006aku":"https://evil.example/jwks"}`, claims), ForbiddenHeader},
		{"b64 false", es(`{"alg":"ES256","typ":"at+jwt","kid":"key-ES256","b64":false,"crit":["b64"]}`, claims), ForbiddenHeader},
		{"b64 not a boolean", es(`{"alg":"ES256","typ":"at+jwt","kid":"key-ES256","b64":0}`, claims), Malformed},
		{"crit exp", es(`{"alg":"ES256","typ":"at+jwt","kid":"key-ES256","crit":["exp"],"exp":1}`, claims), CriticalHeader},
		{"crit empty", es(`{"alg":"ES256","typ":"at+jwt","kid":"key-ES256","crit":[]}`, claims), CriticalHeader},
		{"unknown kid", es(`{"alg":"ES256","typ":"at+jwt","kid":"nope"}`, claims), UnknownKey},
		{"kid missing with several keys", es(`{"alg":"ES256","typ":"at+jwt"}`, claims), UnknownKey},
		{"kid not a string", es(`{"alg":"ES256","typ":"at+jwt","kid":1}`, claims), Malformed},
		{"kid too long", es(`{"alg":"ES256","typ":"at+jwt","kid":"`+strings.Repeat("k", 257)+`"}`, claims), UnknownKey},
		{"typ JWT", es(`{"alg":"ES256","typ":"JWT","kid":"key-ES256"}`, claims), BadType},
		{"typ missing", es(`{"alg":"ES256","kid":"key-ES256"}`, claims), BadType},
		{"typ empty", es(`{"alg":"ES256","typ":"","kid":"key-ES256"}`, claims), BadType},
		{"typ application/ only", es(`{"alg":"ES256","typ":"application/","kid":"key-ES256"}`, claims), BadType},
		{"typ with other media type", es(`{"alg":"ES256","typ":"text/at+jwt","kid":"key-ES256"}`, claims), BadType},
		{"typ not a string", es(`{"alg":"ES256","typ":null,"kid":"key-ES256"}`, claims), Malformed},
		{"wrong iss", withClaims(`{"iss":"https://evil.example","aud":"orders","exp":%d}`, now+60), BadIssuer},
		{"iss with trailing slash", withClaims(`{"iss":"https://issuer.example/","aud":"orders","exp":%d}`, now+60), BadIssuer},
		{"iss missing", withClaims(`{"aud":"orders","exp":%d}`, now+60), MissingClaim},
		{"wrong aud", withClaims(`{"iss":%q,"aud":"billing","exp":%d}`, testIssuer, now+60), BadAudience},
		{"aud array without ours", withClaims(`{"iss":%q,"aud":["billing","ORDERS"],"exp":%d}`, testIssuer, now+60), BadAudience},
		{"aud empty array", withClaims(`{"iss":%q,"aud":[],"exp":%d}`, testIssuer, now+60), BadAudience},
		{"aud missing", withClaims(`{"iss":%q,"exp":%d}`, testIssuer, now+60), MissingClaim},
		{"aud array with a number", withClaims(`{"iss":%q,"aud":["orders",1],"exp":%d}`, testIssuer, now+60), Malformed},
		{"aud object", withClaims(`{"iss":%q,"aud":{"orders":true},"exp":%d}`, testIssuer, now+60), Malformed},
		{"expired", withClaims(`{"iss":%q,"aud":"orders","exp":%d}`, testIssuer, now-30), Expired},
		{"expired long ago", withClaims(`{"iss":%q,"aud":"orders","exp":0}`, testIssuer), Expired},
		{"exp missing", withClaims(`{"iss":%q,"aud":"orders"}`, testIssuer), MissingClaim},
		{"exp as string", withClaims(`{"iss":%q,"aud":"orders","exp":"%d"}`, testIssuer, now+60), Malformed},
		{"exp null", withClaims(`{"iss":%q,"aud":"orders","exp":null}`, testIssuer), Malformed},
		{"exp huge", withClaims(`{"iss":%q,"aud":"orders","exp":1e300}`, testIssuer), Malformed},
		{"exp overflowing", withClaims(`{"iss":%q,"aud":"orders","exp":1e400}`, testIssuer), Malformed},
		{"exp with leading zero", withClaims(`{"iss":%q,"aud":"orders","exp":0%d}`, testIssuer, now+60), Malformed},
		{"exp with plus sign", withClaims(`{"iss":%q,"aud":"orders","exp":+%d}`, testIssuer, now+60), Malformed},
		{"nbf in future", withClaims(`{"iss":%q,"aud":"orders","exp":%d,"nbf":%d}`, testIssuer, now+600, now+31), NotYetValid},
		{"iat in future", withClaims(`{"iss":%q,"aud":"orders","exp":%d,"iat":%d}`, testIssuer, now+600, now+31), IssuedInFuture},
		{"sub number", withClaims(`{"iss":%q,"aud":"orders","exp":%d,"sub":1}`, testIssuer, now+60), Malformed},
		{"scope array", withClaims(`{"iss":%q,"aud":"orders","exp":%d,"scope":["a"]}`, testIssuer, now+60), Malformed},
		{"act string", withClaims(`{"iss":%q,"aud":"orders","exp":%d,"act":"orders"}`, testIssuer, now+60), Malformed},
		{"two segments", []byte(parts[0] + "." + parts[1]), Malformed},
		{"four segments", []byte(valid + "." + parts[2]), Malformed},
		{"five segments (JWE)", []byte(parts[0] + ".." + parts[1] + "." + parts[2] + "." + parts[2]), Malformed},
		{"empty", nil, Malformed},
		{"dots only", []byte(".."), Malformed},
		{"padding", []byte(parts[0] + "=." + parts[1] + "." + parts[2]), Malformed},
		{"padding in signature", []byte(parts[0] + "." + parts[1] + "." + parts[2] + "=="), Malformed},
		{"standard base64 alphabet", []byte(strings.NewReplacer("-", "+", "_", "/").Replace(valid) + "+/"), Malformed},
		{"line break", []byte(parts[0] + ".\n" + parts[1] + "." + parts[2]), Malformed},
		{"space", []byte(" " + valid), Malformed},
		{"bad base64 length", []byte(parts[0] + "A." + parts[1] + "." + parts[2]), Malformed},
		{"non-zero trailing bits", []byte(enc.EncodeToString([]byte(hdr))[:len(enc.EncodeToString([]byte(hdr)))-1] + "B." + parts[1] + "." + parts[2]), Malformed},
		{"oversized", []byte(parts[0] + "." + enc.EncodeToString(bytes.Repeat([]byte("x"), 8<<10)) + "." + parts[2]), TooLarge},
		{"duplicate alg", compact(`{"alg":"ES256","typ":"at+jwt","kid":"key-ES256","alg":"none"}`, claims, "ES256", k.es256), Malformed},
		{"duplicate alg, escaped", compact(`{"alg":"ES256","typ":"at+jwt","kid":"key-ES256","\u0061lg":"ES256"}`, claims, "ES256", k.es256), Malformed},
		{"duplicate unknown header member", es(`{"alg":"ES256","typ":"at+jwt","kid":"key-ES256","x":1,"x":2}`, claims), Malformed},
		{"duplicate exp", withClaims(`{"iss":%q,"aud":"orders","exp":%d,"exp":%d}`, testIssuer, now-3600, now+60), Malformed},
		{"duplicate nested member", es(hdr, claimsJSON(`"act":{"sub":"a","sub":"b"}`)), Malformed},
		{"duplicate member in a large object", es(hdr, claimsJSON(`"m":{`+manyMembers(40)+`,"k0":0}`)), Malformed},
		{"header not an object", es(`["ES256"]`, claims), Malformed},
		{"header trailing data", es(hdr+"{}", claims), Malformed},
		{"header invalid UTF-8", es(`{"alg":"ES256","typ":"at+jwt","kid":"key-ES256","x":"`+"\xff"+`"}`, claims), Malformed},
		{"header lone surrogate", es(`{"alg":"ES256","typ":"at+jwt","kid":"key-\ud800"}`, claims), Malformed},
		{"header BOM", es("\ufeff"+hdr, claims), Malformed},
		{"header deep nesting", es(`{"alg":"ES256","typ":"at+jwt","kid":"key-ES256","x":`+strings.Repeat("[", 100)+strings.Repeat("]", 100)+`}`, claims), Malformed},
		{"payload array", es(hdr, `[`+claims+`]`), Malformed},
		{"payload string", es(hdr, `"x"`), Malformed},
		{"payload number", es(hdr, `1`), Malformed},
		{"payload empty", es(hdr, ``), Malformed},
		{"payload nested JWT", es(hdr, valid), Malformed},
		{"payload trailing comma", es(hdr, claims[:len(claims)-1]+",}"), Malformed},
		{"payload trailing data", es(hdr, claims+"x"), Malformed},
		{"payload control character", withClaims(`{"iss":%q,"aud":"orders","exp":%d,"sub":"a`+"\x01"+`"}`, testIssuer, now+60), Malformed},
		{"signature too short", []byte(parts[0] + "." + parts[1] + "." + parts[2][:len(parts[2])-2]), BadSignature},
		{"signature too long", []byte(parts[0] + "." + parts[1] + "." + parts[2] + "AA"), BadSignature},
		{"signature empty", []byte(parts[0] + "." + parts[1] + "."), BadSignature},
		{"signature DER encoded", []byte(parts[0] + "." + parts[1] + "." + enc.EncodeToString(append([]byte{0x30, 0x44, 0x02, 0x20}, make([]byte, 66)...))), BadSignature},
		{"signature zero", []byte(parts[0] + "." + parts[1] + "." + enc.EncodeToString(make([]byte, 64))), BadSignature},
		{"signature for a different payload", []byte(parts[0] + "." + other[1] + "." + parts[2]), BadSignature},
		{"signature of another token", []byte(parts[0] + "." + parts[1] + "." + other[2]), BadSignature},
		{"signature by another key", compact(hdr, claims, "ES256", testECKey(k.es256.Curve, "other")), BadSignature},
		{"RSA signature for a different payload", []byte(strings.Split(string(validToken("RS256")), ".")[0] + "." + other[1] + "." + strings.Split(string(validToken("RS256")), ".")[2]), BadSignature},
		{"EdDSA signature for a different payload", []byte(strings.Split(string(validToken("EdDSA")), ".")[0] + "." + other[1] + "." + strings.Split(string(validToken("EdDSA")), ".")[2]), BadSignature},
	}
}

func manyMembers(n int) string {
	var b strings.Builder
	for i := range n {
		if i > 0 {
			b.WriteByte(',')
		}
		fmt.Fprintf(&b, `"k%d":%d`, i, i)
	}
	return b.String()
}

func TestVerifyHostile(t *testing.T) {
	v := testVerifier(t, testPolicy())
	for _, tt := range hostileTokens() {
		t.Run(tt.name, func(t *testing.T) {
			c, err := v.Verify(tt.tok)
			if err == nil {
				t.Fatalf("accepted: %+v", c)
			}
			var e *Error
			if !errors.As(err, &e) {
				t.Fatalf("error %v is not an *Error", err)
			}
			if e.Reason != tt.reason {
				t.Errorf("reason = %v (%v), want %v", e.Reason, err, tt.reason)
			}
			if !errors.Is(err, &Error{Reason: tt.reason}) {
				t.Errorf("errors.Is(%v, %v) = false", err, tt.reason)
			}
			if len(tt.tok) > 8 && strings.Contains(err.Error(), string(tt.tok)) {
				t.Errorf("error quotes the token")
			}
		})
	}
}

func TestVerifyPolicy(t *testing.T) {
	k := fixture()

	t.Run("algorithm allowlist", func(t *testing.T) {
		p := testPolicy()
		p.Algorithms = []string{"EdDSA"}
		v := testVerifier(t, p)
		if _, err := v.Verify(validToken("EdDSA")); err != nil {
			t.Fatal(err)
		}
		if _, err := v.Verify(validToken("ES256")); !errors.Is(err, ErrUnsupportedAlgorithm) {
			t.Fatalf("ES256 outside the allowlist: %v", err)
		}
	})

	t.Run("leeway", func(t *testing.T) {
		p := testPolicy()
		p.Leeway = time.Second
		v := testVerifier(t, p)
		tok := compact(header("ES256"), fmt.Sprintf(`{"iss":%q,"aud":"orders","exp":%d}`, testIssuer, testNow.Unix()-1), "ES256", k.es256)
		if _, err := v.Verify(tok); !errors.Is(err, ErrExpired) {
			t.Fatalf("exp == now - leeway: %v", err)
		}
		tok = compact(header("ES256"), fmt.Sprintf(`{"iss":%q,"aud":"orders","exp":%d}`, testIssuer, testNow.Unix()), "ES256", k.es256)
		if _, err := v.Verify(tok); err != nil {
			t.Fatalf("exp == now, within leeway: %v", err)
		}
	})

	t.Run("max size", func(t *testing.T) {
		p := testPolicy()
		tok := validToken("ES256")
		p.MaxSize = len(tok)
		if _, err := testVerifier(t, p).Verify(tok); err != nil {
			t.Fatal(err)
		}
		p.MaxSize = len(tok) - 1
		if _, err := testVerifier(t, p).Verify(tok); !errors.Is(err, ErrTooLarge) {
			t.Fatalf("one byte over: %v", err)
		}
	})

	t.Run("keys implementation checked", func(t *testing.T) {
		// A Keys that answers with a key of another type or curve
		// whatever the kid must not make a mismatched token valid.
		tok := compact(`{"alg":"ES384","typ":"at+jwt","kid":"x"}`, claimsJSON(""), "ES384", k.es256)
		for _, key := range []Key{
			{Algorithm: "ES384", Public: k.es256.Public()},
			{Algorithm: "ES256", Public: k.es256.Public()},
			{Algorithm: "ES384", Public: nil},
		} {
			v, err := NewVerifier(testPolicy(), singleKey(key))
			if err != nil {
				t.Fatal(err)
			}
			if _, err := v.Verify(tok); !errors.Is(err, ErrUnsupportedAlgorithm) {
				t.Errorf("key %+v: %v", key, err)
			}
		}
	})

	t.Run("VerifyInto reuses memory", func(t *testing.T) {
		v := testVerifier(t, testPolicy())
		var c Claims
		tok := validToken("EdDSA")
		if err := v.VerifyInto(tok, &c); err != nil {
			t.Fatal(err)
		}
		allocs := testing.AllocsPerRun(100, func() {
			if err := v.VerifyInto(tok, &c); err != nil {
				t.Fatal(err)
			}
		})
		// The kid passed to Keys and the string copy of the claims.
		if allocs > 2 {
			t.Errorf("VerifyInto: %v allocations, want at most 2", allocs)
		}
		bad := hostileTokens()[0].tok
		if allocs := testing.AllocsPerRun(100, func() { v.VerifyInto(bad, &c) }); allocs != 0 {
			t.Errorf("refusing alg none: %v allocations, want 0", allocs)
		}
	})
}

func TestNewVerifierErrors(t *testing.T) {
	set := fixture().set
	tests := []struct {
		name   string
		policy func(*Policy)
		keys   Keys
	}{
		{"no keys", func(*Policy) {}, nil},
		{"no issuer", func(p *Policy) { p.Issuer = "" }, set},
		{"no audience", func(p *Policy) { p.Audiences = nil }, set},
		{"empty audience", func(p *Policy) { p.Audiences = []string{""} }, set},
		{"audiences and any audience", func(p *Policy) { p.AnyAudience = true }, set},
		{"negative leeway", func(p *Policy) { p.Leeway = -time.Second }, set},
		{"leeway too long", func(p *Policy) { p.Leeway = time.Hour }, set},
		{"negative max size", func(p *Policy) { p.MaxSize = -1 }, set},
		{"HS256 allowed", func(p *Policy) { p.Algorithms = []string{"ES256", "HS256"} }, set},
		{"none allowed", func(p *Policy) { p.Algorithms = []string{"none"} }, set},
		{"unknown algorithm", func(p *Policy) { p.Algorithms = []string{"ES256K"} }, set},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			p := testPolicy()
			tt.policy(&p)
			if _, err := NewVerifier(p, tt.keys); err == nil {
				t.Error("NewVerifier succeeded")
			}
		})
	}
}

// TestAnyAudience checks the policy of an authorization server verifying
// its own tokens: any audience, but one there must be.
func TestAnyAudience(t *testing.T) {
	p := testPolicy()
	p.Audiences, p.AnyAudience = nil, true
	v := testVerifier(t, p)
	claims := func(aud string) string {
		return fmt.Sprintf(`{"iss":%q,%s"exp":%d}`, testIssuer, aud, testNow.Unix()+300)
	}
	for _, tc := range []struct {
		name, aud string
		want      error
	}{
		{"one audience", `"aud":"anything",`, nil},
		{"several", `"aud":["", "ledger"],`, nil},
		{"no aud", ``, ErrMissingClaim},
		{"only empty audiences", `"aud":[""],`, ErrBadAudience},
		{"empty list", `"aud":[],`, ErrBadAudience},
	} {
		t.Run(tc.name, func(t *testing.T) {
			tok := compact(header("ES256"), claims(tc.aud), "ES256", fixture().signer("ES256"))
			if _, err := v.Verify(tok); !errors.Is(err, tc.want) {
				t.Errorf("err = %v, want %v", err, tc.want)
			}
		})
	}
}

func TestHasScope(t *testing.T) {
	c := Claims{Scope: "read write  orders:admin"}
	for scope, want := range map[string]bool{
		"read": true, "write": true, "orders:admin": true,
		"": false, "rea": false, "read write": false, "admin": false,
	} {
		if got := c.HasScope(scope); got != want {
			t.Errorf("HasScope(%q) = %v", scope, got)
		}
	}
}

func TestErrorIs(t *testing.T) {
	err := error(errNoExpiry)
	if !errors.Is(err, ErrMissingClaim) || errors.Is(err, ErrExpired) {
		t.Error("errors.Is does not follow the Reason")
	}
	if got := err.Error(); got != "token: missing_claim: exp missing" {
		t.Errorf("Error() = %q", got)
	}
	for r := Malformed; r <= MissingClaim; r++ {
		if r.String() == "unknown" {
			t.Errorf("Reason %d has no name", r)
		}
	}
}

func TestVerifyConcurrent(t *testing.T) {
	v := testVerifier(t, testPolicy())
	toks := append(fuzzValidTokens(), hostileTokens()[0].tok)
	done := make(chan error)
	for g := range 4 {
		go func() {
			var err error
			for i := range 20 {
				tok := toks[(g+i)%len(toks)]
				_, e := v.Verify(tok)
				if (e == nil) != !bytes.Equal(tok, toks[len(toks)-1]) {
					err = fmt.Errorf("token %d: %v", (g+i)%len(toks), e)
				}
			}
			done <- err
		}()
	}
	for range 4 {
		if err := <-done; err != nil {
			t.Error(err)
		}
	}
}

func TestAppendClaimText(t *testing.T) {
	const raw = `{"iss":"https://issuer.example","s":"a b","esc":"\u00e9\n","n":-1.5e3,"t":true,"f":false,` +
		`"list":["x",2,true],"empty":[],"nested":["x",["y"]],"obj":{"a":1},"null":null,"objs":[{}],"https://example.com/roles":"admin"}`
	c := Claims{Raw: []byte(raw)}
	for _, tt := range []struct {
		name, want string
		ok         bool
	}{
		{"s", "a b", true},
		{"esc", "é\n", true},
		{"n", "-1.5e3", true},
		{"t", "true", true},
		{"f", "false", true},
		{"list", "x,2,true", true},
		{"empty", "", true},
		{"https://example.com/roles", "admin", true},
		{"nested", "", false},
		{"obj", "", false},
		{"null", "", false},
		{"objs", "", false},
		{"absent", "", false},
		{"S", "", false}, // names are exact
	} {
		got, ok := c.AppendClaimText([]byte("|"), tt.name)
		if ok != tt.ok || string(got) != "|"+tt.want {
			t.Errorf("%s: %q, %v; want %q, %v", tt.name, got, ok, "|"+tt.want, tt.ok)
		}
	}
	if n := testing.AllocsPerRun(100, func() {
		var buf [64]byte
		c.AppendClaimText(buf[:0], "list")
	}); n != 0 {
		t.Errorf("AppendClaimText: %v allocations", n)
	}
}

func TestClaimsValues(t *testing.T) {
	c := Claims{Raw: []byte(`{"sub":"al\u0069ce","n":2,"act":{"sub":"orders","act":{"sub":"web"}},"l":[1,"x",null,false]}`)}
	got, err := c.Values()
	if err != nil {
		t.Fatal(err)
	}
	want := map[string]any{"sub": "alice", "n": 2.0, "act": map[string]any{"sub": "orders", "act": map[string]any{"sub": "web"}},
		"l": []any{1.0, "x", nil, false}}
	if !reflect.DeepEqual(got, want) {
		t.Errorf("Values() = %#v, want %#v", got, want)
	}
	if _, err := (&Claims{Raw: []byte(`[1]`)}).Values(); err == nil {
		t.Error("Values of an array succeeded")
	}
}

func TestClaimsValueAndActors(t *testing.T) {
	const act = `{"sub":"orders","act":{"client_id":"x","act":{"sub":"w\u0065b","act":{}}}}`
	raw := `{"sub":"alice","n":1,"act":` + act + `,"may_act":{"sub":"billing"}}`
	c := Claims{Raw: []byte(raw), Act: []byte(act), MayAct: []byte(`{"sub":"billing"}`)}
	for _, tt := range []struct {
		name string
		want any
		ok   bool
	}{
		{"n", 1.0, true},
		{"sub", "alice", true},
		{"act", map[string]any{"sub": "orders", "act": map[string]any{"client_id": "x", "act": map[string]any{"sub": "web", "act": map[string]any{}}}}, true},
		{"may_act", map[string]any{"sub": "billing"}, true},
		{"absent", nil, false},
	} {
		got, ok, err := c.Value(tt.name)
		if err != nil || ok != tt.ok || !reflect.DeepEqual(got, tt.want) {
			t.Errorf("Value(%q) = %#v, %v, %v; want %#v, %v", tt.name, got, ok, err, tt.want, tt.ok)
		}
	}
	actors, err := c.AppendActors(nil)
	if want := []string{"orders", "", "web", ""}; err != nil || !reflect.DeepEqual(actors, want) {
		t.Errorf("AppendActors = %q, %v; want %q", actors, err, want)
	}
	if actors, err := (&Claims{}).AppendActors(nil); err != nil || len(actors) != 0 {
		t.Errorf("no act: %q, %v", actors, err)
	}
}
