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
	"os"
	"os/signal"
	"strings"
	"syscall"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"

	"github.com/meshauth/meshauth/exchange"
	"github.com/meshauth/meshauth/internal/flagconf"
	"github.com/meshauth/meshauth/internal/grpcserve"
	"github.com/meshauth/meshauth/internal/natsconn"
	"github.com/meshauth/meshauth/jwks"
	"github.com/meshauth/meshauth/proxy"
	"github.com/meshauth/meshauth/token"
)

// trustedIssuer is one entry of the config file's "issuers" section: an
// issuer whose tokens this sidecar accepts, with its own settings.
type trustedIssuer struct {
	// Issuer is the exact "iss" of its tokens; its keys are found through its
	// metadata unless JWKSURL or JWKSFile is given.
	Issuer   string `yaml:"issuer"`
	JWKSURL  string `yaml:"jwks_url"`
	JWKSFile string `yaml:"jwks_file"`
	// Audiences accepted in "aud"; default the --audience flag.
	Audiences []string `yaml:"audiences"`
	// Types accepted in the "typ" header; default at+jwt (RFC 9068). "" in
	// the list accepts tokens without typ.
	Types []string `yaml:"types"`
	// SubjectPrefix qualifies the sub and client_id of its tokens
	// (token.Policy.SubjectPrefix); default none: its names are local.
	SubjectPrefix string `yaml:"subject_prefix"`
}

// sidecarFile is the structured part of the sidecar's config file: the
// trusted issuers, and the route policy (routes, default_scopes,
// forward_path, allow_encoded_slashes), which is reloaded while the
// sidecar runs.
type sidecarFile struct {
	Issuers []trustedIssuer `yaml:"issuers"`
	Policy  proxy.Policy    `yaml:",inline"`
}

type sidecarFlags struct {
	listen, upstream, audience   string
	trust                        flagconf.StringList
	jwksURL, jwksFile            string
	adminListen                  string
	extAuthzGRPC, extAuthzHTTP   string
	extAuthzHTTPPrefix           string
	forwardAuthPath              string
	cacheMiB, maxRevocations     int
	cacheMaxAge, upstreamTimeout time.Duration
	upstreamProtocol             string
	upstreamRetries              int
	maxRequestBody               int64
	forwardedHeaders             string
	trustedProxies               flagconf.StringList
	egress                       string
	egressRoutes, routeScopes    flagconf.StringList
	clientID, clientSecretFile   string
	tokenURL                     string
	nats                         natsconn.Flags
	snapshotInterval             time.Duration
	federation                   bool
	policyCheck                  time.Duration
	decisionLog                  bool
	decisionLogAllowed           float64
	grpc                         grpcserve.Limits
	log                          logFlags
	// configPath is the config file (--config), if any: the route policy
	// is read from it, and again when it changes.
	configPath string
}

// envClientSecret holds the sidecar's own client secret, for the egress.
const envClientSecret = "MESHAUTH_CLIENT_SECRET"

