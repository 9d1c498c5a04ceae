package issuer

import (
	"context"
	"testing"

	"golang.org/x/oauth2/clientcredentials"
)

// TestInteropClientCredentials uses the Go ecosystem's standard OAuth client
// against the issuer, then verifies its token with the published JWKS.
func TestInteropClientCredentials(t *testing.T) {
	e := newEnv(t)
	for _, method := range []string{"client_secret_basic", "client_secret_post"} {
		t.Run(method, func(t *testing.T) {
			id := "interop-" + method
			reg := e.register(ClientMetadata{ClientID: id, TokenEndpointAuthMethod: method, Scope: "read write", AllowedAudiences: []string{"inventory"}})
			cfg := clientcredentials.Config{
				ClientID:       id,
				ClientSecret:   reg.ClientSecret,
				TokenURL:       e.url + "/token",
				Scopes:         []string{"read"},
				EndpointParams: map[string][]string{"audience": {"inventory"}},
			}
			tok, err := cfg.Token(context.Background())
			if err != nil {
				t.Fatal(err)
			}
			if tok.TokenType != "Bearer" || tok.Expiry.IsZero() {
				t.Errorf("token = %+v", tok)
			}
			c := e.verifyAccessToken(tok.AccessToken, "inventory")
			if c.Scope != "read" || c.ClientID != id {
				t.Errorf("claims = %+v", c)
			}
		})
	}
}
