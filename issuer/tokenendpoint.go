package issuer

import (
	"cmp"
	"context"
	"crypto/rand"
	"crypto/sha256"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"net/http"
	"net/url"
	"slices"
	"strings"
	"time"

	"github.com/meshauth/meshauth/issuer/store"
)

// Access token formats (the access_token_format client metadata extension).
const (
	formatJWT       = "jwt"
	formatReference = "reference"
)

// tokenResponse is the RFC 6749 §5.1 success answer, with RFC 8693
// §2.2.1's issued_token_type for token exchange.
type tokenResponse struct {
	AccessToken     string `json:"access_token"`
	IssuedTokenType string `json:"issued_token_type,omitempty"`
	TokenType       string `json:"token_type"`
	ExpiresIn       int64  `json:"expires_in"`
	RefreshToken    string `json:"refresh_token,omitempty"`
	Scope           string `json:"scope,omitempty"`
	// IDToken answers an OpenID Connect request (Core §3.1.3.3).
	IDToken string `json:"id_token,omitempty"`
}

func (s *Server) handleToken(w http.ResponseWriter, r *http.Request) {
	resp, err := s.token(r.Context(), w, r)
	if err != nil {
		s.writeError(w, r, err)
		return
	}
	writeJSON(w, http.StatusOK, resp)
}

func (s *Server) token(ctx context.Context, w http.ResponseWriter, r *http.Request) (*tokenResponse, error) {
	form, err := readForm(w, r)
	if err != nil {
		return nil, err
	}
	grant := form.Get("grant_type")
	if grant == "" {
		return nil, errInvalidRequest("grant_type missing")
	}
	if !slices.Contains(GrantTypesSupported, grant) {
		return nil, errUnsupportedGrantType(fmt.Sprintf("grant type %q is not supported", truncate(grant, 64)))
	}
	client, err := s.authenticateClient(ctx, r, form)
	if err != nil {
		return nil, err
	}
	if !slices.Contains(client.GrantTypes, grant) {
		return nil, errUnauthorizedClient(fmt.Sprintf("client is not registered for the %s grant", grant))
	}
	switch grant {
	case GrantTypeTokenExchange:
		return s.tokenExchange(ctx, client, form)
	case GrantTypeAuthorizationCode:
		return s.authorizationCodeGrant(ctx, client, form)
	case GrantTypeRefreshToken:
		return s.refreshTokenGrant(ctx, client, form)
	}
	return s.clientCredentials(ctx, client, form)
}

// clientCredentials serves RFC 6749 §4.4: the client acts on its own behalf,
// so the token's subject is the client.
func (s *Server) clientCredentials(ctx context.Context, c *store.Client, form url.Values) (*tokenResponse, error) {
	scopes, err := grantedScope(form.Get("scope"), c.Scope)
	if err != nil {
		return nil, err
	}
	aud, err := s.audiences(form, c)
	if err != nil {
		return nil, err
	}
	now := s.now().UTC()
	return s.issueAccessToken(ctx, c, c.AccessTokenFormat, now, grantedToken{
		subject: c.ID, audience: aud, scope: scopes, expiresAt: now.Add(s.tokenLifetime),
	})
}

// grantedScope returns the requested scope if the client may have all of it
// (RFC 6749 §3.3), or the client's whole registered scope when none is
// requested.
func grantedScope(requested string, allowed []string) ([]string, error) {
	if requested == "" {
		return allowed, nil
	}
	scopes, err := parseScope(requested)
	if err != nil {
		return nil, errInvalidScope(err.Error())
	}
	for _, sc := range scopes {
		if !slices.Contains(allowed, sc) {
			return nil, errInvalidScope(fmt.Sprintf("scope %q is not registered for this client", truncate(sc, 64)))
		}
	}
	return scopes, nil
}

// audiences returns the token's audience from the RFC 8707 resource and the
// RFC 8693 audience parameters; each must be in the client's
// allowed_audiences. Without either the token gets the default audience.
func (s *Server) audiences(form url.Values, c *store.Client) ([]string, error) {
	aud, err := requestedAudiences(form)
	if err != nil {
		return nil, err
	}
	if len(aud) == 0 {
		return []string{s.defaultAudience}, nil
	}
	for _, a := range aud {
		if !slices.Contains(c.AllowedAudiences, a) {
			return nil, errInvalidTarget(fmt.Sprintf("audience %q is not in this client's allowed_audiences", truncate(a, 128)))
		}
	}
	return aud, nil
}

