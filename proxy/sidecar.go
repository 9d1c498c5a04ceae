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
	"time"

	"github.com/valyala/fasthttp"
)

// Defaults of SidecarConfig.
const (
	DefaultForwardAuthPath = "/.meshauth/auth"
	DefaultUpstreamTimeout = 60 * time.Second
	DefaultMaxConns        = 512
)

// readBufferSize bounds a request's start line and header fields: fasthttp
// answers a larger one with 431 (RFC 6585 §5). A token is at most 8 KiB
// (token.DefaultMaxSize).
const readBufferSize = 16 << 10

// SidecarConfig configures a Sidecar.
type SidecarConfig struct {
	Config
	// Upstream is the service's address, "http://host:port".
	Upstream string
	// ForwardAuthPath is the path at which the sidecar answers forward-auth
	// requests itself instead of proxying them; "" means
	// DefaultForwardAuthPath.
	ForwardAuthPath string
	// UpstreamTimeout bounds writing a request to the upstream and reading
	// its response; 0 means DefaultUpstreamTimeout.
	UpstreamTimeout time.Duration
	// MaxConns bounds the connections to the upstream, WebSocket tunnels
	// included; 0 means DefaultMaxConns.
	MaxConns int
	// UpstreamProtocol is what the sidecar speaks to the upstream:
	// UpstreamAuto (the default: the caller's), UpstreamHTTP1 or
	// UpstreamH2C.
	UpstreamProtocol string
	// UpstreamRetries is how many times more a request is sent when no
	// connection to the upstream could be made, if its method is
	// idempotent; 0, the default, sends each request once.
	UpstreamRetries int
	// MaxRequestBody bounds a request body, streamed to the upstream: a
	// larger one is refused with 413. 0 means DefaultMaxRequestBody.
	MaxRequestBody int64
	// ForwardedHeaders is ForwardedXFF (the default), ForwardedRFC7239 or
	// ForwardedNone.
	ForwardedHeaders string
	// TrustedProxies are the peers whose forwarded fields are kept and
	// appended to; anyone else's are replaced.
	TrustedProxies []*net.IPNet
}

// Sidecar is a reverse proxy in front of one service: it forwards a request
// only if the policy allows it, with the caller's identity in
// X-Meshauth-Subject, X-Meshauth-Client, X-Meshauth-Scope and
// X-Meshauth-Issuer and the route's claim headers, to the canonical path
// it was judged on (or the original one: Policy.ForwardPath).
//
// It serves HTTP/1.1 with fasthttp and h2c (HTTP/2 with prior knowledge,
// gRPC) with net/http, both judged by the same guard; relays WebSocket
// upgrades; streams bodies both ways.
type Sidecar struct {
	g        *guard
	upstream *forwarder
	authPath string
	auth     *authHandler
	server   *proxyServer
}

// NewSidecar returns a Sidecar; call Serve to start it.
func NewSidecar(cfg SidecarConfig) (*Sidecar, error) {
	g, err := newGuard(cfg.Config)
	if err != nil {
		return nil, err
	}
	addr, err := upstreamAddr(cfg.Upstream)
	if err != nil {
		return nil, err
	}
	s := &Sidecar{g: g, authPath: cfg.ForwardAuthPath}
	if s.authPath == "" {
		s.authPath = DefaultForwardAuthPath
	}
	if err := checkPrefix(s.authPath); err != nil {
		return nil, fmt.Errorf("proxy: ForwardAuthPath %q: %w", s.authPath, err)
	}
	if cfg.UpstreamRetries < 0 || cfg.MaxRequestBody < 0 || cfg.MaxConns < 0 || cfg.UpstreamTimeout < 0 {
		return nil, errors.New("proxy: negative limit")
	}
	proto, err := parseUpstreamProtocol(cfg.UpstreamProtocol)
	if err != nil {
		return nil, err
	}
	mode, err := parseForwardedMode(cfg.ForwardedHeaders)
	if err != nil {
		return nil, err
	}
	conns := newConnTracker()
	maxConns := cmp.Or(cfg.MaxConns, DefaultMaxConns)
	s.upstream = newForwarder(upstreamConfig{
		addr: addr, maxConns: maxConns, timeout: cmp.Or(cfg.UpstreamTimeout, DefaultUpstreamTimeout),
		retries: cfg.UpstreamRetries, maxBody: cfg.MaxRequestBody, protocol: proto,
		forwarded: forwarding{mode: mode, trusted: cfg.TrustedProxies}, conns: conns, metrics: cfg.Metrics,
	}, g.log)
	h2 := newH2Handler(s, newUpstreamTransport(addr, proto == protocolHTTP1, maxConns, cmp.Or(cfg.UpstreamTimeout, DefaultUpstreamTimeout)))
	s.auth = &authHandler{g: g, entry: entryForwardAuth}
	s.server = newProxyServer(s.serve, h2, conns, g.log)
	s.server.h2.HTTP2.CountError = cfg.Metrics.http2Error
	return s, nil
}

