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
// NATS could, to the decoders of key-set updates and revocations: they
// must refuse everything the issuer did not sign, without panicking.
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
	add(typKeySetUpdate, keySetUpdate{Issuer: iss, Owner: iss, Version: 1, JWKS: doc})
	add(typRevocation, revocationMessage{Issuer: iss, ID: "r", Kind: token.RevokeSubject, Value: "alice", ExpiresAt: t0.Add(time.Hour)})
	f.Add([]byte("a.b.c"))
	f.Fuzz(func(t *testing.T, msg []byte) {
		if u, ks, err := decodeKeySetUpdate(msg, keys, iss); err == nil {
			if !signed[signingInput(string(msg))] || u.Issuer != iss || len(ks) == 0 {
				t.Fatalf("accepted an update never signed: %q", msg)
			}
		}
		if _, err := decodeRevocation(msg, keys, iss); err == nil && !signed[signingInput(string(msg))] {
			t.Fatalf("accepted a revocation never signed: %q", msg)
		}
	})
}

// signingInput returns what a compact JWS's signature covers: an ECDSA
// signature has more than one valid encoding, the signed text only one.
func signingInput(msg string) string {
	return msg[:max(strings.LastIndexByte(msg, '.'), 0)]
}
