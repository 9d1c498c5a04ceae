package discovery

import (
	"context"
	"net/http"
	"net/http/httptest"
	"net/url"
	"strings"
	"testing"
)

// server serves metadata documents by path; ISS in a document stands for
// the server's URL.
func server(t *testing.T, docs map[string]string) *httptest.Server {
	var srv *httptest.Server
	srv = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		doc, ok := docs[r.URL.Path]
		if !ok {
			http.NotFound(w, r)
			return
		}
		w.Write([]byte(strings.ReplaceAll(doc, "ISS", srv.URL)))
	}))
	t.Cleanup(srv.Close)
	return srv
}

// TestMetadata: an OpenID provider's document is found after the issuer's
// path when RFC 8414's is not served, and what is read of it is checked.
func TestMetadata(t *testing.T) {
	srv := server(t, map[string]string{
		"/oidc/.well-known/openid-configuration": `{"issuer":"ISS/oidc","authorization_endpoint":"ISS/oidc/auth","token_endpoint":"ISS/oidc/token",
			"jwks_uri":"ISS/oidc/keys","userinfo_endpoint":"ISS/oidc/me","code_challenge_methods_supported":["S256"],
			"token_endpoint_auth_methods_supported":["client_secret_basic"],"id_token_signing_alg_values_supported":["RS256","ES256"],
			"authorization_response_iss_parameter_supported":true,"meshauth_snapshot_uri":"ISS/oidc/snapshot","Issuer":"https://ignored"}`,
		"/.well-known/oauth-authorization-server/both":    `{"issuer":"ISS/both","token_endpoint":"ISS/both/token"}`,
		"/both/.well-known/openid-configuration":          `{"issuer":"ISS/both","token_endpoint":"ISS/both/other"}`,
		"/.well-known/oauth-authorization-server/down":    ``,
		"/twice/.well-known/openid-configuration":         `{"issuer":"ISS/twice","issuer":"https://evil","token_endpoint":"ISS/twice/token"}`,
		"/badauth/.well-known/openid-configuration":       `{"issuer":"ISS/badauth","token_endpoint":"ISS/t","authorization_endpoint":"javascript:alert(1)"}`,
		"/badlist/.well-known/openid-configuration":       `{"issuer":"ISS/badlist","token_endpoint":"ISS/t","id_token_signing_alg_values_supported":"RS256"}`,
		"/notoken/.well-known/openid-configuration":       `{"issuer":"ISS/notoken","authorization_endpoint":"ISS/a"}`,
		"/.well-known/oauth-authorization-server/other":   `{"issuer":"https://elsewhere","token_endpoint":"https://elsewhere/token"}`,
		"/.well-known/oauth-authorization-server/badtype": `{"issuer":"ISS/badtype","token_endpoint":1}`,
	})
	f := NewFetcher(srv.Client(), 0)
	ctx := context.Background()
	iss := srv.URL

	md, err := f.Metadata(ctx, iss+"/oidc", MemberTokenEndpoint, MemberJWKSURI)
	if err != nil {
		t.Fatal(err)
	}
	if md.Issuer != iss+"/oidc" || md.AuthorizationEndpoint != iss+"/oidc/auth" || md.TokenEndpoint != iss+"/oidc/token" ||
		md.JWKSURI != iss+"/oidc/keys" || md.UserinfoEndpoint != iss+"/oidc/me" || md.SnapshotURI != iss+"/oidc/snapshot" ||
		!md.IssParameterSupported || strings.Join(md.IDTokenSigningAlgs, ",") != "RS256,ES256" ||
		strings.Join(md.CodeChallengeMethods, ",") != "S256" || strings.Join(md.TokenEndpointAuthMethods, ",") != "client_secret_basic" ||
		len(md.Unusable) != 0 {
		t.Errorf("metadata %+v", md)
	}
	if md, err := f.Metadata(ctx, iss+"/both"); err != nil || md.TokenEndpoint != iss+"/both/token" {
		t.Errorf("RFC 8414 document first: %+v %v", md, err)
	}
	// What the caller does not require may be unusable; it is left out and
	// said why.
	md, err = f.Metadata(ctx, iss+"/badauth", MemberTokenEndpoint)
	if err != nil || md.AuthorizationEndpoint != "" || md.Unusable[MemberAuthorizationEndpoint] == nil {
		t.Errorf("an unusable member not required: %+v %v", md, err)
	}
	for _, tc := range []struct {
		path     string
		required []string
		errPart  string
	}{
		{"/down", nil, "not a metadata document"},
		{"/twice", nil, "repeated"},
		{"/badauth", []string{MemberAuthorizationEndpoint}, "no usable authorization_endpoint"},
		{"/badlist", nil, "not a list of strings"},
		{"/badtype", nil, "token_endpoint is not a string"},
		{"/notoken", []string{MemberTokenEndpoint}, "has no token_endpoint"},
		{"/other", nil, "names issuer"},
		{"/missing", nil, "status 404"},
	} {
		if _, err := f.Metadata(ctx, iss+tc.path, tc.required...); err == nil || !strings.Contains(err.Error(), tc.errPart) {
			t.Errorf("%s: err = %v, want it to say %q", tc.path, err, tc.errPart)
		}
	}
	if _, err := f.Metadata(ctx, "not a url"); err == nil || !strings.Contains(err.Error(), "not an absolute URL") {
		t.Errorf("issuer not a URL: %v", err)
	}
}

