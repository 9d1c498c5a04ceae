package token

import (
	"bytes"
	"errors"
	"fmt"
	"strings"
	"testing"
)

const testJWSType = "test-update+jwt"

// jwsHeader is the header of a test message signed with alg.
func jwsHeader(alg string) string {
	return fmt.Sprintf(`{"alg":%q,"typ":%q,"kid":%q}`, alg, testJWSType, kidOf(alg))
}

const jwsPayload = `{"iss":"https://issuer.example","ver":1,"keys":[]}`

// validJWS returns a valid test message signed with alg.
func validJWS(alg string) []byte {
	return compact(jwsHeader(alg), jwsPayload, alg, fixture().signer(alg))
}

func TestVerifyJWS(t *testing.T) {
	k := fixture()
	for _, alg := range algNames[1:] {
		t.Run(alg, func(t *testing.T) {
			payload, err := VerifyJWS(validJWS(alg), k.set, testJWSType)
			if err != nil {
				t.Fatal(err)
			}
			if string(payload) != jwsPayload {
				t.Fatalf("payload %q", payload)
			}
		})
	}
	// The typ comparison of RFC 7515 §4.1.9: case-insensitive, with or
	// without "application/".
	tok := compact(`{"alg":"ES256","typ":"application/TEST-UPDATE+JWT","kid":"key-ES256"}`, jwsPayload, "ES256", k.es256)
	if _, err := VerifyJWS(tok, k.set, testJWSType); err != nil {
		t.Fatalf("typ with application/ prefix: %v", err)
	}
	// A large payload, beyond an access token's DefaultMaxSize.
	big := `{"pad":"` + strings.Repeat("x", 64<<10) + `"}`
	if _, err := VerifyJWS(compact(jwsHeader("ES256"), big, "ES256", k.es256), k.set, testJWSType); err != nil {
		t.Fatalf("64 KiB payload: %v", err)
	}
}

func TestVerifyJWSRefuses(t *testing.T) {
	k := fixture()
	es := func(header, payload string) []byte { return compact(header, payload, "ES256", k.es256) }
	valid := string(validJWS("ES256"))
	parts := strings.Split(valid, ".")
	foreign := testECKey(k.es256.Curve, "foreign")
	for _, tt := range []struct {
		name   string
		tok    []byte
		reason Reason
	}{
		{"an access token", validToken("ES256"), BadType},
		{"typ missing", es(`{"alg":"ES256","kid":"key-ES256"}`, jwsPayload), BadType},
		{"other typ", es(`{"alg":"ES256","typ":"revocation+jwt","kid":"key-ES256"}`, jwsPayload), BadType},
		{"alg none", []byte(enc.EncodeToString([]byte(`{"alg":"none","typ":"test-update+jwt","kid":"key-ES256"}`)) + "." + parts[1] + "."), UnsupportedAlgorithm},
		{"HS256 keyed with the EC public key", compact(`{"alg":"HS256","typ":"test-update+jwt","kid":"key-ES256"}`, jwsPayload, "HS256", k.es256), UnsupportedAlgorithm},
		{"alg not the key's", compact(`{"alg":"ES384","typ":"test-update+jwt","kid":"key-ES256"}`, jwsPayload, "ES384", k.es256), UnsupportedAlgorithm},
		{"jku", es(`{"alg":"ES256","typ":"test-update+jwt","kid":"key-ES256","jku":"https://evil.example/jwks"}`, jwsPayload), ForbiddenHeader},
		{"jwk", es(`{"alg":"ES256","typ":"test-update+jwt","kid":"key-ES256","jwk":{"kty":"EC"}}`, jwsPayload), ForbiddenHeader},
		{"x5u", es(`{"alg":"ES256","typ":"test-update+jwt","kid":"key-ES256","x5u":"https://evil.example/c"}`, jwsPayload), ForbiddenHeader},
		{"x5c", es(`{"alg":"ES256","typ":"test-update+jwt","kid":"key-ES256","x5c":["MIIB"]}`, jwsPayload), ForbiddenHeader},
		{"crit", es(`{"alg":"ES256","typ":"test-update+jwt","kid":"key-ES256","crit":["exp"],"exp":1}`, jwsPayload), CriticalHeader},
		{"unknown kid", es(`{"alg":"ES256","typ":"test-update+jwt","kid":"nobody"}`, jwsPayload), UnknownKey},
		{"signed by a foreign key", compact(jwsHeader("ES256"), jwsPayload, "ES256", foreign), BadSignature},
		{"payload changed", []byte(parts[0] + "." + enc.EncodeToString([]byte(`{"iss":"https://evil.example"}`)) + "." + parts[2]), BadSignature},
		{"unsigned", []byte(parts[0] + "." + parts[1] + "."), BadSignature},
		{"two segments", []byte(parts[0] + "." + parts[1]), Malformed},
		{"five segments (JWE)", []byte(valid + ".a.b"), Malformed},
		{"header not JSON", []byte(enc.EncodeToString([]byte("{")) + "." + parts[1] + "." + parts[2]), Malformed},
		{"newline in a segment", []byte(parts[0] + ".\n" + parts[1] + "." + parts[2]), Malformed},
		{"too large", bytes.Repeat([]byte("a"), MaxJWSSize+1), TooLarge},
	} {
		t.Run(tt.name, func(t *testing.T) {
			payload, err := VerifyJWS(tt.tok, k.set, testJWSType)
			var e *Error
			if !errors.As(err, &e) || e.Reason != tt.reason {
				t.Fatalf("got %v, want reason %v", err, tt.reason)
			}
			if payload != nil {
				t.Fatal("payload returned with an error")
			}
		})
	}
}

func TestVerifyJWSConfiguration(t *testing.T) {
	tok := validJWS("ES256")
	for _, typ := range []string{"", "at+jwt", "application/AT+JWT"} {
		if _, err := VerifyJWS(tok, fixture().set, typ); err == nil {
			t.Errorf("typ %q accepted", typ)
		}
	}
	if _, err := VerifyJWS(tok, nil, testJWSType); err == nil {
		t.Error("nil keys accepted")
	}
}

func FuzzVerifyJWS(f *testing.F) {
	k := fixture()
	signed := map[string]bool{}
	for _, alg := range algNames[1:] {
		tok := validJWS(alg)
		signed[signingInput(tok)] = true
		f.Add(tok)
	}
	f.Add(validToken("ES256"))
	f.Fuzz(func(t *testing.T, tok []byte) {
		payload, err := VerifyJWS(tok, k.set, testJWSType)
		if err != nil {
			var e *Error
			if !errors.As(err, &e) || e.Reason.String() == "unknown" || payload != nil {
				t.Fatalf("bad refusal: %q, %v", payload, err)
			}
			if len(tok) > 16 && strings.Contains(err.Error(), string(tok)) {
				t.Fatal("error quotes the message")
			}
			return
		}
		if !signed[signingInput(tok)] {
			t.Fatalf("accepted a message never signed: %q", tok)
		}
		if !bytes.Equal(payload, mustDecode(t, strings.Split(string(tok), ".")[1])) {
			t.Fatal("payload is not the decoded payload segment")
		}
	})
}
