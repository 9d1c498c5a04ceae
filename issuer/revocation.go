package issuer

import (
	"context"
	"crypto/rand"
	"fmt"

	"github.com/meshauth/meshauth/issuer/store"
	"github.com/meshauth/meshauth/token"
)

// RevocationNotifier learns of each revocation once it is stored, so that
// verifiers elsewhere (sidecars, edges) refuse matching tokens before they
// expire. Package issuer/keys's Distributor implements it over NATS. Notify must not
// block for long; the stored revocation is the source of truth and a
// notifier that fails must resend it later from the store.
type RevocationNotifier interface {
	NotifyRevocation(ctx context.Context, r *store.Revocation)
}

// recordRevocation stores a revocation of the tokens matching kind and value
// (store.RevokeToken etc.) issued up to now and tells the notifier. It lives
// as long as the longest-lived access token it can match, plus the
// verifiers' clock leeway.
func (s *Server) recordRevocation(ctx context.Context, kind, value string) (*store.Revocation, error) {
	now := s.now().UTC()
	r := &store.Revocation{
		ID:        rand.Text(),
		Kind:      kind,
		Value:     value,
		RevokedAt: now,
		ExpiresAt: now.Add(s.tokenLifetime + revocationLeeway),
	}
	if err := s.store.AddRevocation(ctx, r); err != nil {
		return nil, fmt.Errorf("store revocation of %s: %w", kind, err)
	}
	if s.notifier != nil {
		s.notifier.NotifyRevocation(ctx, r)
	}
	return r, nil
}

// revocationLeeway covers the largest clock skew a verifier may allow on
// exp.
const revocationLeeway = token.MaxLeeway

// revokeGrant ends a user authorization: a revocation by sid tells
// verifiers to refuse its JWT access tokens, and the store drops the
// grant's refresh and reference tokens (RFC 7009 §2.1, RFC 9700 §4.14.2).
// The revocation is recorded first: if dropping the tokens then fails, a
// retry with the same refresh token finds it and finishes the job.
func (s *Server) revokeGrant(ctx context.Context, grantID string) (*store.Revocation, error) {
	r, err := s.recordRevocation(ctx, store.RevokeGrant, grantID)
	if err != nil {
		return nil, err
	}
	if err := s.store.RevokeGrant(ctx, grantID, s.now().UTC()); err != nil {
		return nil, fmt.Errorf("revoke grant: %w", err)
	}
	return r, nil
}

// revoked reports whether a stored revocation matches a token with these
// claims (RFC 7009 §2: revocation takes effect at once, on every replica,
// because it is read from the store). A reference token's claims carry its
// grant as sid (see referenceClaims).
func (s *Server) revoked(ctx context.Context, c *token.Claims) (bool, error) {
	keys := make([]store.RevocationKey, 0, 4)
	for _, k := range [...]store.RevocationKey{
		{Kind: store.RevokeToken, Value: c.ID},
		{Kind: store.RevokeClient, Value: c.ClientID},
		{Kind: store.RevokeSubject, Value: c.Subject},
		{Kind: store.RevokeGrant, Value: c.SessionID},
	} {
		if k.Value != "" {
			keys = append(keys, k)
		}
	}
	if len(keys) == 0 {
		return false, nil
	}
	r, err := s.store.IsRevoked(ctx, keys, c.IssuedAt, s.now())
	if err != nil {
		return false, fmt.Errorf("check revocations: %w", err)
	}
	return r, nil
}
