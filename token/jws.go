package token

import (
	"errors"
	"strings"
)

// MaxJWSSize is the largest JWS that VerifyJWS accepts: room for a JWK Set
// of several RSA keys, small enough to bound the work a hostile message
// costs.
const MaxJWSSize = 1 << 20

// VerifyJWS checks compact, a JWS compact serialization (RFC 7515 §7.1) of
// a signed message that is not an access token, such as a key-set update
// pushed by an issuer, and returns its payload. The header is held to the
// rules of access tokens: the algorithm comes from the key that "kid"
// names in keys, asymmetric algorithms only (never none or HMAC);
// "jku", "jwk", "x5u" and "x5c" are refused, never followed (RFC 8725
// §3.10); "crit" is refused (RFC 7515 §4.1.11); and "typ" must be typ
// (RFC 8725 §3.11: explicit typing keeps one kind of signed message from
// being taken for another). What the payload says is the caller's to check.
// Every failure is an *Error.
func VerifyJWS(compact []byte, keys Keys, typ string) ([]byte, error) {
	if keys == nil {
		return nil, errors.New("token: no keys")
	}
	// An empty typ would accept messages without one, which is exactly
	// what explicit typing is to prevent; "at+jwt" would accept tokens.
	if typ == "" || strings.EqualFold(string(mediaType([]byte(typ))), "at+jwt") {
		return nil, errors.New("token: VerifyJWS needs a typ other than at+jwt")
	}
	v := Verifier{
		keys:    keys,
		types:   [][]byte{mediaType([]byte(typ))},
		algs:    allAlgorithms,
		maxSize: MaxJWSSize,
	}
	return v.verifySignature(compact, nil)
}
