// Package jwks is the verifiers' side of meshauth's keys: the key-set
// cache that every sidecar, edge, xds server and relying party verifies
// with, the Subscriber that follows an issuer's distribution of keys and
// revocations, the format of what is distributed, and the JWK Set
// documents verifiers hand on (PublicJWKS). The issuer's side — its
// signing keys, their rotation and the Distributor — is package
// issuer/keys. Nothing here links the issuer's persistence.
//
// A [KeySetCache] holds the verification keys of one trusted issuer,
// loaded from its metadata's jwks_uri (package internal/discovery finds
// it), a JWKS URL or a file, and keeps them fresh; an unknown kid starts
// at most one refresh per UnknownKIDInterval.
//
// # Distribution of keys and revocations
//
// What a verifier trusts comes from the issuer, whose store is the source
// of truth; NATS only makes it fast. A Distributor (package issuer/keys)
// runs beside the issuer, a [Subscriber] in each sidecar, edge and xds
// server.
//
// The store numbers every change of the signing keys and every revocation
// with one sequence (store.ChangeSeq), in commit order, shared by all
// replicas. The issuer serves, at the URL its metadata names in
// meshauth_snapshot_uri (the https, or loopback http, rule of jwks_uri), a
// snapshot of its state as of the latest change: its key set and the
// number of its last key change, its live revocations numbered after the
// request's since (a thousand at most per response: the verifier asks for
// the next page), and the key sets of the providers it federates. It is a
// JWS, typ "meshauth-snapshot+jwt", with an ETag naming the state, so that
// a verifier that is up to date gets 304.
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
// Federation: trusting an issuer whose distributor federates providers
// means trusting those providers too — their keys arrive signed by that
// issuer, each vouched for until a time the issuer sets. When that time
// passes without renewal, every verifier drops them (KeySetCache.Status
// says so); the issuer's own tokens are never affected. A sidecar can
// refuse relayed key sets (SubscriberConfig.Provider nil). Revocations are
// only the issuer's own.
package jwks
