package exchange

import (
	"errors"
	"fmt"
	"slices"
	"strings"
	"time"
)

// DereferenceScope, registered in a client's scope, lets that client (an
// edge gateway) trade any live reference token of the issuer for an
// internal JWT of the same authorization: the "phantom token" pattern. It
// is a scope of its own, not introspect's, because a client that may read
// a token's claims should not thereby be able to mint bearer tokens.
const DereferenceScope = "dereference"

// ErrNoDereference: the client is not registered with DereferenceScope.
var ErrNoDereference = errors.New("the client may not dereference reference tokens")

// Dereference decides a dereference: the client of r, an edge gateway
// registered with DereferenceScope, presents a reference token it received
// from the Internet (r.Subject, its verified claims) and asks for the same
// authorization as a JWT for the service behind it (r.Audiences). The new
// token stands for the reference token itself, not for a delegation to the
// edge:
//
//   - Its sub, client_id and sid are the reference token's: the service
//     sees the Internet client, and revoking the user's grant, the client
//     or the subject reaches the JWT as it reaches the reference token.
//   - It has no act claim: the edge only changes the token's form, and
//     counting it as an actor would spend one hop of every later exchange's
//     MaxDelegationDepth.
//   - Each requested audience must be in the client's allowed_audiences
//     and in the reference token's aud (RFC 8707 §2: a token is used only
//     where it was issued for; the edge never widens that).
//   - The scope is the reference token's, within the client's
//     ExchangeScopes limit for each target audience, if any; r.Scope, when
//     given, must be within that. Unlike Decide, the client's own
//     registered scope does not bound it: the edge holds only
//     DereferenceScope and acts for no one.
//   - It expires at the earlier of now plus lifetime and the reference
//     token's expiry.
//
// Every refusal wraps ErrNoDereference or one of the Err values of Decide.
func Dereference(r Request, now time.Time, lifetime time.Duration) (*Decision, error) {
	if lifetime <= 0 {
		return nil, fmt.Errorf("exchange: lifetime %v is not positive", lifetime)
	}
	sub, client := r.Subject, r.Client
	if !slices.Contains(client.Scope, DereferenceScope) {
		return nil, fmt.Errorf("%w: %q is not in its registered scope", ErrNoDereference, DereferenceScope)
	}
	if len(r.Audiences) == 0 {
		return nil, ErrNoAudience
	}
	var aud []string
	for _, a := range r.Audiences {
		if !slices.Contains(client.AllowedAudiences, a) {
			return nil, fmt.Errorf("%w: %.128q is not in this client's allowed_audiences", ErrTarget, a)
		}
		if !slices.Contains(sub.Audience, a) {
			return nil, fmt.Errorf("%w: the reference token was not issued for %.128q", ErrTarget, a)
		}
		if !slices.Contains(aud, a) {
			aud = append(aud, a)
		}
	}

	held := strings.Fields(sub.Scope)
	allowed := func(sc string) string {
		if !slices.Contains(held, sc) {
			return "is not in the reference token's scope"
		}
		for _, a := range aud {
			if lim, ok := client.ExchangeScopes[a]; ok && !slices.Contains(lim, sc) {
				return fmt.Sprintf("is not allowed for audience %.128q", a)
			}
		}
		return ""
	}
	var scope []string
	want := r.Scope
	if len(want) == 0 {
		want = held
	}
	for _, sc := range want {
		why := allowed(sc)
		if why != "" && len(r.Scope) > 0 {
			return nil, fmt.Errorf("%w: %.64q %s", ErrScope, sc, why)
		}
		if why == "" && !slices.Contains(scope, sc) {
			scope = append(scope, sc)
		}
	}
	if len(scope) == 0 && len(held) > 0 {
		return nil, fmt.Errorf("%w: no scope of the reference token is allowed for the audience", ErrScope)
	}

	exp := now.Add(lifetime)
	if sub.ExpiresAt.Before(exp) {
		exp = sub.ExpiresAt
	}
	if !exp.After(now) {
		return nil, ErrExpired
	}
	return &Decision{Audience: aud, Scope: scope, Act: sub.Act, ExpiresAt: exp, ClientID: sub.ClientID, ID: sub.ID}, nil
}
