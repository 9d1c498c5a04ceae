package issuer

import (
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
	// (a sub) or "grant" (a user authorization, the sid of its tokens).
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
}

// revokeKinds maps the kinds of RevokeRequest to the store's (the claims
// verifiers match).
var revokeKinds = map[string]string{
	"token":   store.RevokeToken,
	"client":  store.RevokeClient,
	"subject": store.RevokeSubject,
	"grant":   store.RevokeGrant,
}

// Bounds of a revocation request: a token of token.DefaultMaxSize in JSON,
// and values far longer than any id meshauth makes.
const (
	maxRevokeBytes      = 2 * token.DefaultMaxSize
	maxRevokeValueBytes = 1024
)

// handleAdminRevoke revokes tokens by id, client, subject or grant. Revoking
// a client does not disable it: the tokens it holds are refused, not the
// ones it gets next.
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
		s.writeError(w, r, errInvalidRequest(`the request body must be a JSON object {"kind": "token"|"client"|"subject"|"grant", "value": "..."}`))
		return
	}
	kind, ok := revokeKinds[req.Kind]
	switch {
	case !ok:
		s.writeError(w, r, errInvalidRequest(fmt.Sprintf("kind %q is not token, client, subject or grant", truncate(req.Kind, 32))))
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
	value := req.Value
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
	if kind == store.RevokeGrant {
		rev, err = s.revokeGrant(ctx, value) // the grant's refresh and reference tokens go too
	} else {
		rev, err = s.recordRevocation(ctx, kind, value)
	}
	if err != nil {
		s.writeError(w, r, err)
		return
	}
	if kind == store.RevokeSubject {
		// The user's sign-in sessions end too: otherwise their next
		// authorization would get new tokens without a password.
		if err := s.store.DeleteUserSessions(ctx, value); err != nil {
			s.writeError(w, r, fmt.Errorf("end the user's sessions: %w", err))
			return
		}
	}
	if req.Token != "" && token.IsReference(req.Token) {
		// A reference token is refused at once by being gone.
		if err := s.store.DeleteAccessToken(ctx, ReferenceTokenHash(req.Token)); err != nil {
			s.writeError(w, r, fmt.Errorf("delete revoked reference token: %w", err))
			return
		}
	}
	s.log.Info("tokens revoked", "kind", req.Kind, "value", value, "revocation", rev.ID)
	writeJSON(w, http.StatusOK, RevokeResponse{ID: rev.ID, Kind: req.Kind, Value: rev.Value, RevokedAt: rev.RevokedAt, ExpiresAt: rev.ExpiresAt})
}
