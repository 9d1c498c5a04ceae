package proxy

import (
	"cmp"
	"context"
	"crypto/sha256"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/valyala/fasthttp"
	"golang.org/x/sync/singleflight"

	"github.com/meshauth/meshauth/exchange"
	"github.com/meshauth/meshauth/internal/ratelog"
	"github.com/meshauth/meshauth/token"
)

// Defaults of EdgeConfig.
const (
	DefaultEdgeCacheBytes       = 64 << 20
	DefaultMaxCacheLifetime     = 60 * time.Second
	DefaultNegativeLifetime     = 10 * time.Second
	DefaultNegativeSlots        = 4096
	DefaultDereferenceRate      = 5
	DefaultDereferenceBurst     = 20
	DefaultRateLimitedAddresses = 65536
	DefaultDereferenceWait      = 5 * time.Second
)

// edgeRefreshBefore is how long before its exp an internal JWT stops being
// served from the cache, so that the upstream does not receive one that
// expires on the way.
const edgeRefreshBefore = 5 * time.Second

// Dereferencer trades a reference token for an internal JWT for audience;
// *exchange.Client is one. Its errors are read as exchange.Client's: a
// *exchange.RefusedError is the issuer's refusal, one wrapping
// exchange.ErrUnavailable an issuer that did not answer.
type Dereferencer interface {
	Dereference(ctx context.Context, referenceToken, audience string) (exchange.Token, error)
}

// EdgeConfig configures an Edge.
type EdgeConfig struct {
	// Upstream is what the edge protects, "http://host:port": usually the
	// sidecar of the service.
	Upstream string
	// Audience is the upstream's audience (its client id): the internal
	// JWTs are requested for it alone.
	Audience string
	// Dereferencer obtains the internal JWTs; required.
	Dereferencer Dereferencer
	// Verifier verifies internal JWTs: those the Dereferencer returns,
	// whose verified claims are kept to match revocations, and, with
	// AcceptInternalJWT, those sent by clients. It is the token package's
	// Authenticator for the issuer, with Audience. Required.
	Verifier Verifier
	// AcceptInternalJWT lets requests that carry a JWT (an internal
	// token) through, verified by Verifier. By default they are refused:
	// internal tokens are not for the Internet.
	AcceptInternalJWT bool
	// CacheBytes bounds the memory of the dereference cache, at least
	// 1 MiB. Default DefaultEdgeCacheBytes.
	CacheBytes int
	// MaxCacheLifetime bounds how long a dereference is used, whatever the
	// tokens' expiry: without revocation events, how long a revoked
	// reference token still passes the edge. Default
	// DefaultMaxCacheLifetime.
	MaxCacheLifetime time.Duration
	// NegativeLifetime is how long a refused reference token is refused
	// without asking the issuer again, in a table of NegativeSlots
	// entries. Defaults DefaultNegativeLifetime, DefaultNegativeSlots.
	NegativeLifetime time.Duration
	NegativeSlots    int
	// DereferenceRate (per second) and DereferenceBurst bound the
	// dereferences each client address causes; RateLimitedAddresses bounds
	// the addresses tracked. Defaults DefaultDereferenceRate,
	// DefaultDereferenceBurst, DefaultRateLimitedAddresses.
	DereferenceRate      float64
	DereferenceBurst     int
	RateLimitedAddresses int
	// TrustedProxies are the peers whose X-Forwarded-For names the client
	// address (its last element); empty: the peer is the client.
	TrustedProxies []*net.IPNet
	// DereferenceWait bounds how long a request waits for its dereference
	// before a 503. Default DefaultDereferenceWait.
	DereferenceWait time.Duration
	// UpstreamTimeout, MaxConns and MaxRequestBody are as for
	// SidecarConfig. The edge sets X-Forwarded-For, -Proto and -Host,
	// keeping those of TrustedProxies.
	UpstreamTimeout time.Duration
	MaxConns        int
	MaxRequestBody  int64
	// Logger receives failures; nil discards them.
	Logger *slog.Logger
	// Registerer, if not nil, gets the edge's metrics (EdgeStats and the
	// issuer latency histogram).
	Registerer prometheus.Registerer
	// Now returns the current time; default time.Now.
	Now func() time.Time
}

