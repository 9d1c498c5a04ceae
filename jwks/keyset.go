package jwks

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"net/http"
	"net/url"
	"os"
	"sync"
	"sync/atomic"
	"time"

	"github.com/meshauth/meshauth/internal/broadcast"
	"github.com/meshauth/meshauth/internal/discovery"
	"github.com/meshauth/meshauth/token"
)

// Where a key set comes from, as [KeySetStatus.Source] reports it.
const (
	sourceMetadata = "metadata" // the jwks_uri of the issuer's metadata
	sourceJWKSURL  = "jwks_url" // a configured JWKS URL
	sourceFile     = "file"     // a local JWK Set file
)

// KeySetConfig configures a [KeySetCache]. Exactly one of Issuer, JWKSURL and
// JWKSFile names where the keys come from. Zero durations and sizes take
// their defaults.
type KeySetConfig struct {
	// Issuer is the issuer identifier (RFC 8414 §2): an https URL, or http on
	// a loopback host, without query or fragment. The keys are those of the
	// jwks_uri of its metadata, read from
	// /.well-known/oauth-authorization-server inserted before the issuer's
	// path (RFC 8414 §3.1) or, if that is not found, from
	// {Issuer}/.well-known/openid-configuration (OpenID Connect Discovery
	// 1.0 §4). The metadata's "issuer" must equal Issuer exactly (RFC 8414
	// §3.3), and its jwks_uri must be https, or http on a loopback host when
	// the issuer itself is.
	Issuer string
	// JWKSURL is a JWK Set URL to fetch directly, for issuers that publish
	// no metadata: https, or http on a loopback host.
	JWKSURL string
	// JWKSFile is a local JWK Set file. Each refresh reads it again if its
	// modification time, size or identity changed.
	JWKSFile string

	// MinRefresh bounds how often keys are refreshed, whatever the
	// Cache-Control of the JWKS response says; it is also the interval after
	// "no-cache" or "no-store", the interval at which a file is checked, and
	// the longest wait between retries after a failure. Default 1m.
	MinRefresh time.Duration
	// MaxRefresh bounds how long keys are kept without a refresh; it is the
	// interval when the response has no max-age. Default 1h.
	MaxRefresh time.Duration
	// UnknownKIDInterval: tokens with a kid the set does not have start at
	// most one refresh per this interval, since the kid comes from an
	// unauthenticated header. Default 30s.
	UnknownKIDInterval time.Duration
	// FetchTimeout bounds one refresh (metadata and JWKS requests together)
	// and how long a Lookup of an unknown kid waits for it. Default 5s.
	FetchTimeout time.Duration
	// MaxBytes is the largest metadata or JWK Set document accepted.
	// Default 1 MiB.
	MaxBytes int64
	// MaxStale, if not zero, bounds how long keys are kept without a
	// successful load: keys loaded from the source are dropped MaxStale
	// after that load unless a later one succeeds, and the cache is no
	// longer Ready. Zero keeps the last good keys however long the source
	// fails, as a verifier wants for the issuers it is configured with. A
	// federated provider's keys are bounded, so that a provider that is
	// down, serves garbage or names another issuer in its metadata stops
	// being trusted in time. It must exceed MaxRefresh.
	MaxStale time.Duration

	// HTTPClient makes the requests; default a new client with the default
	// transport. Its CheckRedirect is replaced: only redirects to the same
	// origin (scheme, host and port) are followed, so that trust given to one
	// host is not extended to another by a redirect.
	HTTPClient *http.Client
	// Logger receives a warning for every failed refresh. Default
	// slog.Default().
	Logger *slog.Logger
	// Now returns the current time; default time.Now. It times the
	// unknown-kid rate limit and the key set's age.
	Now func() time.Time
}

