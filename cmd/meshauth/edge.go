package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"

	"github.com/meshauth/meshauth/exchange"
	"github.com/meshauth/meshauth/internal/flagconf"
	"github.com/meshauth/meshauth/internal/natsconn"
	"github.com/meshauth/meshauth/jwks"
	"github.com/meshauth/meshauth/proxy"
	"github.com/meshauth/meshauth/token"
)

type edgeFlags struct {
	listen, upstream, issuer, audience string
	clientID, clientSecretFile         string
	tokenURL, subjectIssuer            string
	adminListen                        string
	acceptInternalJWT                  bool
	cacheMiB                           int
	maxCacheLifetime                   time.Duration
	negativeLifetime                   time.Duration
	negativeEntries                    int
	dereferenceRate                    float64
	dereferenceBurst                   int
	rateLimitedAddresses               int
	trustedProxies                     flagconf.StringList
	dereferenceTimeout                 time.Duration
	upstreamTimeout                    time.Duration
	nats                               natsconn.Flags
	snapshotInterval                   time.Duration
	log                                logFlags
}

func (f *edgeFlags) register(fs *flag.FlagSet) {
	fs.StringVar(&f.listen, "listen", ":8080", "address the edge serves Internet clients on")
	fs.StringVar(&f.upstream, "upstream", "", "what the edge protects, http://host:port: usually the service's sidecar (required)")
	fs.StringVar(&f.issuer, "issuer", "", "the issuer URL: it dereferences the reference tokens and its keys verify the internal JWTs (required)")
	fs.StringVar(&f.audience, "audience", "", "the upstream's audience (its client id): internal JWTs are minted for it alone (required)")
	fs.StringVar(&f.clientID, "client-id", "", "the edge's client id at the issuer, registered with scope dereference and the token-exchange grant (required)")
	fs.StringVar(&f.clientSecretFile, "client-secret-file", "", "file holding the edge's client secret (or set "+envClientSecret+")")
	fs.StringVar(&f.tokenURL, "token-url", "", "the issuer's token endpoint (default: from the issuer's metadata)")
	fs.StringVar(&f.subjectIssuer, "subject-issuer", "", "the reference tokens are this other authorization server's, configured at the issuer under foreign_issuers: the issuer introspects them there (RFC 7662) and mints the JWTs")
	fs.StringVar(&f.adminListen, "admin-listen", "127.0.0.1:9902", "address of the admin listener: /metrics, /healthz, /readyz (empty disables)")
	fs.BoolVar(&f.acceptInternalJWT, "accept-internal-jwt", false, "let requests that carry an internal JWT through, verified; by default they are refused")
	fs.IntVar(&f.cacheMiB, "cache-size-mib", 64, "memory bound of the dereference cache, in MiB")
	fs.DurationVar(&f.maxCacheLifetime, "max-cache-lifetime", proxy.DefaultMaxCacheLifetime, "longest a dereference is served from the cache: how long a revoked reference token still passes without revocation events")
	fs.DurationVar(&f.negativeLifetime, "negative-cache-lifetime", proxy.DefaultNegativeLifetime, "how long a reference token the issuer refused is refused without asking again")
	fs.IntVar(&f.negativeEntries, "negative-cache-entries", proxy.DefaultNegativeSlots, "refused reference tokens remembered at most")
	fs.Float64Var(&f.dereferenceRate, "dereference-rate", proxy.DefaultDereferenceRate, "dereferences per second each client address may cause (cache hits are free)")
	fs.IntVar(&f.dereferenceBurst, "dereference-burst", proxy.DefaultDereferenceBurst, "dereferences a client address may cause at once")
	fs.IntVar(&f.rateLimitedAddresses, "rate-limited-addresses", proxy.DefaultRateLimitedAddresses, "client addresses the rate limit tracks at most")
	fs.Var(&f.trustedProxies, "trusted-proxy", "IP or CIDR of a proxy in front of the edge whose X-Forwarded-For names the client address (repeatable)")
	fs.DurationVar(&f.dereferenceTimeout, "dereference-timeout", proxy.DefaultDereferenceWait, "bound on a dereference at the issuer; a request waiting longer gets 503")
	fs.DurationVar(&f.upstreamTimeout, "upstream-timeout", proxy.DefaultUpstreamTimeout, "bound on writing a request to the upstream and reading its answer")
	f.nats.Register(fs, "follow the issuer's keys and revocations pushed over NATS: a revocation evicts the cached dereferences it reaches in milliseconds (the issuer's snapshot, polled, stays the source of truth)")
	registerSnapshotInterval(fs, &f.snapshotInterval)
	f.log.register(fs)
}

func runEdge(ctx context.Context, args []string, _ io.Writer) error {
	fs := flag.NewFlagSet("edge", flag.ContinueOnError)
	var f edgeFlags
	f.register(fs)
	if err := flagconf.Parse(fs, args, nil); err != nil {
		return err
	}
	log, err := newLogger(f.log.level, f.log.format)
	if err != nil {
		return err
	}
	switch {
	case f.upstream == "":
		return errors.New("--upstream is required")
	case f.issuer == "":
		return errors.New("--issuer is required")
	case f.audience == "":
		return errors.New("--audience is required: the upstream's client id")
	case f.clientID == "":
		return errors.New("--client-id is required: the edge's client id at the issuer")
	}
	secret, err := secretFromEnvOrFile(envClientSecret, f.clientSecretFile, "client secret")
	if err != nil {
		return err
	}
	if secret == "" {
		return errors.New("the edge's client secret is required: set " + envClientSecret + " or --client-secret-file")
	}
	return serveEdge(ctx, &f, secret, log, nil)
}

