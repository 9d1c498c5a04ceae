package jwks

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/nats-io/nats.go"

	"github.com/meshauth/meshauth/internal/discovery"
	"github.com/meshauth/meshauth/token"
)

// Where keys a [Subscriber] installed came from, as [KeySetStatus.Source]
// reports it.
const (
	SourceNATS     = "nats"
	SourceSnapshot = "snapshot"
)

// DefaultPollInterval is the default of SubscriberConfig.PollInterval.
const DefaultPollInterval = 10 * time.Second

const (
	// gapGrace is how long a change missing between two that arrived may
	// still come (deltas of several replicas can cross) before the
	// snapshot is fetched for it.
	gapGrace = 200 * time.Millisecond
	// minFetchGap bounds how often anything but the poll makes a
	// Subscriber fetch the snapshot: garbage published on NATS must not
	// turn into a flood of requests to the issuer.
	minFetchGap = time.Second
	// fetchTimeout bounds one fetch of the snapshot (with discovery).
	fetchTimeout = 10 * time.Second
	// maxHeld bounds the deltas kept until the first snapshot.
	maxHeld = 64
	// maxSnapshotBytes is the largest snapshot response accepted.
	maxSnapshotBytes = token.MaxJWSSize
)

// SubscriberConfig configures a [Subscriber].
type SubscriberConfig struct {
	// Conn, if not nil, is the NATS connection the issuer's deltas arrive
	// on; it should reconnect forever. Without it the snapshot alone
	// carries every change, within PollInterval.
	Conn *nats.Conn
	// Issuer is the trusted issuer followed. Required.
	Issuer string
	// Keys is the issuer's key-set cache, loaded from its metadata over
	// HTTPS: it verifies what the issuer signs, and takes the issuer's
	// key sets. It must be started. Required.
	Keys *KeySetCache
	// Provider returns the key-set cache of a provider the issuer
	// federates, the first time trusting the provider with the issuer's
	// policy, or nil to refuse it. Nil refuses every relayed key set.
	Provider func(issuer string) *KeySetCache
	// Revoked receives each revocation of the issuer that has not expired
	// (with Issuer set), possibly more than once: a verifier's Revoke, or
	// a token.RevocationSinks that hands it on to the caches that evict
	// what a revocation matches too. Nil ignores revocations.
	Revoked token.RevocationSink
	// SnapshotURL is the issuer's snapshot; default: the
	// meshauth_snapshot_uri of its metadata.
	SnapshotURL string
	// PollInterval is how often the snapshot is fetched (a conditional
	// request, answered 304 when nothing changed), whatever NATS does:
	// with NATS down, changes arrive within it. Default
	// DefaultPollInterval.
	PollInterval time.Duration
	// HTTPClient fetches the snapshot; default a new client. Only
	// same-origin redirects are followed.
	HTTPClient *http.Client
	// Logger; default slog.Default().
	Logger *slog.Logger
	// Now returns the current time; default time.Now.
	Now func() time.Time
}

// A Subscriber follows one trusted issuer's keys and revocations (see the
// package documentation): it applies the issuer's signed snapshot, fetched
// over HTTPS at start, every PollInterval, after a NATS reconnect, a gap
// in the deltas or a delta it cannot verify, and the deltas that arrive on
// NATS in between. It installs the issuer's key set in its cache, a
// federated provider's in the provider's, and passes each revocation to
// the sinks.
type Subscriber struct {
	cfg     SubscriberConfig
	issuer  *url.URL
	fetcher *discovery.Fetcher

	// in carries deltas from NATS's callbacks to Run's goroutine, which
	// alone owns the fields below it.
	in   chan received
	lost atomic.Bool   // a delta was dropped on a full queue
	kick chan struct{} // wakes Run for a lost delta

	seq         int64          // every change up to seq is applied
	keysSeq     int64          // of the key set installed; 0 before the first
	synced      bool           // a whole snapshot was applied
	pending     map[int64]bool // changes after seq applied already
	held        []received     // key sets before the first snapshot
	providerVer map[string]int64
	snapshotURL *url.URL
	etag        string // of the last whole snapshot applied

	mu     sync.Mutex
	status SubscriberStatus

	applied, refused, stale, snapshots atomic.Uint64
}

// received is one delta from NATS: its kind (the subject's last token)
// and the message.
type received struct {
	kind string
	data []byte
}