// Edge is the gateway between Internet clients, which hold opaque
// reference tokens, and the mesh, where services verify JWTs locally (the
// "phantom token" pattern). For each request it replaces the reference
// token with an internal JWT for the upstream's audience, minted by the
// issuer, and forwards the request.
//
// Dereferencing is one RFC 8693 token exchange at the issuer, with the
// reference token as subject_token and the upstream as audience: one round
// trip, and the issuer alone decides, by exchangepolicy.Dereference, whether the
// token is live and what the JWT holds. (Introspection followed by an
// exchange would cost two, and the edge would mint nothing anyway.) The
// result is cached, keyed by the SHA-256 digest of the reference token,
// until the JWT is about to expire or MaxCacheLifetime has passed, and
// requests with the same new token wait for one dereference
// (singleflight). A refusal is remembered for NegativeLifetime, and the
// dereferences each client address causes are rate-limited, so that a
// flood of garbage reaches the issuer at a bounded rate. Evict drops the
// entries a revocation reaches.
//
// Answers, never forwarding a request without a token the upstream will
// verify:
//
//   - no, several or malformed Authorization fields, or access_token in
//     the query: as the sidecar (RFC 6750 §3.1).
//   - a JWT, unless AcceptInternalJWT: 401 invalid_token.
//   - a reference token the issuer refuses (invalid, expired, revoked, or
//     not issued for this audience): 401 invalid_token.
//   - issuer unavailable, too slow or misconfigured: 503 with Retry-After;
//     too many dereferences from the client address: 429 with Retry-After.
//
// Identity fields (X-Meshauth-*) the client sent are removed: only the
// sidecar behind sets them, from the JWT. Hop-by-hop fields are removed
// both ways.
type Edge struct {
	audience   string
	deref      Dereferencer
	guard      *guard // verifies internal JWTs
	acceptJWT  bool
	cache      *derefCache
	negative   *negativeCache
	limiter    *rateLimiter
	trusted    []*net.IPNet
	maxLife    time.Duration
	wait       time.Duration
	now        func() time.Time
	log        *slog.Logger
	flights    singleflight.Group
	upstream   *forwarder
	server     *proxyServer
	issuerTime prometheus.Histogram // nil without a Registerer
	stats      edgeCounters
}

// EdgeStats are an Edge's counters.
type EdgeStats struct {
	Hits         uint64 // requests answered from the cache
	Misses       uint64 // requests that needed a dereference
	NegativeHits uint64 // requests refused by the negative cache
	Dereferences uint64 // requests to the issuer
	Refused      uint64 // dereferences the issuer refused
	Failed       uint64 // dereferences that failed otherwise
	RateLimited  uint64 // requests refused by the rate limit
	Evictions    uint64 // entries dropped by revocations
	InternalJWT  uint64 // requests that came with a JWT
	Entries      int    // dereferences cached
}

type edgeCounters struct {
	hits, misses, negativeHits, dereferences, refused, failed, rateLimited, evictions, internalJWT atomic.Uint64
}

