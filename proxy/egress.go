package proxy

import (
	"bytes"
	"cmp"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/url"
	"strings"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/valyala/fasthttp"

	"github.com/meshauth/meshauth/exchange"
	"github.com/meshauth/meshauth/internal/ratelog"
	"github.com/meshauth/meshauth/token"
)

// Exchanger obtains the tokens the Egress sends; *exchange.Client is one.
// Its errors are read as exchange.Client's: a *exchange.RefusedError is the
// issuer's refusal, one wrapping exchange.ErrUnavailable an issuer that did
// not answer.
type Exchanger interface {
	// Exchange trades subjectToken, the token of the request the service
	// is serving, for one whose audience is audience (RFC 8693). It reads
	// subjectToken during the call only: it is the request's buffer.
	Exchange(ctx context.Context, subjectToken []byte, audience, scope string) (exchange.Token, error)
	// ClientCredentials returns the service's own token for audience
	// (RFC 6749 §4.4).
	ClientCredentials(ctx context.Context, audience, scope string) (exchange.Token, error)
	// Evict drops the tokens it keeps that revocation r names, whether r
	// names the token or the subject token it was exchanged for, and
	// returns how many.
	Evict(r token.Revocation) int
}

// EgressConfig configures an Egress.
type EgressConfig struct {
	// Routes maps the name of each service the local one may call, its
	// audience and so its client id, to its base URL,
	// "http://host:port" or "https://host[:port]": usually the address of
	// that service's sidecar. A name is letters, digits, '-', '.' and
	// '_', starting with a letter or digit; names are matched without
	// regard to case.
	Routes map[string]string
	// Scopes optionally gives, by route name, the scope to request for
	// that route. Without one the issuer grants what its policy allows.
	Scopes map[string]string
	// Exchanger obtains the tokens; required.
	Exchanger Exchanger
	// Logger receives refusals (at debug level) and failures; nil
	// discards them.
	Logger *slog.Logger
	// Metrics, if not nil, counts every request.
	Metrics *EgressMetrics
	// UpstreamTimeout bounds writing a request to a route's service and
	// reading its response; 0 means DefaultUpstreamTimeout.
	UpstreamTimeout time.Duration
}

// Egress is the sidecar's outbound side. The service sends its calls to
// other services through it, with the token of the request it is serving,
// if any, in Authorization; the Egress obtains a token for the service
// called and forwards the call with that token instead. The caller's token
// never leaves: a token stolen from the next hop is good for that hop
// only (docs/design.md, "least privilege per hop").
//
// Listen on loopback (or the pod's own network namespace) only: whoever
// reaches the Egress obtains tokens with the sidecar's client credentials.
//
// The route is chosen, in order:
//
//  1. An absolute-form request target (RFC 9112 §3.2.2), as sent to a
//     forward proxy (HTTP_PROXY): "GET http://payments/charge" goes to
//     route payments, whatever the Host field says. Its host must name a
//     route. CONNECT is refused with 405: inside a tunnel the token could
//     not be replaced; call http://NAME/ and give the route an https URL.
//  2. A Host field naming a route: "Host: payments".
//  3. A path whose first segment names a route: "/payments/charge" goes
//     to route payments as "/charge".
//
// The port of a host is ignored: the route's URL says where it goes. No
// route: 404. The request then goes to the route's URL with its path
// (percent-decoded, dot segments removed, re-encoded, as the Sidecar
// forwards paths) and query, whatever routing form was used. Since the
// token requested is always for the route the request goes to, a request
// that reaches another route than its sender meant still carries a token
// good for that route only.
//
// The token: with a Bearer token in Authorization, Exchange(token, route
// name, route scope); with no Authorization field, ClientCredentials(route
// name, route scope). Another scheme, a malformed field, several fields or
// an access_token in the query (RFC 6750 §2.3) are refused with 400
// invalid_request: each would either forward a credential or silently
// change on whose behalf the call is made.
//
// Failures to obtain a token are answered without calling the route, with
// a JSON body {"error", "error_description"}:
//
//   - The issuer refused: its RFC 6749 §5.2 code and description, so that
//     the calling service learns why, with 401 and WWW-Authenticate:
//     Bearer error="invalid_token" if the code is invalid_grant (the
//     inbound token is invalid, expired, or may not be exchanged by this
//     service: the caller's credential is the problem), else 403
//     (invalid_target, invalid_scope: the call is not allowed; also
//     invalid_client, which the Egress logs as an error, since it means
//     the sidecar's own credentials were refused).
//   - The issuer did not answer (exchange.ErrUnavailable): 503 with
//     Retry-After: 5 and temporarily_unavailable.
//   - The issuer's answer was not understood: 502 bad_gateway.
//
// Tokens are cached by the Exchanger; Evict drops those a revocation names,
// so that a revoked inbound token is no longer forwarded as the token
// obtained for it.
//
// Forwarded requests lose their hop-by-hop fields (RFC 9110 §7.6.1) and
// any X-Meshauth-* field: identity fields are for the next sidecar to set.
// A route's service that cannot be reached gives 502 bad_gateway; its
// answers are relayed without their hop-by-hop fields.
type Egress struct {
	routes    map[string]*egressRoute // by lower-case name
	none      *egressRoute            // counts the requests that match no route
	x         Exchanger
	log       *slog.Logger
	server    *proxyServer
	evictions prometheus.Counter // nil without metrics
}

