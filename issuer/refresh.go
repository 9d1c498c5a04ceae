package issuer

import (
	"context"
	"errors"
	"fmt"
	"net/url"
	"slices"

	"github.com/meshauth/meshauth/issuer/store"
)

// refreshTokenGrant serves RFC 6749 §6. Every use rotates the refresh
// token; a used one presented again means two parties hold it, so the
// whole grant is revoked (RFC 9700 §4.14.2). The request may narrow the
// scope and audience, never widen them.
func (s *Server) refreshTokenGrant(ctx context.Context, c *store.Client, form url.Values) (*tokenResponse, error) {
	value := form.Get("refresh_token")
	if value == "" {
		return nil, errInvalidRequest("refresh_token missing")
	}
	requested, err := parseScope(form.Get("scope"))
	if err != nil {
		return nil, errInvalidScope(err.Error())
	}
	requestedAud, err := requestedAudiences(form)
	if err != nil {
		return nil, err
	}
	hash := ReferenceTokenHash(value)
	// Look first, so that a request that is refused for its scope,
	// audience or client leaves the token usable.
	rt, err := s.store.GetRefreshToken(ctx, hash)
	if errors.Is(err, store.ErrNotFound) {
		return nil, errInvalidGrant("refresh token is invalid, expired or revoked")
	}
	if err != nil {
		return nil, fmt.Errorf("look up refresh token: %w", err)
	}
	if rt.ClientID != c.ID {
		// RFC 6749 §10.4: the token is bound to its client.
		return nil, errInvalidGrant("refresh token was issued to another client")
	}
	scope, extra := narrowed(requested, rt.Scope)
	if extra != "" {
		return nil, errInvalidScope(fmt.Sprintf("scope %q was not granted to this refresh token", truncate(extra, 64)))
	}
	aud, extra := narrowed(requestedAud, rt.Audience)
	if extra != "" {
		return nil, errInvalidTarget(fmt.Sprintf("audience %q was not granted to this refresh token", truncate(extra, 128)))
	}

	now := s.now().UTC()
	rt, err = s.store.UseRefreshToken(ctx, hash, now)
	switch {
	case errors.Is(err, store.ErrReplay):
		if _, err := s.revokeGrant(ctx, rt.GrantID); err != nil {
			return nil, err
		}
		s.remote.WarnContext(ctx, "refresh token used twice: its grant is revoked", "client_id", c.ID, "grant_id", rt.GrantID)
		return nil, errInvalidGrant("refresh token was already used; every token of its grant is revoked")
	case errors.Is(err, store.ErrNotFound):
		return nil, errInvalidGrant("refresh token is invalid, expired or revoked")
	case err != nil:
		return nil, fmt.Errorf("use refresh token: %w", err)
	}
	if !now.Before(rt.ExpiresAt) {
		return nil, errInvalidGrant("refresh token is invalid, expired or revoked")
	}
	g, err := s.liveGrant(ctx, rt.GrantID, now)
	if err != nil {
		return nil, err
	}
	return s.issueUserTokens(ctx, c, g, now, userTokens{scope: scope, audience: aud, refreshScope: rt.Scope, refreshAudience: rt.Audience})
}

// narrowed returns requested if every value of it is in granted, or
// granted when nothing is requested; otherwise the first value that is not
// granted, as notGranted.
func narrowed(requested, granted []string) (result []string, notGranted string) {
	if len(requested) == 0 {
		return granted, ""
	}
	for _, v := range requested {
		if !slices.Contains(granted, v) {
			return nil, v
		}
	}
	return requested, ""
}
