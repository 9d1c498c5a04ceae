// Package token decides whether a JWT access token is valid. Every entry
// point of meshauth (sidecar, ext_authz, edge, token exchange, and the
// issuer's RFC 7523 client-assertion check) verifies tokens here and nowhere
// else.
//
// A Verifier accepts a token only if all of these hold, and refuses it with
// an *Error naming the Reason otherwise. The header is checked in full
// before a key is looked up, and the signature before a claim is read:
//
//   - It is at most Policy.MaxSize bytes, checked before anything else.
//   - It is a JWS compact serialization (RFC 7515 §7.1): exactly three
//     segments of unpadded base64url, with no byte outside that alphabet and
//     no non-zero trailing bits. A JWE (five segments) is malformed.
//   - The header is a JSON object without duplicate member names. Its "alg"
//     is an asymmetric algorithm of the policy's allowlist: never none or
//     HMAC (RFC 8725 §3.1). It has no "jku", "jwk", "x5u" or "x5c": keys come
//     only from configured trust and the token cannot name them (RFC 8725
//     §3.10). It has no "crit", since no extension is understood (RFC 7515
//     §4.1.11), and no "b64": false (RFC 7797). Its "typ" is one the policy
//     allows, by default "at+jwt" (RFC 9068 §2.1, RFC 8725 §3.11).
//   - A trusted key has the header's "kid". A token without "kid" may use the
//     key of a set that holds exactly one key, never a key chosen by trial.
//   - The header's "alg" equals the key's own algorithm, and the key fits it
//     (type, curve, RSA size): each key serves exactly one algorithm, which
//     comes from the key, and the header only has to agree (RFC 8725 §3.1).
//   - The signature has the exact length of the algorithm (for ECDSA the
//     fixed-size R||S of RFC 7518 §3.4) and verifies with the standard
//     library: crypto/ecdsa, crypto/ed25519, or crypto/rsa PKCS #1 v1.5 or
//     PSS with a salt as long as the hash (RFC 7518 §3.5).
//   - Only then is the payload read: a JSON object without duplicate member
//     names whose registered claims have their types (RFC 7519 §4.1). "iss"
//     equals Policy.Issuer; "aud", a string or an array of strings, contains
//     one of Policy.Audiences; "exp" is present and now is before it plus
//     the leeway; "nbf" and "iat", if present, are not after now plus the
//     leeway (RFC 9068 §4).
//
// JSON is read by a small strict reader rather than encoding/json: it refuses
// duplicate member names at any depth (as RFC 7515 §4 and RFC 7519 §4
// allow), invalid UTF-8 (RFC 8725 §3.7) and unpaired surrogate escapes,
// matches names exactly, and reads the header and claims without
// reflection. Parsers that disagree about such input are how tokens get
// smuggled past a verifier.
//
// Keys reach a Verifier through the Keys interface; KeySet is a static
// implementation and ParseJWKS reads RFC 7517 JWK Sets into keys.
//
// An Authenticator serves several trusted issuers, each with its own Policy
// and Keys: the unverified "iss" only picks which Verifier decides. With a
// Cache it remembers accepted tokens by their SHA-256 (never the token),
// until the token's "exp" or the cache's MaxAge, and only while the signing
// kid is still in its issuer's key set, so a token seen before costs a hash
// and a lookup instead of a signature check. Issuers can be added or
// replaced at run time (AddIssuer), and tokens revoked (Revoke) by "jti",
// "client_id", "sub" or "sid": a revoked token is refused, cached or not,
// until every token the revocation can match has expired.
package token
