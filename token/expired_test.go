package token

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"errors"
	"fmt"
	"testing"
)

// TestVerifyExpired: an expired token of the right issuer, audience and
// type is accepted; everything else Verify refuses stays refused.
func TestVerifyExpired(t *testing.T) {
	p := testPolicy()
	p.Types = []string{"JWT"}
	v := testVerifier(t, p)
	key := fixture().signer("ES256")
	hdr := func(typ string) string { return fmt.Sprintf(`{"alg":"ES256","typ":%q,"kid":%q}`, typ, kidOf("ES256")) }
	claims := func(iss, aud string, iat, exp int64) string {
		return fmt.Sprintf(`{"iss":%q,"aud":%q,"iat":%d,"exp":%d,"sub":"alice"}`, iss, aud, iat, exp)
	}
	now := testNow.Unix()
	expired := compact(hdr("JWT"), claims(testIssuer, testAudience, now-7200, now-3600), "ES256", key)
	if _, err := v.Verify(expired); !errors.Is(err, errExpired) {
		t.Fatalf("Verify of an expired token: %v", err)
	}
	c, err := v.VerifyExpired(expired)
	if err != nil || c.Subject != "alice" || c.ExpiresAt.Unix() != now-3600 {
		t.Fatalf("VerifyExpired: %+v %v", c, err)
	}
	if c, err := v.VerifyExpired(compact(hdr("JWT"), claims(testIssuer, testAudience, now-10, now+300), "ES256", key)); err != nil || c == nil {
		t.Errorf("VerifyExpired of a live token: %v", err)
	}
	stranger := testECKey(elliptic.P256(), "stranger")
	for name, tok := range map[string][]byte{
		"another issuer":      compact(hdr("JWT"), claims("https://other.example", testAudience, now-7200, now-3600), "ES256", key),
		"another audience":    compact(hdr("JWT"), claims(testIssuer, "other", now-7200, now-3600), "ES256", key),
		"no exp":              compact(hdr("JWT"), fmt.Sprintf(`{"iss":%q,"aud":%q}`, testIssuer, testAudience), "ES256", key),
		"issued after expiry": compact(hdr("JWT"), claims(testIssuer, testAudience, now, now-3600), "ES256", key),
		"an access token":     compact(hdr("at+jwt"), claims(testIssuer, testAudience, now-7200, now-3600), "ES256", key),
		"another key":         compact(hdr("JWT"), claims(testIssuer, testAudience, now-7200, now-3600), "ES256", (*ecdsa.PrivateKey)(stranger)),
		"malformed":           []byte("a.b.c"),
	} {
		if _, err := v.VerifyExpired(tok); err == nil {
			t.Errorf("%s: accepted", name)
		}
	}
}
