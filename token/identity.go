package token

// Identity returns what a revocation can name of the token of c.
func (c *Claims) Identity() Identity {
	return Identity{Issuer: c.Issuer, TokenID: c.ID, ClientID: c.ClientID, Subject: c.Subject, Session: c.SessionID}
}

// ReadIdentity returns the Identity of the JWT tok, read from its claims
// as the Verifier reads them but WITHOUT verifying anything: not the
// signature, not the issuer, not the expiry. It is for a cache keeping a
// token verified elsewhere, or one the issuer just issued, so that
// revocations reach the entry; never for deciding whether a token is
// valid. A token that is not a JWS compact serialization with a JSON
// object of claims is an error.
func ReadIdentity(tok []byte) (Identity, error) {
	dot1, dot2, ok := split(tok)
	if !ok {
		return Identity{}, errSegments
	}
	raw, err := decode(nil, tok[dot1+1:dot2])
	if err != nil {
		return Identity{}, err
	}
	var c Claims
	if err := decodeClaims(raw, &c); err != nil {
		return Identity{}, err
	}
	return c.Identity(), nil
}
