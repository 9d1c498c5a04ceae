package token

import (
	"slices"
	"sync"
	"sync/atomic"
	"time"
)

// Revocation refuses, until ExpiresAt, the tokens of Issuer whose claim
// named Kind ("jti", "client_id", "sub" or "sid") equals Value and that
// were issued (iat) at or before RevokedAt. The issuer sets ExpiresAt past
// the end of the longest-lived token the revocation can match, so an
// expired revocation can be forgotten.
//
// A revocation belongs to the issuer that made it: revoking subject alice
// at one issuer leaves the alice of every other issuer alone, federated
// providers included. Matches is the one rule that says which tokens a
// revocation reaches; every verifier and cache that answers to
// revocations uses it.
type Revocation struct {
	Issuer    string
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
// revocation reaches the entry.
type Identity struct {
	Issuer, TokenID, ClientID, Subject, Session string
}

// Matches reports whether r reaches the token of id issued at iat: its
// issuer is r.Issuer, its claim named r.Kind equals r.Value, and it was
// issued at or before r.RevokedAt. A zero iat stands for a token without
// "iat", which may predate the revocation, so it matches too; a cache that
// drops entries whatever their iat passes a zero iat. A revocation without
// Issuer or Value, or of another kind, matches nothing. Whether r has
// expired is the caller's to check: by then every token it matches has
// expired too.
func (r *Revocation) Matches(id Identity, iat time.Time) bool {
	if r.Value == "" || r.Issuer == "" || id.Issuer != r.Issuer {
		return false
	}
	var v string
	switch r.Kind {
	case RevokeTokenID:
		v = id.TokenID
	case RevokeClientID:
		v = id.ClientID
	case RevokeSubject:
		v = id.Subject
	case RevokeSession:
		v = id.Session
	default:
		return false
	}
	return v == r.Value && (iat.IsZero() || !iat.After(r.RevokedAt))
}

// A RevocationSink applies revocations as they arrive: an Authenticator's
// Revoke, a cache that evicts what a revocation matches. The distribution
// of revocations passes each to one sink: RevocationSinks fans it out.
type RevocationSink func(Revocation)

// RevocationSinks passes each revocation to every sink added, in the order
// added; sinks may be added at any time, from any goroutine (a cache made
// after the distribution started). Its Revoke is a RevocationSink. The
// zero value is ready to use.
type RevocationSinks struct {
	mu    sync.Mutex
	sinks atomic.Pointer[[]RevocationSink]
}

// Add makes s pass revocations to sink too.
func (s *RevocationSinks) Add(sink RevocationSink) {
	s.mu.Lock()
	defer s.mu.Unlock()
	var next []RevocationSink
	if cur := s.sinks.Load(); cur != nil {
		next = slices.Clone(*cur)
	}
	next = append(next, sink)
	s.sinks.Store(&next)
}

// Revoke passes r to every sink.
func (s *RevocationSinks) Revoke(r Revocation) {
	if cur := s.sinks.Load(); cur != nil {
		for _, sink := range *cur {
			sink(r)
		}
	}
}
