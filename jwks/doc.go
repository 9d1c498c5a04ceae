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
//
// # Distribution over NATS
//
// The distributor pushes an issuer's key set, the key sets of the providers
// it federates, and its revocations to every verifier over NATS JetStream,
// so that a rotation or a revocation takes effect in milliseconds rather
// than at the next JWKS poll. A [Publisher] runs beside the issuer, a
// [Subscriber] in each sidecar.
//
// On NATS:
//
//   - Key sets live in the key-value bucket "meshauth_keys" (history 1): one
//     key per (issuer, key owner), "<h(issuer)>.<h(owner)>", where h is a
//     hash of the URL (KV keys allow few characters) and the owner is the
//     issuer itself or a provider it federates. The value is the current
//     signed key-set update. A subscriber watches "<h(issuer)>.*": the
//     watch delivers the current values at once, when the sidecar starts or
//     the watch is re-created, then every change.
//   - Revocations are messages of the stream "MESHAUTH_REVOCATIONS", on
//     "meshauth.revocations.<h(issuer)>.<h(revocation id)>", one message
//     per subject, each with a per-message TTL (Nats-TTL, nats-server 2.11
//     or later) that ends when the revocation does, and Nats-Msg-Id set to
//     the revocation id. A subscriber reads them with an ordered consumer
//     from the start, so a sidecar that starts rebuilds the whole deny list.
//
// Every message is a compact JWS signed by the issuer's keyring
// (Keyring.SignUpdate): typ "jwks-update+jwt" for key sets,
// "revocation+jwt" for revocations. A subscriber checks it with
// token.VerifyJWS against the keys it already trusts for that issuer,
// loaded over HTTPS from the issuer's metadata; an unknown kid makes the
// key-set cache refresh once (rate-limited, as for tokens), then the
// message is refused. A message that is malformed, unsigned, signed by
// another key, names another issuer, or is older than what the subscriber
// has, changes nothing and is logged. So whoever may publish on NATS still
// cannot inject a key or a revocation: NATS only carries, the issuer's
// signature decides.
//
// Ordering: a key-set update carries "ver", the time in microseconds at
// which its keys were read from the store (or fetched from a provider). A
// subscriber takes only an update newer than the last it took for that
// key owner, and refuses one more than token.MaxLeeway in the future, so a
// replayed old update cannot roll keys back and a forged far-future one
// (signed with a leaked key) cannot freeze them. Publishers write with
// compare-and-swap and leave an entry alone when it already holds the same
// keys or newer ones, so issuer replicas agree without talking to each
// other; their clocks must agree to well within their reload interval.
//
// Federation: trusting an issuer whose publisher federates providers means
// trusting those providers too — their keys arrive signed by that issuer.
// A sidecar can refuse relayed key sets (SubscriberConfig.Provider nil).
// Revocations are only the issuer's own.
package jwks