// SubscriberStatus describes a Subscriber for readiness checks and
// metrics.
type SubscriberStatus struct {
	// Seq is the issuer's change sequence number up to which every change
	// is applied; 0 before the first snapshot.
	Seq int64
	// ConfirmedAt is when the issuer last confirmed that nothing is
	// missing: a snapshot applied, or answered not modified. Zero before.
	ConfirmedAt time.Time
	// Age is the time since ConfirmedAt: how old the state may be.
	Age time.Duration
	// LastError describes the failure of the last fetch of the snapshot,
	// or its refusal; "" if it succeeded.
	LastError string
	// NATS is "connected", "disconnected", or "off" without a connection.
	NATS string
	// Applied counts the snapshots and deltas applied; Refused those
	// refused (unverifiable, malformed, another issuer's); Stale the
	// deltas that changed nothing (replayed, reordered, duplicates);
	// Snapshots the snapshot fetches.
	Applied, Refused, Stale, Snapshots uint64
}

// NewSubscriber checks cfg and returns a Subscriber; call Run.
func NewSubscriber(cfg SubscriberConfig) (*Subscriber, error) {
	switch {
	case cfg.Issuer == "":
		return nil, errors.New("subscriber: the issuer is required")
	case cfg.Keys == nil:
		return nil, errors.New("subscriber: the issuer's key-set cache is required")
	case cfg.PollInterval < 0:
		return nil, fmt.Errorf("subscriber: PollInterval must not be negative (got %v)", cfg.PollInterval)
	}
	iss, err := discovery.ParseIssuer("Issuer", cfg.Issuer)
	if err != nil {
		return nil, fmt.Errorf("subscriber: %w", err)
	}
	s := &Subscriber{cfg: cfg, issuer: iss, in: make(chan received, 1024), kick: make(chan struct{}, 1), pending: map[int64]bool{}, providerVer: map[string]int64{}}
	if cfg.SnapshotURL != "" {
		if s.snapshotURL, err = discovery.DocumentURL(iss, "snapshot URL", cfg.SnapshotURL); err != nil {
			return nil, fmt.Errorf("subscriber: %w", err)
		}
	}
	if s.cfg.PollInterval == 0 {
		s.cfg.PollInterval = DefaultPollInterval
	}
	if s.cfg.Logger == nil {
		s.cfg.Logger = slog.Default()
	}
	if s.cfg.Now == nil {
		s.cfg.Now = time.Now
	}
	s.fetcher = discovery.NewFetcher(cfg.HTTPClient, maxSnapshotBytes)
	return s, nil
}

// Status returns the state of the Subscriber.
func (s *Subscriber) Status() SubscriberStatus {
	s.mu.Lock()
	st := s.status
	s.mu.Unlock()
	if !st.ConfirmedAt.IsZero() {
		st.Age = s.cfg.Now().Sub(st.ConfirmedAt)
	}
	st.NATS = "off"
	if c := s.cfg.Conn; c != nil {
		st.NATS = "disconnected"
		if c.IsConnected() {
			st.NATS = "connected"
		}
	}
	st.Applied, st.Refused, st.Stale, st.Snapshots = s.applied.Load(), s.refused.Load(), s.stale.Load(), s.snapshots.Load()
	return st
}

// fetchResult is what a fetch of the snapshot brought.
type fetchResult struct {
	url         *url.URL // the snapshot's, to fetch again
	etag        string
	notModified bool
	body        []byte
	err         error
	// none: the issuer's metadata names no snapshot.
	none bool
}

// noSnapshotRetry is how long a Subscriber waits before reading the
// metadata again of an issuer that publishes no snapshot (not a meshauth
// issuer): its keys come from jwks_uri alone.
const noSnapshotRetry = time.Hour

