package keys

import (
	"cmp"
	"context"
	"crypto/sha256"
	"encoding/binary"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"maps"
	"net/http"
	"slices"
	"strconv"
	"sync"
	"time"

	"github.com/nats-io/nats.go"

	"github.com/meshauth/meshauth/internal/broadcast"
	"github.com/meshauth/meshauth/issuer/store"
	"github.com/meshauth/meshauth/jwks"
)

// DistributorConfig configures a [Distributor].
type DistributorConfig struct {
	// Issuer is the issuer identifier, as in its tokens' "iss". Required.
	Issuer string
	// Keyring signs what is distributed and is the key set distributed.
	// Required.
	Keyring *Keyring
	// Store numbers the changes and holds the revocations: the issuer's
	// store. Required.
	Store store.Changes
	// Providers are the federated providers whose key sets are relayed,
	// by issuer identifier; each cache must be started.
	Providers map[string]*jwks.KeySetCache
	// Conn, if not nil, is the NATS connection the deltas are published
	// on; it should reconnect forever. Without it, verifiers learn
	// everything from the snapshot.
	Conn *nats.Conn
	// Logger; default slog.Default().
	Logger *slog.Logger
	// Now returns the current time; default time.Now.
	Now func() time.Time
}

// A Distributor is the issuer's side of the distribution of keys and
// revocations (see the package documentation): it serves the signed
// snapshot (ServeHTTP), publishes each revocation stored
// (NotifyRevocation) and, in Run, each change of the keys and of the
// relayed providers' keys as deltas on NATS.
type Distributor struct {
	cfg DistributorConfig

	// mu serialises the builds of state.
	mu    sync.Mutex
	state *distState
	// checkedAt is when state was last found current with the store;
	// storeChanged was taken before that check.
	checkedAt    time.Time
	storeChanged <-chan struct{}

	// pubMu guards what Run published last.
	pubMu         sync.Mutex
	publishedKeys int64
	publishedRel  map[string]int64 // provider → version
}

// recheckAfter bounds how long the snapshot is served without asking the
// store whether it changed, when no announced change says it did: many
// verifiers polling at once cost the store one query, and a change whose
// announcement is lost is served this late at most.
const recheckAfter = 250 * time.Millisecond

// distState is the issuer's state as of one change, and the signed
// responses made of it; it never changes but for pages, memoised.
type distState struct {
	seq       store.ChangeSeq
	jwks      []byte
	revs      []jwks.RevocationEntry // live when read, by Seq
	providers []jwks.ProviderKeys
	etag      string

	mu    sync.Mutex
	pages map[int][]byte // signed snapshots, by the index of their first revocation
}

// maxPages bounds the signed snapshots kept per state: verifiers that
// are all up to date ask for one or two.
const maxPages = 64

// NewDistributor checks cfg and returns a Distributor.
func NewDistributor(cfg DistributorConfig) (*Distributor, error) {
	switch {
	case cfg.Issuer == "":
		return nil, errors.New("distributor: the issuer identifier is required")
	case cfg.Keyring == nil:
		return nil, errors.New("distributor: a Keyring is required")
	case cfg.Store == nil:
		return nil, errors.New("distributor: a store is required")
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.Default()
	}
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	return &Distributor{cfg: cfg, publishedRel: map[string]int64{}}, nil
}

// ServeHTTP serves the snapshot (GET or HEAD): the issuer's key set, its
// revocations numbered after the query parameter since (default 0: all),
// at most jwks.SnapshotPage of them, and the key sets it relays, as a JWS
// signed by the keyring. Its ETag names the state; a request whose
// If-None-Match names the current one is answered 304. A store that
// cannot be read is a 503: a verifier then keeps what it has rather than
// take an answer that may be stale for current.
func (d *Distributor) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	if r.Method != http.MethodGet && r.Method != http.MethodHead {
		w.Header().Set("Allow", "GET, HEAD")
		http.Error(w, "method not allowed", http.StatusMethodNotAllowed)
		return
	}
	since := int64(0)
	if v := r.URL.Query().Get("since"); v != "" {
		n, err := strconv.ParseInt(v, 10, 64)
		if err != nil || n < 0 {
			http.Error(w, "since must be a change number", http.StatusBadRequest)
			return
		}
		since = n
	}
	st, err := d.current(r.Context(), since)
	if err != nil {
		d.cfg.Logger.Warn("distribution snapshot: state unavailable", "err", err)
		http.Error(w, "the issuer's state is unavailable", http.StatusServiceUnavailable)
		return
	}
	h := w.Header()
	h.Set("ETag", st.etag)
	h.Set("Cache-Control", "no-cache")
	if inm := r.Header.Get("If-None-Match"); inm != "" && inm == st.etag {
		w.WriteHeader(http.StatusNotModified)
		return
	}
	body, err := st.page(d, since)
	if err != nil {
		d.cfg.Logger.Error("distribution snapshot: signing failed", "err", err)
		http.Error(w, "the snapshot could not be signed", http.StatusServiceUnavailable)
		return
	}
	h.Set("Content-Type", jwks.SnapshotMediaType)
	h.Set("Content-Length", strconv.Itoa(len(body)))
	if r.Method == http.MethodGet {
		w.Write(body)
	}
}

