package jwks

import (
	"encoding/json"
	"log/slog"
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
	k := newTestKeyring(f, testConfig(newFakeStore(), newClock(), newTestSealer(f)))
	k.cfg.Logger = slog.New(slog.DiscardHandler)
	mustLoad(f, k)
	doc, _ := k.Published()
	parsed, err := token.ParseJWKS(doc)
	if err != nil {
		f.Fatal(err)
	}
	keys := token.NewKeySet(parsed)
	const iss = "https://issuer.example"
	signed := map[string]bool{}
	add := func(typ string, payload any) {
		b, err := json.Marshal(payload)
		if err != nil {
			f.Fatal(err)
		}
		msg, err := k.SignUpdate(typ, b)
		if err != nil {
			f.Fatal(err)
		}
		signed[signingInput(msg)] = true
		f.Add([]byte(msg))
	}
	rev := revocationEntry{ID: "r", Seq: 3, Kind: token.RevokeSubject, Value: "alice", ExpiresAt: t0.Add(time.Hour)}
	add(typKeySet, keySetUpdate{Issuer: iss, Seq: 1, JWKS: doc})
	add(typRevocation, revocationUpdate{Issuer: iss, revocationEntry: rev})
	add(typRelay, relayUpdate{Issuer: iss, providerKeys: providerKeys{Provider: "https://p.example", Version: 1, JWKS: doc}})
	add(typSnapshot, snapshot{Issuer: iss, Seq: 3, KeysSeq: 1, JWKS: doc, Revocations: []revocationEntry{rev}})
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
