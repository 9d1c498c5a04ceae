package issuer

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"mime"
	"net/http"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/meshauth/meshauth/issuer/store"
	"github.com/meshauth/meshauth/token"
)

// introspectScope, registered in a client's scope, lets that client
// introspect every access token of this issuer. The edge gateway's client
// needs it: it dereferences the reference tokens of Internet clients, whose
// audience is the service behind the edge, not the edge itself.
const introspectScope = "introspect"

// Media type and JWT typ of RFC 9701 introspection responses.
const (
	introspectionJWTMediaType = "application/token-introspection+jwt"
	introspectionJWTType      = "token-introspection+jwt"
)

// introspectionJWTLifetime bounds the validity of a signed introspection
// response. RFC 9701 §5 requires only iat; the exp lets verifiers that
// require one (RFC 8725 §3.10, package token) accept the response and keeps
// a captured response from being replayed for long.
const introspectionJWTLifetime = time.Minute

// introspection is the RFC 7662 §2.2 answer. An inactive token is answered
// {"active":false} and nothing else (RFC 9701 §5 requires it; RFC 7662 §4
// advises it).
type introspection struct {
	Active    bool   `json:"active"`
	Scope     string `json:"scope,omitempty"`
	ClientID  string `json:"client_id,omitempty"`
	TokenType string `json:"token_type,omitempty"`
	ExpiresAt int64  `json:"exp,omitempty"`
	IssuedAt  int64  `json:"iat,omitempty"`
	NotBefore int64  `json:"nbf,omitempty"`
	Subject   string `json:"sub,omitempty"`
	Audience  any    `json:"aud,omitempty"` // a string when there is one audience, as in the token
	Issuer    string `json:"iss,omitempty"`
	ID        string `json:"jti,omitempty"`
	// SessionID is the grant the token descends from, so that the edge
	// can put it in the internal JWT it mints and a revocation of the
	// grant (by sid) reaches that JWT too.
	SessionID string          `json:"sid,omitempty"`
	Act       json.RawMessage `json:"act,omitempty"`
}

var inactive = &introspection{}

// introspectionJWT is the payload of an RFC 9701 §5 signed response.
type introspectionJWT struct {
	Issuer             string         `json:"iss"`
	Audience           string         `json:"aud"`
	IssuedAt           int64          `json:"iat"`
	ExpiresAt          int64          `json:"exp"`
	TokenIntrospection *introspection `json:"token_introspection"`
}

// handleIntrospect serves RFC 7662 token introspection, answering an RFC
// 9701 signed JWT when the Accept header prefers one.
func (s *Server) handleIntrospect(w http.ResponseWriter, r *http.Request) {
	caller, answer, err := s.introspect(r.Context(), w, r)
	if err != nil {
		s.writeError(w, r, err)
		return
	}
	if !prefersIntrospectionJWT(r.Header.Values("Accept")) {
		writeJSON(w, http.StatusOK, answer)
		return
	}
	now := s.now()
	payload, err := json.Marshal(introspectionJWT{
		Issuer: s.issuerURL, Audience: caller.ID, IssuedAt: now.Unix(),
		ExpiresAt: now.Add(introspectionJWTLifetime).Unix(), TokenIntrospection: answer,
	})
	if err != nil {
		s.writeError(w, r, fmt.Errorf("encode introspection response: %w", err))
		return
	}
	jws, err := s.keys.Sign(introspectionJWTType, payload)
	if err != nil {
		s.writeError(w, r, fmt.Errorf("sign introspection response: %w", err))
		return
	}
	h := w.Header()
	h.Set("Content-Type", introspectionJWTMediaType)
	h.Set("Cache-Control", "no-store")
	h.Set("Pragma", "no-cache")
	_, _ = w.Write([]byte(jws))
}

