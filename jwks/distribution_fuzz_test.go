package jwks

import (
	"strings"
	"testing"
	"time"

	"github.com/meshauth/meshauth/token"
)

// FuzzDecodeUpdate feeds arbitrary messages, as anyone able to publish on
// NATS or to stand in for the issuer's snapshot URL could, to the decoders
// of the snapshot and of each delta: they must refuse everything the
// issuer did not sign, without panicking.
func FuzzDecodeUpdate(f *testing.F) {
	const iss = issuerURL
	k := newTestIssuer(f, iss, "k1")
	doc := k.doc
	keys := token.NewKeySet([]token.Key{k.key})
	signed := map[string]bool{}
	add := func(typ string, payload any) {
		msg := k.sign(f, typ, payload)
		signed[signingInput(string(msg))] = true
		f.Add(msg)
	}
	rev := RevocationEntry{ID: "r", Seq: 3, Kind: token.RevokeSubject, Value: "alice", ExpiresAt: ksT0.Add(time.Hour)}
	add(TypKeySet, KeySetUpdate{Issuer: iss, Seq: 1, JWKS: doc})
	add(TypRevocation, RevocationUpdate{Issuer: iss, RevocationEntry: rev})
	add(TypRelay, RelayUpdate{Issuer: iss, ProviderKeys: ProviderKeys{Provider: "https://p.example", Version: 1, JWKS: doc}})
	add(TypSnapshot, Snapshot{Issuer: iss, Seq: 3, KeysSeq: 1, JWKS: doc, Revocations: []RevocationEntry{rev}})
	f.Add([]byte("a.b.c"))
	f.Fuzz(func(t *testing.T, msg []byte) {
		accepted := func(err error) {
			if err == nil && !signed[signingInput(string(msg))] {
				t.Fatalf("accepted a message never signed: %q", msg)
			}
		}
		_, _, err := decodeKeySetUpdate(msg, keys, iss)
		accepted(err)
		_, err = decodeRevocationUpdate(msg, keys, iss)
		accepted(err)
		_, _, err = decodeRelayUpdate(msg, keys, iss)
		accepted(err)
		s, ks, err := decodeSnapshot(msg, keys, iss)
		accepted(err)
		if err == nil && (s.Issuer != iss || len(ks) == 0) {
			t.Fatalf("accepted a snapshot of %q with %d keys", s.Issuer, len(ks))
		}
	})
}

// signingInput returns what a compact JWS's signature covers: an ECDSA
// signature has more than one valid encoding, the signed text only one.
func signingInput(msg string) string {
	return msg[:max(strings.LastIndexByte(msg, '.'), 0)]
}
