package issuer

import (
	"crypto/sha256"
	"encoding/base64"
	"encoding/json"
	"errors"
	"net/http"
	"slices"
	"strings"
	"testing"

	"github.com/meshauth/meshauth/issuer/store"
)

func TestRedirectURIRegistered(t *testing.T) {
	registered := []string{"https://app.example.com/cb", "http://127.0.0.1/cb", "http://[::1]:8080/cb?x=1", "com.example.app:/oauth"}
	tests := []struct {
		uri  string
		want bool
	}{
		{"https://app.example.com/cb", true},
		{"https://app.example.com/cb/", false},
		{"https://APP.example.com/cb", false},
		{"https://app.example.com:443/cb", false},
		{"https://app.example.com/cb?x", false},
		{"com.example.app:/oauth", true},
		{"com.example.app:/oauth2", false},
		{"http://127.0.0.1/cb", true},
		{"http://127.0.0.1:1/cb", true},
		{"http://127.0.0.1:65535/cb", true},
		{"http://127.0.0.1:65536/cb", false},
		{"http://127.0.0.1:0/cb", false},
		{"http://127.0.0.1:+80/cb", false},
		{"http://127.0.0.1:/cb", false},
		{"http://127.0.0.1:80@evil.example/cb", false},
		{"http://127.0.0.1.evil.example/cb", false},
		{"http://127.0.0.1:80/cb/../x", false},
		{"http://[::1]/cb?x=1", true},
		{"http://[::1]:9/cb?x=1", true},
		{"http://[::1]:9/cb?x=2", false},
		{"http://[::1]:9/cb", false},
		{"http://localhost:80/cb", false},
		{"https://127.0.0.1:80/cb", false},
	}
	for _, tc := range tests {
		if got := redirectURIRegistered(registered, tc.uri); got != tc.want {
			t.Errorf("%q: %v, want %v", tc.uri, got, tc.want)
		}
	}
}

func TestCodeChallenge(t *testing.T) {
	tests := []struct {
		challenge, method string
		public, ok        bool
	}{
		{testChallenge, "S256", true, true},
		{testChallenge, "S256", false, true},
		{"", "", false, true},
		{"", "", true, false},
		{"", "S256", false, false},
		{testChallenge, "", false, false},
		{testChallenge, "plain", true, false},
		{testChallenge, "s256", true, false},
		{testChallenge[:42], "S256", true, false},
		{testChallenge + "A", "S256", true, false},
		{strings.Repeat("+", 43), "S256", true, false},
	}
	for _, tc := range tests {
		if err := checkCodeChallenge(tc.challenge, tc.method, tc.public); (err == nil) != tc.ok {
			t.Errorf("%q %q public=%v: %v", tc.challenge, tc.method, tc.public, err)
		}
	}
	if !verifierMatches(testVerifier, testChallenge) || verifierMatches(testVerifier+"x", testChallenge) {
		t.Error("RFC 7636 Appendix B example")
	}
	for v, ok := range map[string]bool{
		testVerifier: true, strings.Repeat("a", 43): true, strings.Repeat("~", 128): true,
		strings.Repeat("a", 42): false, strings.Repeat("a", 129): false, strings.Repeat("a", 42) + "+": false, strings.Repeat("a", 42) + " ": false,
	} {
		if validCodeVerifier(v) != ok {
			t.Errorf("validCodeVerifier(%q) != %v", v, ok)
		}
	}
}

