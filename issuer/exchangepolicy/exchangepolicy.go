// Package exchangepolicy is the issuer's RFC 8693 token exchange policy:
// whether a client may trade a subject token for a new one, and with which
// audience, scope, actor chain and expiry (Decide), and the edge's
// dereference of a reference token into a JWT (Dereference). The sidecar's
// side, the caching client that asks for exchanges, is package exchange.
//
// Decide is a pure function over verified claims and what the policy
// reads of the exchanging client's registration (Client), with no HTTP
// and no store, so that the rules of docs/design.md ("Contracts") live in one
// place that unit tests cover fully. The issuer's token endpoint verifies
// the subject token, authenticates the exchanging client, calls Decide and
// mints what it decided. The rules:
//
//   - The exchanging client must be an audience of the subject token, or be
//     named by its may_act claim (RFC 8693 §4.4) by "sub" or "client_id".
//   - At least one target audience is requested, and each is in the
//     client's allowed_audiences.
//   - The granted scope is within the subject token's scope, the client's
//     registered scope and, for each target audience the client has a limit
//     for, that limit. With no scope requested, all of that intersection is
//     granted; an empty intersection is refused.
//   - The new act chain (RFC 8693 §4.1) is at most the client's
//     MaxDelegationDepth actors long, DefaultMaxDelegationDepth when the
//     client has none.
//   - The new token expires at the earlier of now plus the lifetime and the
//     subject token's expiry: an exchange never extends a delegation.
package exchangepolicy

import (
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"strings"
	"time"

	"github.com/meshauth/meshauth/token"
)

// DefaultMaxDelegationDepth is the longest act chain a client without its
// own limit may produce: five services acting in turn for one subject. A
// longer chain in a mesh is more likely a request loop than a design.
const DefaultMaxDelegationDepth = 5

// Client is what the policy reads of the exchanging client's registration:
// the fields of store.Client of the same names.
type Client struct {
	ID string
	// Scope is the set of scopes the client may request.
	Scope []string
	// AllowedAudiences are the audiences this client may obtain tokens for.
	AllowedAudiences []string
	// ExchangeScopes limits, per target audience, the scopes this client
	// may obtain by exchange; an audience not listed is limited only by
	// Scope.
	ExchangeScopes map[string][]string
	// MaxDelegationDepth bounds the act chain of the tokens this client
	// obtains by exchange; 0 means DefaultMaxDelegationDepth.
	MaxDelegationDepth int
}

// Request is a token exchange to decide.
type Request struct {
	// Subject holds the verified claims of the subject token (RFC 8693
	// §2.1): its signature, issuer and expiry are already checked.
	Subject *token.Claims
	// Client is the authenticated client asking for the exchange; it becomes
	// the new token's outermost actor. Its AllowedAudiences, Scope,
	// ExchangeScopes and MaxDelegationDepth bound what it gets.
	Client *Client
	// Audiences are the requested targets: the audience and resource
	// parameters (RFC 8693 §2.1, RFC 8707).
	Audiences []string
	// Scope is the requested scope; empty asks for all that is allowed.
	Scope []string
}

// Decision is what the new token holds. Its subject is the subject token's
// "sub".
type Decision struct {
	Audience []string
	Scope    []string
	// Act is the new "act" claim: {"sub": client id}, with the subject
	// token's act, if any, nested inside as "act" (RFC 8693 §4.1).
	Act       json.RawMessage
	ExpiresAt time.Time
	// ClientID is the new token's client_id: the exchanging client's id,
	// or for Dereference the reference token's.
	ClientID string
	// ID is the new token's jti; "" asks for a new one. Dereference keeps
	// the reference token's, so that revoking the reference token by its
	// jti (RFC 7009) refuses its JWT form everywhere too.
	ID string
}

