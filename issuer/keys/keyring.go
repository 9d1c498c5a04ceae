package keys

import (
	"cmp"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"slices"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/meshauth/meshauth/internal/broadcast"
	"github.com/meshauth/meshauth/issuer/store"
	"github.com/meshauth/meshauth/token"
)

// retireMargin is how long a key stays published after the last token it
// signed has expired: room for clock skew between replicas and verifiers
// (RFC 9068 §4 leaves the leeway to them; a minute is the usual one).
const retireMargin = time.Minute

// ErrNotReady is returned by [Keyring.Sign] while there is no active key:
// before Load, or if every key in the store is still pending.
var ErrNotReady = errors.New("no active signing key")

// KeyringConfig configures a [Keyring]. Zero durations take their defaults.
type KeyringConfig struct {
	// Algorithm of the keys the keyring creates: ES256 (default), EdDSA or
	// RS256. Changing it takes effect at the next rotation; keys already
	// made keep their own algorithm.
	Algorithm string
	// RotationInterval: a new key is added when the active key has been
	// signing this long. Default 24h.
	RotationInterval time.Duration
	// PrePublish: a new key is in the JWKS this long before it signs
	// anything, so verifiers have it before they see a token signed with
	// it. Default 10m.
	PrePublish time.Duration
	// MaxTokenLifetime is the longest lifetime of anything the issuer signs.
	// A key that stopped signing stays published until every token it
	// signed has expired (MaxTokenLifetime plus a minute), then it is
	// deleted. Required.
	MaxTokenLifetime time.Duration
	// ReloadInterval is how often Run re-reads the keys from the store,
	// which other replicas may have rotated. Default 30s.
	ReloadInterval time.Duration
	// JWKSMaxAge is the Cache-Control max-age of the JWKS document.
	// Default 5m. ReloadInterval + JWKSMaxAge must be less than PrePublish:
	// a replica learns a new key within ReloadInterval, an HTTP cache
	// serves the JWKS it had for up to JWKSMaxAge more, and both must
	// happen before the key signs.
	JWKSMaxAge time.Duration

	// Sealer seals and opens the private keys in the store. Required.
	Sealer *Sealer
	// Store holds the keys, shared by all replicas. Required.
	Store KeyStore
	// Logger receives key ids, algorithms and times, never key material.
	// Default slog.Default().
	Logger *slog.Logger
	// Now returns the current time. Default time.Now.
	Now func() time.Time
}

// KeyStore is what a [Keyring] needs of the issuer's store: the signing
// keys (store.SigningKeys, read with the change number they are current
// at) and the change sequence, which tells when another replica changed
// them (store.Changes).
type KeyStore interface {
	AddSigningKey(ctx context.Context, k *store.SigningKey, ifNewestID string) error
	DeleteSigningKey(ctx context.Context, id string) error
	ListSigningKeysAt(ctx context.Context) ([]*store.SigningKey, store.ChangeSeq, error)
	ChangeSeq(ctx context.Context) (store.ChangeSeq, error)
	Changed() <-chan struct{}
}

// A Keyring is the issuer's set of signing keys. It signs with the active
// key and serves the JWKS of all published keys; Run keeps it in step with
// the store and rotates.
//
// Which key is active is a function of the store's data and the clock: the
// newest key (by activation time) whose activation time has passed. So
// every replica that has read the store signs with the same key, and a
// pending key starts signing on time without waiting for a reload.
//
// A Keyring is safe for concurrent use. Sign, JWKS and Ready read an
// immutable snapshot and take no lock.
type Keyring struct {
	cfg          KeyringConfig
	cacheControl string

	// mu serialises the methods that read and write the store, so a
	// snapshot from an older read never replaces a newer one.
	mu    sync.Mutex
	state atomic.Pointer[keyState]

	// changed tells when the published keys change; see Changed.
	changed broadcast.Signal
}

// keyState is an immutable snapshot of the keys.
type keyState struct {
	kids []string // every published key, ordered by activation time
	jwks []byte
	// verify is jwks parsed: the keys that verify what the keyring signed.
	verify *token.KeySet
	// seq is the store's change sequence the keys were read at: their
	// KeysSeq orders the key sets replicas publish.
	seq store.ChangeSeq
	// signers are the keys that may sign from the snapshot's time on, the
	// active one and the pending ones, preceded by the key that was active
	// before, if it is still published; oldest first. That one signs no
	// token again, only key-set updates (SignUpdate). Older keys never
	// sign again, so their private keys are not even decrypted.
	signers []*signer
}