func (f *sidecarFlags) register(fs *flag.FlagSet) {
	fs.StringVar(&f.listen, "listen", ":8000", "address the sidecar proxy serves the service's inbound traffic on")
	fs.StringVar(&f.upstream, "upstream", "", "the service behind the sidecar, http://host:port (required)")
	fs.StringVar(&f.audience, "audience", "", "this service's audience name, its client id: tokens must name it in aud (required unless every config-file issuer lists audiences)")
	fs.Var(&f.trust, "trust", "issuer URL whose tokens are accepted; keys come from its metadata's jwks_uri (repeatable; per-issuer settings in the config file's issuers section)")
	fs.StringVar(&f.jwksURL, "jwks-url", "", "take the keys of the single --trust issuer from this JWKS URL instead of its metadata")
	fs.StringVar(&f.jwksFile, "jwks-file", "", "take the keys of the single --trust issuer from this JWK Set file instead of its metadata")
	fs.StringVar(&f.adminListen, "admin-listen", "127.0.0.1:9904", "address of the admin listener: /metrics, /healthz, /readyz (empty disables)")
	fs.StringVar(&f.extAuthzGRPC, "ext-authz-grpc", "", "also serve Envoy's ext_authz gRPC Check service on this address")
	fs.StringVar(&f.extAuthzHTTP, "ext-authz-http", "", "also serve Envoy's ext_authz HTTP mode on this address")
	fs.StringVar(&f.extAuthzHTTPPrefix, "ext-authz-http-prefix", "", "path_prefix configured in Envoy's ext_authz http_service, removed before route matching")
	fs.StringVar(&f.forwardAuthPath, "forward-auth-path", proxy.DefaultForwardAuthPath, "path on --listen answering nginx auth_request, Traefik ForwardAuth and Caddy forward_auth")
	fs.IntVar(&f.cacheMiB, "cache-size-mib", 64, "memory bound of the verified-token cache, in MiB (0 disables the cache)")
	fs.IntVar(&f.maxRevocations, "max-revocations", token.DefaultMaxRevocations, "revocations held at most (some 300 bytes each); beyond, the oldest are replaced by refusing every token issued before them until they would have expired")
	fs.DurationVar(&f.cacheMaxAge, "cache-max-age", 10*time.Minute, "longest a verified token is served from the cache (never past its exp)")
	fs.DurationVar(&f.upstreamTimeout, "upstream-timeout", proxy.DefaultUpstreamTimeout, "longest wait on the upstream, for a connection, the start of its answer or the next piece of a stream: then 504")
	fs.StringVar(&f.upstreamProtocol, "upstream-protocol", proxy.UpstreamAuto, "what the sidecar speaks to the upstream: auto (the caller's: HTTP/1.1, or h2c for HTTP/2 and gRPC callers), http1, or h2c (HTTP/2 with prior knowledge only, for gRPC servers)")
	fs.IntVar(&f.upstreamRetries, "upstream-retries", 0, "times an idempotent request is sent again when no connection to the upstream could be made (0: every request is sent once)")
	fs.Int64Var(&f.maxRequestBody, "max-request-body", proxy.DefaultMaxRequestBody, "largest request body, in bytes, streamed to the upstream; a larger one gets 413")
	fs.StringVar(&f.forwardedHeaders, "forwarded-headers", proxy.ForwardedXFF, "forwarded fields set for the upstream: xff (X-Forwarded-For, -Proto, -Host), rfc7239 (Forwarded) or none (the caller's passed as they came)")
	fs.Var(&f.trustedProxies, "trusted-proxy", "IP or CIDR of a proxy in front of the sidecar whose forwarded fields are kept and appended to; anyone else's are replaced (repeatable)")
	fs.StringVar(&f.egress, "egress", "", "serve the egress on this address (loopback only!): the service's outbound calls, whose token is exchanged for the callee's audience (RFC 8693)")
	fs.Var(&f.egressRoutes, "route", "NAME=URL: a service the egress can call; NAME is its audience (client id), URL its sidecar, http://host:port (repeatable)")
	fs.Var(&f.routeScopes, "route-scope", `NAME="SCOPES": the scope to request for route NAME (default: what the issuer's policy allows)`)
	fs.StringVar(&f.clientID, "client-id", "", "this sidecar's client id at the issuer, the exchanging client (default: --audience)")
	fs.StringVar(&f.clientSecretFile, "client-secret-file", "", "file holding this sidecar's client secret (or set "+envClientSecret+")")
	fs.StringVar(&f.tokenURL, "token-url", "", "the issuer's token endpoint for exchanges (default: from the first --trust issuer's metadata)")
	f.nats.Register(fs, "follow the trusted issuers' keys and revocations pushed over NATS, in milliseconds (their snapshot over HTTPS goes on as the source of truth)")
	registerSnapshotInterval(fs, &f.snapshotInterval)
	fs.BoolVar(&f.federation, "federation", true, "also trust the providers a trusted issuer federates, whose keys it relays (false: refuse relayed keys); their sub and client_id reach services qualified as PROVIDER#NAME")
	fs.DurationVar(&f.policyCheck, "policy-check-interval", proxy.DefaultPolicyCheckInterval, "how often the config file is read for a new route policy, applied if valid (SIGHUP also reloads it; negative: only SIGHUP)")
	fs.BoolVar(&f.decisionLog, "decision-log", true, "log one line per refused request (entry, route, outcome, reason, sub, client_id, a hash of jti; never the token)")
	fs.Float64Var(&f.decisionLogAllowed, "decision-log-allowed", 0, "with --decision-log, the share of allowed requests also logged, from 0 to 1")
	f.grpc = grpcserve.ExtAuthzLimits()
	f.grpc.Register(fs, "ext_authz gRPC server (--ext-authz-grpc)")
	f.log.register(fs)
}