// KeySetStatus describes a [KeySetCache] for readiness checks and metrics.
type KeySetStatus struct {
	// Source is where the current keys came from: "metadata", "jwks_url",
	// "file", or the source given to Set. Before any keys are loaded it is
	// the configured source.
	Source string
	// LoadedAt is when the current keys were last loaded or, for a file,
	// found unchanged; zero before the first load.
	LoadedAt time.Time
	// Age is the time since LoadedAt; zero before the first load.
	Age time.Duration
	// Keys is the number of keys in the current set.
	Keys int
	// LastError describes the failure of the last refresh, "" if it
	// succeeded. It names URLs without their passwords and never contains
	// a response body.
	LastError string
	// Fetches counts the refreshes started.
	Fetches uint64
	// ExpiresAt is when the current keys are dropped unless renewed (see
	// KeySetConfig.MaxStale and SetExpiring); zero if they are not.
	ExpiresAt time.Time
	// Dropped says why the keys were dropped, "" unless they were.
	Dropped string
}

// A KeySetCache holds the verification keys of one trusted issuer and keeps
// them fresh: the verifier's [token.Keys]. Lookup reads the current set
// without locking; refreshes replace it whole.
//
// A refresh that fails, for whatever reason (issuer unreachable, an HTTP
// error, a malformed JWK Set, one without usable keys), leaves the last good
// keys in place and is logged: a sidecar goes on verifying tokens with the
// keys it has while its issuer is down (for MaxStale at most, if set).
type KeySetCache struct {
	cfg     KeySetConfig
	source  string   // sourceMetadata, sourceJWKSURL or sourceFile
	jwksURL *url.URL // the configured JWKSURL
	fetcher *discovery.Fetcher

	keys atomic.Pointer[token.KeySet]
	// changed tells when new keys are installed; see Changed.
	changed broadcast.Signal

	// reset tells the refresh loop that Set installed keys; buffered, so
	// that Set never blocks.
	reset   chan struct{}
	started atomic.Bool

	mu        sync.Mutex
	ctx       context.Context // Start's context: refreshes end with it
	flight    *keySetFetch    // the refresh running, if any
	triggered time.Time       // when an unknown kid last started a refresh
	sets      uint64          // calls to Set that installed keys
	interval  time.Duration   // the refresh interval last chosen
	keySource string          // where the current keys came from
	doc       []byte          // the JWK Set of the current keys, if loaded here
	loadedAt  time.Time       // see KeySetStatus
	lastErr   string          // of the last refresh
	fetches   uint64          // refreshes started
	expiresAt time.Time       // see KeySetStatus
	dropped   string          // see KeySetStatus
	dropTimer *time.Timer     // drops the keys at expiresAt

	// Owned by the running refresh: refreshes run one at a time, each
	// started after the previous one left c.flight under c.mu.
	jwksURI      *url.URL    // from the metadata
	discoveredAt time.Time   // when jwksURI was read
	file         os.FileInfo // of the file when it was last loaded
	loadedDoc    []byte      // the JWK Set document last loaded
}

// keySetFetch is one refresh, shared by everyone who waits for it.
type keySetFetch struct {
	done chan struct{} // closed when the refresh ends
	// Set before done is closed.
	err      error
	interval time.Duration // until the next refresh, after a success
}

var _ token.Keys = (*KeySetCache)(nil)