// active returns the key that signs at now, or nil.
func (st *keyState) active(now time.Time) *signer {
	if st == nil {
		return nil
	}
	for i := len(st.signers) - 1; i >= 0; i-- {
		if !st.signers[i].activateAt.After(now) {
			return st.signers[i]
		}
	}
	return nil
}

// NewKeyring checks cfg and returns a Keyring with no keys; call Load, then
// Run.
//
// For a one-off rotation (the CLI's "meshauth keys rotate"), NewKeyring and
// Rotate are enough: Rotate reads the store itself. Running issuers pick
// the new key up at their next reload.
func NewKeyring(cfg KeyringConfig) (*Keyring, error) {
	if cfg.Algorithm == "" {
		cfg.Algorithm = ES256
	}
	switch cfg.Algorithm {
	case ES256, EdDSA, RS256:
	default:
		return nil, fmt.Errorf("keyring: %w", unsupportedAlgError(cfg.Algorithm))
	}
	for _, d := range []struct {
		name string
		v    *time.Duration
		def  time.Duration
	}{
		{"RotationInterval", &cfg.RotationInterval, 24 * time.Hour},
		{"PrePublish", &cfg.PrePublish, 10 * time.Minute},
		{"ReloadInterval", &cfg.ReloadInterval, 30 * time.Second},
		{"JWKSMaxAge", &cfg.JWKSMaxAge, 5 * time.Minute},
	} {
		if *d.v < 0 {
			return nil, fmt.Errorf("keyring: %s must not be negative (got %v)", d.name, *d.v)
		}
		if *d.v == 0 {
			*d.v = d.def
		}
	}
	if cfg.MaxTokenLifetime <= 0 {
		return nil, errors.New("keyring: MaxTokenLifetime must be set to the longest lifetime of any token the issuer signs")
	}
	if cfg.ReloadInterval+cfg.JWKSMaxAge >= cfg.PrePublish {
		return nil, fmt.Errorf("keyring: ReloadInterval (%v) + JWKSMaxAge (%v) must be less than PrePublish (%v), so that every replica and every cached JWKS has a new key before it signs",
			cfg.ReloadInterval, cfg.JWKSMaxAge, cfg.PrePublish)
	}
	if cfg.Sealer == nil {
		return nil, errors.New("keyring: a Sealer is required")
	}
	if cfg.Store == nil {
		return nil, errors.New("keyring: a Store is required")
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.Default()
	}
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	return &Keyring{
		cfg:          cfg,
		cacheControl: "public, max-age=" + strconv.Itoa(int(cfg.JWKSMaxAge/time.Second)),
	}, nil
}

// Load reads the keys from the store and decrypts those that may sign. If
// the store has no key at all, it creates one that signs at once (there is
// nothing to verify yet, so nothing to pre-publish to); if another replica
// does the same first, Load takes that replica's key.
func (k *Keyring) Load(ctx context.Context) error {
	k.mu.Lock()
	defer k.mu.Unlock()
	if err := k.sync(ctx, false); err != nil {
		return fmt.Errorf("load signing keys: %w", err)
	}
	return nil
}

// Run keeps the keyring in step with the store until ctx is done: at once
// and every ReloadInterval, it deletes the keys whose tokens have all
// expired, adds a new key when rotation is due, and re-reads the keys; and
// whenever the store announces a change (by any replica:
// store.Changes.Changed), it re-reads them if they changed (Fresh). If
// that fails, the keyring keeps its last good keys and logs the error.
func (k *Keyring) Run(ctx context.Context) {
	t := time.NewTicker(k.cfg.ReloadInterval)
	defer t.Stop()
	k.tick(ctx)
	for {
		// Taken before reading, so that a change made meanwhile wakes
		// the next round.
		changed := k.cfg.Store.Changed()
		select {
		case <-ctx.Done():
			return
		case <-t.C:
			k.tick(ctx)
		case <-changed:
			if err := k.Fresh(ctx); err != nil && ctx.Err() == nil {
				k.cfg.Logger.Error("signing keys: reload after a change failed; keeping the last good keys", "err", err)
			}
		}
	}
}

func (k *Keyring) tick(ctx context.Context) {
	k.mu.Lock()
	defer k.mu.Unlock()
	if err := k.sync(ctx, true); err != nil && ctx.Err() == nil {
		k.cfg.Logger.Error("signing keys: reload failed; keeping the last good keys", "err", err)
	}
}