func runSidecar(ctx context.Context, args []string, _ io.Writer) error {
	fs := flag.NewFlagSet("sidecar", flag.ContinueOnError)
	var f sidecarFlags
	f.register(fs)
	var file sidecarFile
	if err := flagconf.ParseWith(fs, args, nil, &file); err != nil {
		return err
	}
	f.configPath = fs.Lookup("config").Value.String()
	log, err := newLogger(f.log.level, f.log.format)
	if err != nil {
		return err
	}
	issuers, err := f.trustedIssuers(file.Issuers)
	if err != nil {
		return err
	}
	if f.upstream == "" {
		return errors.New("--upstream is required")
	}
	secret, err := secretFromEnvOrFile(envClientSecret, f.clientSecretFile, "client secret")
	if err != nil {
		return err
	}
	return serveSidecar(ctx, &f, issuers, file.Policy, secret, log, nil)
}

// trustedIssuers merges --trust flags with the config file's issuers.
func (f *sidecarFlags) trustedIssuers(fromFile []trustedIssuer) ([]trustedIssuer, error) {
	if (f.jwksURL != "" || f.jwksFile != "") && len(f.trust) != 1 {
		return nil, errors.New("--jwks-url and --jwks-file apply to exactly one --trust issuer; list several in the config file's issuers section")
	}
	if f.jwksURL != "" && f.jwksFile != "" {
		return nil, errors.New("give --jwks-url or --jwks-file, not both")
	}
	out := append([]trustedIssuer(nil), fromFile...)
	for _, iss := range f.trust {
		out = append(out, trustedIssuer{Issuer: iss, JWKSURL: f.jwksURL, JWKSFile: f.jwksFile})
	}
	if len(out) == 0 {
		return nil, errors.New("no trusted issuer: give --trust ISSUER_URL (or issuers in the config file)")
	}
	for i := range out {
		if out[i].Issuer == "" {
			return nil, fmt.Errorf("config file issuers[%d]: issuer is required", i)
		}
		if len(out[i].Audiences) == 0 {
			if f.audience == "" {
				return nil, fmt.Errorf("issuer %s: no audience: give --audience (this service's client id)", out[i].Issuer)
			}
			out[i].Audiences = []string{f.audience}
		}
	}
	return out, nil
}

