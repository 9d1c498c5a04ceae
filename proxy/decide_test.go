package proxy

import (
	"errors"
	"testing"

	"github.com/valyala/fasthttp"

	"github.com/meshauth/meshauth/token"
)

// verifierFunc adapts a function to Verifier.
type verifierFunc func([]byte, *token.Claims) error

func (f verifierFunc) VerifyInto(tok []byte, c *token.Claims) error { return f(tok, c) }

func TestDecide(t *testing.T) {
	verifier := testVerifier(t)
	claims := func(sub string) Verifier {
		return verifierFunc(func(tok []byte, c *token.Claims) error {
			if err := verifier.VerifyInto(tok, c); err != nil {
				return err
			}
			c.Subject = sub
			return nil
		})
	}
	tests := []struct {
		name     string
		verifier Verifier
		want     code
		status   int
	}{
		{"valid", verifier, codeAllowed, 200},
		{"refused", verifierFunc(func([]byte, *token.Claims) error { return token.ErrExpired }), codeToken + code(token.Expired), 401},
		{"revoked", verifierFunc(func([]byte, *token.Claims) error { return token.ErrRevoked }), codeToken + code(token.Revoked), 401},
		{"wrapped refusal", verifierFunc(func([]byte, *token.Claims) error {
			return errors.Join(errors.New("issuer x"), token.ErrUnknownKey)
		}), codeToken + code(token.UnknownKey), 401},
		// Not a refusal: the verifier could not decide (say, keys not
		// loaded). Nobody is let in, and the client may retry.
		{"verifier failure", verifierFunc(func([]byte, *token.Claims) error { return errors.New("no keys yet") }), codeVerifier, 503},
		{"CRLF in a claim", claims("alice\r\nX-Admin: 1"), codeUnforwardable, 401},
		{"NUL in a claim", claims("alice\x00"), codeUnforwardable, 401},
		{"tab and UTF-8 in a claim", claims("al\tice é"), codeAllowed, 200},
	}
	authz := [][]byte{[]byte("Bearer " + validToken())}
	var uri fasthttp.URI
	if err := uri.Parse(targetHost, []byte("/orders")); err != nil {
		t.Fatal(err)
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			g, err := newGuard(Config{Verifier: tt.verifier, Rules: mustRules(t, testPolicy())})
			if err != nil {
				t.Fatal(err)
			}
			v := g.decide(g.begin(), []byte("GET"), &uri, authz, nil)
			if v.code != tt.want || v.status != tt.status {
				t.Errorf("got %s (%d), want %s (%d)", answers[v.code].reason, v.status, answers[tt.want].reason, tt.status)
			}
			if tt.want == codeToken+code(token.Revoked) {
				const challenge = `Bearer realm="meshauth", error="invalid_token", error_description="token revoked"`
				if v.challenge != challenge || v.body != `{"error":"invalid_token","error_description":"token revoked"}` {
					t.Errorf("challenge %s, body %s", v.challenge, v.body)
				}
			}
		})
	}
}
