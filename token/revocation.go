package token

import "time"

// Revocation refuses, until ExpiresAt, the tokens whose claim named Kind
// ("jti", "client_id", "sub" or "sid") equals Value and that were issued
// (iat) at or before RevokedAt. The issuer sets ExpiresAt past the end of
// the longest-lived token the revocation can match, so an expired
// revocation can be forgotten.
type Revocation struct {
	Kind      string
	Value     string
	RevokedAt time.Time
	ExpiresAt time.Time
}

// Revocation kinds: the claim a Revocation's Value matches.
const (
	RevokeTokenID  = "jti"
	RevokeClientID = "client_id"
	RevokeSubject  = "sub"
	RevokeSession  = "sid"
)
