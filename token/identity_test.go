package token

import (
	"bytes"
	"encoding/base64"
	"testing"
)

func TestReadIdentity(t *testing.T) {
	b64 := base64.RawURLEncoding.EncodeToString
	tests := []struct {
		name, tok string
		want      Identity
		ok        bool
	}{
		{"every claim", string(mint("a1", "at+jwt", claimsOf(issuerA, "orders", `"client_id":"web","sid":"g1",`))),
			Identity{Issuer: issuerA, TokenID: "j-" + issuerA + "-orders", ClientID: "web", Subject: "alice", Session: "g1"}, true},
		{"escapes, no signature check", b64([]byte(`{}`)) + "." + b64([]byte(`{"sub":"al\u0069ce","jti":"j\/1"}`)) + ".c2ln",
			Identity{Subject: "alice", TokenID: "j/1"}, true},
		{"no claims of an identity", "e30." + b64([]byte(`{"aud":"x"}`)) + ".", Identity{}, true},
		{"opaque", "rt-0123456789abcdef", Identity{}, false},
		{"two segments", "e30.e30", Identity{}, false},
		{"five segments (JWE)", "a.b.c.d.e", Identity{}, false},
		{"payload not base64url", "e30.e3+.", Identity{}, false},
		{"payload not JSON", "e30." + b64([]byte("alice")) + ".", Identity{}, false},
		{"sub not a string", "e30." + b64([]byte(`{"sub":1}`)) + ".", Identity{}, false},
		{"jti twice", "e30." + b64([]byte(`{"jti":"a","jti":"b"}`)) + ".", Identity{}, false},
		{"line break", "e30." + b64([]byte(`{"sub":"alice"}`)) + "\n.", Identity{}, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := ReadIdentity([]byte(tt.tok))
			if (err == nil) != tt.ok || got != tt.want {
				t.Errorf("ReadIdentity = %+v, %v; want %+v, ok %v", got, err, tt.want, tt.ok)
			}
		})
	}
}

// FuzzReadIdentity checks ReadIdentity against the Verifier, for tokens it
// accepts, and against the reference claims reader for any token.
func FuzzReadIdentity(f *testing.F) {
	v := testVerifier(f, testPolicy())
	for _, tok := range fuzzValidTokens() {
		f.Add(tok)
	}
	for _, tt := range hostileTokens() {
		f.Add(tt.tok)
	}
	f.Fuzz(func(t *testing.T, tok []byte) {
		id, err := ReadIdentity(tok)
		if c, verr := v.Verify(tok); verr == nil && (err != nil || id != c.Identity()) {
			t.Fatalf("verified token: identity %+v, %v; want %+v", id, err, c.Identity())
		}
		parts := bytes.Split(tok, []byte("."))
		var raw []byte
		if len(parts) == 3 && !bytes.ContainsAny(tok, "\r\n") {
			raw, _ = b64.DecodeString(string(parts[1]))
		}
		if raw == nil {
			if err == nil && len(parts) == 3 && len(parts[1]) > 0 {
				t.Fatalf("read %+v from a token without claims: %q", id, tok)
			}
			return
		}
		want, refErr := referenceClaims(raw)
		switch {
		case (err == nil) != (refErr == nil):
			t.Fatalf("ReadIdentity error %v, reference error %v: %q", err, refErr, raw)
		case err == nil && id != want.Identity():
			t.Fatalf("identity %+v, reference %+v: %q", id, want.Identity(), raw)
		}
	})
}
