package issuer

import (
	"context"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"net/url"
	"slices"
	"strings"
	"time"

	"github.com/meshauth/meshauth/issuer/store"
	"github.com/meshauth/meshauth/token"
)

// Client authentication methods (RFC 6749 §2.3.1, RFC 7523 §2.2).
const (
	authSecretBasic   = "client_secret_basic"
	authSecretPost    = "client_secret_post"
	authPrivateKeyJWT = "private_key_jwt"
	// authNone is a public client's (RFC 7591 §2): it has no credentials
	// and is identified by client_id alone.
	authNone = "none"
)

const jwtBearerAssertionType = "urn:ietf:params:oauth:client-assertion-type:jwt-bearer"

// maxAssertionLifetime bounds how far in the future a client assertion may
// expire: its jti must be remembered until then (RFC 7523 §3 item 7).
const maxAssertionLifetime = 10 * time.Minute

// authenticateClient authenticates the client of a token request with
// exactly one method (RFC 6749 §2.3) and returns it.
func (s *Server) authenticateClient(ctx context.Context, r *http.Request, form url.Values) (*store.Client, error) {
	authz := r.Header.Values("Authorization")
	if len(authz) > 1 {
		return nil, errInvalidRequest("more than one Authorization header")
	}
	hasBasic := len(authz) == 1
	hasPost := form.Get("client_secret") != ""
	hasAssertion := form.Get("client_assertion") != "" || form.Get("client_assertion_type") != ""
	methods := 0
	for _, used := range []bool{hasBasic, hasPost, hasAssertion} {
		if used {
			methods++
		}
	}
	switch {
	case methods > 1:
		return nil, errInvalidRequest("use exactly one client authentication method")
	case hasBasic:
		id, secret, err := parseBasic(authz[0])
		if err != nil {
			return nil, errInvalidClient(err.Error(), true)
		}
		return s.authenticateSecret(ctx, form, id, secret, authSecretBasic)
	case hasPost:
		return s.authenticateSecret(ctx, form, form.Get("client_id"), form.Get("client_secret"), authSecretPost)
	case hasAssertion:
		return s.authenticateAssertion(ctx, form)
	default:
		return s.identifyPublicClient(ctx, form)
	}
}

// publicClientGrants are the grants a client without credentials may use:
// those whose tokens are bound to the client by other means, the code by
// PKCE (RFC 7636) and the refresh token by rotation with reuse detection
// (RFC 9700 §4.14.2).
var publicClientGrants = []string{GrantTypeAuthorizationCode, GrantTypeRefreshToken}

// identifyPublicClient accepts a request that carries no client
// credentials only from a public client (token_endpoint_auth_method none,
// RFC 6749 §2.1), by its client_id, and only for publicClientGrants.
func (s *Server) identifyPublicClient(ctx context.Context, form url.Values) (*store.Client, error) {
	c, err := s.publicClient(ctx, form.Get("client_id"))
	if err != nil {
		return nil, err
	}
	if !slices.Contains(publicClientGrants, form.Get("grant_type")) {
		return nil, errUnauthorizedClient("a public client may use only the authorization_code and refresh_token grants")
	}
	return c, nil
}

// publicClient returns the client id names if it is a public client; a
// request naming none, or a client with credentials, must authenticate.
func (s *Server) publicClient(ctx context.Context, id string) (*store.Client, error) {
	if id == "" {
		return nil, errInvalidClient("client authentication required", true)
	}
	c, err := s.store.GetClient(ctx, id)
	if errors.Is(err, store.ErrNotFound) {
		return nil, errInvalidClient("client authentication failed", true)
	}
	if err != nil {
		return nil, fmt.Errorf("identify client: %w", err)
	}
	if c.TokenEndpointAuthMethod != authNone {
		return nil, errInvalidClient(fmt.Sprintf("client authentication required: client is registered for %s", c.TokenEndpointAuthMethod), true)
	}
	return c, nil
}

// parseBasic decodes HTTP Basic credentials; RFC 6749 §2.3.1 form-encodes
// the id and secret before they are joined.
func parseBasic(header string) (id, secret string, err error) {
	const prefix = "Basic "
	if len(header) < len(prefix) || !strings.EqualFold(header[:len(prefix)], prefix) {
		return "", "", errors.New("the Authorization header must use the Basic scheme")
	}
	raw, err := base64.StdEncoding.DecodeString(strings.TrimSpace(header[len(prefix):]))
	if err != nil {
		return "", "", errors.New("malformed Basic credentials")
	}
	rawID, rawSecret, ok := strings.Cut(string(raw), ":")
	if !ok {
		return "", "", errors.New("malformed Basic credentials")
	}
	if id, err = url.QueryUnescape(rawID); err != nil {
		return "", "", errors.New("malformed Basic credentials")
	}
	if secret, err = url.QueryUnescape(rawSecret); err != nil {
		return "", "", errors.New("malformed Basic credentials")
	}
	return id, secret, nil
}