// NewEdge returns an Edge; call Serve to start it.
func NewEdge(cfg EdgeConfig) (*Edge, error) {
	switch {
	case cfg.Dereferencer == nil:
		return nil, errors.New("proxy: edge: no dereferencer")
	case cfg.Verifier == nil:
		return nil, errors.New("proxy: edge: no verifier")
	case cfg.Audience == "":
		return nil, errors.New("proxy: edge: no audience")
	case cfg.MaxCacheLifetime < 0, cfg.NegativeLifetime < 0, cfg.DereferenceRate < 0, cfg.DereferenceBurst < 0,
		cfg.NegativeSlots < 0, cfg.RateLimitedAddresses < 0, cfg.DereferenceWait < 0:
		return nil, errors.New("proxy: edge: negative limit")
	}
	addr, err := upstreamAddr(cfg.Upstream)
	if err != nil {
		return nil, err
	}
	cache, err := newDerefCache(cmp.Or(cfg.CacheBytes, DefaultEdgeCacheBytes))
	if err != nil {
		return nil, err
	}
	log := cfg.Logger
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	// What the edge logs, a request causes: bounded per kind of line.
	log = ratelog.New(log)
	g, err := newGuard(Config{Verifier: cfg.Verifier, Logger: log})
	if err != nil {
		return nil, err
	}
	e := &Edge{
		audience:  cfg.Audience,
		deref:     cfg.Dereferencer,
		guard:     g,
		acceptJWT: cfg.AcceptInternalJWT,
		cache:     cache,
		negative:  newNegativeCache(cmp.Or(cfg.NegativeSlots, DefaultNegativeSlots), cmp.Or(cfg.NegativeLifetime, DefaultNegativeLifetime)),
		limiter: newRateLimiter(cmp.Or(cfg.DereferenceRate, DefaultDereferenceRate), cmp.Or(cfg.DereferenceBurst, DefaultDereferenceBurst),
			cmp.Or(cfg.RateLimitedAddresses, DefaultRateLimitedAddresses)),
		trusted: cfg.TrustedProxies,
		maxLife: cmp.Or(cfg.MaxCacheLifetime, DefaultMaxCacheLifetime),
		wait:    cmp.Or(cfg.DereferenceWait, DefaultDereferenceWait),
		now:     cfg.Now,
		log:     log,
	}
	if e.now == nil {
		e.now = time.Now
	}
	if cfg.Registerer != nil {
		if err := e.register(cfg.Registerer); err != nil {
			return nil, err
		}
	}
	conns := newConnTracker()
	e.upstream = newForwarder(upstreamConfig{addr: addr, maxConns: cmp.Or(cfg.MaxConns, DefaultMaxConns),
		timeout: cmp.Or(cfg.UpstreamTimeout, DefaultUpstreamTimeout), maxBody: cfg.MaxRequestBody,
		forwarded: forwarding{mode: forwardXFF, trusted: cfg.TrustedProxies}, conns: conns}, e.log)
	e.server = newProxyServer(e.serve, nil, conns, e.log)
	return e, nil
}

// Serve accepts connections on ln until Shutdown. It returns nil after
// Shutdown.
func (e *Edge) Serve(ln net.Listener) error { return e.server.Serve(ln) }

// Drain makes every answer the last of its connection while the listener
// keeps accepting; see Sidecar.Drain.
func (e *Edge) Drain() { e.server.Drain() }

// Shutdown stops accepting connections and waits until the requests in
// flight, WebSocket tunnels included, are done or ctx is; then it closes
// what remains.
func (e *Edge) Shutdown(ctx context.Context) error {
	err := e.server.Shutdown(ctx)
	e.upstream.client.CloseIdleConnections()
	return err
}

// Evict drops the cached dereferences that revocation r reaches, at once:
// wire it to the revocation events of the distributor. Without them,
// MaxCacheLifetime bounds how long a revoked token passes.
func (e *Edge) Evict(r token.Revocation) {
	if n := e.cache.evict(r); n > 0 {
		e.stats.evictions.Add(uint64(n))
	}
}

// Stats returns the edge's counters.
func (e *Edge) Stats() EdgeStats {
	s := &e.stats
	return EdgeStats{
		Hits: s.hits.Load(), Misses: s.misses.Load(), NegativeHits: s.negativeHits.Load(),
		Dereferences: s.dereferences.Load(), Refused: s.refused.Load(), Failed: s.failed.Load(),
		RateLimited: s.rateLimited.Load(), Evictions: s.evictions.Load(), InternalJWT: s.internalJWT.Load(),
		Entries: e.cache.len(),
	}
}

// The Edge's own answers; the others are the sidecar's.
var (
	edgeInternalJWT = egressVerdict(401, invalidTokenChallenge+`, error_description="internal tokens are not accepted here"`,
		"invalid_token", "internal tokens are not accepted here")
	edgeRefused = egressVerdict(401, invalidTokenChallenge+`, error_description="the access token is not valid"`,
		"invalid_token", "the access token is not valid")
	edgeRateLimited = egressVerdict(429, "", "temporarily_unavailable", "too many new tokens from this address; retry later")
)

func (e *Edge) serve(ctx *fasthttp.RequestCtx) {
	req := &ctx.Request
	// First, before anything reads them: only the sidecar behind speaks
	// for the caller's identity.
	stripIdentity(&req.Header)
	tok, cd := bearerCredential(req.URI(), req.Header.PeekAll(fasthttp.HeaderAuthorization))
	if cd != codeAllowed {
		deny(ctx, answers[cd].verdict)
		return
	}
	var internal []byte // the JWT that replaces a reference token
	if !token.IsReference(tok) {
		e.stats.internalJWT.Add(1)
		if !e.acceptJWT {
			deny(ctx, edgeInternalJWT)
			return
		}
		c := e.guard.getClaims()
		verified := e.guard.verify(tok, c)
		e.guard.putClaims(c)
		if verified != codeAllowed {
			deny(ctx, answers[verified].verdict)
			return
		}
	} else {
		value, v := e.dereferenced(ctx, tok)
		if !v.ok() {
			if v.status == 503 || v.status == 429 {
				ctx.Response.Header.Set(fasthttp.HeaderRetryAfter, retryAfter(v.status))
			}
			deny(ctx, v)
			return
		}
		internal = value
	}

	// A client's "Connection: Authorization" must not strip the JWT it
	// was given: forward sets it after the hop-by-hop fields are gone.
	e.upstream.forward(ctx, outbound{authorization: internal})
}