// Run follows the issuer until ctx is done. It starts once the issuer's
// keys are loaded, since nothing can be verified before.
func (s *Subscriber) Run(ctx context.Context) {
	for {
		changed := s.cfg.Keys.Changed()
		if s.cfg.Keys.Ready() {
			break
		}
		select {
		case <-ctx.Done():
			return
		case <-changed:
		}
	}
	var reconnected chan nats.Status
	if c := s.cfg.Conn; c != nil {
		reconnected = c.StatusChanged(nats.CONNECTED)
		defer c.RemoveStatusListener(reconnected)
		sub, err := c.Subscribe(UpdateSubjects(s.cfg.Issuer), s.receive)
		if err != nil {
			s.cfg.Logger.Error("deltas over NATS: subscribe failed; following the snapshot alone", "err", err)
		} else {
			defer sub.Unsubscribe()
		}
	}

	var (
		fetched   = make(chan fetchResult, 1)
		inFlight  bool
		again     bool      // a fetch is wanted once the one in flight ends
		lastFetch time.Time // when the last fetch started
		due       time.Time // when the next fetch starts
		timer     = time.NewTimer(0)
	)
	defer timer.Stop()
	// schedule makes the next fetch start by at, but no sooner than
	// minFetchGap after the last unless polling.
	schedule := func(at time.Time, poll bool) {
		if !poll && at.Before(lastFetch.Add(minFetchGap)) {
			at = lastFetch.Add(minFetchGap)
		}
		if due.IsZero() || at.Before(due) {
			due = at
			timer.Reset(time.Until(at))
		}
	}
	due = time.Now()
	for {
		select {
		case <-ctx.Done():
			return
		case m := <-s.in:
			if s.apply(m) {
				schedule(time.Now(), false)
			}
			if len(s.pending) > 0 {
				schedule(time.Now().Add(gapGrace), false)
			}
		case <-reconnected:
			// What was published while this connection was down is lost.
			schedule(time.Now(), false)
		case <-s.kick:
			schedule(time.Now(), false)
		case <-timer.C:
			due = time.Time{}
			if inFlight {
				again = true
				continue
			}
			if s.lost.Swap(false) {
				s.cfg.Logger.Warn("deltas over NATS arrived faster than they were applied; some were dropped, the snapshot has them")
			}
			inFlight, lastFetch = true, time.Now()
			go func(u *url.URL, since int64, etag string) { fetched <- s.fetch(ctx, u, since, etag) }(s.snapshotURL, s.seq, s.etag)
		case r := <-fetched:
			inFlight = false
			more := s.applyFetched(r)
			if len(s.pending) > 0 {
				// The snapshot was older than a delta: ask again.
				schedule(time.Now().Add(gapGrace), false)
			}
			switch {
			case r.none:
				again = false
				schedule(time.Now().Add(noSnapshotRetry), true)
			case more || again:
				again = false
				schedule(time.Now(), false)
			default:
				// Jittered, so that the verifiers of an issuer spread
				// their polls.
				p := s.cfg.PollInterval
				schedule(time.Now().Add(p-p/10+rand.N(p/5+1)), true)
			}
		}
	}
}

// receive is the NATS callback: it queues the delta for Run, or notes
// that one was lost.
func (s *Subscriber) receive(m *nats.Msg) {
	kind := m.Subject[strings.LastIndexByte(m.Subject, '.')+1:]
	select {
	case s.in <- received{kind: kind, data: m.Data}:
	default:
		s.lost.Store(true)
		select {
		case s.kick <- struct{}{}:
		default:
		}
	}
}

// fetch fetches the snapshot for a verifier that has every change up to
// since, from u, discovering it first if u is nil. It runs on its own
// goroutine and touches nothing of the Subscriber's state.
func (s *Subscriber) fetch(ctx context.Context, u *url.URL, since int64, etag string) fetchResult {
	s.snapshots.Add(1)
	ctx, cancel := context.WithTimeout(ctx, fetchTimeout)
	defer cancel()
	if u == nil {
		md, err := s.fetcher.Metadata(ctx, s.cfg.Issuer)
		switch {
		case err != nil:
			return fetchResult{err: err}
		case md.Unusable[discovery.MemberSnapshotURI] != nil:
			return fetchResult{err: fmt.Errorf("metadata of %s: %w", s.cfg.Issuer, md.Unusable[discovery.MemberSnapshotURI])}
		case md.SnapshotURI == "":
			return fetchResult{none: true, err: fmt.Errorf("the metadata of %s names no %s: the issuer distributes no snapshot; its keys come from jwks_uri, and none of its revocations", s.cfg.Issuer, discovery.MemberSnapshotURI)}
		}
		if u, err = url.Parse(md.SnapshotURI); err != nil {
			return fetchResult{err: err} // checked by Metadata
		}
	}
	q := *u
	values := q.Query()
	values.Set("since", strconv.FormatInt(since, 10))
	q.RawQuery = values.Encode()
	body, h, err := s.fetcher.Get(ctx, "snapshot", &q, SnapshotMediaType, etag)
	r := fetchResult{url: u, body: body}
	switch {
	case errors.Is(err, discovery.ErrNotModified):
		r.notModified = true
	case err != nil:
		r.err = err
		if s.cfg.SnapshotURL == "" {
			r.url = nil // discover again: the issuer may have moved it
		}
	default:
		r.etag = h.Get("ETag")
	}
	return r
}