func (s *Server) authenticateSecret(ctx context.Context, form url.Values, id, secret, method string) (*store.Client, error) {
	basic := method == authSecretBasic
	if id == "" {
		return nil, errInvalidClient("client_id missing", basic)
	}
	if formID := form.Get("client_id"); formID != "" && formID != id {
		return nil, errInvalidRequest("client_id does not match the authenticated client")
	}
	c, err := s.store.GetClient(ctx, id)
	if errors.Is(err, store.ErrNotFound) {
		secretMatches(dummySecretHash, secret)
		return nil, errInvalidClient("client authentication failed", basic)
	}
	if err != nil {
		return nil, fmt.Errorf("authenticate client: %w", err)
	}
	if !secretMatches(c.SecretHash, secret) {
		return nil, errInvalidClient("client authentication failed", basic)
	}
	if c.TokenEndpointAuthMethod != method {
		return nil, errInvalidClient(fmt.Sprintf("client is registered for %s", c.TokenEndpointAuthMethod), basic)
	}
	return c, nil
}

// authenticateAssertion checks an RFC 7523 client assertion: a JWT signed
// with a key from the client's registered jwks, iss = sub = client_id, aud
// naming this server, short-lived, and used once.
func (s *Server) authenticateAssertion(ctx context.Context, form url.Values) (*store.Client, error) {
	if form.Get("client_assertion_type") != jwtBearerAssertionType {
		return nil, errInvalidClient("client_assertion_type must be "+jwtBearerAssertionType, false)
	}
	assertion := form.Get("client_assertion")
	if assertion == "" {
		return nil, errInvalidClient("client_assertion missing", false)
	}
	id, err := assertionSubject(assertion)
	if err != nil {
		return nil, errInvalidClient(err.Error(), false)
	}
	if formID := form.Get("client_id"); formID != "" && formID != id {
		return nil, errInvalidRequest("client_id does not match the client assertion")
	}
	c, err := s.store.GetClient(ctx, id)
	if errors.Is(err, store.ErrNotFound) {
		return nil, errInvalidClient("client authentication failed", false)
	}
	if err != nil {
		return nil, fmt.Errorf("authenticate client: %w", err)
	}
	if c.TokenEndpointAuthMethod != authPrivateKeyJWT {
		return nil, errInvalidClient(fmt.Sprintf("client is registered for %s", c.TokenEndpointAuthMethod), false)
	}
	keys, err := token.ParseJWKS(c.JWKS)
	if err != nil {
		return nil, errInvalidClient("the client's registered jwks is unusable", false)
	}
	v, err := token.NewVerifier(token.Policy{
		Issuer: c.ID,
		// RFC 7523 §3 item 3: the audience identifies the authorization
		// server; the issuer identifier and the token endpoint URL both do.
		Audiences: []string{s.issuerURL, s.endpoint(pathToken)},
		// An access token (at+jwt) must never pass as a client assertion.
		Types: []string{"", "jwt", "client-authentication+jwt"},
		Now:   s.now,
	}, token.NewKeySet(keys))
	if err != nil {
		return nil, fmt.Errorf("client assertion verifier: %w", err)
	}
	claims, err := v.Verify([]byte(assertion))
	if err != nil {
		return nil, errInvalidClient("client assertion rejected: "+err.Error(), false)
	}
	if claims.Subject != c.ID {
		return nil, errInvalidClient("client assertion sub must equal iss", false)
	}
	if claims.ID == "" {
		return nil, errInvalidClient("client assertion jti missing", false)
	}
	if claims.ExpiresAt.After(s.now().Add(maxAssertionLifetime)) {
		return nil, errInvalidClient(fmt.Sprintf("client assertion must expire within %s", maxAssertionLifetime), false)
	}
	err = s.store.UseOnce(ctx, "client-assertion/"+c.ID+"/"+claims.ID, claims.ExpiresAt.Add(time.Minute))
	if errors.Is(err, store.ErrReplay) {
		return nil, errInvalidClient("client assertion already used (jti replay)", false)
	}
	if err != nil {
		return nil, fmt.Errorf("record client assertion jti: %w", err)
	}
	return c, nil
}

// assertionSubject reads the unverified sub of a client assertion
// only to find which client's keys to verify it with; the verification that
// follows binds it.
func assertionSubject(assertion string) (string, error) {
	parts := strings.Split(assertion, ".")
	if len(parts) != 3 {
		return "", errors.New("client assertion is not a signed JWT")
	}
	payload, err := base64.RawURLEncoding.DecodeString(parts[1])
	if err != nil {
		return "", errors.New("client assertion payload is not base64url")
	}
	var c struct {
		Sub string `json:"sub"`
	}
	if err := json.Unmarshal(payload, &c); err != nil {
		return "", errors.New("client assertion payload is not a JSON object")
	}
	if c.Sub == "" {
		return "", errors.New("client assertion sub missing")
	}
	return c.Sub, nil
}
