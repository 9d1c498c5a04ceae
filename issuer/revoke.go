package issuer

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"net/url"

	"github.com/meshauth/meshauth/issuer/store"
	"github.com/meshauth/meshauth/token"
)

// handleRevoke serves RFC 7009 token revocation. Every request that is well
// formed and comes from an authenticated client is answered 200 with an
// empty body, whether the token was revoked, unknown, already invalid or
// another client's (§2.2), so the answer never tells whether a token exists.
func (s *Server) handleRevoke(w http.ResponseWriter, r *http.Request) {
	if err := s.revoke(r.Context(), w, r); err != nil {
		s.writeError(w, r, err)
		return
	}
	w.Header().Set("Cache-Control", "no-store")
	w.WriteHeader(http.StatusOK)
}

func (s *Server) revoke(ctx context.Context, w http.ResponseWriter, r *http.Request) error {
	form, err := readForm(w, r)
	if err != nil {
		return err
	}
	value := form.Get("token")
	if value == "" {
		return errInvalidRequest("token missing")
	}
	client, err := s.revokingClient(ctx, r, form)
	if err != nil {
		return err
	}
	if !token.IsReference(value) {
		// Only JWTs have dots; reference and refresh tokens are base64url.
		return s.revokeJWT(ctx, client, value)
	}
	// token_type_hint only orders the search (§2.1); an unknown hint is
	// ignored rather than answered unsupported_token_type.
	search := []func(context.Context, *store.Client, string) (bool, error){s.revokeReference, s.revokeRefreshToken}
	if form.Get("token_type_hint") == "refresh_token" {
		search[0], search[1] = search[1], search[0]
	}
	for _, try := range search {
		if found, err := try(ctx, client, value); found || err != nil {
			return err
		}
	}
	return nil
}

// revokingClient authenticates the client of a revocation request. A public
// client has no credentials and identifies itself by client_id alone
// (RFC 7009 §2.1): it can revoke only its own tokens, which is no more than
// anyone holding them could do.
func (s *Server) revokingClient(ctx context.Context, r *http.Request, form url.Values) (*store.Client, error) {
	if !presentsCredentials(r, form) {
		return s.publicClient(ctx, form.Get("client_id"))
	}
	return s.authenticateClient(ctx, r, form)
}

// presentsCredentials reports whether a request carries client credentials
// of any method: an Authorization header, a client_secret or a client
// assertion.
func presentsCredentials(r *http.Request, form url.Values) bool {
	return len(r.Header.Values("Authorization")) > 0 || form.Get("client_secret") != "" ||
		form.Get("client_assertion") != "" || form.Get("client_assertion_type") != ""
}

// revokeJWT revokes a JWT access token of this issuer by its jti: the
// token cannot be deleted, so a stored revocation makes introspection
// answer inactive and, pushed to verifiers, makes them refuse it. A JWT
// that does not verify is already useless and is left alone.
func (s *Server) revokeJWT(ctx context.Context, client *store.Client, value string) error {
	claims, err := s.ownToken(ctx, value, true)
	var te *token.Error
	if errors.As(err, &te) {
		return nil
	}
	if err != nil {
		return err
	}
	if claims.ID == "" || !s.ownedBy(ctx, client, claims.ClientID, "access token") {
		return nil
	}
	// A token revoked already needs no second record: a client repeating
	// its revocation must not grow the revocation list.
	revoked, err := s.revoked(ctx, claims)
	if err != nil || revoked {
		return err
	}
	_, err = s.recordRevocation(ctx, store.RevokeToken, claims.ID)
	return err
}

// revokeReference revokes a reference access token: a revocation by jti
// first, so that edges evict their cached swap of it and a failure of the
// deletion that follows still leaves it revoked, then the record itself.
func (s *Server) revokeReference(ctx context.Context, client *store.Client, value string) (found bool, err error) {
	hash := ReferenceTokenHash(value)
	rec, err := s.store.GetAccessToken(ctx, hash)
	if errors.Is(err, store.ErrNotFound) {
		return false, nil
	}
	if err != nil {
		return false, fmt.Errorf("look up reference token: %w", err)
	}
	if !s.ownedBy(ctx, client, rec.ClientID, "access token") {
		return true, nil
	}
	if _, err := s.recordRevocation(ctx, store.RevokeToken, rec.ID); err != nil {
		return true, err
	}
	if err := s.store.DeleteAccessToken(ctx, hash); err != nil {
		return true, fmt.Errorf("delete reference token: %w", err)
	}
	return true, nil
}

// revokeRefreshToken revokes a refresh token by ending its whole grant:
// RFC 7009 §2.1 has the server invalidate the access tokens of the same
// authorization too.
func (s *Server) revokeRefreshToken(ctx context.Context, client *store.Client, value string) (found bool, err error) {
	rec, err := s.store.GetRefreshToken(ctx, ReferenceTokenHash(value))
	if errors.Is(err, store.ErrNotFound) {
		return false, nil
	}
	if err != nil {
		return false, fmt.Errorf("look up refresh token: %w", err)
	}
	if !s.ownedBy(ctx, client, rec.ClientID, "refresh token") {
		return true, nil
	}
	_, err = s.revokeGrant(ctx, rec.GrantID)
	return true, err
}

// ownedBy reports whether a token of owner may be revoked by client. RFC
// 7009 §2.1 lets the server refuse another client's token with an error;
// meshauth answers 200 and revokes nothing instead, so a client cannot learn
// that a token exists, and logs it at debug level for the operator.
func (s *Server) ownedBy(ctx context.Context, client *store.Client, owner, kind string) bool {
	if client.ID == owner {
		return true
	}
	s.remote.LogAttrs(ctx, slog.LevelDebug, "revocation of another client's token ignored",
		slog.String("client_id", client.ID), slog.String("owner", owner), slog.String("kind", kind))
	return false
}