// egressRoute is a destination of the Egress.
type egressRoute struct {
	name  string // the audience requested
	scope string
	base  string // scheme://host[:port], before the path of a request
	*forwarder
	counts [numEgressOutcomes]prometheus.Counter // nil without metrics
}

// NewEgress returns an Egress; call Serve to start it.
func NewEgress(cfg EgressConfig) (*Egress, error) {
	if cfg.Exchanger == nil {
		return nil, errors.New("proxy: egress: no exchanger")
	}
	if len(cfg.Routes) == 0 {
		return nil, errors.New("proxy: egress: no routes")
	}
	e := &Egress{routes: make(map[string]*egressRoute, len(cfg.Routes)), none: &egressRoute{}, x: cfg.Exchanger, log: cfg.Logger}
	if e.log == nil {
		e.log = slog.New(slog.DiscardHandler)
	}
	e.log = ratelog.New(e.log) // what the service's calls cause, bounded
	timeout := cmp.Or(cfg.UpstreamTimeout, DefaultUpstreamTimeout)
	conns := newConnTracker()
	for name, raw := range cfg.Routes {
		if !routeName(name) {
			return nil, fmt.Errorf("proxy: egress route name %q: want letters, digits, '-', '.' and '_', starting with a letter or digit", name)
		}
		key := strings.ToLower(name)
		if _, dup := e.routes[key]; dup {
			return nil, fmt.Errorf("proxy: egress route names differ only in case: %q", name)
		}
		base, addr, tls, err := routeURL(raw)
		if err != nil {
			return nil, fmt.Errorf("proxy: egress route %q: %w", name, err)
		}
		scope := cfg.Scopes[name]
		if !scopeSyntax(scope) {
			return nil, fmt.Errorf("proxy: egress route %q: scope %q is not space-separated scope tokens (RFC 6749 §3.3)", name, scope)
		}
		r := &egressRoute{name: name, scope: scope, base: base}
		r.forwarder = newForwarder(upstreamConfig{addr: addr, tls: tls, maxConns: DefaultMaxConns, timeout: timeout,
			forwarded: forwarding{mode: forwardNone}, conns: conns}, e.log.With("route", name))
		if m := cfg.Metrics; m != nil {
			for o := range numEgressOutcomes {
				r.counts[o] = m.requests.WithLabelValues(name, egressOutcomeNames[o])
			}
		}
		e.routes[key] = r
	}
	for name := range cfg.Scopes {
		if _, ok := cfg.Routes[name]; !ok {
			return nil, fmt.Errorf("proxy: egress scope for %q, which is not a route", name)
		}
	}
	if m := cfg.Metrics; m != nil {
		for _, o := range []egressOutcome{egressBadRequest, egressUnknownRoute} {
			e.none.counts[o] = m.requests.WithLabelValues("", egressOutcomeNames[o])
		}
		e.evictions = m.evictions
	}
	e.server = newProxyServer(e.serve, nil, conns, e.log)
	return e, nil
}

