// Package audit is the issuer's tamper-evident audit trail: one structured
// [Event] for each security-relevant act (a token issued, exchanged,
// dereferenced, introspected or revoked; a client registered, updated or
// deleted; a signing key rotated; a user created, disabled or deleted; a
// failed client or admin authentication; a sign-in; an admin API call),
// written as JSON lines to a file or standard output ([FileSink]) and to a
// replicated JetStream stream ([StreamSink]).
//
// An Event has typed fields only, and no field for a token, a secret or a
// request parameter: the jti is written as its SHA-256 (jti_hash), never
// itself; string values are capped, and one shaped like a JWT is redacted.
//
// Recording never blocks the caller and encodes nothing on its goroutine:
// [Trail.Record] copies the event into a bounded queue per sink, drained by
// a goroutine the trail owns. When a queue is full or its sink is failing,
// the trail either drops the event and counts it (fail-open, the default)
// or refuses it, and the caller refuses the act (fail-closed). Either way
// [Trail.Err] says so, for the issuer's /readyz, and [Trail.Stats] counts
// it, for its metrics; [Trail.Ready] fails in fail-closed mode only.
//
// Each sink writes one hash chain: every record carries its sequence number
// in the chain, the hash of the record before it (prev; the first record's
// is the genesis value, 64 zeros) and its own hash, the SHA-256 of the
// record's line without its "hash" member. [Verify] checks a chain and names
// the first line that breaks it.
package audit

import (
	"net/http"
	"net/netip"
	"time"
)

// Type is the kind of act an Event records.
type Type uint8

// The acts recorded. An act that was refused or failed has the Type of the
// act attempted and Outcome Failure, with a Reason.
const (
	// TokenIssued: a grant (Event.Grant) issued an access token: the
	// client_credentials, authorization_code, refresh_token and
	// password grants. Token exchange has its own type.
	TokenIssued Type = iota + 1
	// TokenExchanged: an RFC 8693 token exchange, issued or refused.
	TokenExchanged
	// TokenDereferenced: an edge swapped a reference token for a JWT.
	TokenDereferenced
	// TokenIntrospected: an RFC 7662 introspection.
	TokenIntrospected
	// TokenRevoked: a token, or the tokens of a client, subject or grant,
	// revoked (RFC 7009 or the admin API).
	TokenRevoked
	// ClientRegistered, ClientUpdated, ClientDeleted: the client registry.
	ClientRegistered
	ClientUpdated
	ClientDeleted
	// KeyRotated: a new signing key (Subject is its kid).
	KeyRotated
	// UserCreated, UserDisabled, UserDeleted: people who sign in.
	UserCreated
	UserDisabled
	UserDeleted
	// ClientAuthentication: a client failed to authenticate (successes
	// are implied by the act that follows).
	ClientAuthentication
	// AdminAuthentication: a request to the admin API failed to
	// authenticate.
	AdminAuthentication
	// SignIn: a person signed in at the login page, or failed to.
	SignIn
	// AdminCall: an admin API call (Operation), recorded besides the act
	// it performs, so that reads are on the trail too.
	AdminCall

	typeEnd
)

var typeNames = [typeEnd]string{
	0:                    "unknown",
	TokenIssued:          "token.issued",
	TokenExchanged:       "token.exchanged",
	TokenDereferenced:    "token.dereferenced",
	TokenIntrospected:    "token.introspected",
	TokenRevoked:         "token.revoked",
	ClientRegistered:     "client.registered",
	ClientUpdated:        "client.updated",
	ClientDeleted:        "client.deleted",
	KeyRotated:           "key.rotated",
	UserCreated:          "user.created",
	UserDisabled:         "user.disabled",
	UserDeleted:          "user.deleted",
	ClientAuthentication: "client.authentication",
	AdminAuthentication:  "admin.authentication",
	SignIn:               "user.sign_in",
	AdminCall:            "admin.call",
}

// String returns the type's name in the trail, such as "token.issued".
func (t Type) String() string {
	if t >= typeEnd {
		return typeNames[0]
	}
	return typeNames[t]
}

// Outcome says whether the act happened.
type Outcome uint8

const (
	// Success: the act happened.
	Success Outcome = iota
	// Failure: the act was refused or failed; Event.Reason says why.
	Failure
)

// String returns "success" or "failure".
func (o Outcome) String() string {
	if o == Success {
		return "success"
	}
	return "failure"
}

// ActorKind is who performed an act.
type ActorKind uint8