// retryAfter is the Retry-After value (RFC 9110 §10.2.3) of a 503 (the
// issuer) or a 429 (the rate limit, which refills within a second).
func retryAfter(status int) string {
	if status == 429 {
		return "1"
	}
	return "5"
}

// Failures of a dereference, shared by the requests that waited for it.
var (
	errDerefRefused     = errors.New("the issuer refused the reference token")
	errDerefRateLimited = errors.New("too many dereferences from this address")
)

// dereferenced returns the Authorization value that replaces reference
// token tok: from the cache, or from one dereference shared by the
// requests that need it meanwhile.
func (e *Edge) dereferenced(ctx *fasthttp.RequestCtx, tok []byte) ([]byte, verdict) {
	sum := sha256.Sum256(tok)
	now := e.now()
	if value, ok := e.cache.get(&sum, now); ok {
		e.stats.hits.Add(1)
		return value, answers[codeAllowed].verdict
	}
	if e.negative.has(&sum, now) {
		e.stats.negativeHits.Add(1)
		return nil, edgeRefused
	}
	e.stats.misses.Add(1)
	return e.miss(ctx, tok, sum)
}

// miss obtains the Authorization value of reference token tok, whose
// digest is sum, from the issuer. Apart from dereferenced, so that sum,
// which the dereference keeps, moves to the heap on misses only.
func (e *Edge) miss(ctx *fasthttp.RequestCtx, tok []byte, sum [sha256.Size]byte) ([]byte, verdict) {
	// Copies: the request's buffers are reused once the handler returns,
	// and the dereference may outlive it.
	ref := string(tok)
	addr := string(clientAddr(ctx.RemoteIP(), ctx.Request.Header.PeekAll(fasthttp.HeaderXForwardedFor), e.trusted))
	// The rate limit is checked by the request that starts the
	// dereference, against its address: the others only wait for it.
	ch := e.flights.DoChan(string(sum[:]), func() (any, error) {
		if !e.limiter.allow([]byte(addr), e.now()) {
			return nil, errDerefRateLimited
		}
		return e.dereference(ref, &sum)
	})
	timer := time.NewTimer(e.wait)
	defer timer.Stop()
	select {
	case r := <-ch:
		switch {
		case r.Err == nil:
			return r.Val.([]byte), answers[codeAllowed].verdict
		case errors.Is(r.Err, errDerefRefused):
			return nil, edgeRefused
		case errors.Is(r.Err, errDerefRateLimited):
			e.stats.rateLimited.Add(1)
			return nil, edgeRateLimited
		}
	case <-timer.C:
	}
	return nil, egressNoIssuer
}

// dereference asks the issuer for the internal JWT of ref, whose digest
// is sum, and caches it.
func (e *Edge) dereference(ref string, sum *[sha256.Size]byte) ([]byte, error) {
	generation := e.cache.generation()
	e.stats.dereferences.Add(1)
	// Not the request's context: other requests may wait for this one.
	ctx, cancel := context.WithTimeout(context.Background(), e.wait)
	defer cancel()
	start := time.Now()
	t, err := e.deref.Dereference(ctx, ref, e.audience)
	if e.issuerTime != nil {
		e.issuerTime.Observe(time.Since(start).Seconds())
	}
	if err != nil {
		return nil, e.dereferenceFailed(err, sum)
	}
	var c token.Claims
	if err := e.guard.verifier.VerifyInto([]byte(t.AccessToken), &c); err != nil {
		// The issuer's own token, refused: keys not loaded yet, or a
		// configuration that does not match the issuer's.
		e.stats.failed.Add(1)
		e.log.Error("proxy: edge: the issuer's internal JWT does not verify", "err", err)
		return nil, err
	}
	now := e.now()
	until := now.Add(e.maxLife)
	for _, exp := range [...]time.Time{c.ExpiresAt, t.ExpiresAt} {
		if end := exp.Add(-edgeRefreshBefore); end.Before(until) {
			until = end
		}
	}
	authz := []byte("Bearer " + t.AccessToken)
	if until.After(now) {
		e.cache.put(sum, until, authz, c.Identity(), generation)
	}
	return authz, nil
}