// routeName reports whether name can name a route: it must be usable as a
// host name and a path segment as it is.
func routeName(name string) bool {
	if name == "" || len(name) > 253 || !isAlnum(name[0]) {
		return false
	}
	for i := 1; i < len(name); i++ {
		if c := name[i]; !isAlnum(c) && c != '-' && c != '.' && c != '_' {
			return false
		}
	}
	return true
}

func isAlnum(c byte) bool {
	return 'a' <= c && c <= 'z' || 'A' <= c && c <= 'Z' || '0' <= c && c <= '9'
}

// routeURL checks a route's URL and returns the scheme and authority to
// put before a path, the host:port to dial, and whether to use TLS.
func routeURL(raw string) (base, addr string, tls bool, err error) {
	u, err := url.Parse(raw)
	if err != nil {
		return "", "", false, err
	}
	if (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" || u.Opaque != "" ||
		(u.Path != "" && u.Path != "/") || u.RawQuery != "" || u.Fragment != "" || u.User != nil {
		return "", "", false, fmt.Errorf("%q is not of the form http(s)://host[:port]", raw)
	}
	tls = u.Scheme == "https"
	port := u.Port()
	switch {
	case port != "":
	case tls:
		port = "443"
	default:
		port = "80"
	}
	return u.Scheme + "://" + u.Host, net.JoinHostPort(u.Hostname(), port), tls, nil
}

// scopeSyntax reports whether s is empty or scope-tokens of NQCHAR
// separated by single spaces (RFC 6749 §3.3).
func scopeSyntax(s string) bool {
	if s == "" {
		return true
	}
	for tok := range strings.SplitSeq(s, " ") {
		if tok == "" || strings.ContainsFunc(tok, func(r rune) bool {
			return r != 0x21 && (r < 0x23 || r > 0x5b) && (r < 0x5d || r > 0x7e)
		}) {
			return false
		}
	}
	return true
}

// Serve accepts connections on ln until Shutdown. It returns nil after
// Shutdown.
func (e *Egress) Serve(ln net.Listener) error {
	return e.server.Serve(ln)
}

// Shutdown stops accepting connections and waits until the requests in
// flight are answered or ctx is done. Call it once Serve has started.
func (e *Egress) Shutdown(ctx context.Context) error {
	err := e.server.Shutdown(ctx)
	for _, r := range e.routes {
		r.client.CloseIdleConnections()
	}
	return err
}

// Drain makes every answer the last of its connection while the listener
// keeps accepting; see Sidecar.Drain.
func (e *Egress) Drain() { e.server.Drain() }

// Evict drops the cached tokens that revocation r names, by their own
// identity or by that of the inbound token they were obtained for, at
// once: give it the revocations the sidecar receives. Without it a revoked
// inbound token is forwarded, as its exchanged token, until that token
// nears its expiry.
func (e *Egress) Evict(r token.Revocation) {
	n := e.x.Evict(r)
	if e.evictions != nil {
		e.evictions.Add(float64(n))
	}
}

// egressOutcome names what became of a request, for the metrics.
type egressOutcome uint8

const (
	egressExchanged         egressOutcome = iota // forwarded with an exchanged token
	egressClientCredentials                      // forwarded with the service's own token
	egressBadRequest                             // refused: 400 or 405
	egressUnknownRoute                           // 404
	egressRefused                                // the issuer refused: 401 or 403
	egressUnavailable                            // the issuer did not answer: 503
	egressBadExchange                            // the issuer's answer was not understood: 502
	egressUpstream                               // the route's service could not be reached: 502
	numEgressOutcomes
)

var egressOutcomeNames = [numEgressOutcomes]string{
	"exchanged", "client_credentials", "bad_request", "unknown_route",
	"refused", "unavailable", "bad_exchange", "upstream",
}

// EgressMetrics count the Egress's requests:
// meshauth_egress_requests_total{route, outcome}, where route is the route
// name ("" when none matched) and outcome one of exchanged,
// client_credentials (both forwarded), bad_request, unknown_route,
// refused, unavailable, bad_exchange and upstream; and the cached tokens
// Evict dropped: meshauth_egress_revocation_evictions_total.
type EgressMetrics struct {
	requests  *prometheus.CounterVec
	evictions prometheus.Counter
}

// NewEgressMetrics registers the metrics with reg.
func NewEgressMetrics(reg prometheus.Registerer) (*EgressMetrics, error) {
	requests := prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "meshauth_egress_requests_total",
		Help: "Outbound requests through the egress, by route and outcome.",
	}, []string{"route", "outcome"})
	evictions := prometheus.NewCounter(prometheus.CounterOpts{
		Name: "meshauth_egress_revocation_evictions_total",
		Help: "Cached egress tokens dropped by revocation events.",
	})
	for _, c := range []prometheus.Collector{requests, evictions} {
		if err := reg.Register(c); err != nil {
			return nil, fmt.Errorf("proxy: registering egress metrics: %w", err)
		}
	}
	return &EgressMetrics{requests: requests, evictions: evictions}, nil
}

