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

// Identity is what a revocation can name of a token: its claims "iss",
// "jti", "client_id", "sub" and "sid", empty when absent. Caches of tokens,
// and of what was obtained with them, keep it with each entry so that a
// revocation reaches the entry (Revocation.Names).
type Identity struct {
	Issuer, TokenID, ClientID, Subject, Session string
}

// Names reports whether r names the token of id: its claim of kind r.Kind
// equals r.Value. It is the rule by which every cache drops the tokens a
// revocation reaches, whatever their "iat": a cache dropping a token
// issued after r only costs one more verification or exchange, which
// decides. A revocation with an empty Value or an unknown Kind names no
// token.
func (r Revocation) Names(id Identity) bool {
	if r.Value == "" {
		return false
	}
	// A revocation names the tokens of every issuer: when Revocation
	// records the issuer that made it, it names only that issuer's, and
	// the comparison of id.Issuer with it goes here.
	switch r.Kind {
	case RevokeTokenID:
		return id.TokenID == r.Value
	case RevokeClientID:
		return id.ClientID == r.Value
	case RevokeSubject:
		return id.Subject == r.Value
	case RevokeSession:
		return id.Session == r.Value
	}
	return false
}
