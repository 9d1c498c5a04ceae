package exchange

import (
	"encoding/json"
	"strings"
	"testing"
	"time"
)

// FuzzParseTokenResponse checks the token endpoint answer reader against
// encoding/json: whatever it accepts is one JSON object whose members say
// the same, with a token that can go into an Authorization field.
func FuzzParseTokenResponse(f *testing.F) {
	for _, s := range []string{
		`{"access_token":"abc.def","token_type":"Bearer","expires_in":300,"issued_token_type":"urn:ietf:params:oauth:token-type:access_token"}`,
		`{"access_token":"abc","token_type":"bearer","expires_in":1,"scope":"a b","x":{"y":[1,2]}}`,
		`{"access_token":"a=","token_type":"Bearer","expires_in":2147483647}`,
		`{"access_token":"a","access_token":"b","token_type":"Bearer","expires_in":300}`,
		`{"access_token":"a b","token_type":"Bearer","expires_in":300}`,
		`{"access_token":"a","token_type":"Bearer","expires_in":3e2}`,
		`{"access_token":"a","token_type":"Bearer","expires_in":"300"}`,
		`{"access_token":"a","token_type":"Bearer","expires_in":300} x`,
		`{"access_token":"\u0061","token_type":"Bearer","expires_in":300}`,
		`{"error":"invalid_grant","error_description":"expired"}`,
		`[]`, `null`, `{`, ``, `{"a":}`,
	} {
		f.Add([]byte(s), true)
		f.Add([]byte(s), false)
	}
	sent := time.Unix(1_800_000_000, 0)
	f.Fuzz(func(t *testing.T, body []byte, exchanged bool) {
		tok, err := parseTokenResponse(body, exchanged, sent)
		if err != nil {
			return
		}
		var m map[string]any
		if err := json.Unmarshal(body, &m); err != nil || m == nil {
			t.Fatalf("accepted %q, which is not a JSON object: %v", body, err)
		}
		if m["access_token"] != tok.AccessToken || !b64token(tok.AccessToken) ||
			strings.ContainsAny(tok.AccessToken, " \t\r\n,\"") {
			t.Fatalf("token %q from %q", tok.AccessToken, body)
		}
		if typ, _ := m["token_type"].(string); !strings.EqualFold(typ, "bearer") {
			t.Fatalf("token_type %v accepted", m["token_type"])
		}
		secs, _ := m["expires_in"].(float64)
		if secs < 1 || secs != float64(int64(secs)) || !tok.ExpiresAt.Equal(sent.Add(time.Duration(secs)*time.Second)) {
			t.Fatalf("expires_in %v gave expiry %v", m["expires_in"], tok.ExpiresAt)
		}
		if exchanged && m["issued_token_type"] != TokenTypeAccessToken {
			t.Fatalf("issued_token_type %v accepted", m["issued_token_type"])
		}
	})
}