// serveEdge wires the edge and serves until ctx is done. ready, if not
// nil, gets the edge's bound address and the Edge, whose Evict the
// revocation events reach.
func serveEdge(ctx context.Context, f *edgeFlags, secret string, log *slog.Logger, ready func(addr string, e *proxy.Edge)) error {
	trusted, err := parseTrustedProxies(f.trustedProxies)
	if err != nil {
		return err
	}
	tokenURL, err := tokenEndpoint(ctx, f.tokenURL, f.issuer)
	if err != nil {
		return fmt.Errorf("edge: %w", err)
	}
	client, err := exchange.NewClient(exchange.ClientConfig{TokenURL: tokenURL, ClientID: f.clientID, ClientSecret: secret, Timeout: f.dereferenceTimeout,
		SubjectIssuer: f.subjectIssuer, Logger: log})
	if err != nil {
		return fmt.Errorf("edge: %w", err)
	}

	keysCtx, stopKeys := context.WithCancel(ctx)
	defer stopKeys()
	keys, err := jwks.NewKeySetCache(jwks.KeySetConfig{Issuer: f.issuer, Logger: log.With("issuer", f.issuer)})
	if err != nil {
		return fmt.Errorf("keys of %s: %w", f.issuer, err)
	}
	keys.Start(keysCtx)
	reg := prometheus.NewRegistry()
	reg.MustRegister(collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	keySets := &trustedKeys{reg: reg}
	keySets.add(f.issuer, keys, true)
	// The issuer's internal JWTs, for the upstream's audience: those it
	// returns, and, with --accept-internal-jwt, those clients send.
	auth, err := token.NewAuthenticator([]token.Issuer{{Policy: token.Policy{Issuer: f.issuer, Audiences: []string{f.audience}}, Keys: keys}}, token.AuthenticatorOptions{})
	if err != nil {
		return err
	}

	registerRevocationMetrics(reg, auth)
	edge, err := proxy.NewEdge(proxy.EdgeConfig{
		Upstream: f.upstream, Audience: f.audience, Dereferencer: client, Verifier: auth,
		AcceptInternalJWT: f.acceptInternalJWT, CacheBytes: f.cacheMiB << 20, MaxCacheLifetime: f.maxCacheLifetime,
		NegativeLifetime: f.negativeLifetime, NegativeSlots: f.negativeEntries,
		DereferenceRate: f.dereferenceRate, DereferenceBurst: f.dereferenceBurst, RateLimitedAddresses: f.rateLimitedAddresses,
		TrustedProxies: trusted, DereferenceWait: f.dereferenceTimeout, UpstreamTimeout: f.upstreamTimeout,
		Logger: log, Registerer: reg,
	})
	if err != nil {
		return err
	}

	fl, err := newFollower(keysCtx, &f.nats, f.snapshotInterval, "meshauth edge "+f.audience, reg, log)
	if err != nil {
		return err
	}
	// The verifier refuses the JWT of a dereference in flight too, which
	// the eviction might miss.
	revoked := &token.RevocationSinks{}
	revoked.Add(auth.Revoke)
	revoked.Add(edge.Evict)
	sub, err := fl.follow(keysCtx, f.issuer, keys, nil, revoked.Revoke)
	if err != nil {
		return err
	}
	keySets.follow(map[string]*jwks.Subscriber{f.issuer: sub})

	// Both listeners are bound before anything is served, so a taken port
	// fails the start.
	ln, err := net.Listen("tcp", f.listen)
	if err != nil {
		return fmt.Errorf("listen on %s: %w", f.listen, err)
	}
	servers := []func() error{func() error { return edge.Serve(ln) }}
	stops := []func(context.Context) error{edge.Shutdown}
	if f.adminListen != "" {
		aln, err := net.Listen("tcp", f.adminListen)
		if err != nil {
			ln.Close()
			return fmt.Errorf("listen on %s: %w", f.adminListen, err)
		}
		admin := &http.Server{Handler: proxy.NewAdminHandlerWithStatus(reg, keySets.ready, keySets.status), ReadHeaderTimeout: 5 * time.Second}
		servers = append(servers, func() error { return admin.Serve(aln) })
		stops = append(stops, admin.Shutdown)
	}
	log.Info("edge serving", "listen", ln.Addr().String(), "upstream", f.upstream, "issuer", f.issuer, "audience", f.audience, "admin", f.adminListen)
	return serveUntilDone(ctx, servers, stops, log, func() {
		if ready != nil {
			ready(ln.Addr().String(), edge)
		}
	})
}

// parseTrustedProxies reads --trust-proxy values: CIDRs or single IPs.
func parseTrustedProxies(values []string) ([]*net.IPNet, error) {
	var out []*net.IPNet
	for _, v := range values {
		if _, n, err := net.ParseCIDR(v); err == nil {
			out = append(out, n)
			continue
		}
		ip := net.ParseIP(v)
		if ip == nil {
			return nil, fmt.Errorf("--trusted-proxy %q: not an IP address or CIDR", v)
		}
		bits := 8 * len(ip)
		if v4 := ip.To4(); v4 != nil {
			ip, bits = v4, 32
		}
		out = append(out, &net.IPNet{IP: ip, Mask: net.CIDRMask(bits, bits)})
	}
	return out, nil
}
