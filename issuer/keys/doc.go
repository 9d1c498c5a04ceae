// Package keys owns the issuer's signing keys: their lifecycle and
// rotation, their sealing at rest, the JWK Set document (RFC 7517 §5) that
// publishes them, the issuer's signer, and the issuer's side of the
// distribution of keys and revocations to verifiers. Besides package
// token, and package jwks on the verifiers' side, this is the only place
// that produces or interprets JOSE structures.
//
// A [Keyring] keeps the keys in the issuer's store (a [KeyStore]), sealed
// with a key-encryption key by a [Sealer], and decides from the times
// recorded in the store alone which key signs, so every replica agrees
// without talking to the others. A key goes through three states:
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
//
// # Distribution of keys and revocations
//
// A [Distributor] runs beside the issuer; package jwks describes the
// distribution and holds what the verifiers run, and the format of what
// is distributed. The store numbers every change of the signing keys and
// every revocation with one sequence (store.ChangeSeq), in commit order,
// shared by all replicas. The Distributor serves, at the URL the issuer's
// metadata names in meshauth_snapshot_uri, a snapshot of the issuer's
// state as of the latest change, built afresh whenever the store announces
// a change (and checked against the store's sequence at most 250 ms old),
// with an ETag naming the state, so that a verifier that is up to date
// gets 304; and it publishes each change as a delta on NATS.
//
// Signing: updates are re-signed when keys change. The snapshot is rebuilt
// at every change, key changes included, and signed by Keyring.SignUpdate:
// the key that was active before the current one while it is still
// published, else the active one — always a key of the snapshot's own key
// set, and after an immediate rotation one that every verifier already
// holds. A delta matters only until the next snapshot covers it, so the
// key that signed it never has to outlive it: a verifier that cannot check
// a delta fetches the snapshot instead.
//
// Federation: the Distributor relays the key sets of the providers the
// issuer federates, each vouched for until a time it sets (the last good
// load of the provider's keys plus its MaxStale). A provider that is down,
// serves garbage or names another issuer in its metadata keeps its last
// good keys that long, then the issuer and every verifier drop them
// (Distributor.Status says so); the issuer's own tokens are never
// affected.
package keys
