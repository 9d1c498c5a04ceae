package bench

import (
	"encoding/base64"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strings"
	"testing"
	"time"

	"github.com/meshauth/meshauth/issuer"
	"github.com/meshauth/meshauth/issuer/store"
)

// BenchmarkIntrospection measures RFC 7662 introspection of a reference
// token through the real HTTP endpoint over loopback, answered as JSON
// (format=json) and as an RFC 9701 signed JWT (format=jwt, the edge
// gateway's dereference), with each store. The report compares it with
// BenchmarkClientCredentials on the same store.
func BenchmarkIntrospection(b *testing.B) {
	eachStore(b, func(b *testing.B, st store.Store) {
		issuerURL, caller, body := introspectionSetup(b, st)
		for _, accept := range []struct{ name, accept, contentType string }{
			{"format=json", "", "application/json"},
			{"format=jwt", "application/token-introspection+jwt", "application/token-introspection+jwt"},
		} {
			b.Run(accept.name, func(b *testing.B) {
				checkActive(b, issuerURL+"/introspect", caller, accept.accept, accept.contentType, body)
				postForms(b, issuerURL+"/introspect", caller, accept.accept, body)
			})
		}
	})
}

// introspectionSetup serves an issuer on st with a client holding a
// reference token for a resource server, and returns the issuer URL, the
// resource server's Authorization header and the introspection request
// body.
func introspectionSetup(b *testing.B, st store.Store) (issuerURL, caller, body string) {
	issuerURL = startBenchIssuer(b, st)
	suffix := time.Now().UnixNano()
	app, api := fmt.Sprintf("app-%d", suffix), fmt.Sprintf("api-%d", suffix)
	appSecret := registerBench(b, st, issuer.ClientMetadata{ClientID: app, Scope: "read", AllowedAudiences: []string{api}, AccessTokenFormat: "reference"})
	apiSecret := registerBench(b, st, issuer.ClientMetadata{ClientID: api})
	req, _ := http.NewRequest(http.MethodPost, issuerURL+"/token", strings.NewReader(url.Values{"grant_type": {"client_credentials"}, "audience": {api}}.Encode()))
	req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	req.Header.Set("Authorization", basicAuth(app, appSecret))
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		b.Fatal(err)
	}
	defer resp.Body.Close()
	tok := struct {
		AccessToken string `json:"access_token"`
	}{}
	if err := json.NewDecoder(resp.Body).Decode(&tok); err != nil || tok.AccessToken == "" {
		b.Fatalf("reference token: %d %v", resp.StatusCode, err)
	}
	return issuerURL, basicAuth(api, apiSecret), url.Values{"token": {tok.AccessToken}}.Encode()
}

// checkActive makes one introspection request and fails unless it answers
// an active token in contentType, so that the benchmark measures the path
// of a live token, not a refusal.
func checkActive(b *testing.B, endpoint, authz, accept, contentType, body string) {
	req, _ := http.NewRequest(http.MethodPost, endpoint, strings.NewReader(body))
	req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	req.Header.Set("Authorization", authz)
	if accept != "" {
		req.Header.Set("Accept", accept)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		b.Fatal(err)
	}
	defer resp.Body.Close()
	answer, _ := io.ReadAll(resp.Body)
	if resp.StatusCode != http.StatusOK || resp.Header.Get("Content-Type") != contentType {
		b.Fatalf("introspection: %d %s", resp.StatusCode, resp.Header.Get("Content-Type"))
	}
	if parts := strings.Split(string(answer), "."); len(parts) == 3 {
		// The RFC 9701 answer: the RFC 7662 object is in the JWS payload.
		answer, _ = base64.RawURLEncoding.DecodeString(parts[1])
	}
	if !strings.Contains(string(answer), `"active":true`) {
		b.Fatalf("introspection answered %s", answer)
	}
}
