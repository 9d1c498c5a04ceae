package exchange

import (
	"net/url"
	"strings"
	"testing"
)

// FuzzParseMetadata: any metadata document is either refused or yields
// metadata naming the issuer asked for, with a token endpoint, and every
// endpoint an absolute URL of an allowed scheme.
func FuzzParseMetadata(f *testing.F) {
	for _, s := range []string{
		`{"issuer":"https://idp.example","token_endpoint":"https://idp.example/token","authorization_endpoint":"https://idp.example/auth","jwks_uri":"https://idp.example/keys","authorization_response_iss_parameter_supported":true,"id_token_signing_alg_values_supported":["RS256"]}`,
		`{"issuer":"https://idp.example","issuer":"https://evil.example","token_endpoint":"https://idp.example/token"}`,
		`{"issuer":"https://idp.example","token_endpoint":"javascript:x"}`, `{"issuer":1}`, `[]`, `{`,
	} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, body []byte) {
		md, err := parseMetadata(body, "https://idp.example", "https")
		if err != nil {
			return
		}
		if md.Issuer != "https://idp.example" || md.TokenEndpoint == "" {
			t.Fatalf("accepted %+v", md)
		}
		for _, e := range []string{md.AuthorizationEndpoint, md.TokenEndpoint, md.JWKSURI, md.UserinfoEndpoint} {
			if e == "" {
				continue
			}
			u, err := url.Parse(e)
			if err != nil || u.Scheme != "https" || u.Host == "" || u.User != nil || strings.Contains(e, "#") {
				t.Fatalf("endpoint %q accepted", e)
			}
		}
	})
}