// Errors of Decide, for errors.Is; the returned errors wrap them with
// details fit for an OAuth error_description (no tokens, attacker-chosen
// text truncated).
var (
	// ErrNoAudience: no audience or resource was requested.
	ErrNoAudience = errors.New("audience or resource is required")
	// ErrNotAudience: the client is neither an audience of the subject
	// token nor named by its may_act.
	ErrNotAudience = errors.New("the client may not exchange this subject token")
	// ErrTarget: a requested audience is not allowed for the client.
	ErrTarget = errors.New("audience not allowed")
	// ErrScope: a requested scope is not allowed, or none is.
	ErrScope = errors.New("scope not allowed")
	// ErrDepth: the act chain would grow past the client's limit.
	ErrDepth = errors.New("delegation chain too long")
	// ErrExpired: the subject token has no lifetime left to delegate.
	ErrExpired = errors.New("subject token expired")
	// ErrClaim: the subject token's act or may_act claim is not a JSON
	// object naming an actor by a string "sub" (or, for may_act,
	// "client_id").
	ErrClaim = errors.New("malformed act or may_act claim")
)

// Decide applies the exchange policy to r at time now. lifetime is the
// longest the new token may live. Every refusal wraps one of the Err values.
func Decide(r Request, now time.Time, lifetime time.Duration) (*Decision, error) {
	if lifetime <= 0 {
		return nil, fmt.Errorf("exchange: lifetime %v is not positive", lifetime)
	}
	if len(r.Audiences) == 0 {
		return nil, ErrNoAudience
	}
	sub, client := r.Subject, r.Client

	if !slices.Contains(sub.Audience, client.ID) {
		// may_act is consulted only when it matters, so that a claim this
		// exchange does not rely on cannot refuse it.
		named, err := mayAct(sub.MayAct, client.ID, sub.Issuer)
		if err != nil {
			return nil, err
		}
		if !named {
			return nil, fmt.Errorf("%w: the client is not an audience of the subject token nor named by its may_act", ErrNotAudience)
		}
	}

	limit := client.MaxDelegationDepth
	if limit == 0 {
		limit = DefaultMaxDelegationDepth
	}
	depth, err := chainLength(sub.Act, limit)
	if err != nil {
		return nil, err
	}
	if depth+1 > limit {
		return nil, fmt.Errorf("%w: the new act chain would be longer than %d actors, this client's limit", ErrDepth, limit)
	}

	aud, err := targets(r.Audiences, client)
	if err != nil {
		return nil, err
	}
	scope, err := scopeRule{held: strings.Fields(sub.Scope), of: "subject token", registered: client.Scope, limits: client.ExchangeScopes, aud: aud}.grant(r.Scope)
	if err != nil {
		return nil, err
	}
	if len(scope) == 0 {
		return nil, fmt.Errorf("%w: no scope in common between the subject token, the client and the audience", ErrScope)
	}
	exp, err := expiry(sub, now, lifetime)
	if err != nil {
		return nil, err
	}

	act, err := json.Marshal(actor{Sub: client.ID, Act: sub.Act})
	if err != nil {
		return nil, fmt.Errorf("exchange: encode act: %w", err)
	}
	return &Decision{Audience: aud, Scope: scope, Act: act, ExpiresAt: exp, ClientID: client.ID}, nil
}

// targets returns the requested audiences, without repeats, if each is in
// the client's allowed_audiences.
func targets(requested []string, client *Client) ([]string, error) {
	if len(requested) == 0 {
		return nil, ErrNoAudience
	}
	var aud []string
	for _, a := range requested {
		if !slices.Contains(client.AllowedAudiences, a) {
			return nil, fmt.Errorf("%w: %.128q is not in this client's allowed_audiences", ErrTarget, a)
		}
		if !slices.Contains(aud, a) {
			aud = append(aud, a)
		}
	}
	return aud, nil
}

// expiry returns when a token minted from sub at now expires: after
// lifetime, never after sub.
func expiry(sub *token.Claims, now time.Time, lifetime time.Duration) (time.Time, error) {
	exp := now.Add(lifetime)
	if sub.ExpiresAt.Before(exp) {
		exp = sub.ExpiresAt
	}
	// The verifier allows some clock leeway past exp; a token minted from
	// such a subject would be born expired.
	if !exp.After(now) {
		return time.Time{}, ErrExpired
	}
	return exp, nil
}

