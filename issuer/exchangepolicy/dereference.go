package exchangepolicy

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
	aud, err := targets(r.Audiences, client)
	if err != nil {
		return nil, err
	}
	for _, a := range aud {
		if !slices.Contains(sub.Audience, a) {
			return nil, fmt.Errorf("%w: the reference token was not issued for %.128q", ErrTarget, a)
		}
	}
	held := strings.Fields(sub.Scope)
	scope, err := scopeRule{held: held, of: "reference token", limits: client.ExchangeScopes, aud: aud}.grant(r.Scope)
	if err != nil {
		return nil, err
	}
	if len(scope) == 0 && len(held) > 0 {
		return nil, fmt.Errorf("%w: no scope of the reference token is allowed for the audience", ErrScope)
	}
	exp, err := expiry(sub, now, lifetime)
	if err != nil {
		return nil, err
	}
	return &Decision{Audience: aud, Scope: scope, Act: sub.Act, ExpiresAt: exp, ClientID: sub.ClientID, ID: sub.ID}, nil
}
