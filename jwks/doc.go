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
// # Distribution of keys and revocations
//
// What a verifier trusts comes from the issuer, whose store is the source
// of truth; NATS only makes it fast. A [Distributor] runs beside the
// issuer, a [Subscriber] in each sidecar, edge and xds server.
//
// The store numbers every change of the signing keys and every revocation
// with one sequence (store.ChangeSeq), in commit order, shared by all
// replicas. The issuer serves, at the URL its metadata names in
// meshauth_snapshot_uri (the https, or loopback http, rule of jwks_uri), a
// snapshot of its state as of the latest change: its key set and the
// number of its last key change, its live revocations numbered after the
// request's since (a thousand at most per response: the verifier asks for
// the next page), and the key sets of the providers it federates. It is a
// JWS, typ "meshauth-snapshot+jwt", built afresh whenever the store
// announces a change (and checked against the store's sequence at most
// 250 ms old), with an ETag naming the state, so that a verifier that is up
// to date gets 304.
//
// Each change is also published on NATS as a delta carrying its number,
// on "meshauth.<h(issuer)>.keys" (the key set, typ "jwks-update+jwt"),
// ".revocation" (one revocation, "revocation+jwt") and ".provider" (a
// relayed provider's key set or its drop, "jwks-relay+jwt"), where h is a
// hash of the issuer URL. These are core NATS messages: nothing is kept on
// the server, so nothing there can be erased, replaced or replayed into a
// verifier's start, and any nats-server 2.x carries them, without
// JetStream.
//
// A Subscriber fetches the snapshot at start, every PollInterval (default
// 10 s, a conditional request), after NATS reconnects, when a delta
// arrives whose predecessor did not (after 200 ms: deltas of two replicas
// may cross), and when a delta cannot be verified — at most once a second
// for anything but the poll. Between fetches it applies the deltas. So a
// revocation reaches every verifier within the polling interval whatever
// happens on NATS, and in milliseconds when NATS works.
//
// Every snapshot and delta is verified with the keys the verifier holds
// for the issuer (loaded over HTTPS from the metadata's jwks_uri); the
// snapshot alone may refresh them once, rate-limited, for an unknown kid.
// Anything malformed, unsigned, signed by another key or naming another
// issuer changes nothing and is counted (and sends the verifier to the
// snapshot). A key set is applied only if its number is higher than the
// one held, and key sets that arrive before the first snapshot wait for
// it: a key set replayed from NATS never replaces a newer one, even right
// after a restart. Revocations only add: an old one replayed is one the
// issuer made. A snapshot older than what the verifier holds is refused
// (and reported: the issuer's store went back). Revocations carry their
// issuer, and apply to its tokens only.
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
// Federation: trusting an issuer whose distributor federates providers
// means trusting those providers too — their keys arrive signed by that
// issuer, each vouched for until a time the issuer sets (the last good
// load of the provider's keys plus its MaxStale). A provider that is down,
// serves garbage or names another issuer in its metadata keeps its last
// good keys that long, then the issuer and every verifier drop them
// (KeySetCache.Status says so); the issuer's own tokens are never
// affected. A sidecar can refuse relayed key sets (SubscriberConfig.Provider
// nil). Revocations are only the issuer's own.
package jwks