// The Egress's fixed answers.
var (
	egressNoRoute    = egressVerdict(404, "", "unknown_route", "no egress route matches this request")
	egressConnect    = egressVerdict(405, "", "invalid_request", "CONNECT is not supported: send http://NAME/... through the egress")
	egressMalformed  = egressVerdict(400, "", "invalid_request", "malformed Authorization header: want Bearer and a token, or none")
	egressMultiple   = egressVerdict(400, "", "invalid_request", "more than one Authorization header")
	egressQueryToken = egressVerdict(400, "", "invalid_request", "access_token in the query is not supported")
	egressNoIssuer   = egressVerdict(503, "", "temporarily_unavailable", "the authorization server is unavailable; retry later")
	egressBadIssuer  = egressVerdict(502, "", "bad_gateway", "the authorization server's answer was not understood")
)

// egressAllow lists the methods the Egress forwards, for a 405's Allow
// field (RFC 9110 §15.5.6): any but CONNECT.
const egressAllow = "GET, HEAD, POST, PUT, PATCH, DELETE, OPTIONS, TRACE"

// invalidTokenChallenge answers a refused exchange of the inbound token
// (RFC 6750 §3.1).
const invalidTokenChallenge = `Bearer realm="` + realm + `", error="invalid_token"`

func egressVerdict(status int, challenge, errCode, desc string) verdict {
	return jsonVerdict(codeAllowed, status, challenge, errCode, desc)
}

func (e *Egress) serve(ctx *fasthttp.RequestCtx) {
	req := &ctx.Request
	if req.Header.IsConnect() {
		ctx.Response.Header.Set(fasthttp.HeaderAllow, egressAllow)
		deny(ctx, egressConnect)
		e.none.count(egressBadRequest)
		return
	}
	r, rest := e.route(req)
	if r == nil {
		deny(ctx, egressNoRoute)
		e.none.count(egressUnknownRoute)
		return
	}

	// The exchange runs under its own timeout rather than ctx, whose Done
	// closes at Shutdown: requests in flight are finished, not failed.
	var tok exchange.Token
	var err error
	outcome := egressExchanged
	switch subject, cd := bearerCredential(req.URI(), req.Header.PeekAll(fasthttp.HeaderAuthorization)); cd {
	case codeAllowed:
		tok, err = e.x.Exchange(context.Background(), subject, r.name, r.scope)
	case codeNoToken:
		outcome = egressClientCredentials
		tok, err = e.x.ClientCredentials(context.Background(), r.name, r.scope)
	case codeQueryToken:
		// Forwarded, it would be the caller's token reaching the next hop.
		e.refuse(ctx, r, egressQueryToken, "token_in_query")
		return
	case codeMultiple:
		e.refuse(ctx, r, egressMultiple, "multiple_authorization")
		return
	default:
		e.refuse(ctx, r, egressMalformed, "malformed_authorization")
		return
	}
	if err != nil {
		e.exchangeFailed(ctx, r, err)
		return
	}

	// Only the next sidecar speaks for the caller's identity.
	stripIdentity(&req.Header)
	// The value is copied by the setter: one buffer serves it and the
	// target.
	var buf [2048]byte
	authz := append(append(buf[:0], "Bearer "...), tok.AccessToken...)
	target := append(authz[len(authz):len(authz)], r.base...)
	if len(rest) == 0 || rest[0] != '/' {
		target = append(target, '/')
	}
	// The absolute URI sets the Host field and, for an https route, the
	// scheme HostClient requires.
	req.SetRequestURIBytes(append(target, rest...))
	if r.forward(ctx, outbound{authorization: authz}) != codeAllowed {
		outcome = egressUpstream
	}
	r.count(outcome)
}