// NewKeySetCache checks cfg and returns a cache without keys. Call Start to
// load them and keep them fresh.
func NewKeySetCache(cfg KeySetConfig) (*KeySetCache, error) {
	c := &KeySetCache{reset: make(chan struct{}, 1), ctx: context.Background()}
	var n int
	if cfg.Issuer != "" {
		n++
		if _, err := discovery.ParseIssuer("Issuer", cfg.Issuer); err != nil {
			return nil, fmt.Errorf("key set: %w", err)
		}
		c.source = sourceMetadata
	}
	if cfg.JWKSURL != "" {
		n++
		u, err := discovery.ParseURL("JWKSURL", cfg.JWKSURL)
		if err != nil {
			return nil, fmt.Errorf("key set: %w", err)
		}
		c.source, c.jwksURL = sourceJWKSURL, u
	}
	if cfg.JWKSFile != "" {
		n++
		c.source = sourceFile
	}
	if n != 1 {
		return nil, errors.New("key set: set exactly one of Issuer, JWKSURL and JWKSFile")
	}
	for _, d := range []struct {
		name string
		v    *time.Duration
		def  time.Duration
	}{
		{"MinRefresh", &cfg.MinRefresh, time.Minute},
		{"MaxRefresh", &cfg.MaxRefresh, time.Hour},
		{"UnknownKIDInterval", &cfg.UnknownKIDInterval, 30 * time.Second},
		{"FetchTimeout", &cfg.FetchTimeout, 5 * time.Second},
	} {
		if *d.v < 0 {
			return nil, fmt.Errorf("key set: %s must not be negative (got %v)", d.name, *d.v)
		}
		if *d.v == 0 {
			*d.v = d.def
		}
	}
	if cfg.MinRefresh > cfg.MaxRefresh {
		return nil, fmt.Errorf("key set: MinRefresh (%v) must not exceed MaxRefresh (%v)", cfg.MinRefresh, cfg.MaxRefresh)
	}
	if cfg.MaxStale < 0 || cfg.MaxStale > 0 && cfg.MaxStale <= cfg.MaxRefresh {
		return nil, fmt.Errorf("key set: MaxStale (%v) must be zero or exceed MaxRefresh (%v)", cfg.MaxStale, cfg.MaxRefresh)
	}
	if cfg.MaxBytes < 0 {
		return nil, fmt.Errorf("key set: MaxBytes must not be negative (got %d)", cfg.MaxBytes)
	}
	if cfg.MaxBytes == 0 {
		cfg.MaxBytes = 1 << 20
	}
	c.fetcher = discovery.NewFetcher(cfg.HTTPClient, cfg.MaxBytes)
	if cfg.Logger == nil {
		cfg.Logger = slog.Default()
	}
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	c.cfg = cfg
	c.keySource = c.source
	c.interval = cfg.MaxRefresh
	if c.source == sourceFile {
		c.interval = cfg.MinRefresh
	}
	return c, nil
}

// Start loads the keys in the background, retrying with backoff until that
// succeeds, then refreshes them as the JWKS response's Cache-Control asks,
// within [MinRefresh, MaxRefresh], until ctx is done. Later calls do
// nothing.
func (c *KeySetCache) Start(ctx context.Context) {
	if !c.started.CompareAndSwap(false, true) {
		return
	}
	c.mu.Lock()
	c.ctx = ctx
	c.mu.Unlock()
	go c.run(ctx)
}

func (c *KeySetCache) run(ctx context.Context) {
	t := time.NewTimer(0)
	defer t.Stop()
	failures := 0
	for {
		select {
		case <-ctx.Done():
			return
		case <-c.reset:
			c.mu.Lock()
			d := c.interval
			c.mu.Unlock()
			t.Reset(d)
			continue
		case <-t.C:
		}
		f := c.refresh()
		select {
		case <-ctx.Done():
			return
		case <-f.done:
		}
		if f.err != nil {
			t.Reset(c.backoff(failures))
			failures++
			continue
		}
		failures = 0
		t.Reset(f.interval)
	}
}

// backoff returns the wait before a refresh after n+1 failures in a row, at
// most MinRefresh.
func (c *KeySetCache) backoff(n int) time.Duration { return backoff(n, c.cfg.MinRefresh) }

// backoff returns a randomised wait after n+1 failures in a row: doubling
// from a second (or max, if shorter) up to max, and randomised over its
// upper half so that the many verifiers of an issuer do not all retry at
// once.
func backoff(n int, max time.Duration) time.Duration {
	d := min(time.Second, max)
	for ; n > 0 && d < max; n-- {
		d *= 2
	}
	d = min(d, max)
	return d/2 + rand.N(d/2+1)
}

// Lookup returns the key with ID kid (for "", the only key of a one-key
// set). A hit is an atomic load and a map read: no lock, no allocation. On a
// miss it waits, up to FetchTimeout, for a refresh to end and looks again:
// the refresh running, or a new one if no unknown kid started one in the
// last UnknownKIDInterval. The kid is attacker-chosen (RFC 8725 §3.10), so
// misses must not turn into a flood of fetches; otherwise Lookup reports
// false at once.
func (c *KeySetCache) Lookup(kid string) (token.Key, bool) {
	if ks := c.keys.Load(); ks != nil {
		if k, ok := ks.Lookup(kid); ok {
			return k, true
		}
	}
	return c.lookupMiss(kid)
}