// scopeRule bounds the scope of a new token: within the subject token's
// (held), the client's registered scope (unless registered is nil) and
// its limit for each target audience.
type scopeRule struct {
	held       []string
	of         string // what held is the scope of, for refusals
	registered []string
	limits     map[string][]string
	aud        []string
}

// why returns the reason sc may not be granted, or "".
func (r scopeRule) why(sc string) string {
	if !slices.Contains(r.held, sc) {
		return "is not in the " + r.of + "'s scope"
	}
	if r.registered != nil && !slices.Contains(r.registered, sc) {
		return "is not registered for this client"
	}
	for _, a := range r.aud {
		if lim, ok := r.limits[a]; ok && !slices.Contains(lim, sc) {
			return fmt.Sprintf("is not allowed for audience %.128q", a)
		}
	}
	return ""
}

// grant returns the requested scope if every member may be granted; with
// none requested, every held scope that may. A refusal wraps ErrScope.
func (r scopeRule) grant(requested []string) ([]string, error) {
	var out []string
	if len(requested) == 0 {
		for _, sc := range r.held {
			if r.why(sc) == "" && !slices.Contains(out, sc) {
				out = append(out, sc)
			}
		}
		return out, nil
	}
	for _, sc := range requested {
		if reason := r.why(sc); reason != "" {
			return nil, fmt.Errorf("%w: %.64q %s", ErrScope, sc, reason)
		}
		if !slices.Contains(out, sc) {
			out = append(out, sc)
		}
	}
	return out, nil
}

// actor is one level of an act claim (RFC 8693 §4.1).
type actor struct {
	Sub string          `json:"sub"`
	Act json.RawMessage `json:"act,omitempty"`
}

// chainLength returns the number of actors in the act claim act (0 when
// absent). It stops counting past limit, where only "too long" matters.
func chainLength(act json.RawMessage, limit int) (int, error) {
	n := 0
	for len(act) > 0 && n <= limit {
		m, err := members(act)
		if err != nil {
			return 0, err
		}
		if s, err := stringMember(m, "sub"); err != nil || s == "" {
			return 0, fmt.Errorf("%w: an act level has no string sub", ErrClaim)
		}
		n++
		act = m["act"]
	}
	return n, nil
}

// mayAct reports whether the may_act claim (RFC 8693 §4.4) names the client:
// by "sub" (the RFC's example) or "client_id", and, if it says which issuer
// the identity belongs to, by this subject token's issuer, the one whose
// client ids these are.
func mayAct(raw json.RawMessage, clientID, issuer string) (bool, error) {
	if len(raw) == 0 {
		return false, nil
	}
	m, err := members(raw)
	if err != nil {
		return false, err
	}
	sub, err1 := stringMember(m, "sub")
	cid, err2 := stringMember(m, "client_id")
	iss, err3 := stringMember(m, "iss")
	if err := errors.Join(err1, err2, err3); err != nil {
		return false, err
	}
	if iss != "" && iss != issuer {
		return false, nil
	}
	return sub == clientID || cid == clientID, nil
}

// members decodes a JSON object into its members. A map, unlike a struct,
// matches member names exactly: encoding/json would let "SUB" stand for
// "sub", and two parsers disagreeing about a claim is how tokens get
// smuggled (the token package's strict reader refuses the same).
func members(raw json.RawMessage) (map[string]json.RawMessage, error) {
	var m map[string]json.RawMessage
	if err := json.Unmarshal(raw, &m); err != nil || m == nil {
		return nil, fmt.Errorf("%w: not a JSON object", ErrClaim)
	}
	return m, nil
}

// stringMember returns the string member name of m, "" if absent.
func stringMember(m map[string]json.RawMessage, name string) (string, error) {
	v, ok := m[name]
	if !ok {
		return "", nil
	}
	var s string
	if err := json.Unmarshal(v, &s); err != nil {
		return "", fmt.Errorf("%w: %s is not a string", ErrClaim, name)
	}
	return s, nil
}
