// Package jwks owns meshauth's signing keys: their lifecycle and rotation on
// the issuer, the JWK Set document (RFC 7517 §5) that publishes them, and the
// issuer's signer. Besides package token, this is the only place that
// produces or interprets JOSE structures.
//
// On the issuer, a [Keyring] keeps the keys in the issuer's store, sealed with
// a key-encryption key by a [Sealer], and decides from the times recorded in
// the store alone which key signs, so every replica agrees without talking
// to the others. A key goes through three states:
//
//   - pending: created and published in the JWKS, not yet signing, for
//     PrePublish, so that every verifier learns it before it meets a token
//     signed with it;
//   - active: the newest key whose activation time has passed; it signs;
//   - retiring: superseded by a newer active key, still published until
//     every token it signed has expired, then deleted.
//
// Signing uses the standard library directly (RFC 7515 compact
// serialisation, RFC 7518 algorithms): it is on the token endpoint's hot path.
package jwks