// introspect authenticates the caller and describes the token it asks
// about. token_type_hint is ignored: only access tokens are introspected
// (RFC 7662 §2.1 lets the server search every type it knows), and refresh
// tokens are answered inactive, since no resource server is meant to see
// them.
func (s *Server) introspect(ctx context.Context, w http.ResponseWriter, r *http.Request) (*store.Client, *introspection, error) {
	form, err := readForm(w, r)
	if err != nil {
		return nil, nil, err
	}
	value := form.Get("token")
	if value == "" {
		return nil, nil, errInvalidRequest("token missing")
	}
	// RFC 7662 §2.1 requires authorization of the caller, and a public
	// client proves nothing: it could be anyone holding its client_id.
	if !presentsCredentials(r, form) {
		return nil, nil, errInvalidClient("client authentication required; public clients may not introspect tokens", true)
	}
	caller, err := s.authenticateClient(ctx, r, form)
	if err != nil {
		return nil, nil, err
	}
	claims, err := s.activeToken(ctx, value)
	if err != nil || claims == nil {
		return caller, inactive, err
	}
	if !mayIntrospect(caller, claims) {
		// RFC 7662 §4: a caller not entitled to know about the token is
		// told it is inactive, so nothing about it leaks.
		return caller, inactive, nil
	}
	return caller, describe(claims), nil
}

// mayIntrospect is who may learn what a token means: its own client, a
// client named in its audience (the service it was issued for), or a client
// registered with the introspect scope (the edge gateway).
func mayIntrospect(caller *store.Client, c *token.Claims) bool {
	return caller.ID == c.ClientID || slices.Contains(c.Audience, caller.ID) || slices.Contains(caller.Scope, introspectScope)
}

// activeToken returns the claims of value if it is an active access token
// of this issuer, or nil: unknown, malformed, expired, another issuer's,
// revoked, or of a revoked grant. An error means the store failed.
func (s *Server) activeToken(ctx context.Context, value string) (*token.Claims, error) {
	claims, err := s.ownToken(ctx, value, false)
	var te *token.Error
	if errors.As(err, &te) || errors.Is(err, errUnknownReference) {
		return nil, nil
	}
	if err != nil {
		return nil, err
	}
	// The verifier allows clock skew on exp; the issuer judges its own
	// tokens by its own clock, where there is none (RFC 7662 §4).
	if !s.now().Before(claims.ExpiresAt) {
		return nil, nil
	}
	revoked, err := s.revoked(ctx, claims)
	if err != nil || revoked {
		return nil, err
	}
	if claims.SessionID != "" {
		// The grant itself decides too: a token issued while its grant was
		// being revoked may have missed the revocation by sid.
		switch _, err := s.liveGrant(ctx, claims.SessionID, s.now()); {
		case errors.Is(err, errGrantEnded):
			return nil, nil
		case err != nil:
			return nil, err
		}
	}
	return claims, nil
}

// describe turns the claims of an active token into the RFC 7662 §2.2
// answer.
func describe(c *token.Claims) *introspection {
	in := &introspection{
		Active: true, Scope: c.Scope, ClientID: c.ClientID, TokenType: "Bearer",
		ExpiresAt: c.ExpiresAt.Unix(), Subject: c.Subject, Issuer: c.Issuer,
		ID: c.ID, SessionID: c.SessionID, Act: c.Act,
	}
	if !c.IssuedAt.IsZero() {
		in.IssuedAt = c.IssuedAt.Unix()
	}
	if !c.NotBefore.IsZero() {
		in.NotBefore = c.NotBefore.Unix()
	}
	switch len(c.Audience) {
	case 0:
	case 1:
		in.Audience = c.Audience[0]
	default:
		in.Audience = c.Audience
	}
	return in
}

// prefersIntrospectionJWT reports whether an Accept header asks for the RFC
// 9701 signed response (§4): it names application/token-introspection+jwt
// with a non-zero quality no lower than that of any range covering
// application/json (RFC 9110 §12.5.1). Malformed ranges are skipped.
func prefersIntrospectionJWT(accept []string) bool {
	jwtQ, jsonQ := 0.0, 0.0
	for _, header := range accept {
		for _, part := range strings.Split(header, ",") {
			mt, params, err := mime.ParseMediaType(part)
			if err != nil {
				continue
			}
			q := 1.0
			if v, ok := params["q"]; ok {
				if q, err = strconv.ParseFloat(v, 64); err != nil || !(q >= 0 && q <= 1) {
					continue
				}
			}
			switch mt {
			case introspectionJWTMediaType:
				jwtQ = max(jwtQ, q)
			case "application/json", "application/*", "*/*":
				jsonQ = max(jsonQ, q)
			}
		}
	}
	return jwtQ > 0 && jwtQ >= jsonQ
}