// current returns the state as of the store's latest change, building it
// if it changed. A verifier that has changes up to seen, beyond the state
// held, makes it ask the store at once.
func (d *Distributor) current(ctx context.Context, seen int64) (*distState, error) {
	d.mu.Lock()
	defer d.mu.Unlock()
	now := d.cfg.Now()
	providers := d.providerKeys(now)
	if st := d.state; st != nil && seen <= st.seq.Seq && now.Sub(d.checkedAt) < recheckAfter && !broadcast.Closed(d.storeChanged) &&
		slices.EqualFunc(st.providers, providers, sameProviderKeys) {
		return st, nil
	}
	// Taken before reading, so that a change made meanwhile is noticed
	// at the next request.
	changed := d.cfg.Store.Changed()
	seq, err := d.cfg.Store.ChangeSeq(ctx)
	if err != nil {
		return nil, err
	}
	if st := d.state; st == nil || st.seq != seq || !slices.EqualFunc(st.providers, providers, sameProviderKeys) {
		if d.state, err = d.build(ctx, providers, now); err != nil {
			return nil, err
		}
	}
	d.checkedAt, d.storeChanged = now, changed
	return d.state, nil
}

// build reads the state: the revocations numbered after those of the
// current state, which it keeps but for the expired, and the keys, which
// must be current at the same change.
func (d *Distributor) build(ctx context.Context, providers []jwks.ProviderKeys, now time.Time) (*distState, error) {
	prev := d.state
	for range 3 {
		if err := d.cfg.Keyring.Fresh(ctx); err != nil {
			return nil, err
		}
		doc, keysSeq := d.cfg.Keyring.Published()
		if doc == nil {
			return nil, errors.New("signing keys not loaded")
		}
		after := int64(0)
		if prev != nil {
			after = prev.seq.Seq
		}
		revs, seq, err := d.cfg.Store.RevocationsAfter(ctx, after, now)
		if err != nil {
			return nil, err
		}
		if seq.Seq < after {
			// The store went back (restored from a backup): start over.
			prev = nil
			continue
		}
		if seq.KeysSeq != keysSeq {
			continue // the keys changed between the two reads
		}
		st := &distState{seq: seq, jwks: doc, providers: providers, pages: map[int][]byte{}}
		if prev != nil {
			st.revs = slices.DeleteFunc(slices.Clone(prev.revs), func(r jwks.RevocationEntry) bool { return !now.Before(r.ExpiresAt) })
		}
		for _, r := range revs {
			st.revs = append(st.revs, revocationEntry(r))
		}
		st.etag = stateTag(seq, providers)
		return st, nil
	}
	return nil, errors.New("the keys kept changing while the state was read")
}

// stateTag returns the ETag of the state at seq with providers.
func stateTag(seq store.ChangeSeq, providers []jwks.ProviderKeys) string {
	h := sha256.New()
	for _, p := range providers {
		h.Write([]byte(p.Provider))
		h.Write(binary.BigEndian.AppendUint64(nil, uint64(p.Version)))
	}
	return `"` + strconv.FormatInt(seq.Seq, 10) + "-" + hex.EncodeToString(h.Sum(nil)[:8]) + `"`
}