// applyFetched applies the result of a fetch, and reports whether the
// snapshot has more to fetch.
func (s *Subscriber) applyFetched(r fetchResult) (more bool) {
	s.snapshotURL = r.url
	now := s.cfg.Now()
	var err error
	switch {
	case r.err != nil:
		err = r.err
	case r.notModified:
		s.confirm(now, "")
		return false
	default:
		var snap *Snapshot
		var keys []token.Key
		// The issuer's keys over HTTPS decide, refreshed once
		// (rate-limited) for a kid they lack.
		if snap, keys, err = decodeSnapshot(r.body, s.cfg.Keys, s.cfg.Issuer); err == nil {
			if err = s.applySnapshot(snap, keys); err == nil {
				s.applied.Add(1)
				if !snap.More {
					s.etag = r.etag
					s.confirm(now, "")
				}
				return snap.More
			}
		}
		s.refused.Add(1)
		err = fmt.Errorf("snapshot refused: %w", err)
	}
	s.mu.Lock()
	first := s.status.LastError == ""
	s.status.LastError = err.Error()
	s.mu.Unlock()
	level := slog.LevelDebug
	if first {
		level = slog.LevelWarn
	}
	s.cfg.Logger.Log(context.Background(), level, "issuer's snapshot: keeping the last good state", "issuer", s.cfg.Issuer, "err", err)
	return false
}

// confirm records that the issuer confirmed the state at now.
func (s *Subscriber) confirm(now time.Time, lastErr string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.status.LastError != "" {
		s.cfg.Logger.Info("issuer's snapshot: following again", "issuer", s.cfg.Issuer, "seq", s.seq)
	}
	s.status.Seq, s.status.ConfirmedAt, s.status.LastError = s.seq, now, lastErr
}

// applySnapshot applies a verified snapshot.
func (s *Subscriber) applySnapshot(snap *Snapshot, keys []token.Key) error {
	switch {
	case snap.Since > s.seq:
		return fmt.Errorf("it starts after change %d, and this verifier has changes up to %d only", snap.Since, s.seq)
	case snap.Seq < s.seq:
		return fmt.Errorf("it is older (change %d) than what this verifier has (%d): has the issuer's store gone back?", snap.Seq, s.seq)
	}
	now := s.cfg.Now()
	for i := range snap.Revocations {
		if r := &snap.Revocations[i]; now.Before(r.ExpiresAt) {
			s.revoke(r)
		}
	}
	if snap.KeysSeq > s.keysSeq {
		s.cfg.Keys.Set(keys, SourceSnapshot)
		s.keysSeq = snap.KeysSeq
	}
	relayed := map[string]bool{}
	for i := range snap.Providers {
		p := &snap.Providers[i]
		relayed[p.Provider] = true
		pk, _ := p.check(s.cfg.Issuer) // checked by decodeSnapshot
		s.applyProvider(p, pk, SourceSnapshot)
	}
	if !snap.More {
		// A provider the issuer no longer relays is no longer vouched for.
		for provider, ver := range s.providerVer {
			if !relayed[provider] && ver > 0 {
				s.applyProvider(&ProviderKeys{Provider: provider, Version: ver + 1}, nil, SourceSnapshot)
			}
		}
	}
	s.seq = snap.Seq
	for n := range s.pending {
		if n <= s.seq {
			delete(s.pending, n)
		}
	}
	s.advance()
	if !s.synced && !snap.More {
		s.synced = true
		held := s.held
		s.held = nil
		for _, m := range held {
			s.apply(m)
		}
	}
	return nil
}

