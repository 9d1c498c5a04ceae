package jwks

import (
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"time"

	"github.com/meshauth/meshauth/token"
)

// What the issuer distributes, and how (see the package documentation):
// the snapshot served over HTTPS, and the deltas published on NATS. Both
// are compact JWS signed by the issuer's keyring (package issuer/keys,
// Keyring.SignUpdate), each kind with its own typ (RFC 8725 §3.11:
// explicit typing, so that none can pass for another or for an access
// token). The issuer's distributor encodes them with the types below; a
// Subscriber decodes and checks them.
const (
	TypSnapshot   = "meshauth-snapshot+jwt"
	TypKeySet     = "jwks-update+jwt"
	TypRevocation = "revocation+jwt"
	TypRelay      = "jwks-relay+jwt"

	// SnapshotMediaType is the Content-Type of the snapshot: a JWS in
	// compact serialization (RFC 7515 §9.2.1).
	SnapshotMediaType = "application/jose"

	// SnapshotPage bounds the revocations of one snapshot response, so
	// that a response stays well under token.MaxJWSSize: a verifier that
	// starts with many revocations to learn asks for the next page.
	SnapshotPage = 1000
	// MaxRelayedJWKS bounds the key set of a federated provider that an
	// issuer relays, for the same reason.
	MaxRelayedJWKS = 64 << 10
)

// The subjects of the deltas on NATS: "meshauth.<h(issuer)>.<kind>", where
// h is a hash of the issuer URL (subjects allow few characters).
const (
	subjectRoot    = "meshauth"
	KindKeys       = "keys"
	KindRevocation = "revocation"
	KindRelay      = "provider"
)

// nameToken returns the NATS name token for an issuer URL: the hex of 128
// bits of its SHA-256.
func nameToken(s string) string {
	sum := sha256.Sum256([]byte(s))
	return hex.EncodeToString(sum[:16])
}

// UpdateSubject is the subject of the deltas of kind of issuer.
func UpdateSubject(issuer, kind string) string {
	return subjectRoot + "." + nameToken(issuer) + "." + kind
}

// UpdateSubjects is the subject filter of every delta of issuer, for
// NATS permissions: the issuer publishes on it, verifiers subscribe.
func UpdateSubjects(issuer string) string { return subjectRoot + "." + nameToken(issuer) + ".>" }

// RevocationEntry is one revocation of the issuer.
type RevocationEntry struct {
	ID  string `json:"jti"`
	Seq int64  `json:"seq"`
	// Kind is the claim Value matches (token.RevokeTokenID, ...).
	Kind      string    `json:"kind"`
	Value     string    `json:"value"`
	RevokedAt time.Time `json:"revoked_at"`
	ExpiresAt time.Time `json:"expires_at"`
}

func (r *RevocationEntry) check() error {
	switch {
	case r.ID == "" || r.Value == "":
		return errors.New("revocation without id or value")
	case r.Seq <= 0:
		return fmt.Errorf("revocation %s without sequence number", r.ID)
	case r.Kind != token.RevokeTokenID && r.Kind != token.RevokeClientID && r.Kind != token.RevokeSubject && r.Kind != token.RevokeSession:
		return fmt.Errorf("revocation %s of unknown kind %q", r.ID, r.Kind)
	case r.ExpiresAt.IsZero():
		return fmt.Errorf("revocation %s without expiry", r.ID)
	}
	return nil
}

// revocation returns r as issuer's, for a verifier.
func (r *RevocationEntry) revocation(issuer string) token.Revocation {
	return token.Revocation{Issuer: issuer, Kind: r.Kind, Value: r.Value, RevokedAt: r.RevokedAt, ExpiresAt: r.ExpiresAt}
}

// ProviderKeys is the key set of a federated provider as the issuer that
// relays it holds it: vouched for until ExpiresAt (zero: no bound), or
// dropped if JWKS is absent.
type ProviderKeys struct {
	Provider string `json:"sub"`
	// Version orders the key sets of one provider: microseconds since the
	// Unix epoch when the relaying issuer loaded them, or dropped them.
	Version   int64           `json:"ver"`
	ExpiresAt time.Time       `json:"expires_at,omitzero"`
	JWKS      json.RawMessage `json:"jwks,omitempty"`
}

// check parses and checks p, returning its keys (none if dropped).
func (p *ProviderKeys) check(issuer string) ([]token.Key, error) {
	switch {
	case p.Provider == "":
		return nil, errors.New("relayed key set names no provider")
	case p.Provider == issuer:
		return nil, errors.New("relayed key set of the issuer itself")
	case p.Version <= 0:
		return nil, fmt.Errorf("relayed key set of %s without version", p.Provider)
	case len(p.JWKS) == 0:
		return nil, nil
	}
	keys, err := parseKeySet(p.JWKS)
	if err != nil {
		return nil, fmt.Errorf("relayed key set of %s: %w", p.Provider, err)
	}
	return keys, nil
}

