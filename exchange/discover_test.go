package exchange

import (
	"context"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
)

func TestDiscoverTokenEndpoint(t *testing.T) {
	var issuer string
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		switch r.URL.Path {
		case "/.well-known/oauth-authorization-server":
			w.Write([]byte(`{"issuer":"` + issuer + `","token_endpoint":"` + issuer + `/token"}`))
		case "/.well-known/oauth-authorization-server/other":
			w.Write([]byte(`{"issuer":"https://elsewhere","token_endpoint":"https://elsewhere/token"}`))
		case "/.well-known/oauth-authorization-server/bad":
			w.Write([]byte(`{"issuer":"` + issuer + `/bad","token_endpoint":"ftp://x"}`))
		default:
			http.NotFound(w, r)
		}
	}))
	defer srv.Close()
	issuer = srv.URL
	tests := []struct {
		issuer, want, errPart string
	}{
		{issuer: srv.URL, want: srv.URL + "/token"},
		{issuer: srv.URL + "/other", errPart: "names issuer"},
		{issuer: srv.URL + "/bad", errPart: "no usable token_endpoint"},
		{issuer: srv.URL + "/missing", errPart: "status 404"},
		{issuer: "not a url", errPart: "not an absolute URL"},
	}
	for _, tc := range tests {
		got, err := DiscoverTokenEndpoint(context.Background(), srv.Client(), tc.issuer)
		if tc.errPart != "" {
			if err == nil || !strings.Contains(err.Error(), tc.errPart) {
				t.Errorf("%s: err = %v", tc.issuer, err)
			}
			continue
		}
		if err != nil || got != tc.want {
			t.Errorf("%s: %q %v", tc.issuer, got, err)
		}
	}
}

// TestDiscoverMetadata: an OpenID provider's document is found after the
// issuer's path when RFC 8414's is not served, and what is read of it is
// checked.
func TestDiscoverMetadata(t *testing.T) {
	var issuer string
	docs := map[string]string{}
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		doc, ok := docs[r.URL.Path]
		if !ok {
			http.NotFound(w, r)
			return
		}
		w.Write([]byte(strings.ReplaceAll(doc, "ISS", issuer)))
	}))
	defer srv.Close()
	issuer = srv.URL
	docs["/oidc/.well-known/openid-configuration"] = `{"issuer":"ISS/oidc","authorization_endpoint":"ISS/oidc/auth","token_endpoint":"ISS/oidc/token",
		"jwks_uri":"ISS/oidc/keys","userinfo_endpoint":"ISS/oidc/me","code_challenge_methods_supported":["S256"],
		"token_endpoint_auth_methods_supported":["client_secret_basic"],"id_token_signing_alg_values_supported":["RS256","ES256"],
		"authorization_response_iss_parameter_supported":true,"Issuer":"https://ignored"}`
	docs["/.well-known/oauth-authorization-server/both"] = `{"issuer":"ISS/both","token_endpoint":"ISS/both/token"}`
	docs["/both/.well-known/openid-configuration"] = `{"issuer":"ISS/both","token_endpoint":"ISS/both/other"}`
	docs["/.well-known/oauth-authorization-server/down"] = ``
	docs["/twice/.well-known/openid-configuration"] = `{"issuer":"ISS/twice","issuer":"https://evil","token_endpoint":"ISS/twice/token"}`
	docs["/badauth/.well-known/openid-configuration"] = `{"issuer":"ISS/badauth","token_endpoint":"ISS/t","authorization_endpoint":"javascript:alert(1)"}`
	docs["/badlist/.well-known/openid-configuration"] = `{"issuer":"ISS/badlist","token_endpoint":"ISS/t","id_token_signing_alg_values_supported":"RS256"}`
	docs["/notoken/.well-known/openid-configuration"] = `{"issuer":"ISS/notoken","authorization_endpoint":"ISS/a"}`

	md, err := DiscoverMetadata(context.Background(), srv.Client(), srv.URL+"/oidc")
	if err != nil {
		t.Fatal(err)
	}
	want := Metadata{Issuer: issuer + "/oidc", AuthorizationEndpoint: issuer + "/oidc/auth", TokenEndpoint: issuer + "/oidc/token",
		JWKSURI: issuer + "/oidc/keys", UserinfoEndpoint: issuer + "/oidc/me", IssParameterSupported: true}
	if md.Issuer != want.Issuer || md.AuthorizationEndpoint != want.AuthorizationEndpoint || md.TokenEndpoint != want.TokenEndpoint ||
		md.JWKSURI != want.JWKSURI || md.UserinfoEndpoint != want.UserinfoEndpoint || !md.IssParameterSupported ||
		strings.Join(md.IDTokenSigningAlgs, ",") != "RS256,ES256" || strings.Join(md.CodeChallengeMethods, ",") != "S256" ||
		strings.Join(md.TokenEndpointAuthMethods, ",") != "client_secret_basic" {
		t.Errorf("metadata %+v", md)
	}
	if md, err := DiscoverMetadata(context.Background(), srv.Client(), srv.URL+"/both"); err != nil || md.TokenEndpoint != issuer+"/both/token" {
		t.Errorf("RFC 8414 document first: %+v %v", md, err)
	}
	for path, errPart := range map[string]string{
		"/down":    "not a metadata document",
		"/twice":   "repeated",
		"/badauth": "no usable authorization_endpoint",
		"/badlist": "not a list of strings",
		"/notoken": "no usable token_endpoint",
		"/missing": "status 404",
	} {
		if _, err := DiscoverMetadata(context.Background(), srv.Client(), srv.URL+path); err == nil || !strings.Contains(err.Error(), errPart) {
			t.Errorf("%s: err = %v, want it to say %q", path, err, errPart)
		}
	}
}