// apply verifies and applies one delta, and reports whether the snapshot
// should be fetched now: the delta could not be verified. Refusals are
// logged without the message, which may be hostile and large.
func (s *Subscriber) apply(m received) (fetch bool) {
	// Deltas are checked against the keys held, without a refresh: one
	// that cannot be verified sends the verifier to the snapshot instead.
	ks := s.cfg.Keys.Keys()
	if ks == nil {
		s.refused.Add(1)
		return true
	}
	keys := token.Keys(ks)
	var (
		err error
		n   int64 // the change the delta stands for
	)
	switch m.kind {
	case KindRevocation:
		var u *RevocationUpdate
		if u, err = decodeRevocationUpdate(m.data, keys, s.cfg.Issuer); err == nil {
			n = u.Seq
			if n <= s.seq && s.synced || !s.cfg.Now().Before(u.ExpiresAt) {
				s.stale.Add(1)
				return false
			}
			s.revoke(&u.RevocationEntry)
		}
	case KindKeys:
		var u *KeySetUpdate
		var parsed []token.Key
		if u, parsed, err = decodeKeySetUpdate(m.data, keys, s.cfg.Issuer); err == nil {
			if !s.synced {
				s.hold(m)
				return false
			}
			if u.Seq <= s.keysSeq {
				s.stale.Add(1)
				return false
			}
			s.cfg.Keys.Set(parsed, SourceNATS)
			s.keysSeq, n = u.Seq, u.Seq
			s.cfg.Logger.Info("key set updated over NATS", "issuer", s.cfg.Issuer, "keys", len(parsed), "seq", u.Seq)
		}
	case KindRelay:
		var u *RelayUpdate
		var parsed []token.Key
		if u, parsed, err = decodeRelayUpdate(m.data, keys, s.cfg.Issuer); err == nil {
			if !s.synced {
				s.hold(m)
				return false
			}
			if !s.applyProvider(&u.ProviderKeys, parsed, SourceNATS) {
				return false
			}
		}
	default:
		err = fmt.Errorf("unknown subject kind %q", m.kind)
	}
	if err != nil {
		s.refused.Add(1)
		s.cfg.Logger.Warn("delta over NATS refused; fetching the snapshot", "issuer", s.cfg.Issuer, "kind", m.kind, "size", len(m.data), "err", err)
		return true
	}
	s.applied.Add(1)
	if n > 0 {
		s.note(n)
	}
	return false
}

// hold keeps a key set that arrived before the first snapshot, whose age
// only the snapshot can tell.
func (s *Subscriber) hold(m received) {
	if len(s.held) < maxHeld {
		s.held = append(s.held, m)
	}
}

// note records that change n is applied.
func (s *Subscriber) note(n int64) {
	if n > s.seq {
		s.pending[n] = true
		s.advance()
	}
}

// advance moves seq over the changes applied since, while they follow
// each other.
func (s *Subscriber) advance() {
	if !s.synced && s.seq == 0 {
		return // nothing to count from before the first snapshot
	}
	for s.pending[s.seq+1] {
		delete(s.pending, s.seq+1)
		s.seq++
	}
	s.mu.Lock()
	s.status.Seq = s.seq
	s.mu.Unlock()
}

// revoke passes r on.
func (s *Subscriber) revoke(r *RevocationEntry) {
	if s.cfg.Revoked != nil {
		s.cfg.Revoked(r.revocation(s.cfg.Issuer))
	}
}

// applyProvider installs a relayed provider's keys (none: drops them) if
// they are newer than what it holds, and reports whether they were.
func (s *Subscriber) applyProvider(p *ProviderKeys, keys []token.Key, source string) bool {
	if p.Version <= s.providerVer[p.Provider] {
		if source == SourceNATS {
			s.stale.Add(1)
		}
		return false
	}
	s.providerVer[p.Provider] = p.Version
	var c *KeySetCache
	if s.cfg.Provider != nil {
		c = s.cfg.Provider(p.Provider)
	}
	if c == nil {
		if len(keys) > 0 {
			s.refused.Add(1)
			s.cfg.Logger.Warn("key set of a federated provider refused: federation is off, or the provider is configured here", "issuer", s.cfg.Issuer, "provider", p.Provider)
		}
		return false
	}
	if len(keys) == 0 {
		c.Drop("no longer relayed by " + s.cfg.Issuer)
		return true
	}
	c.SetExpiring(keys, source, p.ExpiresAt)
	return true
}
