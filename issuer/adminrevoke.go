package issuer

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"strings"
	"time"
	"unicode"

	"github.com/meshauth/meshauth/issuer/store"
	"github.com/meshauth/meshauth/token"
)

// pathAdminRevoke is the administrative revocation endpoint.
const pathAdminRevoke = "/admin/revoke"

// RevokeRequest is the JSON body of POST {issuer}/admin/revoke: revoke the
// tokens of Kind whose claim equals Value, issued until now.
type RevokeRequest struct {
	// Kind is "token" (Value is a jti), "client" (a client_id), "subject"
	// (a sub), "user" (a user's name, which the issuer resolves to the sub
	// of their tokens) or "grant" (a user authorization, the sid of its
	// tokens).
	Kind  string `json:"kind"`
	Value string `json:"value,omitempty"`
	// Token, for kind "token" instead of Value, is the access token itself,
	// a JWT or a reference token of this issuer; a reference token is
	// also deleted.
	Token string `json:"token,omitempty"`
}

// RevokeResponse is the answer: the stored revocation. Verifiers refuse
// the matching tokens until ExpiresAt, past which none is still valid.
type RevokeResponse struct {
	ID        string    `json:"id"`
	Kind      string    `json:"kind"`
	Value     string    `json:"value"`
	RevokedAt time.Time `json:"revoked_at"`
	ExpiresAt time.Time `json:"expires_at"`
	// Subject, for kind "user", is the user's id: the sub of the tokens
	// refused.
	Subject string `json:"subject,omitempty"`
	// Warning says when the revocation may not be what was meant: a
	// subject that is a user's name rather than their id.
	Warning string `json:"warning,omitempty"`
}

// revokeKinds maps the kinds of RevokeRequest to the store's (the claims
// verifiers match).
var revokeKinds = map[string]string{
	"token":   store.RevokeToken,
	"client":  store.RevokeClient,
	"subject": store.RevokeSubject,
	"user":    store.RevokeSubject,
	"grant":   store.RevokeGrant,
}

// Bounds of a revocation request: a token of token.DefaultMaxSize in JSON,
// and values far longer than any id meshauth makes.
const (
	maxRevokeBytes      = 2 * token.DefaultMaxSize
	maxRevokeValueBytes = 1024
)

// handleAdminRevoke revokes tokens by id, client, subject, user or grant.
// Revoking a client does not disable it: the tokens it holds are refused,
// not the ones it gets next. Revoking a subject (or a user) also ends the
// grants and sessions that would issue new tokens of it.
func (s *Server) handleAdminRevoke(w http.ResponseWriter, r *http.Request) {
	if !s.checkAdmin(w, r) {
		return
	}
	var req RevokeRequest
	dec := json.NewDecoder(http.MaxBytesReader(w, r.Body, maxRevokeBytes))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&req); err != nil {
		var tooLarge *http.MaxBytesError
		if errors.As(err, &tooLarge) {
			s.writeError(w, r, &oauthError{Status: http.StatusRequestEntityTooLarge, Code: "invalid_request", Description: fmt.Sprintf("request body larger than %d bytes", maxRevokeBytes)})
			return
		}
		s.writeError(w, r, errInvalidRequest(`the request body must be a JSON object {"kind": "token"|"client"|"subject"|"user"|"grant", "value": "..."}`))
		return
	}
	kind, ok := revokeKinds[req.Kind]
	switch {
	case !ok:
		s.writeError(w, r, errInvalidRequest(fmt.Sprintf("kind %q is not token, client, subject, user or grant", truncate(req.Kind, 32))))
		return
	case req.Token != "" && (req.Kind != "token" || req.Value != ""):
		s.writeError(w, r, errInvalidRequest(`"token" goes with kind "token" and without "value"`))
		return
	case req.Token == "" && req.Value == "":
		s.writeError(w, r, errInvalidRequest(`"value" is required`))
		return
	case len(req.Value) > maxRevokeValueBytes || strings.ContainsFunc(req.Value, unicode.IsControl):
		s.writeError(w, r, errInvalidRequest(fmt.Sprintf(`"value" must be at most %d bytes without control characters`, maxRevokeValueBytes)))
		return
	}

	ctx := r.Context()
	value, subject := req.Value, ""
	if req.Kind == "user" {
		u, err := s.adminUser(ctx, req.Value)
		if err != nil {
			s.writeError(w, r, err)
			return
		}
		value, subject = u.ID, u.ID
		req.Value = u.Name
	}
	if req.Token != "" {
		c, err := s.ownToken(ctx, req.Token, false)
		if err != nil {
			s.writeError(w, r, tokenError(err, "token", errInvalidRequest))
			return
		}
		if c.ID == "" {
			s.writeError(w, r, errInvalidRequest("token has no jti to revoke it by"))
			return
		}
		value = c.ID
	}
	var rev *store.Revocation
	var err error
	switch kind {
	case store.RevokeGrant:
		rev, err = s.revokeGrant(ctx, value) // the grant's refresh and reference tokens go too
	case store.RevokeSubject:
		rev, err = s.revokeSubject(ctx, value)
	default:
		rev, err = s.recordRevocation(ctx, kind, value)
	}
	if err != nil {
		s.writeError(w, r, err)
		return
	}
	if req.Token != "" && token.IsReference(req.Token) {
		// A reference token is refused at once by being gone.
		if err := s.store.DeleteAccessToken(ctx, ReferenceTokenHash(req.Token)); err != nil {
			s.writeError(w, r, fmt.Errorf("delete revoked reference token: %w", err))
			return
		}
	}
	resp := RevokeResponse{ID: rev.ID, Kind: req.Kind, Value: rev.Value, RevokedAt: rev.RevokedAt, ExpiresAt: rev.ExpiresAt, Subject: subject}
	if subject != "" {
		resp.Value = req.Value
	}
	if req.Kind == "subject" {
		resp.Warning = s.subjectNamesUser(ctx, value)
	}
	s.log.Info("tokens revoked", "kind", req.Kind, "value", value, "revocation", rev.ID)
	writeJSON(w, http.StatusOK, resp)
}

// subjectNamesUser warns when subject is the name of a user whose tokens
// carry another sub: a person's sub is an opaque id, so revoking their
// name as a subject revokes nothing of theirs.
func (s *Server) subjectNamesUser(ctx context.Context, subject string) string {
	u, err := userNamed(ctx, s.store, subject)
	if err != nil || u.ID == subject {
		return ""
	}
	return fmt.Sprintf("%q is the name of a user whose tokens carry sub %q: this revoked the subject %q, which none of theirs has; to revoke the user's tokens, revoke user %s", u.Name, u.ID, subject, u.Name)
}