// requestedAudiences returns the RFC 8707 resource and RFC 8693 audience
// parameters, without duplicates; none may be requested.
func requestedAudiences(form url.Values) ([]string, error) {
	var aud []string
	for _, res := range form["resource"] {
		// RFC 8707 §2: a resource is an absolute URI without a fragment.
		u, err := url.Parse(res)
		if err != nil || !u.IsAbs() || u.Fragment != "" {
			return nil, errInvalidTarget(fmt.Sprintf("resource %q must be an absolute URI without a fragment (use audience for a service name)", truncate(res, 128)))
		}
		aud = append(aud, res)
	}
	aud = append(aud, form["audience"]...)
	return dedupe(aud), nil
}

// accessTokenClaims are the RFC 9068 §2.2 claims of a JWT access token.
type accessTokenClaims struct {
	Issuer    string `json:"iss"`
	Subject   string `json:"sub"`
	Audience  any    `json:"aud"` // a string when there is one audience (RFC 7519 §4.1.3)
	ExpiresAt int64  `json:"exp"`
	IssuedAt  int64  `json:"iat"`
	ID        string `json:"jti"`
	ClientID  string `json:"client_id"`
	Scope     string `json:"scope,omitempty"`
	// SessionID names the user authorization (grant) the token descends
	// from, so that revoking the grant reaches it; RFC 9068 §2.2 allows
	// further claims, and sid is OpenID Connect's name for a session.
	SessionID string `json:"sid,omitempty"`
	// Act names the actor chain of an exchanged token (RFC 8693 §4.1).
	Act json.RawMessage `json:"act,omitempty"`
	// How the user of a grant signed in (RFC 9068 §2.2.1): when, with
	// what (RFC 8176), and through which upstream provider, if any.
	AuthTime int64    `json:"auth_time,omitempty"`
	AMR      []string `json:"amr,omitempty"`
	IDP      string   `json:"idp,omitempty"`
}

// grantedToken is what a grant decided to issue.
type grantedToken struct {
	subject   string
	audience  []string
	scope     []string
	expiresAt time.Time
	act       json.RawMessage
	grantID   string // the user authorization, if any
	// authTime, amr and idp describe the user's sign-in, for a grant's
	// tokens.
	authTime time.Time
	amr      []string
	idp      string
	// clientID is the token's client_id and id its jti when not "": the
	// issuing client's id and a new id otherwise.
	clientID, id string
}

// issueAccessToken mints g for client c, issued at now, in format (jwt or
// reference). A reference record has no act, so grants that set one issue
// JWTs.
func (s *Server) issueAccessToken(ctx context.Context, c *store.Client, format string, now time.Time, g grantedToken) (*tokenResponse, error) {
	aud, exp := g.audience, g.expiresAt
	scope := strings.Join(g.scope, " ")
	resp := &tokenResponse{TokenType: "Bearer", ExpiresIn: int64(exp.Sub(now).Seconds()), Scope: scope}
	if format == formatReference {
		value := referenceToken()
		err := s.store.PutAccessToken(ctx, &store.AccessToken{
			Hash: ReferenceTokenHash(value), ID: randomID(), GrantID: g.grantID, ClientID: c.ID, Subject: g.subject,
			Audience: aud, Scope: g.scope, IssuedAt: now, ExpiresAt: exp,
		})
		if err != nil {
			return nil, fmt.Errorf("store reference token: %w", err)
		}
		resp.AccessToken = value
		return resp, nil
	}
	claims := accessTokenClaims{
		Issuer: s.issuerURL, Subject: g.subject, ExpiresAt: exp.Unix(), IssuedAt: now.Unix(),
		ID: cmp.Or(g.id, randomID()), ClientID: cmp.Or(g.clientID, c.ID), Scope: scope, Audience: aud, SessionID: g.grantID, Act: g.act,
		AMR: g.amr, IDP: g.idp,
	}
	if !g.authTime.IsZero() {
		claims.AuthTime = g.authTime.Unix()
	}
	if len(aud) == 1 {
		claims.Audience = aud[0]
	}
	payload, err := json.Marshal(claims)
	if err != nil {
		return nil, fmt.Errorf("encode access token claims: %w", err)
	}
	// RFC 9068 §2.1: the header's typ is at+jwt.
	if resp.AccessToken, err = s.keys.Sign("at+jwt", payload); err != nil {
		return nil, fmt.Errorf("sign access token: %w", err)
	}
	return resp, nil
}

// referenceToken returns a new opaque access token: 256 random bits and
// nothing readable. Authorization codes and refresh tokens have the same
// form.
func referenceToken() string {
	b := make([]byte, 32)
	_, _ = rand.Read(b)
	return base64.RawURLEncoding.EncodeToString(b)
}

// ReferenceTokenHash is the key under which a reference token is stored: the
// token itself is never stored. Authorization codes and refresh tokens are
// stored under the same hash of their value.
func ReferenceTokenHash(value string) string {
	sum := sha256.Sum256([]byte(value))
	return base64.RawURLEncoding.EncodeToString(sum[:])
}
