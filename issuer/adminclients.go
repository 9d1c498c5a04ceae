package issuer

import (
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"strings"

	"github.com/meshauth/meshauth/issuer/store"
)

// pathAdminClients lists the registered clients (GET); one client is
// pathAdminClients/{id} (GET, DELETE).
const pathAdminClients = "/admin/clients"

// ClientInfo is a registered client as the admin API shows it: its
// metadata and when it was registered, never its secret (the store holds
// only a hash).
type ClientInfo struct {
	ClientMetadata
	ClientIDIssuedAt int64 `json:"client_id_issued_at"`
}

// clientInfo describes c in the terms of its registration (RFC 7591).
func clientInfo(c *store.Client) ClientInfo {
	md := ClientMetadata{
		ClientID:                c.ID,
		ClientName:              c.Name,
		GrantTypes:              c.GrantTypes,
		TokenEndpointAuthMethod: c.TokenEndpointAuthMethod,
		Scope:                   strings.Join(c.Scope, " "),
		JWKS:                    json.RawMessage(c.JWKS),
		RedirectURIs:            c.RedirectURIs,
		PostLogoutRedirectURIs:  c.PostLogoutRedirectURIs,
		AccessTokenFormat:       c.AccessTokenFormat,
		AllowedAudiences:        c.AllowedAudiences,
		MaxDelegationDepth:      c.MaxDelegationDepth,
	}
	if len(c.JWKS) == 0 {
		md.JWKS = nil
	}
	if len(c.ExchangeScopes) > 0 {
		md.ExchangeScopes = make(map[string]string, len(c.ExchangeScopes))
		for aud, scope := range c.ExchangeScopes {
			md.ExchangeScopes[aud] = strings.Join(scope, " ")
		}
	}
	return ClientInfo{ClientMetadata: md, ClientIDIssuedAt: c.CreatedAt.Unix()}
}

func (s *Server) handleListClients(w http.ResponseWriter, r *http.Request) {
	if !s.checkAdmin(w, r) {
		return
	}
	clients, err := s.store.ListClients(r.Context())
	if err != nil {
		s.writeError(w, r, fmt.Errorf("list clients: %w", err))
		return
	}
	out := make([]ClientInfo, 0, len(clients))
	for _, c := range clients {
		out = append(out, clientInfo(c))
	}
	writeJSON(w, http.StatusOK, out)
}

func (s *Server) handleGetClient(w http.ResponseWriter, r *http.Request) {
	if !s.checkAdmin(w, r) {
		return
	}
	c, err := s.store.GetClient(r.Context(), r.PathValue("id"))
	if err != nil {
		s.writeError(w, r, adminClientError(err, r.PathValue("id")))
		return
	}
	writeJSON(w, http.StatusOK, clientInfo(c))
}

// handleDeleteClient removes a client, then revokes every token it holds:
// deleted, it can get no new token, and the revocation (pushed to every
// verifier) refuses those it already has before they expire. The client is
// deleted first so that a failed revocation can be retried by revoking the
// client (POST /admin/revoke) without the client coming back.
func (s *Server) handleDeleteClient(w http.ResponseWriter, r *http.Request) {
	if !s.checkAdmin(w, r) {
		return
	}
	id := r.PathValue("id")
	ctx := r.Context()
	if err := s.store.DeleteClient(ctx, id); err != nil {
		s.writeError(w, r, adminClientError(err, id))
		return
	}
	rev, err := s.recordRevocation(ctx, store.RevokeClient, id)
	if err != nil {
		s.log.Error("client deleted, but its tokens are not revoked", "client_id", id, "err", err)
		w.Header().Set("Retry-After", "1")
		s.writeError(w, r, &oauthError{Status: http.StatusServiceUnavailable, Code: "temporarily_unavailable",
			Description: "the client is deleted, but its tokens are not revoked yet: revoke the client (POST /admin/revoke) to finish"})
		return
	}
	s.log.Info("client deleted and its tokens revoked", "client_id", id, "revocation", rev.ID)
	writeJSON(w, http.StatusOK, RevokeResponse{ID: rev.ID, Kind: "client", Value: rev.Value, RevokedAt: rev.RevokedAt, ExpiresAt: rev.ExpiresAt})
}

// adminClientError answers a store error about client id: 404 when there
// is no such client, else the store failure (503).
func adminClientError(err error, id string) error {
	if errors.Is(err, store.ErrNotFound) {
		return &oauthError{Status: http.StatusNotFound, Code: "invalid_request", Description: fmt.Sprintf("no client %q", truncate(id, 128))}
	}
	return fmt.Errorf("client %s: %w", truncate(id, 128), err)
}