func (c *KeySetCache) lookupMiss(kid string) (token.Key, bool) {
	f := c.refreshForUnknownKID()
	if f == nil {
		return token.Key{}, false
	}
	t := time.NewTimer(c.cfg.FetchTimeout)
	defer t.Stop()
	select {
	case <-f.done:
	case <-t.C:
		return token.Key{}, false
	}
	if ks := c.keys.Load(); ks != nil {
		return ks.Lookup(kid)
	}
	return token.Key{}, false
}

// refreshForUnknownKID returns the refresh running, or starts one if the
// rate limit allows, or returns nil.
func (c *KeySetCache) refreshForUnknownKID() *keySetFetch {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.flight != nil {
		return c.flight
	}
	now := c.cfg.Now()
	if !c.triggered.IsZero() && now.Sub(c.triggered) < c.cfg.UnknownKIDInterval {
		return nil
	}
	c.triggered = now
	return c.startLocked()
}

// refresh returns the refresh running, or starts one.
func (c *KeySetCache) refresh() *keySetFetch {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.flight != nil {
		return c.flight
	}
	return c.startLocked()
}

func (c *KeySetCache) startLocked() *keySetFetch {
	f := &keySetFetch{done: make(chan struct{})}
	c.flight = f
	c.fetches++
	go c.fetch(c.ctx, f, c.sets)
	return f
}

// fetch runs refresh f. sets is c.sets when f started: if Set installed keys
// since, they are at least as recent as what f read, and f leaves them be.
func (c *KeySetCache) fetch(ctx context.Context, f *keySetFetch, sets uint64) {
	ctx, cancel := context.WithTimeout(ctx, c.cfg.FetchTimeout)
	defer cancel()
	keys, interval, err := c.load(ctx)
	now := c.cfg.Now()

	c.mu.Lock()
	c.flight = nil
	var kept int
	if ks := c.keys.Load(); ks != nil {
		kept = ks.Len()
	}
	switch {
	case err != nil:
		c.lastErr = err.Error()
	case keys == nil: // a file, unchanged
		c.lastErr = ""
		c.interval = interval
		if c.keySource == c.source {
			c.loadedAt = now
		}
	case c.sets != sets:
		c.lastErr = ""
	default:
		c.lastErr = ""
		c.interval = interval
		var expiresAt time.Time
		if c.cfg.MaxStale > 0 {
			expiresAt = now.Add(c.cfg.MaxStale)
		}
		c.install(token.NewKeySet(keys), expiresAt)
		c.keySource, c.loadedAt, c.doc = c.source, now, c.loadedDoc
	}
	c.mu.Unlock()

	if err != nil {
		c.cfg.Logger.Warn("refresh of trusted keys failed; keeping the last good keys",
			"source", c.source, "keys", kept, "err", err)
	}
	f.err, f.interval = err, interval
	close(f.done)
}

// install makes ks the current keys until expiresAt (zero: for good) and
// wakes whoever waits on Changed. c.mu must be held.
func (c *KeySetCache) install(ks *token.KeySet, expiresAt time.Time) {
	c.keys.Store(ks)
	c.dropped = ""
	c.setExpiry(expiresAt)
	c.changed.Notify()
}

// setExpiry arms the drop of the keys at expiresAt, or disarms it for a
// zero time. c.mu must be held.
func (c *KeySetCache) setExpiry(expiresAt time.Time) {
	c.expiresAt = expiresAt
	if c.dropTimer != nil {
		c.dropTimer.Stop()
		c.dropTimer = nil
	}
	if !expiresAt.IsZero() {
		c.dropTimer = time.AfterFunc(expiresAt.Sub(c.cfg.Now()), c.expire)
	}
}