// route returns the route of req and the path and query to send it, a
// slice of req's URI.
func (e *Egress) route(req *fasthttp.Request) (*egressRoute, []byte) {
	uri := req.URI()
	ru := uri.RequestURI()
	if absoluteForm(req.Header.RequestURI()) {
		// RFC 9112 §3.2.2: the target's authority, not the Host field.
		return e.lookup(hostOnly(uri.Host())), ru
	}
	if r := e.lookup(hostOnly(req.Header.Host())); r != nil {
		return r, ru
	}
	if len(ru) < 2 || ru[0] != '/' {
		return nil, nil
	}
	// A route name has no byte that would be percent-encoded, so the
	// first segment of the encoded path is the name itself.
	seg := ru[1:]
	if i := bytes.IndexAny(seg, "/?"); i >= 0 {
		seg = seg[:i]
	}
	if r := e.lookup(seg); r != nil {
		return r, ru[1+len(seg):]
	}
	return nil, nil
}

// lookup returns the route named name in any case, or nil.
func (e *Egress) lookup(name []byte) *egressRoute {
	var buf [253]byte
	if len(name) == 0 || len(name) > len(buf) {
		return nil
	}
	for i, c := range name {
		buf[i] = lower(c)
	}
	return e.routes[string(buf[:len(name)])]
}

// absoluteForm reports whether a request target is in absolute form, as
// sent to a forward proxy.
func absoluteForm(target []byte) bool {
	return len(target) >= 7 && equalFold(target[:7], "http://") ||
		len(target) >= 8 && equalFold(target[:8], "https://")
}

// hostOnly drops the port of a host, which a route name does not have.
func hostOnly(host []byte) []byte {
	if i := bytes.IndexByte(host, ':'); i >= 0 {
		return host[:i]
	}
	return host
}

// refuse answers a request refused before any token was obtained.
func (e *Egress) refuse(ctx *fasthttp.RequestCtx, r *egressRoute, v verdict, reason string) {
	deny(ctx, v)
	r.count(egressBadRequest)
	if e.log.Enabled(context.Background(), slog.LevelDebug) {
		e.log.LogAttrs(context.Background(), slog.LevelDebug, "proxy: egress request refused",
			slog.String("route", r.name), slog.String("reason", reason))
	}
}

// exchangeFailed answers a request for which no token was obtained.
func (e *Egress) exchangeFailed(ctx *fasthttp.RequestCtx, r *egressRoute, err error) {
	var re *exchange.RefusedError
	switch {
	case errors.As(err, &re):
		v := egressVerdict(403, "", re.Code, re.Description)
		if re.Code == "invalid_grant" {
			v.status, v.challenge = 401, invalidTokenChallenge
		}
		deny(ctx, v)
		r.count(egressRefused)
		level := slog.LevelDebug
		if re.Code == "invalid_client" || re.Code == "unauthorized_client" {
			level = slog.LevelError // the sidecar's own registration is wrong
		}
		e.log.LogAttrs(context.Background(), level, "proxy: egress token refused",
			slog.String("route", r.name), slog.String("error", re.Code), slog.String("error_description", re.Description))
	case errors.Is(err, exchange.ErrUnavailable):
		ctx.Response.Header.Set(fasthttp.HeaderRetryAfter, "5")
		deny(ctx, egressNoIssuer)
		r.count(egressUnavailable)
		e.log.Warn("proxy: egress: authorization server unavailable", "route", r.name, "err", err)
	default:
		deny(ctx, egressBadIssuer)
		r.count(egressBadExchange)
		e.log.Error("proxy: egress: token request failed", "route", r.name, "err", err)
	}
}

func (r *egressRoute) count(o egressOutcome) {
	if c := r.counts[o]; c != nil {
		c.Inc()
	}
}