// page returns the signed snapshot for a verifier that has every change up
// to since: a since beyond the state (a verifier ahead of a store that
// went back) gets everything. Every since between two revocations gets
// the same page, since from the earlier one, so that verifiers share pages
// and what a request can make the issuer sign is bounded.
func (st *distState) page(d *Distributor, since int64) ([]byte, error) {
	if since > st.seq.Seq {
		since = 0
	}
	i, _ := slices.BinarySearchFunc(st.revs, since+1, func(r jwks.RevocationEntry, seq int64) int { return cmp.Compare(r.Seq, seq) })
	st.mu.Lock()
	defer st.mu.Unlock()
	if b, ok := st.pages[i]; ok {
		return b, nil
	}
	since = 0
	if i > 0 {
		since = st.revs[i-1].Seq
	}
	j := min(i+jwks.SnapshotPage, len(st.revs))
	s := jwks.Snapshot{
		Issuer: d.cfg.Issuer, Seq: st.seq.Seq, Since: since, KeysSeq: st.seq.KeysSeq, JWKS: st.jwks,
		Revocations: st.revs[i:j], Providers: st.providers,
	}
	if s.Revocations == nil {
		s.Revocations = []jwks.RevocationEntry{}
	}
	if s.Providers == nil {
		s.Providers = []jwks.ProviderKeys{}
	}
	if j < len(st.revs) {
		s.Seq, s.More = st.revs[j-1].Seq, true
	}
	payload, err := json.Marshal(s)
	if err != nil {
		return nil, err
	}
	msg, err := d.cfg.Keyring.SignUpdate(jwks.TypSnapshot, payload)
	if err != nil {
		return nil, err
	}
	if len(st.pages) < maxPages {
		st.pages[i] = []byte(msg)
	}
	return []byte(msg), nil
}

// providerKeys returns the relayed providers' key sets as they are now,
// by provider: those whose cache holds keys, small enough to relay.
func (d *Distributor) providerKeys(now time.Time) []jwks.ProviderKeys {
	var out []jwks.ProviderKeys
	for _, p := range slices.Sorted(maps.Keys(d.cfg.Providers)) {
		doc, loadedAt, expiresAt := d.cfg.Providers[p].Document()
		if doc == nil || len(doc) > jwks.MaxRelayedJWKS || !expiresAt.IsZero() && !now.Before(expiresAt) {
			continue
		}
		// As the provider served it; json.Marshal compacts it.
		out = append(out, jwks.ProviderKeys{Provider: p, Version: loadedAt.UnixMicro(), ExpiresAt: expiresAt, JWKS: doc})
	}
	return out
}

func sameProviderKeys(a, b jwks.ProviderKeys) bool {
	return a.Provider == b.Provider && a.Version == b.Version && a.ExpiresAt.Equal(b.ExpiresAt)
}

// revocationEntry is r as the distribution carries it.
func revocationEntry(r *store.Revocation) jwks.RevocationEntry {
	return jwks.RevocationEntry{ID: r.ID, Seq: r.Seq, Kind: r.Kind, Value: r.Value, RevokedAt: r.RevokedAt, ExpiresAt: r.ExpiresAt}
}

// NotifyRevocation publishes the delta of r, already stored (and numbered
// by the store), on NATS, if there is a connection. It implements
// issuer.RevocationNotifier: it returns at once, and a verifier that
// misses the delta gets the revocation from the snapshot.
func (d *Distributor) NotifyRevocation(_ context.Context, r *store.Revocation) {
	if d.cfg.Conn == nil {
		return
	}
	d.publish(jwks.KindRevocation, jwks.TypRevocation, jwks.RevocationUpdate{Issuer: d.cfg.Issuer, RevocationEntry: revocationEntry(r)})
}

// publish signs and publishes one delta; a failure is logged, and healed
// by the snapshot.
func (d *Distributor) publish(kind, typ string, payload any) bool {
	b, err := json.Marshal(payload)
	if err == nil {
		var msg string
		if msg, err = d.cfg.Keyring.SignUpdate(typ, b); err == nil {
			err = d.cfg.Conn.Publish(jwks.UpdateSubject(d.cfg.Issuer, kind), []byte(msg))
		}
	}
	if err != nil {
		d.cfg.Logger.Warn("distribution: publishing on NATS failed; verifiers learn the change from the snapshot", "kind", kind, "err", err)
		return false
	}
	return true
}

// Run publishes the deltas of the keys and of the relayed providers' keys
// until ctx is done: at once, and whenever they change, by this replica
// or (announced by the store) another. It returns at once without a NATS
// connection.
func (d *Distributor) Run(ctx context.Context) {
	if d.cfg.Conn == nil {
		return
	}
	providersChanged := make(chan struct{}, 1)
	for _, c := range d.cfg.Providers {
		go func() {
			// The next channel is taken before signalling, so that keys
			// installed meanwhile close it and signal again.
			changed := c.Changed()
			for {
				select {
				case <-ctx.Done():
					return
				case <-changed:
					changed = c.Changed()
				}
				select {
				case providersChanged <- struct{}{}:
				default:
				}
			}
		}()
	}
	checked := false
	for {
		keysChanged := d.cfg.Keyring.Changed()
		d.publishKeys()
		d.publishRelays()
		if !checked {
			checked = d.checkServer()
		}
		select {
		case <-ctx.Done():
			return
		case <-keysChanged:
		case <-providersChanged:
		}
	}
}

