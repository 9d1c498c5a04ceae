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