// Snapshot is the issuer's state as of change Seq (store.ChangeSeq):
// its key set and the revocations numbered after Since, and the key sets
// of the providers it relays. A verifier that has every change up to Since
// has every change up to Seq once it applied it.
type Snapshot struct {
	Issuer string `json:"iss"`
	Seq    int64  `json:"seq"`
	Since  int64  `json:"since"`
	// More says that revocations numbered after Seq follow: ask again
	// with since=Seq.
	More        bool              `json:"more,omitempty"`
	KeysSeq     int64             `json:"keys_seq"`
	JWKS        json.RawMessage   `json:"jwks"`
	Revocations []RevocationEntry `json:"revocations"`
	Providers   []ProviderKeys    `json:"providers"`
}

// KeySetUpdate is the delta of a change of the issuer's keys: its key set
// as of change Seq (store.ChangeSeq.KeysSeq).
type KeySetUpdate struct {
	Issuer string          `json:"iss"`
	Seq    int64           `json:"seq"`
	JWKS   json.RawMessage `json:"jwks"`
}

// RevocationUpdate is the delta of one revocation, numbered by its Seq.
type RevocationUpdate struct {
	Issuer string `json:"iss"`
	RevocationEntry
}

// RelayUpdate is the delta of a change of a relayed provider's keys.
type RelayUpdate struct {
	Issuer string `json:"iss"`
	ProviderKeys
}

// decodeSigned verifies msg, signed by issuer with keys under typ, and
// decodes its payload into v, which must then name issuer in iss.
func decodeSigned(msg []byte, keys token.Keys, typ, issuer string, v any, iss func() string) error {
	payload, err := token.VerifyJWS(msg, keys, typ)
	if err != nil {
		return err
	}
	if err := json.Unmarshal(payload, v); err != nil {
		return fmt.Errorf("%s: %w", typ, err)
	}
	if got := iss(); got != issuer {
		return fmt.Errorf("%s names issuer %q, want %q", typ, got, issuer)
	}
	return nil
}

// decodeSnapshot verifies and checks a snapshot of issuer, and returns it
// with its keys.
func decodeSnapshot(msg []byte, keys token.Keys, issuer string) (*Snapshot, []token.Key, error) {
	var s Snapshot
	if err := decodeSigned(msg, keys, TypSnapshot, issuer, &s, func() string { return s.Issuer }); err != nil {
		return nil, nil, err
	}
	switch {
	case s.Since < 0 || s.Seq < s.Since || s.Seq <= 0:
		return nil, nil, fmt.Errorf("snapshot from change %d to %d", s.Since, s.Seq)
	case s.KeysSeq <= 0:
		return nil, nil, errors.New("snapshot without the number of its keys")
	}
	parsed, err := parseKeySet(s.JWKS)
	if err != nil {
		return nil, nil, fmt.Errorf("snapshot: %w", err)
	}
	for i := range s.Revocations {
		r := &s.Revocations[i]
		if err := r.check(); err != nil {
			return nil, nil, fmt.Errorf("snapshot: %w", err)
		}
		if r.Seq <= s.Since || r.Seq > s.Seq {
			return nil, nil, fmt.Errorf("snapshot from change %d to %d holds revocation %d", s.Since, s.Seq, r.Seq)
		}
	}
	for i := range s.Providers {
		if _, err := s.Providers[i].check(issuer); err != nil {
			return nil, nil, fmt.Errorf("snapshot: %w", err)
		}
	}
	return &s, parsed, nil
}

func decodeKeySetUpdate(msg []byte, keys token.Keys, issuer string) (*KeySetUpdate, []token.Key, error) {
	var u KeySetUpdate
	if err := decodeSigned(msg, keys, TypKeySet, issuer, &u, func() string { return u.Issuer }); err != nil {
		return nil, nil, err
	}
	if u.Seq <= 0 {
		return nil, nil, errors.New("key-set update without sequence number")
	}
	parsed, err := parseKeySet(u.JWKS)
	if err != nil {
		return nil, nil, fmt.Errorf("key-set update: %w", err)
	}
	return &u, parsed, nil
}

func decodeRevocationUpdate(msg []byte, keys token.Keys, issuer string) (*RevocationUpdate, error) {
	var u RevocationUpdate
	if err := decodeSigned(msg, keys, TypRevocation, issuer, &u, func() string { return u.Issuer }); err != nil {
		return nil, err
	}
	if err := u.check(); err != nil {
		return nil, err
	}
	return &u, nil
}

func decodeRelayUpdate(msg []byte, keys token.Keys, issuer string) (*RelayUpdate, []token.Key, error) {
	var u RelayUpdate
	if err := decodeSigned(msg, keys, TypRelay, issuer, &u, func() string { return u.Issuer }); err != nil {
		return nil, nil, err
	}
	parsed, err := u.check(issuer)
	if err != nil {
		return nil, nil, err
	}
	return &u, parsed, nil
}
