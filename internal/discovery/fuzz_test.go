package discovery

import (
	"net/url"
	"testing"
)

// FuzzParseMetadata: any metadata document is either refused or yields
// metadata naming the issuer asked for, with every URL it keeps absolute
// and https, and every URL it drops said why.
func FuzzParseMetadata(f *testing.F) {
	for _, s := range []string{
		`{"issuer":"https://idp.example","token_endpoint":"https://idp.example/token","authorization_endpoint":"https://idp.example/auth","jwks_uri":"https://idp.example/keys","authorization_response_iss_parameter_supported":true,"id_token_signing_alg_values_supported":["RS256"]}`,
		`{"issuer":"https://idp.example","issuer":"https://evil.example","token_endpoint":"https://idp.example/token"}`,
		`{"issuer":"https://idp.example","token_endpoint":"javascript:x","meshauth_snapshot_uri":"http://idp.example/s"}`, `{"issuer":1}`, `[]`, `{`,
	} {
		f.Add([]byte(s))
	}
	iss, err := url.Parse("https://idp.example")
	if err != nil {
		f.Fatal(err)
	}
	f.Fuzz(func(t *testing.T, body []byte) {
		md, err := parseMetadata(body, iss, "https://idp.example")
		if err != nil {
			return
		}
		if md.Issuer != "https://idp.example" {
			t.Fatalf("accepted %+v", md)
		}
		for _, member := range []string{MemberAuthorizationEndpoint, MemberTokenEndpoint, MemberJWKSURI, MemberUserinfoEndpoint, MemberSnapshotURI} {
			e := md.url(member)
			if e == "" {
				continue
			}
			if md.Unusable[member] != nil {
				t.Fatalf("%s %q kept although unusable", member, e)
			}
			u, err := url.Parse(e)
			if err != nil || u.Scheme != "https" || u.Host == "" || u.User != nil || u.Fragment != "" {
				t.Fatalf("%s %q accepted", member, e)
			}
		}
	})
}
