package rp

import (
	"encoding/json"
	"strings"
	"testing"
	"unicode/utf8"
)

// FuzzIDTokenClaims: ParseIDTokenClaims reads any claims set without
// panicking, keeps within its bounds, and agrees with encoding/json on the
// claims that decide acceptance.
func FuzzIDTokenClaims(f *testing.F) {
	for _, s := range []string{
		`{"nonce":"n","azp":"c","at_hash":"x","auth_time":1700000000,"amr":["pwd","mfa"],"name":"A","preferred_username":"a","email":"a@b","email_verified":true}`,
		`{"nonce":1}`, `{"amr":"pwd"}`, `{"auth_time":-1}`, `{"auth_time":1e300}`, `{"email_verified":"true"}`,
		`{"nonce":"a","nonce":"b"}`, `{"name":"\u0000"}`, `[]`, `{`, `{"amr":["` + strings.Repeat("m", 70) + `"]}`,
	} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, raw []byte) {
		c, err := ParseIDTokenClaims(raw)
		if err != nil {
			return
		}
		// The oracle: encoding/json, whose maps match names exactly.
		var m map[string]any
		if json.Unmarshal(raw, &m) == nil {
			for name, got := range map[string]string{"nonce": c.Nonce, "azp": c.AuthorizedParty, "at_hash": c.AccessTokenHash} {
				if want, _ := m[name].(string); want != got {
					t.Fatalf("%s %q, encoding/json reads %q", name, got, want)
				}
			}
		}
		if len(c.AMR) > maxAMR {
			t.Fatalf("%d amr values", len(c.AMR))
		}
		for _, m := range c.AMR {
			if m == "" || len(m) > maxAMRValue || !printable(m) {
				t.Fatalf("amr value %q kept", m)
			}
		}
		for _, s := range []string{c.Name, c.PreferredUsername, c.Email} {
			if len(s) > maxProfileClaim || !utf8.ValidString(s) || strings.ContainsFunc(s, isControl) {
				t.Fatalf("profile claim %q kept", s)
			}
		}
		if c.EmailVerified && !strings.Contains(string(raw), "true") {
			t.Fatal("email_verified true without a true in the document")
		}
		if !c.AuthTime.IsZero() && c.AuthTime.Unix() < 0 {
			t.Fatalf("auth_time %v", c.AuthTime)
		}
	})
}
