package jwks

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/meshauth/meshauth/issuer/store"
	"github.com/meshauth/meshauth/token"
)

// Names on NATS.
const (
	// KeysBucket is the key-value bucket of the key sets.
	KeysBucket = "meshauth_keys"
	// RevocationStream is the stream of revocations, on subjects under
	// revocationSubjects.
	RevocationStream   = "MESHAUTH_REVOCATIONS"
	revocationSubjects = "meshauth.revocations"

	// typ of the signed messages (RFC 8725 §3.11: explicit typing, so that
	// neither can pass for the other or for an access token).
	typKeySetUpdate = "jwks-update+jwt"
	typRevocation   = "revocation+jwt"
)

// nameToken returns the NATS name token for s (an issuer URL, a revocation
// id): the hex of 128 bits of its SHA-256, since subjects and KV keys allow
// only a few characters.
func nameToken(s string) string {
	sum := sha256.Sum256([]byte(s))
	return hex.EncodeToString(sum[:16])
}

// keySetKey is the KV key of the key set of owner published by issuer.
func keySetKey(issuer, owner string) string {
	return nameToken(issuer) + "." + nameToken(owner)
}

// revocationSubject is the subject of one revocation of issuer.
func revocationSubject(issuer, id string) string {
	return revocationSubjects + "." + nameToken(issuer) + "." + nameToken(id)
}

// keySetUpdate is the payload of a key-set update.
type keySetUpdate struct {
	// Issuer signed the update: the issuer the subscriber trusts.
	Issuer string `json:"iss"`
	// Owner is the issuer whose keys these are: Issuer itself, or a
	// provider it federates.
	Owner string `json:"sub"`
	// Version orders the updates of one owner: microseconds since the Unix
	// epoch when the keys were read; higher is newer.
	Version int64 `json:"ver"`
	// JWKS is the JWK Set (RFC 7517 §5).
	JWKS json.RawMessage `json:"jwks"`
}

// revocationMessage is the payload of a revocation.
type revocationMessage struct {
	Issuer    string    `json:"iss"`
	ID        string    `json:"jti"`
	Seq       int64     `json:"seq"`
	Kind      string    `json:"kind"`
	Value     string    `json:"value"`
	RevokedAt time.Time `json:"revoked_at"`
	ExpiresAt time.Time `json:"expires_at"`
}

// Setup creates the key-set bucket and the revocation stream, or updates
// them to this configuration if they exist: idempotent, so every issuer
// replica calls it at start. replicas is the JetStream replication factor
// (1 for a single server, 3 in a cluster).
func Setup(ctx context.Context, js jetstream.JetStream, replicas int) (jetstream.KeyValue, jetstream.Stream, error) {
	if replicas < 1 {
		replicas = 1
	}
	kv, err := js.CreateOrUpdateKeyValue(ctx, jetstream.KeyValueConfig{
		Bucket:      KeysBucket,
		Description: "meshauth: the signed key set of each issuer and federated provider",
		History:     1,
		Storage:     jetstream.FileStorage,
		Replicas:    replicas,
	})
	if err != nil {
		return nil, nil, fmt.Errorf("create key-value bucket %s: %w", KeysBucket, err)
	}
	st, err := js.CreateOrUpdateStream(ctx, jetstream.StreamConfig{
		Name:        RevocationStream,
		Description: "meshauth: signed revocations, each kept until it expires",
		Subjects:    []string{revocationSubjects + ".>"},
		Storage:     jetstream.FileStorage,
		Replicas:    replicas,
		// One message per revocation: republishing one replaces it.
		MaxMsgsPerSubject: 1,
		AllowMsgTTL:       true,
		Duplicates:        2 * time.Minute,
	})
	if err != nil {
		return nil, nil, fmt.Errorf("create stream %s (needs nats-server 2.11 or later): %w", RevocationStream, err)
	}
	return kv, st, nil
}

// errStale reports an update that is not newer than what its receiver
// has: a replay, or a redelivery.
var errStale = errors.New("not newer than the current keys")

// decodeKeySetUpdate verifies msg with keys, the keys trusted for issuer,
// and returns the update and its parsed keys. It does not judge the
// version.
func decodeKeySetUpdate(msg []byte, keys token.Keys, issuer string) (*keySetUpdate, []token.Key, error) {
	payload, err := token.VerifyJWS(msg, keys, typKeySetUpdate)
	if err != nil {
		return nil, nil, err
	}
	var u keySetUpdate
	if err := json.Unmarshal(payload, &u); err != nil {
		return nil, nil, fmt.Errorf("key-set update: %w", err)
	}
	switch {
	case u.Issuer != issuer:
		return nil, nil, fmt.Errorf("key-set update names issuer %q, want %q", u.Issuer, issuer)
	case u.Owner == "":
		return nil, nil, errors.New("key-set update names no key owner")
	case u.Version <= 0:
		return nil, nil, errors.New("key-set update has no version")
	}
	parsed, err := parseKeySet(u.JWKS)
	if err != nil {
		return nil, nil, fmt.Errorf("key-set update for %s: %w", u.Owner, err)
	}
	return &u, parsed, nil
}

// decodeRevocation verifies msg with keys, the keys trusted for issuer,
// and returns the revocation.
func decodeRevocation(msg []byte, keys token.Keys, issuer string) (*revocationMessage, error) {
	payload, err := token.VerifyJWS(msg, keys, typRevocation)
	if err != nil {
		return nil, err
	}
	var r revocationMessage
	if err := json.Unmarshal(payload, &r); err != nil {
		return nil, fmt.Errorf("revocation: %w", err)
	}
	switch {
	case r.Issuer != issuer:
		return nil, fmt.Errorf("revocation names issuer %q, want %q", r.Issuer, issuer)
	case r.ID == "" || r.Value == "":
		return nil, errors.New("revocation without id or value")
	case r.Kind != store.RevokeToken && r.Kind != store.RevokeClient && r.Kind != store.RevokeSubject && r.Kind != store.RevokeGrant:
		return nil, fmt.Errorf("revocation of unknown kind %q", r.Kind)
	case r.ExpiresAt.IsZero():
		return nil, errors.New("revocation without expiry")
	}
	return &r, nil
}

// compactJSON returns doc without insignificant white space, the form in
// which an update carries it, so that documents compare byte for byte.
func compactJSON(doc []byte) ([]byte, error) {
	var b bytes.Buffer
	if err := json.Compact(&b, doc); err != nil {
		return nil, err
	}
	return b.Bytes(), nil
}