// publishKeys publishes the keyring's key set if it is newer than the
// last one published.
func (d *Distributor) publishKeys() {
	doc, keysSeq := d.cfg.Keyring.Published()
	d.pubMu.Lock()
	defer d.pubMu.Unlock()
	if doc == nil || keysSeq <= d.publishedKeys {
		return
	}
	if d.publish(jwks.KindKeys, jwks.TypKeySet, jwks.KeySetUpdate{Issuer: d.cfg.Issuer, Seq: keysSeq, JWKS: doc}) {
		d.publishedKeys = keysSeq
	}
}

// publishRelays publishes each relayed provider's key set that changed,
// or its drop.
func (d *Distributor) publishRelays() {
	now := d.cfg.Now()
	current := map[string]jwks.ProviderKeys{}
	for _, p := range d.providerKeys(now) {
		current[p.Provider] = p
	}
	d.pubMu.Lock()
	defer d.pubMu.Unlock()
	for provider := range d.cfg.Providers {
		p, ok := current[provider]
		last, published := d.publishedRel[provider]
		switch {
		case ok && p.Version == last:
			continue
		case !ok && (!published || last < 0):
			continue // never published, or its drop was
		case !ok:
			p = jwks.ProviderKeys{Provider: provider, Version: max(now.UnixMicro(), last+1)}
		}
		if d.publish(jwks.KindRelay, jwks.TypRelay, jwks.RelayUpdate{Issuer: d.cfg.Issuer, ProviderKeys: p}) {
			if ok {
				d.publishedRel[provider] = p.Version
			} else {
				d.publishedRel[provider] = -1
			}
		}
	}
}

// maxDelta is the largest delta published: a relayed key set at its
// largest, in base64, with room for the rest of the JWS.
const maxDelta = jwks.MaxRelayedJWKS*4/3 + 4096

// checkServer checks, once connected, what the distribution needs of the
// NATS server, and says clearly what is missing: core publish and
// subscribe alone (any nats-server 2.x; no JetStream), a max_payload that
// takes every delta, and permission to publish on the issuer's subjects.
// It reports whether the check was made.
func (d *Distributor) checkServer() bool {
	nc := d.cfg.Conn
	if err := nc.FlushTimeout(5 * time.Second); err != nil {
		return false // not connected yet: the next round checks
	}
	log := d.cfg.Logger.With("nats_server", nc.ConnectedServerVersion())
	if p := nc.MaxPayload(); p < maxDelta {
		log.Error(fmt.Sprintf("distribution: the NATS server's max_payload (%d bytes) is below the largest delta (%d bytes): raise it, or relayed key sets will not pass (verifiers get them from the snapshot meanwhile)", p, maxDelta))
	}
	if err := nc.LastError(); errors.Is(err, nats.ErrPermissionViolation) {
		log.Error("distribution: NATS refuses this issuer's publications; give its NATS user publish permission on "+jwks.UpdateSubjects(d.cfg.Issuer)+" (verifiers learn changes from the snapshot meanwhile)", "err", err)
		return true
	}
	log.Info("distribution: publishing changes on NATS (core publish and subscribe: any nats-server 2.x, no JetStream)", "subjects", jwks.UpdateSubjects(d.cfg.Issuer))
	return true
}

// Status describes, one line per relayed provider, the keys relayed and
// how old they are, or why they were dropped, for the issuer's /readyz.
// The issuer's own tokens never depend on them.
func (d *Distributor) Status() []string {
	var lines []string
	now := d.cfg.Now()
	for _, p := range slices.Sorted(maps.Keys(d.cfg.Providers)) {
		st := d.cfg.Providers[p].Status()
		switch {
		case st.Dropped != "":
			lines = append(lines, fmt.Sprintf("federated %s: keys dropped (%s)", p, st.Dropped))
		case st.Keys == 0:
			lines = append(lines, fmt.Sprintf("federated %s: no keys yet (%s)", p, cmp.Or(st.LastError, "loading")))
		default:
			line := fmt.Sprintf("federated %s: %d keys, %s old", p, st.Keys, st.Age.Round(time.Second))
			if !st.ExpiresAt.IsZero() {
				line += fmt.Sprintf(", relayed for %s more unless renewed", st.ExpiresAt.Sub(now).Round(time.Second))
			}
			if st.LastError != "" {
				line += "; last refresh failed: " + st.LastError
			}
			lines = append(lines, line)
		}
	}
	return lines
}