// sync reads the keys, creates the first one if there is none, deletes and
// rotates if maintain is set, and installs the result. k.mu must be held.
func (k *Keyring) sync(ctx context.Context, maintain bool) error {
	now := k.cfg.Now()
	keys, seq, err := k.list(ctx)
	if err != nil {
		return err
	}
	changed := false
	if len(keys) == 0 {
		// ErrConflict: another replica created the first key; read it.
		if _, err := k.add(ctx, nil, now, now); err != nil && !errors.Is(err, store.ErrConflict) {
			return err
		}
		changed = true
	} else {
		// Installing first also proves that the Sealer opens the keys
		// before this replica writes any.
		if err := k.install(keys, seq, now); err != nil {
			return err
		}
		if maintain {
			if changed, err = k.maintain(ctx, keys, now); err != nil {
				return err
			}
		}
	}
	if !changed {
		return nil
	}
	if keys, seq, err = k.list(ctx); err != nil {
		return err
	}
	return k.install(keys, seq, now)
}

// maintain deletes the keys no token can still need and adds a key if
// rotation is due. It reports whether the store changed.
func (k *Keyring) maintain(ctx context.Context, keys []*store.SigningKey, now time.Time) (changed bool, err error) {
	// Key i stopped signing when key i+1 became active.
	for i, sk := range keys[:len(keys)-1] {
		stopped := keys[i+1].ActivateAt
		if now.Before(stopped.Add(k.cfg.MaxTokenLifetime + retireMargin)) {
			break // later keys stopped later
		}
		if err := k.cfg.Store.DeleteSigningKey(ctx, sk.ID); err != nil {
			return changed, fmt.Errorf("delete signing key %s: %w", sk.ID, err)
		}
		changed = true
		k.cfg.Logger.Info("signing key deleted", "kid", sk.ID, "alg", sk.Algorithm, "stopped_signing", stopped)
	}
	newest := keys[len(keys)-1]
	if newest.ActivateAt.After(now) || now.Sub(newest.ActivateAt) < k.cfg.RotationInterval {
		return changed, nil
	}
	if _, err := k.add(ctx, newest, now, now.Add(k.cfg.PrePublish)); err != nil {
		if errors.Is(err, store.ErrConflict) {
			k.cfg.Logger.Debug("signing keys: another replica rotated first")
			return true, nil
		}
		return changed, err
	}
	return true, nil
}

// Rotate adds a new key now, whether or not rotation is due, and returns
// it. The new key signs from now + PrePublish, or at once if immediate: for
// a compromised key. An immediate rotation also deletes the pending keys,
// which have signed nothing, so that no key made before the compromise ever
// signs. It does not unpublish the old key: tokens it signed stay valid
// until they expire.
//
// Other replicas switch at their next reload, within ReloadInterval. After
// an immediate rotation, verifiers learn the new key when they first see it
// (an unknown kid makes them refresh) rather than in advance.
//
// Rotate first checks that the Sealer opens the keys already in the store,
// so a wrong key-encryption key cannot add a key the other replicas cannot
// use. If another replica changes the keys at the same moment, Rotate fails
// with an error that wraps [store.ErrConflict]; try again.
func (k *Keyring) Rotate(ctx context.Context, immediate bool) (*store.SigningKey, error) {
	k.mu.Lock()
	defer k.mu.Unlock()
	now := k.cfg.Now()
	keys, seq, err := k.list(ctx)
	if err != nil {
		return nil, fmt.Errorf("rotate signing key: %w", err)
	}
	if err := k.install(keys, seq, now); err != nil {
		return nil, fmt.Errorf("rotate signing key: %w", err)
	}
	activateAt := now.Add(k.cfg.PrePublish)
	if immediate {
		activateAt = now
		for len(keys) > 0 && keys[len(keys)-1].ActivateAt.After(now) {
			pk := keys[len(keys)-1]
			if err := k.cfg.Store.DeleteSigningKey(ctx, pk.ID); err != nil {
				return nil, fmt.Errorf("rotate signing key: delete pending key %s: %w", pk.ID, err)
			}
			k.cfg.Logger.Info("pending signing key deleted by immediate rotation", "kid", pk.ID, "alg", pk.Algorithm)
			keys = keys[:len(keys)-1]
		}
	}
	var newest *store.SigningKey
	if len(keys) > 0 {
		newest = keys[len(keys)-1]
	} else {
		activateAt = now // as in Load: nothing to pre-publish to
	}
	sk, err := k.add(ctx, newest, now, activateAt)
	if err != nil {
		return nil, fmt.Errorf("rotate signing key: %w", err)
	}
	// Use the new key here at once rather than at the next reload.
	if keys, seq, err = k.list(ctx); err == nil {
		err = k.install(keys, seq, now)
	}
	if err != nil {
		k.cfg.Logger.Warn("signing keys: reload after rotation failed; the next reload will retry", "kid", sk.ID, "err", err)
	}
	return sk, nil
}