// serveSidecar wires key sets, the verification core and the entry points,
// and serves until ctx is done. ready, if not nil, gets the bound address of
// the proxy listener. The route policy is read from f.configPath if set,
// else it is policy.
func serveSidecar(ctx context.Context, f *sidecarFlags, trusted []trustedIssuer, policy proxy.Policy, clientSecret string, log *slog.Logger, ready func(addr string)) error {
	reg := prometheus.NewRegistry()
	reg.MustRegister(collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	rules, stopPolicy, err := f.routePolicy(policy, reg, log)
	if err != nil {
		return err
	}
	defer stopPolicy()

	keysCtx, stopKeys := context.WithCancel(ctx)
	defer stopKeys()
	var issuers []token.Issuer
	keySets := &trustedKeys{reg: reg}
	for _, t := range trusted {
		ksc := jwks.KeySetConfig{Logger: log.With("issuer", t.Issuer)}
		switch {
		case t.JWKSURL != "":
			ksc.JWKSURL = t.JWKSURL
		case t.JWKSFile != "":
			ksc.JWKSFile = t.JWKSFile
		default:
			ksc.Issuer = t.Issuer
		}
		keys, err := jwks.NewKeySetCache(ksc)
		if err != nil {
			return fmt.Errorf("keys of %s: %w", t.Issuer, err)
		}
		keys.Start(keysCtx)
		issuers = append(issuers, token.Issuer{Policy: token.Policy{Issuer: t.Issuer, Audiences: t.Audiences, Types: t.Types, SubjectPrefix: t.SubjectPrefix}, Keys: keys})
		keySets.add(t.Issuer, keys, true)
	}
	opts := token.AuthenticatorOptions{MaxRevocations: f.maxRevocations}
	if f.cacheMiB > 0 {
		cache, err := token.NewCache(token.CacheConfig{MaxBytes: f.cacheMiB << 20, MaxAge: f.cacheMaxAge})
		if err != nil {
			return fmt.Errorf("verified-token cache: %w", err)
		}
		registerCacheMetrics(reg, cache)
		opts.Cache = cache
	}
	auth, err := token.NewAuthenticator(issuers, opts)
	if err != nil {
		return err
	}
	registerRevocationMetrics(reg, auth)
	// The egress caches tokens obtained with inbound ones: it takes the
	// same revocations as the verifier.
	revoked := &token.RevocationSinks{}
	revoked.Add(auth.Revoke)
	var eg *proxy.Egress
	if f.egress != "" {
		if eg, err = newEgress(ctx, f, trusted[0].Issuer, clientSecret, reg, log); err != nil {
			return err
		}
		revoked.Add(eg.Evict)
	}
	if err := followIssuers(keysCtx, f, trusted, keySets, auth, revoked, reg, log); err != nil {
		return err
	}
	metrics, err := proxy.NewMetrics(reg)
	if err != nil {
		return err
	}
	cfg := proxy.Config{Verifier: auth, Rules: rules, Logger: log, Metrics: metrics}
	if f.decisionLog {
		cfg.Decisions, err = proxy.NewDecisionLog(proxy.DecisionLogConfig{Logger: log, AllowedRate: f.decisionLogAllowed, Registerer: reg})
		if err != nil {
			return fmt.Errorf("--decision-log-allowed: %w", err)
		}
		defer cfg.Decisions.Close() // after the servers: what they queued is written
	}
	trustedProxies, err := parseTrustedProxies(f.trustedProxies)
	if err != nil {
		return err
	}
	sidecar, err := proxy.NewSidecar(proxy.SidecarConfig{Config: cfg, Upstream: f.upstream, ForwardAuthPath: f.forwardAuthPath,
		UpstreamTimeout: f.upstreamTimeout, UpstreamProtocol: f.upstreamProtocol, UpstreamRetries: f.upstreamRetries,
		MaxRequestBody: f.maxRequestBody, ForwardedHeaders: f.forwardedHeaders, TrustedProxies: trustedProxies})
	if err != nil {
		return fmt.Errorf("sidecar: %w", err)
	}

	// Every listener is bound before anything is served, so a taken port
	// fails the start instead of leaving a half-running sidecar; the ones
	// bound by then are closed.
	var servers []func() error
	var stops []func(context.Context) error
	var bound []net.Listener
	serving := false
	defer func() {
		if !serving {
			for _, l := range bound {
				l.Close()
			}
		}
	}()
	listen := func(addr string) (net.Listener, error) {
		l, err := net.Listen("tcp", addr)
		if err != nil {
			return nil, fmt.Errorf("listen on %s: %w", addr, err)
		}
		bound = append(bound, l)
		return l, nil
	}
	ln, err := listen(f.listen)
	if err != nil {
		return err
	}
	servers = append(servers, func() error { return sidecar.Serve(ln) })
	stops = append(stops, sidecar.Shutdown)

	if f.adminListen != "" {
		aln, err := listen(f.adminListen)
		if err != nil {
			return err
		}
		admin := &http.Server{Handler: proxy.NewAdminHandlerWithStatus(reg, keySets.ready, keySets.status), ReadHeaderTimeout: 5 * time.Second}
		servers = append(servers, func() error { return admin.Serve(aln) })
		stops = append(stops, admin.Shutdown)
	}
	if f.extAuthzGRPC != "" {
		gln, err := listen(f.extAuthzGRPC)
		if err != nil {
			return err
		}
		ea, err := proxy.NewExtAuthzServer(cfg)
		if err != nil {
			return err
		}
		gs, err := grpcserve.New("ext_authz", f.grpc, reg)
		if err != nil {
			return err
		}
		ea.Register(gs.Server)
		servers = append(servers, func() error { return gs.Serve(gln) })
		stops = append(stops, func(context.Context) error { gs.GracefulStop(); return nil })
	}
	if f.extAuthzHTTP != "" {
		hln, err := listen(f.extAuthzHTTP)
		if err != nil {
			return err
		}
		ea, err := proxy.NewExtAuthzHTTP(cfg, f.extAuthzHTTPPrefix)
		if err != nil {
			return err
		}
		servers = append(servers, func() error { return ea.Serve(hln) })
		stops = append(stops, ea.Shutdown)
	}

	if eg != nil {
		eln, err := listen(f.egress)
		if err != nil {
			return err
		}
		servers = append(servers, func() error { return eg.Serve(eln) })
		stops = append(stops, eg.Shutdown)
	}

	serving = true
	return serveUntilDone(ctx, servers, stops, log, func() {
		log.Info("sidecar serving", "listen", ln.Addr().String(), "upstream", f.upstream, "issuers", len(trusted),
			"admin", f.adminListen, "ext_authz_grpc", f.extAuthzGRPC, "ext_authz_http", f.extAuthzHTTP, "egress", f.egress)
		if ready != nil {
			ready(ln.Addr().String())
		}
	})
}

// routePolicy returns the rules of the route policy and a function that
// stops following it: with a config file, the file's, reloaded on SIGHUP
// and when it changes; else policy's, fixed.
func (f *sidecarFlags) routePolicy(policy proxy.Policy, reg prometheus.Registerer, log *slog.Logger) (*proxy.Rules, func(), error) {
	if f.configPath == "" {
		rules, err := proxy.NewRules(policy)
		if err != nil {
			return nil, nil, fmt.Errorf("route policy: %w", err)
		}
		return rules, func() {}, nil
	}
	hup := make(chan os.Signal, 1)
	signal.Notify(hup, syscall.SIGHUP)
	pf, err := proxy.NewPolicyFile(proxy.PolicyFileConfig{Path: f.configPath, Parse: sidecarPolicy(f.configPath), Interval: f.policyCheck,
		Signals: hup, Logger: log, Registerer: reg})
	if err != nil {
		signal.Stop(hup)
		return nil, nil, err
	}
	pf.Start()
	return pf.Rules(), func() { pf.Stop(); signal.Stop(hup) }, nil
}

// sidecarPolicy reads the route policy from the sidecar's config file at
// path, as strictly as the start does.
func sidecarPolicy(path string) func([]byte) (proxy.Policy, error) {
	return func(data []byte) (proxy.Policy, error) {
		fs := flag.NewFlagSet("sidecar", flag.ContinueOnError)
		new(sidecarFlags).register(fs)
		var file sidecarFile
		if err := flagconf.DecodeSections(path, data, fs, &file); err != nil {
			return proxy.Policy{}, err
		}
		return file.Policy, nil
	}
}

func registerKeySetMetrics(reg prometheus.Registerer, issuer string, keys *jwks.KeySetCache) {
	labels := prometheus.Labels{"issuer": issuer}
	reg.MustRegister(
		prometheus.NewGaugeFunc(prometheus.GaugeOpts{Name: "meshauth_keyset_age_seconds", Help: "Age of the trusted issuer's key set.", ConstLabels: labels},
			func() float64 { return keys.Status().Age.Seconds() }),
		prometheus.NewGaugeFunc(prometheus.GaugeOpts{Name: "meshauth_keyset_keys", Help: "Keys in the trusted issuer's key set.", ConstLabels: labels},
			func() float64 { return float64(keys.Status().Keys) }),
		prometheus.NewCounterFunc(prometheus.CounterOpts{Name: "meshauth_keyset_fetches_total", Help: "Key set fetches from the issuer.", ConstLabels: labels},
			func() float64 { return float64(keys.Status().Fetches) }),
		newKeySourceCollector(issuer, keys),
	)
}

func registerCacheMetrics(reg prometheus.Registerer, cache *token.Cache) {
	reg.MustRegister(
		prometheus.NewCounterFunc(prometheus.CounterOpts{Name: "meshauth_token_cache_hits_total", Help: "Tokens served from the verified-token cache."},
			func() float64 { return float64(cache.Stats().Hits) }),
		prometheus.NewCounterFunc(prometheus.CounterOpts{Name: "meshauth_token_cache_misses_total", Help: "Tokens verified in full."},
			func() float64 { return float64(cache.Stats().Misses) }),
		prometheus.NewGaugeFunc(prometheus.GaugeOpts{Name: "meshauth_token_cache_entries", Help: "Entries in the verified-token cache."},
			func() float64 { return float64(cache.Stats().Entries) }),
	)
}

func registerRevocationMetrics(reg prometheus.Registerer, auth *token.Authenticator) {
	reg.MustRegister(
		prometheus.NewGaugeFunc(prometheus.GaugeOpts{Name: "meshauth_revocations", Help: "Revocations held by the verifier."},
			func() float64 { return float64(auth.RevocationStats().Entries) }),
		prometheus.NewCounterFunc(prometheus.CounterOpts{Name: "meshauth_revoked_tokens_total", Help: "Verifications refused because the token was revoked."},
			func() float64 { return float64(auth.RevocationStats().Refused) }),
		prometheus.NewCounterFunc(prometheus.CounterOpts{Name: "meshauth_revocations_forgotten_total", Help: "Revocations dropped beyond --max-revocations, replaced by refusing every token issued before them."},
			func() float64 { return float64(auth.RevocationStats().Forgotten) }),
	)
}

// newEgress builds the egress: routes from --route, tokens from the issuer
// with this sidecar's own client credentials.
func newEgress(ctx context.Context, f *sidecarFlags, issuerURL, secret string, reg prometheus.Registerer, log *slog.Logger) (*proxy.Egress, error) {
	routes, err := splitPairs(f.egressRoutes, "--route", "NAME=URL")
	if err != nil {
		return nil, err
	}
	if len(routes) == 0 {
		return nil, errors.New("--egress needs at least one --route NAME=URL")
	}
	scopes, err := splitPairs(f.routeScopes, "--route-scope", `NAME="SCOPES"`)
	if err != nil {
		return nil, err
	}
	clientID := f.clientID
	if clientID == "" {
		clientID = f.audience
	}
	if clientID == "" || secret == "" {
		return nil, errors.New("--egress needs this sidecar's client credentials: --client-id (default --audience) and " + envClientSecret + " or --client-secret-file")
	}
	tokenURL, err := tokenEndpoint(ctx, f.tokenURL, issuerURL)
	if err != nil {
		return nil, fmt.Errorf("egress: %w", err)
	}
	client, err := exchange.NewClient(exchange.ClientConfig{TokenURL: tokenURL, ClientID: clientID, ClientSecret: secret, Logger: log})
	if err != nil {
		return nil, fmt.Errorf("egress: %w", err)
	}
	metrics, err := proxy.NewEgressMetrics(reg)
	if err != nil {
		return nil, err
	}
	return proxy.NewEgress(proxy.EgressConfig{Routes: routes, Scopes: scopes, Exchanger: client, Logger: log, Metrics: metrics, UpstreamTimeout: f.upstreamTimeout})
}

// splitPairs parses repeated NAME=VALUE flag values.
func splitPairs(values []string, flagName, form string) (map[string]string, error) {
	out := make(map[string]string, len(values))
	for _, v := range values {
		name, value, ok := strings.Cut(v, "=")
		if !ok || name == "" || value == "" {
			return nil, fmt.Errorf("%s %q: use %s", flagName, v, form)
		}
		if _, dup := out[name]; dup {
			return nil, fmt.Errorf("%s: %s given twice", flagName, name)
		}
		out[name] = value
	}
	return out, nil
}