// expire drops the keys if they have expired; the timer of setExpiry
// calls it.
func (c *KeySetCache) expire() {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.expiresAt.IsZero() {
		return // renewed for good meanwhile
	}
	if d := c.expiresAt.Sub(c.cfg.Now()); d > 0 {
		c.dropTimer = time.AfterFunc(d, c.expire) // renewed meanwhile
		return
	}
	reason := "not renewed since " + c.loadedAt.UTC().Format(time.RFC3339)
	if c.lastErr != "" {
		reason += "; last error: " + c.lastErr
	}
	c.dropLocked(reason)
}

// Drop forgets the keys: nothing verifies until new ones are installed,
// and the cache is not Ready. reason is kept for Status.
func (c *KeySetCache) Drop(reason string) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.dropLocked(reason)
}

func (c *KeySetCache) dropLocked(reason string) {
	if c.keys.Load() == nil {
		return
	}
	c.keys.Store(nil)
	c.doc = nil
	c.dropped = reason
	c.setExpiry(time.Time{})
	c.changed.Notify()
	c.cfg.Logger.Warn("trusted keys dropped", "source", c.keySource, "reason", reason)
}

// Changed returns a channel that is closed the next time keys are installed
// (by a refresh or Set), so that consumers such as the xDS server can react
// to a rotation at once instead of polling. Call it again after each close.
func (c *KeySetCache) Changed() <-chan struct{} { return c.changed.C() }

// Keys returns the current key set, or nil before the first load.
func (c *KeySetCache) Keys() *token.KeySet { return c.keys.Load() }

// Document returns the JWK Set document the current keys were parsed from,
// as the source served it, when it was loaded, and when the keys expire
// (zero: never): what the distributor relays of a federated provider's
// keys. It returns nil if the current keys came from Set, or before the
// first load, or after a drop.
func (c *KeySetCache) Document() (doc []byte, loadedAt, expiresAt time.Time) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.doc == nil {
		return nil, time.Time{}, time.Time{}
	}
	return c.doc, c.loadedAt, c.expiresAt
}

// Ready reports whether keys have been loaded at least once.
func (c *KeySetCache) Ready() bool {
	return c.keys.Load() != nil
}

// Status reports the state of the cache.
func (c *KeySetCache) Status() KeySetStatus {
	c.mu.Lock()
	defer c.mu.Unlock()
	s := KeySetStatus{
		Source:    c.keySource,
		LoadedAt:  c.loadedAt,
		LastError: c.lastErr,
		Fetches:   c.fetches,
		ExpiresAt: c.expiresAt,
		Dropped:   c.dropped,
	}
	if ks := c.keys.Load(); ks != nil {
		s.Keys = ks.Len()
		s.Age = c.cfg.Now().Sub(c.loadedAt)
	}
	return s
}

// Set replaces the keys with keys from another source, such as a push from
// the issuer, for good, and restarts the wait for the next refresh. It
// ignores an empty set: no source may replace good keys with nothing (Drop
// does that).
func (c *KeySetCache) Set(keys []token.Key, source string) {
	c.SetExpiring(keys, source, time.Time{})
}

// SetExpiring is Set for keys that are dropped at expiresAt unless renewed
// (zero: never), such as a federated provider's keys relayed by an issuer
// that vouches for them until then. Keys that expired already are dropped
// at once.
func (c *KeySetCache) SetExpiring(keys []token.Key, source string, expiresAt time.Time) {
	if len(keys) == 0 {
		c.cfg.Logger.Warn("empty key set ignored; keeping the current keys", "source", source)
		return
	}
	ks := token.NewKeySet(keys)
	now := c.cfg.Now()
	c.mu.Lock()
	if !expiresAt.IsZero() && !now.Before(expiresAt) {
		c.dropLocked("keys from " + source + " expired at " + expiresAt.UTC().Format(time.RFC3339))
		c.mu.Unlock()
		return
	}
	c.install(ks, expiresAt)
	c.keySource, c.loadedAt, c.doc = source, now, nil
	c.sets++
	c.mu.Unlock()
	select {
	case c.reset <- struct{}{}:
	default: // the loop has a reset pending already
	}
}