func TestPasswordHash(t *testing.T) {
	h := HashPassword("correct horse battery staple")
	if !passwordMatches(h, "correct horse battery staple") || passwordMatches(h, "correct horse battery stapl") || passwordMatches(h, "") {
		t.Fatal("hash does not verify its password only")
	}
	if HashPassword("correct horse battery staple") == h {
		t.Error("two hashes of one password are equal: no salt")
	}
	parts := strings.Split(h, "$")
	for _, bad := range []string{
		"", "plain", "$argon2i$v=19$m=19456,t=2,p=1$" + parts[4] + "$" + parts[5],
		"$argon2id$v=16$m=19456,t=2,p=1$" + parts[4] + "$" + parts[5],
		"$argon2id$v=19$m=4294967295,t=2,p=1$" + parts[4] + "$" + parts[5],
		"$argon2id$v=19$m=19456,t=0,p=1$" + parts[4] + "$" + parts[5],
		"$argon2id$v=19$m=19456,t=2,p=0$" + parts[4] + "$" + parts[5],
		"$argon2id$v=19$m=19456,t=2,p=1$$" + parts[5],
		"$argon2id$v=19$m=19456,t=2,p=1$" + parts[4] + "$" + parts[5][:10],
		"$argon2id$v=19$m=19456,t=2,p=1$" + parts[4] + "$" + parts[5] + "=",
	} {
		if _, err := parsePHC(bad); err == nil {
			t.Errorf("parsePHC accepted %q", bad)
		}
		if passwordMatches(bad, "correct horse battery staple") {
			t.Errorf("%q matched", bad)
		}
	}
	for pw, ok := range map[string]bool{
		"eleven char": false, "twelve chars": true, "ßßßßßßßßßßßß": true, strings.Repeat("a", maxPasswordBytes+1): false, "twelve chars\xff": false,
	} {
		if err := CheckPassword(pw); (err == nil) != ok {
			t.Errorf("CheckPassword(%q): %v", pw, err)
		}
	}
	for name, want := range map[string]string{"Alice": "alice", " bob@example.com ": "bob@example.com", "a": "a", "-x": "", "a b": "", "": "", "é": ""} {
		got, err := NormalizeUserName(name)
		if got != want || (err == nil) != (want != "") {
			t.Errorf("NormalizeUserName(%q) = %q, %v", name, got, err)
		}
	}
}

