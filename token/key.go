package token

import (
	"crypto"
	"fmt"
	"slices"
)

// Key is a public verification key bound to exactly one algorithm.
type Key struct {
	ID        string // "kid"; a key without one is found only when alone in its set
	Algorithm string // ES256, ES384, ES512, EdDSA, RS256, RS384, RS512, PS256, PS384 or PS512
	// Public is an *ecdsa.PublicKey on the curve of the algorithm, an
	// ed25519.PublicKey, or an *rsa.PublicKey of 2048 to 8192 bits.
	Public crypto.PublicKey
}

// check reports whether k is usable: a supported algorithm and a public key
// that fits it.
func (k Key) check() error {
	a := parseAlgorithm([]byte(k.Algorithm))
	if a == algNone {
		return fmt.Errorf("token: key %q: unsupported algorithm %q", k.ID, k.Algorithm)
	}
	if !a.checkKey(k.Public) {
		return fmt.Errorf("token: key %q: %T is not a key for %s", k.ID, k.Public, a)
	}
	return nil
}

// Keys finds verification keys by "kid". The Verifier calls Lookup only
// for tokens whose header passed every other check, with the token's "kid"
// (at most 256 bytes), or "" when the token has none or an empty one; for ""
// an implementation should return its only key if it holds exactly one, as
// KeySet does, and nothing otherwise. An implementation may refresh its keys
// on a miss, but must rate-limit that (the kid comes from an unauthenticated
// header) and bound how long Lookup waits. It must be safe for concurrent
// use. The Verifier checks the returned key itself: its Algorithm must equal
// the token's "alg" and its Public must fit that algorithm.
type Keys interface {
	Lookup(kid string) (Key, bool)
}

// KeySet is an immutable set of keys indexed by ID. It is safe for
// concurrent use; build a new one when the keys change.
type KeySet struct {
	all  []Key
	byID map[string]Key
	only *Key // the key, when the set holds exactly one
}

// NewKeySet returns a set of keys. It never chooses between keys: a key
// without ID is found only by tokens without "kid" and only when it is the
// sole key of the set, and an ID that two keys share finds neither. Keys are
// not checked here but on each use: a token whose key does not fit its
// algorithm is refused (ParseJWKS reports such keys as errors).
func NewKeySet(keys []Key) *KeySet {
	s := &KeySet{all: slices.Clone(keys), byID: make(map[string]Key, len(keys))}
	shared := map[string]bool{}
	for _, k := range keys {
		if k.ID == "" {
			continue
		}
		if _, dup := s.byID[k.ID]; dup {
			shared[k.ID] = true
		}
		s.byID[k.ID] = k
	}
	for id := range shared {
		delete(s.byID, id)
	}
	if len(keys) == 1 {
		only := keys[0]
		s.only = &only
	}
	return s
}

// Lookup returns the key with ID kid, or for kid "" the only key if the set
// holds exactly one. It does not allocate.
func (s *KeySet) Lookup(kid string) (Key, bool) {
	if kid == "" {
		if s.only != nil {
			return *s.only, true
		}
		return Key{}, false
	}
	k, ok := s.byID[kid]
	return k, ok
}

// All returns the keys of the set, in the order given to NewKeySet. The
// caller must not modify the slice.
func (s *KeySet) All() []Key { return s.all }

// Len returns the number of keys in the set.
func (s *KeySet) Len() int { return len(s.all) }