// dereferenceFailed classifies a failed dereference of the token whose
// digest is sum.
func (e *Edge) dereferenceFailed(err error, sum *[sha256.Size]byte) error {
	var re *exchange.RefusedError
	if errors.As(err, &re) {
		switch re.Code {
		case "invalid_grant", "invalid_target", "invalid_scope":
			// The token: unknown, expired, revoked, or not for this
			// audience (exchangepolicy.Dereference).
			e.stats.refused.Add(1)
			e.negative.add(sum, e.now())
			return errDerefRefused
		}
		// The edge's own registration or configuration.
		e.stats.failed.Add(1)
		e.log.Error("proxy: edge: the issuer refused the dereference", "error", re.Code, "error_description", re.Description)
		return err
	}
	e.stats.failed.Add(1)
	e.log.Warn("proxy: edge: dereference failed", "err", err)
	return err
}

// register registers the edge's metrics with reg.
func (e *Edge) register(reg prometheus.Registerer) error {
	e.issuerTime = prometheus.NewHistogram(prometheus.HistogramOpts{
		Name:    "meshauth_edge_issuer_duration_seconds",
		Help:    "Time taken by the issuer to dereference a reference token.",
		Buckets: prometheus.ExponentialBuckets(250e-6, 2.5, 10),
	})
	counter := func(name, help string, v func(EdgeStats) uint64) prometheus.Collector {
		return prometheus.NewCounterFunc(prometheus.CounterOpts{Name: name, Help: help}, func() float64 { return float64(v(e.Stats())) })
	}
	cs := []prometheus.Collector{
		e.issuerTime,
		counter("meshauth_edge_cache_hits_total", "Requests whose reference token was dereferenced from the cache.", func(s EdgeStats) uint64 { return s.Hits }),
		counter("meshauth_edge_cache_misses_total", "Requests whose reference token needed a dereference.", func(s EdgeStats) uint64 { return s.Misses }),
		counter("meshauth_edge_negative_hits_total", "Requests refused by the cache of refused reference tokens.", func(s EdgeStats) uint64 { return s.NegativeHits }),
		counter("meshauth_edge_dereferences_total", "Dereferences sent to the issuer.", func(s EdgeStats) uint64 { return s.Dereferences }),
		counter("meshauth_edge_dereferences_refused_total", "Dereferences the issuer refused: invalid, expired or revoked reference tokens.", func(s EdgeStats) uint64 { return s.Refused }),
		counter("meshauth_edge_dereferences_failed_total", "Dereferences that failed otherwise: issuer unavailable or misconfigured.", func(s EdgeStats) uint64 { return s.Failed }),
		counter("meshauth_edge_rate_limited_total", "Requests refused because their address caused too many dereferences.", func(s EdgeStats) uint64 { return s.RateLimited }),
		counter("meshauth_edge_revocation_evictions_total", "Cached dereferences dropped by revocation events.", func(s EdgeStats) uint64 { return s.Evictions }),
		counter("meshauth_edge_internal_jwt_total", "Requests that came with a JWT rather than a reference token.", func(s EdgeStats) uint64 { return s.InternalJWT }),
		prometheus.NewGaugeFunc(prometheus.GaugeOpts{Name: "meshauth_edge_cache_entries", Help: "Dereferences cached."},
			func() float64 { return float64(e.cache.len()) }),
		prometheus.NewGaugeFunc(prometheus.GaugeOpts{Name: "meshauth_edge_cache_hit_ratio", Help: "Cache hits over the requests with a reference token, since start."},
			func() float64 {
				s := e.Stats()
				if n := s.Hits + s.Misses + s.NegativeHits; n > 0 {
					return float64(s.Hits) / float64(n)
				}
				return 0
			}),
	}
	for _, c := range cs {
		if err := reg.Register(c); err != nil {
			return fmt.Errorf("proxy: registering edge metrics: %w", err)
		}
	}
	return nil
}