func TestRegisterBrowserClients(t *testing.T) {
	e := newEnv(t)
	tests := []struct {
		name    string
		md      ClientMetadata
		errCode string
		check   func(t *testing.T, r *Registration)
	}{
		{name: "public client", md: ClientMetadata{TokenEndpointAuthMethod: "none", GrantTypes: []string{"authorization_code", "refresh_token"},
			RedirectURIs: []string{"https://app.example.com/cb", "com.example.app:/cb", "http://127.0.0.1/cb", "http://[::1]/cb", "http://localhost:3000/cb"}},
			check: func(t *testing.T, r *Registration) {
				if r.ClientSecret != "" || !slices.Equal(r.ResponseTypes, []string{"code"}) {
					t.Errorf("%+v", r)
				}
			}},
		{name: "confidential code client", md: ClientMetadata{GrantTypes: []string{"authorization_code"}, RedirectURIs: []string{"https://app.example.com/cb"}, ResponseTypes: []string{"code"}},
			check: func(t *testing.T, r *Registration) {
				if r.ClientSecret == "" {
					t.Errorf("%+v", r)
				}
			}},
		{name: "public client_credentials", md: ClientMetadata{TokenEndpointAuthMethod: "none"}, errCode: "invalid_client_metadata"},
		{name: "public token exchange", md: ClientMetadata{TokenEndpointAuthMethod: "none", GrantTypes: []string{"authorization_code", GrantTypeTokenExchange}, RedirectURIs: []string{"https://a.example/cb"}}, errCode: "invalid_client_metadata"},
		{name: "code without redirect", md: ClientMetadata{GrantTypes: []string{"authorization_code"}}, errCode: "invalid_redirect_uri"},
		{name: "refresh without code", md: ClientMetadata{GrantTypes: []string{"client_credentials", "refresh_token"}}, errCode: "invalid_client_metadata"},
		{name: "implicit", md: ClientMetadata{GrantTypes: []string{"authorization_code"}, RedirectURIs: []string{"https://a.example/cb"}, ResponseTypes: []string{"token"}}, errCode: "invalid_client_metadata"},
		{name: "code response without grant", md: ClientMetadata{ResponseTypes: []string{"code"}}, errCode: "invalid_client_metadata"},
		{name: "http redirect", md: ClientMetadata{GrantTypes: []string{"authorization_code"}, RedirectURIs: []string{"http://app.example.com/cb"}}, errCode: "invalid_redirect_uri"},
		{name: "fragment", md: ClientMetadata{GrantTypes: []string{"authorization_code"}, RedirectURIs: []string{"https://a.example/cb#x"}}, errCode: "invalid_redirect_uri"},
		{name: "empty fragment", md: ClientMetadata{GrantTypes: []string{"authorization_code"}, RedirectURIs: []string{"https://a.example/cb#"}}, errCode: "invalid_redirect_uri"},
		{name: "userinfo", md: ClientMetadata{GrantTypes: []string{"authorization_code"}, RedirectURIs: []string{"https://u@a.example/cb"}}, errCode: "invalid_redirect_uri"},
		{name: "javascript scheme", md: ClientMetadata{GrantTypes: []string{"authorization_code"}, RedirectURIs: []string{"javascript:alert(1)"}}, errCode: "invalid_redirect_uri"},
		{name: "https without host", md: ClientMetadata{GrantTypes: []string{"authorization_code"}, RedirectURIs: []string{"https:/cb"}}, errCode: "invalid_redirect_uri"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			status, body := e.do(http.MethodPost, "/register", "application/json", mustJSON(t, tc.md), "Bearer "+testAdminToken)
			if tc.errCode != "" {
				var m map[string]any
				_ = json.Unmarshal(body, &m)
				if status != 400 || m["error"] != tc.errCode {
					t.Errorf("%d %s", status, body)
				}
				return
			}
			if status != 201 {
				t.Fatalf("%d %s", status, body)
			}
			var r Registration
			if err := json.Unmarshal(body, &r); err != nil {
				t.Fatal(err)
			}
			tc.check(t, &r)
		})
	}
}

func TestMetadataAuthorizationEndpoint(t *testing.T) {
	e := newEnv(t)
	_, body := e.do(http.MethodGet, "/.well-known/oauth-authorization-server", "", nil, "")
	var md struct {
		AuthorizationEndpoint string   `json:"authorization_endpoint"`
		ResponseTypes         []string `json:"response_types_supported"`
		ResponseModes         []string `json:"response_modes_supported"`
		PKCEMethods           []string `json:"code_challenge_methods_supported"`
		ISSParameter          bool     `json:"authorization_response_iss_parameter_supported"`
		Grants                []string `json:"grant_types_supported"`
		AuthMethods           []string `json:"token_endpoint_auth_methods_supported"`
	}
	if err := json.Unmarshal(body, &md); err != nil {
		t.Fatal(err)
	}
	if md.AuthorizationEndpoint != e.url+"/authorize" || !slices.Equal(md.ResponseTypes, []string{"code"}) || !slices.Equal(md.ResponseModes, []string{"query"}) ||
		!slices.Equal(md.PKCEMethods, []string{"S256"}) || !md.ISSParameter || !slices.Contains(md.Grants, "authorization_code") ||
		!slices.Contains(md.Grants, "refresh_token") || !slices.Contains(md.AuthMethods, "none") {
		t.Errorf("metadata: %s", body)
	}
}

// authorizeFuzzClient is the client the authorization request fuzzer
// validates against.
var authorizeFuzzClient = &store.Client{
	ID: "app", TokenEndpointAuthMethod: authNone, GrantTypes: []string{GrantTypeAuthorizationCode},
	Scope: []string{"a", "b"}, AllowedAudiences: []string{"orders", "https://api.example.com/"},
	RedirectURIs: []string{"https://app.example.com/cb", "http://127.0.0.1/cb"},
}

