package token

import "time"

// VerifyExpired is Verify, except that a token whose "exp" has passed is
// accepted: its signature, header, issuer and audience are checked as
// ever, and "nbf" and "iat" must not lie after its "exp". It is for an
// OpenID provider reading an ID Token of its own that a client presents
// back as a hint (OpenID Connect Core 1.0 §3.1.2.1 id_token_hint,
// RP-Initiated Logout 1.0 §2), which is typically expired by then; never
// for authenticating a request.
func (v *Verifier) VerifyExpired(tok []byte) (*Claims, error) {
	var c Claims
	raw, err := v.verifySignature(tok, nil)
	if err != nil {
		return nil, err
	}
	if err := decodeClaims(raw, &c); err != nil {
		return nil, err
	}
	// The token's own expiry stands in for the clock: every other rule
	// of checkClaims applies unchanged.
	atExpiry := *v
	atExpiry.now = func() time.Time { return c.ExpiresAt }
	if err := atExpiry.checkClaims(&c); err != nil {
		return nil, err
	}
	return &c, nil
}
