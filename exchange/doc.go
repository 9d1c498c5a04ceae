// Package exchange is the sidecar's side of RFC 8693 token exchange:
// Client, the caching client that obtains from the issuer's token endpoint
// an exchanged token for each next hop of the egress, the service's own
// token for calls it makes by itself (RFC 6749 §4.4), and the edge's
// dereference of a reference token. It links nothing of the issuer: the
// issuer's side, the exchange policy, is package issuer/exchangepolicy.
package exchange