// FuzzAuthorizationRequest: whatever the query, the request is either
// refused (a page before the redirect URI is verified, a redirect after)
// or within the client's registration, with S256 PKCE.
func FuzzAuthorizationRequest(f *testing.F) {
	for _, s := range []string{
		"response_type=code&client_id=app&redirect_uri=https%3A%2F%2Fapp.example.com%2Fcb&code_challenge=" + testChallenge + "&code_challenge_method=S256&scope=a&state=x",
		"response_type=code&redirect_uri=http%3A%2F%2F127.0.0.1%3A5555%2Fcb&code_challenge=" + testChallenge + "&code_challenge_method=S256&audience=orders",
		"response_type=token&redirect_uri=https%3A%2F%2Fapp.example.com%2Fcb",
		"redirect_uri=https%3A%2F%2Fevil.example%2Fcb", "resource=https%3A%2F%2Fapi.example.com%2F&resource=x", "a=%zz", "",
	} {
		f.Add(s)
	}
	s := &Server{defaultAudience: "https://issuer.example.com"}
	f.Fuzz(func(t *testing.T, query string) {
		form, err := parseForm(query)
		if err != nil {
			return
		}
		req, err := s.parseAuthorization(form, authorizeFuzzClient)
		var pe *pageError
		var re *redirectError
		switch {
		case errors.As(err, &pe):
			return
		case errors.As(err, &re):
			if !redirectURIRegistered(authorizeFuzzClient.RedirectURIs, re.req.RedirectURI) {
				t.Fatalf("error redirect to unregistered %q", re.req.RedirectURI)
			}
			return
		case err != nil:
			t.Fatalf("error of type %T: %v", err, err)
		}
		if !redirectURIRegistered(authorizeFuzzClient.RedirectURIs, req.RedirectURI) {
			t.Fatalf("accepted unregistered redirect %q", req.RedirectURI)
		}
		if req.CodeChallengeMethod != pkceS256 || len(req.CodeChallenge) != codeChallengeLen {
			t.Fatalf("accepted PKCE %q %q", req.CodeChallenge, req.CodeChallengeMethod)
		}
		for _, sc := range req.Scope {
			if !slices.Contains(authorizeFuzzClient.Scope, sc) {
				t.Fatalf("accepted scope %q", sc)
			}
		}
		for _, a := range req.Audience {
			if a != s.defaultAudience && !slices.Contains(authorizeFuzzClient.AllowedAudiences, a) {
				t.Fatalf("accepted audience %q", a)
			}
		}
		if len(req.State) > maxStateBytes {
			t.Fatal("accepted an oversized state")
		}
	})
}

// FuzzCodeVerifier: a verifier is accepted only in RFC 7636's form, and
// matches exactly its own S256 challenge.
func FuzzCodeVerifier(f *testing.F) {
	f.Add(testVerifier, testChallenge)
	f.Add(strings.Repeat("a", 43), testChallenge)
	f.Add("short", "")
	f.Fuzz(func(t *testing.T, verifier, challenge string) {
		if validCodeVerifier(verifier) {
			for i := 0; i < len(verifier); i++ {
				if c := verifier[i]; !isAlnum(c) && !strings.ContainsRune("-._~", rune(c)) {
					t.Fatalf("accepted byte %q", c)
				}
			}
			sum := sha256.Sum256([]byte(verifier))
			if !verifierMatches(verifier, base64.RawURLEncoding.EncodeToString(sum[:])) {
				t.Fatal("verifier does not match its own challenge")
			}
		}
		sum := sha256.Sum256([]byte(verifier))
		if verifierMatches(verifier, challenge) != (challenge == base64.RawURLEncoding.EncodeToString(sum[:])) {
			t.Fatalf("verifierMatches(%q, %q) disagrees with the S256 definition", verifier, challenge)
		}
	})
}