const (
	// NoActor: unknown, as for a request that named no client.
	NoActor ActorKind = iota
	// ActorClient: an OAuth client, by client id.
	ActorClient
	// ActorUser: a person, by login name.
	ActorUser
	// ActorAdmin: the bearer of the admin token.
	ActorAdmin
)

var actorKindNames = [...]string{"", "client", "user", "admin"}

// Actor is who performed an act, as claimed by the request: for a failed
// authentication, the client id or user name that failed.
type Actor struct {
	Kind ActorKind
	ID   string
}

// Client is the actor of a client's act.
func Client(id string) Actor { return Actor{ActorClient, id} }

// User is the actor of a person's act.
func User(name string) Actor { return Actor{ActorUser, name} }

// Admin is the actor of an admin API call (the admin token has no name).
func Admin() Actor { return Actor{Kind: ActorAdmin} }

// TraceID is a W3C Trace Context trace-id; the zero value means none.
type TraceID [16]byte

// Origin is where the request of an act came from.
type Origin struct {
	// RemoteAddr is the address of the peer (or of the client, as the
	// issuer determines it behind a trusted proxy).
	RemoteAddr netip.Addr
	// RequestID is the request's X-Request-Id, written only if it is at
	// most 128 visible ASCII characters.
	RequestID string
	// TraceID is the trace-id of the request's traceparent.
	TraceID TraceID
}

// Event is one security-relevant act. Its fields are the trail's schema:
// there is deliberately no place for a token, a secret or a request's
// parameters.
type Event struct {
	// Time of the act; Record sets the current time when it is zero.
	Time    time.Time
	Type    Type
	Outcome Outcome
	// Grant is the grant_type of a token request (TokenIssued,
	// TokenExchanged).
	Grant string
	// Actor performed the act.
	Actor Actor
	// Subject is what the act is about: a token's sub; the client
	// registered, updated or deleted; the user; the key id; the client,
	// subject or grant whose tokens were revoked.
	Subject string
	// Audience is the client or resource a token is for (its aud).
	Audience string
	// Scope is the space-separated scope granted or asked for.
	Scope string
	// Operation is the admin API route called (AdminCall), as the mux
	// pattern: "POST /admin/keys/rotate".
	Operation string
	// Reason says why an act failed: an OAuth error code and a short
	// description, never the input that caused it.
	Reason string
	// JTI is the jti of the token acted upon. Only its SHA-256 is
	// written, as jti_hash: enough to find a token's events from the
	// token, useless to replay it. (Whatever is put here, only its hash is
	// ever written.)
	JTI string
	Origin
}

// RequestOrigin returns the origin of r: its peer address, X-Request-Id and
// traceparent's trace-id. It neither allocates nor trusts what it reads:
// values that are not well formed are left out, and RequestID is checked
// again when written.
func RequestOrigin(r *http.Request) Origin {
	var o Origin
	if ap, err := netip.ParseAddrPort(r.RemoteAddr); err == nil {
		o.RemoteAddr = ap.Addr().Unmap()
	} else if a, err := netip.ParseAddr(r.RemoteAddr); err == nil {
		o.RemoteAddr = a.Unmap()
	}
	o.RequestID = r.Header.Get("X-Request-Id")
	o.TraceID = parseTraceParent(r.Header.Get("Traceparent"))
	return o
}

// parseTraceParent returns the trace-id of a W3C traceparent header
// (version-traceid-parentid-flags, https://www.w3.org/TR/trace-context/
// §3.2), or zero if v is not one.
func parseTraceParent(v string) (id TraceID) {
	const size = 55 // 2 + 1 + 32 + 1 + 16 + 1 + 2
	if len(v) < size || v[2] != '-' || v[35] != '-' || v[52] != '-' || v[:2] == "ff" ||
		(v[:2] == "00" && len(v) != size) || (len(v) > size && v[size] != '-') {
		return TraceID{}
	}
	if !allLowerHex(v[36:52]) || !allLowerHex(v[53:55]) { // parent-id and flags
		return TraceID{}
	}
	for i := range id {
		hi, ok1 := lowerHex(v[3+2*i])
		lo, ok2 := lowerHex(v[4+2*i])
		if !ok1 || !ok2 {
			return TraceID{}
		}
		id[i] = hi<<4 | lo
	}
	return id // all zeros is invalid, and is "none"
}

func allLowerHex(s string) bool {
	for i := range len(s) {
		if _, ok := lowerHex(s[i]); !ok {
			return false
		}
	}
	return true
}

func lowerHex(c byte) (byte, bool) {
	switch {
	case '0' <= c && c <= '9':
		return c - '0', true
	case 'a' <= c && c <= 'f':
		return c - 'a' + 10, true
	}
	return 0, false
}
