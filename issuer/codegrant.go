package issuer

import (
	"context"
	"errors"
	"fmt"
	"net/url"
	"slices"
	"time"

	"github.com/meshauth/meshauth/issuer/store"
)

// authorizationCodeGrant serves RFC 6749 §4.1.3: client c redeems a code
// for the user's tokens. The code is single-use: a second redemption
// revokes everything the first one issued (§4.1.2, RFC 9700 §4.5), since
// it means someone else holds the code.
func (s *Server) authorizationCodeGrant(ctx context.Context, c *store.Client, form url.Values) (*tokenResponse, error) {
	code := form.Get("code")
	if code == "" {
		return nil, errInvalidRequest("code missing")
	}
	// A malformed verifier is refused before the code is spent.
	verifier := form.Get("code_verifier")
	if verifier != "" && !validCodeVerifier(verifier) {
		return nil, errInvalidRequest("code_verifier must be 43 to 128 characters of A-Z, a-z, 0-9, '-', '.', '_' and '~' (RFC 7636 §4.1)")
	}
	now := s.now().UTC()
	rec, err := s.store.RedeemAuthorizationCode(ctx, ReferenceTokenHash(code), now)
	switch {
	case errors.Is(err, store.ErrReplay):
		if _, err := s.revokeGrant(ctx, rec.GrantID); err != nil {
			return nil, err
		}
		s.remote.WarnContext(ctx, "authorization code used twice: its grant is revoked", "client_id", c.ID, "grant_id", rec.GrantID)
		return nil, errInvalidGrant("authorization code was already used; the tokens issued for it are revoked")
	case errors.Is(err, store.ErrNotFound):
		return nil, errInvalidGrant("authorization code is invalid or expired")
	case err != nil:
		return nil, fmt.Errorf("redeem authorization code: %w", err)
	}
	switch {
	// The store drops expired codes, but by its clock; ours decides.
	case !now.Before(rec.ExpiresAt):
		return nil, errInvalidGrant("authorization code is invalid or expired")
	case rec.ClientID != c.ID:
		return nil, errInvalidGrant("authorization code was issued to another client")
	case rec.RedirectURI != form.Get("redirect_uri"):
		// §4.1.3: required and identical if the authorization request had
		// one; absent if it had none.
		return nil, errInvalidGrant("redirect_uri does not match the authorization request")
	case rec.CodeChallenge == "" && verifier != "":
		// RFC 9700 §4.8.2: a verifier without a challenge is a downgrade
		// attempt.
		return nil, errInvalidGrant("code_verifier sent, but the authorization request had no code_challenge")
	case rec.CodeChallenge != "" && verifier == "":
		return nil, errInvalidGrant("code_verifier missing (the authorization request had a code_challenge)")
	case rec.CodeChallenge != "" && !verifierMatches(verifier, rec.CodeChallenge):
		return nil, errInvalidGrant("code_verifier does not match the code_challenge")
	}
	g, err := s.liveGrant(ctx, rec.GrantID, now)
	if err != nil {
		return nil, err
	}
	return s.issueUserTokens(ctx, c, g, now, userTokens{scope: rec.Scope, audience: rec.Audience, refreshScope: rec.Scope, refreshAudience: rec.Audience, fromCode: true})
}

// errGrantEnded answers a code or refresh token whose grant was revoked or
// has expired.
var errGrantEnded = errInvalidGrant("the authorization has expired or was revoked")

// liveGrant returns the grant with id if it is neither revoked nor expired
// at now.
func (s *Server) liveGrant(ctx context.Context, id string, now time.Time) (*store.Grant, error) {
	g, err := s.store.GetGrant(ctx, id)
	if errors.Is(err, store.ErrNotFound) {
		return nil, errGrantEnded
	}
	if err != nil {
		return nil, fmt.Errorf("look up grant: %w", err)
	}
	if !g.RevokedAt.IsZero() || !now.Before(g.ExpiresAt) {
		return nil, errGrantEnded
	}
	return g, nil
}

// userTokens is what a code or refresh token grants: the access token's
// scope and audience, and the refresh token's, which stay those of the
// original grant however the access token is narrowed (RFC 6749 §6).
type userTokens struct {
	scope, audience               []string
	refreshScope, refreshAudience []string
	// fromCode: the tokens answer the code, so the ID Token echoes the
	// authorization request's nonce.
	fromCode bool
}

// issueUserTokens issues an access token of grant g to client c, a
// rotated refresh token if c may use them, and an ID Token if the access
// token's scope has openid. None outlives g, and a disabled user gets
// none.
//
// A replayed code or refresh token may revoke g while this runs; tokens
// stored after the store's revocation would escape it. So g is read again
// once they exist, and if it was revoked meanwhile, revoked again now,
// which deletes them and refuses the JWT by its sid.
func (s *Server) issueUserTokens(ctx context.Context, c *store.Client, g *store.Grant, now time.Time, t userTokens) (*tokenResponse, error) {
	user, err := s.store.GetUser(ctx, g.Subject)
	if errors.Is(err, store.ErrNotFound) || (err == nil && user.Disabled) {
		return nil, errInvalidGrant("the user's account is disabled")
	}
	if err != nil {
		return nil, fmt.Errorf("look up the grant's user: %w", err)
	}
	exp := now.Add(s.tokenLifetime)
	if g.ExpiresAt.Before(exp) {
		exp = g.ExpiresAt
	}
	resp, err := s.issueAccessToken(ctx, c, c.AccessTokenFormat, now, grantedToken{
		subject: g.Subject, audience: t.audience, scope: t.scope, grantID: g.ID, expiresAt: exp,
		authTime: g.AuthTime, amr: g.AMR, idp: g.IDP,
	})
	if err != nil {
		return nil, err
	}
	if slices.Contains(t.scope, scopeOpenID) {
		if resp.IDToken, err = s.issueIDToken(c, g, user, t.scope, resp.AccessToken, now, t.fromCode); err != nil {
			return nil, err
		}
	}
	if slices.Contains(c.GrantTypes, GrantTypeRefreshToken) {
		value := referenceToken()
		err := s.store.PutRefreshToken(ctx, &store.RefreshToken{
			Hash: ReferenceTokenHash(value), GrantID: g.ID, ClientID: c.ID, Subject: g.Subject,
			Scope: t.refreshScope, Audience: t.refreshAudience, IssuedAt: now, ExpiresAt: g.ExpiresAt,
		})
		if err != nil {
			return nil, fmt.Errorf("store refresh token: %w", err)
		}
		resp.RefreshToken = value
	}
	if _, err := s.liveGrant(ctx, g.ID, now); err != nil {
		if errors.Is(err, errGrantEnded) {
			if _, err := s.revokeGrant(ctx, g.ID); err != nil {
				return nil, err
			}
		}
		return nil, err
	}
	return resp, nil
}