// TestURLRule: one rule for every URL an issuer's metadata names: https,
// or http where the issuer and the URL are both on a loopback host.
func TestURLRule(t *testing.T) {
	for _, tc := range []struct {
		issuer, member string
		ok             bool
	}{
		{"https://idp.example", "https://idp.example/token", true},
		{"https://idp.example", "https://other.example/token", true},
		{"http://127.0.0.1:8080", "http://127.0.0.1:8080/token", true},
		{"http://localhost:8080", "http://[::1]:9090/token", true},
		{"http://127.0.0.1:8080", "https://idp.example/token", true},
		// Plain http off this host: the secret and the code would cross
		// the network in the clear.
		{"http://127.0.0.1:8080", "http://idp.example/token", false},
		{"https://idp.example", "http://127.0.0.1/token", false},
		{"https://idp.example", "http://idp.example/token", false},
		{"https://idp.example", "ftp://idp.example/token", false},
		{"https://idp.example", "javascript:alert(1)", false},
		{"https://idp.example", "/token", false},
		{"https://idp.example", "https://u:p@idp.example/token", false},
		{"https://idp.example", "https://idp.example/token#x", false},
	} {
		iss, err := ParseIssuer("issuer", tc.issuer)
		if err != nil {
			t.Fatal(err)
		}
		if _, err := DocumentURL(iss, "token_endpoint", tc.member); (err == nil) != tc.ok {
			t.Errorf("%s naming %s: %v, want usable %v", tc.issuer, tc.member, err, tc.ok)
		}
	}
}

func TestParseURL(t *testing.T) {
	for _, tc := range []struct {
		raw, issuerErr, urlErr string
	}{
		{"https://idp.example", "", ""},
		{"https://idp.example/tenant/", "", ""},
		{"http://127.0.0.1:8080", "", ""},
		{"http://localhost/x", "", ""},
		{"http://[::1]:8080", "", ""},
		{"https://idp.example?tenant=a", "query or fragment", ""},
		{"https://idp.example#x", "query or fragment", "fragment"},
		{"http://idp.example", "must use https", "must use https"},
		{"http://10.0.0.1/x", "must use https", "must use https"},
		{"ftp://idp.example", "must use https", "must use https"},
		{"idp.example", "not an absolute URL", "not an absolute URL"},
		{"/token", "not an absolute URL", "not an absolute URL"},
		{"https://u:secret@idp.example", "user information", "user information"},
	} {
		for _, c := range []struct {
			parse func(name, raw string) (*url.URL, error)
			err   string
		}{{ParseIssuer, tc.issuerErr}, {ParseURL, tc.urlErr}} {
			_, err := c.parse("X", tc.raw)
			if c.err == "" && err != nil || c.err != "" && (err == nil || !strings.Contains(err.Error(), c.err)) {
				t.Errorf("%s: %v, want an error with %q", tc.raw, err, c.err)
			}
			if err != nil && strings.Contains(err.Error(), "secret") {
				t.Errorf("%s: the error shows the password: %v", tc.raw, err)
			}
		}
	}
}

// TestFetcherRedirects: a redirect within the origin is followed, one to
// another origin refused, whatever the client given does.
func TestFetcherRedirects(t *testing.T) {
	other := server(t, map[string]string{"/doc": `{}`})
	mux := http.NewServeMux()
	mux.Handle("/away", http.RedirectHandler(other.URL+"/doc", http.StatusFound)) // another port: another origin
	mux.Handle("/here", http.RedirectHandler("/doc-here", http.StatusFound))
	mux.HandleFunc("/doc-here", func(w http.ResponseWriter, r *http.Request) { w.Write([]byte(`{"here":1}`)) })
	front := httptest.NewServer(mux)
	t.Cleanup(front.Close)
	// The client given follows no redirect at all; the fetcher's rule
	// applies.
	hc := &http.Client{CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }}
	f := NewFetcher(hc, 0)
	get := func(path string) ([]byte, error) {
		u, _ := url.Parse(front.URL + path)
		b, _, err := f.Get(context.Background(), "doc", u, "application/json", "")
		return b, err
	}
	if b, err := get("/here"); err != nil || string(b) != `{"here":1}` {
		t.Errorf("same-origin redirect: %s %v", b, err)
	}
	if _, err := get("/away"); err == nil || !strings.Contains(err.Error(), "redirect to another origin") {
		t.Errorf("redirect to another origin: %v", err)
	}
}

// TestFetcherBounds: a document over the bound is refused.
func TestFetcherBounds(t *testing.T) {
	srv := server(t, map[string]string{"/doc": strings.Repeat("x", 101)})
	u, _ := url.Parse(srv.URL + "/doc")
	if _, _, err := NewFetcher(nil, 100).Get(context.Background(), "doc", u, "*/*", ""); err == nil || !strings.Contains(err.Error(), "larger than 100 bytes") {
		t.Errorf("a document over the bound: %v", err)
	}
}
