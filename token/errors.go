package token

// Reason classifies why a token was refused. Its String form is a stable,
// lower-case identifier suitable for metrics labels and logs.
type Reason uint8

// Reasons a token is refused. Every failure of Verify is an *Error carrying
// one of them.
const (
	_ Reason = iota
	// Malformed: not a JWS compact serialization of two JSON objects, or a
	// member of the wrong JSON type, or a duplicate member name.
	Malformed
	// TooLarge: longer than Policy.MaxSize; refused before any other work.
	TooLarge
	// UnsupportedAlgorithm: "alg" missing, none, HMAC, unknown, outside
	// Policy.Algorithms, or not the algorithm of the key named by "kid".
	UnsupportedAlgorithm
	// UnknownKey: no trusted key has the token's "kid".
	UnknownKey
	// BadSignature: the signature has the wrong length or does not verify.
	BadSignature
	// BadType: "typ" absent or not one of Policy.Types.
	BadType
	// CriticalHeader: "crit" present; no extension is understood.
	CriticalHeader
	// ForbiddenHeader: "jku", "x5u", "jwk", "x5c", or "b64": false.
	ForbiddenHeader
	// BadIssuer: "iss" is not Policy.Issuer.
	BadIssuer
	// BadAudience: "aud" contains none of Policy.Audiences.
	BadAudience
	// Expired: now is at or after "exp" plus the leeway.
	Expired
	// NotYetValid: "nbf" is after now plus the leeway.
	NotYetValid
	// IssuedInFuture: "iat" is after now plus the leeway.
	IssuedInFuture
	// MissingClaim: "iss", "aud" or "exp" absent.
	MissingClaim
	// Revoked: otherwise valid, but matched by a revocation (see
	// Authenticator.Revoke).
	Revoked
)

var reasonNames = [...]string{
	Malformed:            "malformed",
	TooLarge:             "too_large",
	UnsupportedAlgorithm: "unsupported_algorithm",
	UnknownKey:           "unknown_key",
	BadSignature:         "bad_signature",
	BadType:              "bad_type",
	CriticalHeader:       "critical_header",
	ForbiddenHeader:      "forbidden_header",
	BadIssuer:            "bad_issuer",
	BadAudience:          "bad_audience",
	Expired:              "expired",
	NotYetValid:          "not_yet_valid",
	IssuedInFuture:       "issued_in_future",
	MissingClaim:         "missing_claim",
	Revoked:              "revoked",
}

func (r Reason) String() string {
	if int(r) < len(reasonNames) && reasonNames[r] != "" {
		return reasonNames[r]
	}
	return "unknown"
}

// Error is the error returned for a refused token. Its message is a fixed
// description of the failure: it never quotes the token, so it is safe to
// log and to return to the client.
type Error struct {
	Reason Reason
	Detail string // fixed text, may be empty
}

func (e *Error) Error() string {
	if e.Detail == "" {
		return "token: " + e.Reason.String()
	}
	return "token: " + e.Reason.String() + ": " + e.Detail
}

// Is reports whether target is an *Error with the same Reason, so that
// errors.Is(err, ErrExpired) matches every expiry failure whatever its
// Detail.
func (e *Error) Is(target error) bool {
	t, ok := target.(*Error)
	return ok && t.Reason == e.Reason
}

// Sentinels for errors.Is, one per Reason.
var (
	ErrMalformed            error = &Error{Reason: Malformed}
	ErrTooLarge             error = &Error{Reason: TooLarge}
	ErrUnsupportedAlgorithm error = &Error{Reason: UnsupportedAlgorithm}
	ErrUnknownKey           error = &Error{Reason: UnknownKey}
	ErrBadSignature         error = &Error{Reason: BadSignature}
	ErrBadType              error = &Error{Reason: BadType}
	ErrCriticalHeader       error = &Error{Reason: CriticalHeader}
	ErrForbiddenHeader      error = &Error{Reason: ForbiddenHeader}
	ErrBadIssuer            error = &Error{Reason: BadIssuer}
	ErrBadAudience          error = &Error{Reason: BadAudience}
	ErrExpired              error = &Error{Reason: Expired}
	ErrNotYetValid          error = &Error{Reason: NotYetValid}
	ErrIssuedInFuture       error = &Error{Reason: IssuedInFuture}
	ErrMissingClaim         error = &Error{Reason: MissingClaim}
	ErrRevoked              error = &Error{Reason: Revoked}
)

// The errors Verify returns are preallocated, so that refusing a flood of
// bad tokens allocates nothing.
var (
	errTooLarge       = &Error{TooLarge, ""}
	errSegments       = &Error{Malformed, "not a JWS compact serialization"}
	errEncoding       = &Error{Malformed, "invalid base64url"}
	errHeaderJSON     = &Error{Malformed, "invalid header"}
	errClaimsJSON     = &Error{Malformed, "invalid claims"}
	errNoAlg          = &Error{UnsupportedAlgorithm, "alg missing"}
	errAlg            = &Error{UnsupportedAlgorithm, "alg not accepted"}
	errKeyAlg         = &Error{UnsupportedAlgorithm, "alg is not the key's algorithm"}
	errUnknownKey     = &Error{UnknownKey, ""}
	errSignature      = &Error{BadSignature, ""}
	errSignatureSize  = &Error{BadSignature, "wrong signature length"}
	errType           = &Error{BadType, ""}
	errNoType         = &Error{BadType, "typ missing"}
	errCrit           = &Error{CriticalHeader, ""}
	errKeyHeader      = &Error{ForbiddenHeader, "key reference in header"}
	errUnencoded      = &Error{ForbiddenHeader, "unencoded payload"}
	errIssuer         = &Error{BadIssuer, ""}
	errAudience       = &Error{BadAudience, ""}
	errExpired        = &Error{Expired, ""}
	errNotYetValid    = &Error{NotYetValid, ""}
	errIssuedInFuture = &Error{IssuedInFuture, ""}
	errNoIssuer       = &Error{MissingClaim, "iss missing"}
	errNoAudience     = &Error{MissingClaim, "aud missing"}
	errNoExpiry       = &Error{MissingClaim, "exp missing"}
	errRevoked        = &Error{Revoked, ""}
)