// add creates a key signing from activateAt and stores it if newest (nil
// for none) is still the newest key.
func (k *Keyring) add(ctx context.Context, newest *store.SigningKey, now, activateAt time.Time) (*store.SigningKey, error) {
	ifNewestID := ""
	if newest != nil {
		ifNewestID = newest.ID
		// The store orders keys by activation time: to be the newest, the
		// new key must activate strictly after the current newest, even
		// when clocks read the same, at the precision kept (GenerateKey).
		activateAt = activateAt.Truncate(time.Microsecond)
		if !activateAt.After(newest.ActivateAt) {
			activateAt = newest.ActivateAt.Add(time.Microsecond)
		}
	}
	sk, err := GenerateKey(k.cfg.Algorithm, now, activateAt, k.cfg.Sealer)
	if err != nil {
		return nil, err
	}
	if err := k.cfg.Store.AddSigningKey(ctx, sk, ifNewestID); err != nil {
		return nil, fmt.Errorf("add signing key %s: %w", sk.ID, err)
	}
	k.cfg.Logger.Info("signing key created", "kid", sk.ID, "alg", sk.Algorithm, "activate_at", sk.ActivateAt)
	return sk, nil
}

// list returns the keys ordered as the store defines "newest": by
// activation time, ties broken by id.
func (k *Keyring) list(ctx context.Context) ([]*store.SigningKey, store.ChangeSeq, error) {
	keys, seq, err := k.cfg.Store.ListSigningKeysAt(ctx)
	if err != nil {
		return nil, seq, fmt.Errorf("list signing keys: %w", err)
	}
	slices.SortStableFunc(keys, func(a, b *store.SigningKey) int {
		return cmp.Or(a.ActivateAt.Compare(b.ActivateAt), cmp.Compare(a.ID, b.ID))
	})
	return keys, seq, nil
}

// install makes keys, read at seq at time now, the keyring's current
// snapshot. It reuses the previous snapshot's decrypted keys and JWKS when
// they are unchanged.
func (k *Keyring) install(keys []*store.SigningKey, seq store.ChangeSeq, now time.Time) error {
	prev := k.state.Load()
	if prev != nil && prev.seq.KeysSeq > seq.KeysSeq {
		return nil // read before what is installed: older
	}
	st := &keyState{kids: make([]string, len(keys)), seq: seq}
	for i, sk := range keys {
		st.kids[i] = sk.ID
	}

	first := 0 // the active key, or the oldest pending one
	for i, sk := range keys {
		if !sk.ActivateAt.After(now) {
			first = i
		}
	}
	first = max(first-1, 0) // and the key active before it, for SignUpdate
	for _, sk := range keys[first:] {
		sg := prev.signer(sk)
		if sg == nil {
			priv, err := openPrivateKey(sk, k.cfg.Sealer)
			if err != nil {
				return err
			}
			if sg, err = newSigner(sk, priv); err != nil {
				return err
			}
		}
		st.signers = append(st.signers, sg)
	}

	if prev != nil && slices.Equal(prev.kids, st.kids) {
		st.jwks, st.verify = prev.jwks, prev.verify
	} else {
		doc := struct {
			Keys []json.RawMessage `json:"keys"`
		}{Keys: make([]json.RawMessage, len(keys))}
		for i, sk := range keys {
			doc.Keys[i] = sk.PublicJWK
		}
		var err error
		if st.jwks, err = json.Marshal(doc); err != nil {
			return fmt.Errorf("build JWKS: %w", err)
		}
		verify, err := token.ParseJWKS(st.jwks)
		if err != nil {
			return fmt.Errorf("published keys: %w", err)
		}
		st.verify = token.NewKeySet(verify)
	}

	k.state.Store(st)
	if prev == nil || !slices.Equal(prev.kids, st.kids) {
		active := ""
		if sg := st.active(now); sg != nil {
			active = sg.kid
		}
		k.cfg.Logger.Info("signing keys loaded", "published", st.kids, "active", active)
		k.changed.Notify()
	}
	return nil
}

// Changed returns a channel that is closed the next time the published
// keys change (a rotation or deletion by this replica, or one by another
// replica found at a reload), so that the distributor can publish the new
// key set at once. Call it again after each close.
func (k *Keyring) Changed() <-chan struct{} { return k.changed.C() }