// upstreamAddr checks an upstream URL and returns its host:port.
func upstreamAddr(raw string) (string, error) {
	u, err := url.Parse(raw)
	if err != nil {
		return "", fmt.Errorf("proxy: upstream: %w", err)
	}
	if u.Scheme != "http" || u.Host == "" || u.Port() == "" || (u.Path != "" && u.Path != "/") ||
		u.RawQuery != "" || u.Fragment != "" || u.User != nil {
		return "", fmt.Errorf("proxy: upstream %q is not of the form http://host:port", raw)
	}
	return u.Host, nil
}

// newServer returns a fasthttp server for h with the limits every
// listener of this package uses.
func newServer(h fasthttp.RequestHandler, log *slog.Logger) *fasthttp.Server {
	return &fasthttp.Server{
		Handler:                      h,
		ReadBufferSize:               readBufferSize,
		ReadTimeout:                  30 * time.Second,
		WriteTimeout:                 DefaultUpstreamTimeout,
		IdleTimeout:                  90 * time.Second,
		NoDefaultServerHeader:        true,
		NoDefaultContentType:         true, // an upstream's response goes out as it came
		DisablePreParseMultipartForm: true, // bodies are forwarded, never parsed
		SecureErrorLogMessage:        true,
		CloseOnShutdown:              true,
		Logger:                       fasthttpLogger{log},
	}
}

// fasthttpLogger passes fasthttp's own messages (accept and connection
// errors) to slog.
type fasthttpLogger struct{ log *slog.Logger }

func (l fasthttpLogger) Printf(format string, args ...any) {
	l.log.Warn("proxy: " + fmt.Sprintf(format, args...))
}

// Serve accepts connections on ln until Shutdown. It returns nil after
// Shutdown.
func (s *Sidecar) Serve(ln net.Listener) error {
	return s.server.Serve(ln)
}

// Drain makes every answer the last of its connection (Connection: close;
// GOAWAY for HTTP/2) while the listener keeps accepting: callers move to
// other replicas while load balancers notice the sidecar is going. Call
// Shutdown after.
func (s *Sidecar) Drain() { s.server.Drain() }

// Shutdown stops accepting connections and waits until the requests in
// flight, HTTP/2 streams and WebSocket tunnels included, are done or ctx
// is; then it closes what remains. Call it once Serve has started.
func (s *Sidecar) Shutdown(ctx context.Context) error {
	err := s.server.Shutdown(ctx)
	s.upstream.client.CloseIdleConnections()
	return err
}

func (s *Sidecar) serve(ctx *fasthttp.RequestCtx) {
	if string(ctx.Path()) == s.authPath {
		s.auth.serve(ctx)
		return
	}
	req := &ctx.Request
	r := s.g.begin()
	defer s.g.end(r)
	// First, before anything reads them: only the sidecar speaks for the
	// caller's identity and claims.
	stripCallerFields(&req.Header, r.rules)

	method := req.Header.Method()
	uri := ctx.URI()
	v := s.g.decide(r, method, uri, req.Header.PeekAll(fasthttp.HeaderAuthorization), requestHeaders{&req.Header})
	if !v.ok() {
		deny(ctx, v)
		s.g.record(entryProxy, v.code, r, method)
		return
	}

	// The upstream client sends the URI's path as it is (its
	// DisablePathNormalizing): the one judged, unless the policy says
	// otherwise.
	if !r.rules.forwardOrig && !bytes.Equal(r.canon, uri.PathOriginal()) {
		uri.SetPathBytes(r.canon)
	}
	var set outbound
	if v.code == codeAllowed {
		set.identity = r
	}
	outcome := v.code
	if c := s.upstream.forward(ctx, set); c != codeAllowed {
		outcome = c
	}
	s.g.record(entryProxy, outcome, r, method)
}

// requestHeaders are a fasthttp request's fields, for conditions.
type requestHeaders struct{ h *fasthttp.RequestHeader }

func (rh requestHeaders) field(name string) ([]byte, bool) {
	vs := rh.h.PeekAll(name)
	if len(vs) == 0 {
		return nil, false
	}
	return vs[0], true
}

// deny writes a refusal. It does not use ctx.Error, which would discard
// the headers set before it.
func deny(ctx *fasthttp.RequestCtx, v verdict) {
	ctx.SetStatusCode(v.status)
	if v.challenge != "" {
		ctx.Response.Header.Set(fasthttp.HeaderWWWAuthenticate, v.challenge)
	}
	ctx.Response.Header.Set(fasthttp.HeaderCacheControl, "no-store")
	ctx.SetContentType("application/json")
	ctx.SetBodyString(v.body)
}

// stripIdentity removes every header in the identity namespace.
func stripIdentity(h *fasthttp.RequestHeader) { stripCallerFields(h, nil) }

// stripCallerFields removes every header in the identity namespace and
// every claim header of rs, if not nil (strippedHeader).
func stripCallerFields(h *fasthttp.RequestHeader, rs *rules) {
	// Collect, then delete: deleting while iterating is undefined.
	// AllInOrder reads the fields as received, which is what the caller
	// sent since this runs before any change, and unlike All it leaves
	// the Cookie field as it came.
	var buf [128]byte
	names := buf[:0] // each name followed by '\n', which names cannot hold
	for k := range h.AllInOrder() {
		if strippedHeader(k, rs) {
			names = append(append(names, k...), '\n')
		}
	}
	for len(names) > 0 {
		i := bytes.IndexByte(names, '\n')
		h.DelBytes(names[:i])
		names = names[i+1:]
	}
}
