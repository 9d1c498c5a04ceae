package issuer

import (
	"errors"
	"fmt"
	"net/http"
	"slices"
	"strings"

	"github.com/meshauth/meshauth/issuer/store"
)

// pathUserinfo is the OpenID Connect userinfo endpoint (Core §5.3).
const pathUserinfo = "/userinfo"

// userinfo is the endpoint's answer: sub, and the claims the token's scope
// releases.
type userinfo struct {
	Subject string `json:"sub"`
	standardClaims
}

// handleUserinfo answers an access token of this issuer that has the
// openid scope and this issuer in its audience (the audience of OpenID
// Connect requests that ask for none) with the claims of its user. The
// token is judged as introspection judges it, through package token: an
// ID Token, another issuer's token, an expired or revoked one is refused.
// It is taken from the Authorization field only (RFC 6750 §2.1).
func (s *Server) handleUserinfo(w http.ResponseWriter, r *http.Request) {
	value := bearerToken(r)
	if value == "" {
		w.Header().Set("WWW-Authenticate", `Bearer realm="meshauth"`)
		s.userinfoError(w, http.StatusUnauthorized, "", "")
		return
	}
	ctx := r.Context()
	claims, err := s.activeToken(ctx, value)
	if err != nil {
		s.writeError(w, r, err)
		return
	}
	if claims == nil {
		s.userinfoError(w, http.StatusUnauthorized, "invalid_token", "the access token is invalid, expired or revoked")
		return
	}
	if !slices.Contains(claims.Audience, s.issuerURL) {
		s.userinfoError(w, http.StatusUnauthorized, "invalid_token", "the access token is not for the userinfo endpoint (its audience does not name this issuer)")
		return
	}
	if !claims.HasScope(scopeOpenID) {
		s.userinfoError(w, http.StatusForbidden, "insufficient_scope", "the access token lacks the openid scope")
		return
	}
	user, err := s.store.GetUser(ctx, claims.Subject)
	if errors.Is(err, store.ErrNotFound) || (err == nil && user.Disabled) {
		s.userinfoError(w, http.StatusUnauthorized, "invalid_token", "the access token's user is disabled or gone")
		return
	}
	if err != nil {
		s.writeError(w, r, fmt.Errorf("look up user: %w", err))
		return
	}
	writeJSON(w, http.StatusOK, userinfo{Subject: user.ID, standardClaims: userClaims(user, strings.Fields(claims.Scope))})
}

// userinfoError answers with an RFC 6750 §3 challenge: code "" for a
// request without a token, which gets none (§3.1).
func (s *Server) userinfoError(w http.ResponseWriter, status int, code, desc string) {
	if code == "" {
		w.Header().Set("Cache-Control", "no-store")
		w.WriteHeader(status)
		return
	}
	challenge := `Bearer realm="meshauth", error="` + code + `", error_description="` + descriptionText(desc) + `"`
	if code == "insufficient_scope" {
		challenge += `, scope="openid"`
	}
	w.Header().Set("WWW-Authenticate", challenge)
	writeJSON(w, status, struct {
		Error       string `json:"error"`
		Description string `json:"error_description"`
	}{code, desc})
}