// Lookup returns the published key with ID kid, to verify what the keyring
// signed: the issuer's own tokens presented back to it, and key-set
// updates. It makes the Keyring a [token.Keys].
func (k *Keyring) Lookup(kid string) (token.Key, bool) {
	st := k.state.Load()
	if st == nil {
		return token.Key{}, false
	}
	return st.verify.Lookup(kid)
}

// Published returns the JWKS document, as JWKS does, and the number of the
// change of the store's keys it is current at (store.ChangeSeq.KeysSeq):
// the distribution orders key sets by it. The document is nil before the
// first Load.
func (k *Keyring) Published() (jwks []byte, keysSeq int64) {
	if st := k.state.Load(); st != nil {
		return st.jwks, st.seq.KeysSeq
	}
	return nil, 0
}

// Fresh makes sure the keyring holds the keys the store holds now, as far
// as the store's change sequence tells: if another replica changed the
// keys since this one last read them, it reads them again at once rather
// than when that replica's change is announced (Run). The JWKS endpoint
// and the distribution snapshot call it before they answer. Before the
// first Load it does nothing.
func (k *Keyring) Fresh(ctx context.Context) error {
	st := k.state.Load()
	if st == nil {
		return nil
	}
	seq, err := k.cfg.Store.ChangeSeq(ctx)
	if err != nil {
		return fmt.Errorf("signing keys: %w", err)
	}
	if st.seq.KeysSeq >= seq.KeysSeq {
		return nil
	}
	return k.Load(ctx)
}

// signer returns the snapshot's decrypted key for sk, or nil.
func (st *keyState) signer(sk *store.SigningKey) *signer {
	if st == nil {
		return nil
	}
	for _, sg := range st.signers {
		if sg.kid == sk.ID && sg.activateAt.Equal(sk.ActivateAt) {
			return sg
		}
	}
	return nil
}

// Sign returns the compact JWS (RFC 7515 §7.1) of payload, the claims
// already encoded as JSON, signed with the active key. The protected header
// has alg and kid from the key, and typ if it is not empty ("at+jwt" for
// access tokens, RFC 9068 §2.1). The caller must keep each token's lifetime
// within MaxTokenLifetime. Sign returns [ErrNotReady] if no key is active.
func (k *Keyring) Sign(typ string, payload []byte) (string, error) {
	sg := k.state.Load().active(k.cfg.Now())
	if sg == nil {
		return "", ErrNotReady
	}
	return sg.signCompact(typ, payload)
}

// SignUpdate is Sign for messages about the keys themselves, such as the
// key-set updates the distributor pushes to verifiers: it signs with the
// oldest published key it holds, the one verifiers have known longest —
// the key that was active before the current one while it is still
// published, else the active (or first pending) key. After an immediate
// rotation, the update announcing the new key is thus signed by a key every
// verifier already has, and needs no fetch to be checked. Signing with a
// key that was rotated out because it leaked adds no risk: verifiers trust
// it, for tokens, until it is unpublished anyway.
func (k *Keyring) SignUpdate(typ string, payload []byte) (string, error) {
	st := k.state.Load()
	if st == nil || len(st.signers) == 0 {
		return "", ErrNotReady
	}
	return st.signers[0].signCompact(typ, payload)
}

// Ready reports whether a key is loaded and active, so Sign can succeed.
func (k *Keyring) Ready() bool {
	return k.state.Load().active(k.cfg.Now()) != nil
}

// JWKS returns the JWK Set document (RFC 7517 §5) of all published keys:
// pending, active and retiring. It is built when the keys change, not per
// call; the caller must not modify it. It is nil before the first Load.
func (k *Keyring) JWKS() []byte {
	if st := k.state.Load(); st != nil {
		return st.jwks
	}
	return nil
}

// ServeHTTP serves the JWKS document, with the media type of RFC 7517 §8.5
// and Cache-Control: public, max-age=JWKSMaxAge, current with the store
// (Fresh); 503 before the first Load.
func (k *Keyring) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	if r.Method != http.MethodGet && r.Method != http.MethodHead {
		w.Header().Set("Allow", "GET, HEAD")
		http.Error(w, "method not allowed", http.StatusMethodNotAllowed)
		return
	}
	// A store that cannot be read leaves the keys last read: still the
	// best answer.
	_ = k.Fresh(r.Context())
	doc := k.JWKS()
	if doc == nil {
		http.Error(w, "signing keys not loaded", http.StatusServiceUnavailable)
		return
	}
	h := w.Header()
	h.Set("Content-Type", "application/jwk-set+json")
	h.Set("Cache-Control", k.cacheControl)
	h.Set("Content-Length", strconv.Itoa(len(doc)))
	if r.Method == http.MethodGet {
		w.Write(doc)
	}
}
