package proxy

import (
	"bytes"
	"cmp"
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"sync"
	"time"

	"github.com/valyala/fasthttp"
)

// forwarder is the one step that forwards a request to a service, the
// same for the Sidecar, the Edge and each route of the Egress.
type forwarder struct {
	client     *fasthttp.HostClient
	idle       time.Duration // the upstream timeout, an idle timeout (transport.go)
	retries    int
	maxBody    int64
	tooLarge   verdict // the answer to a body over maxBody
	forwarding forwarding
	conns      *connTracker // the server's: tunnels, and whether it stops
	metrics    *Metrics
	h2c        http.RoundTripper
	log        *slog.Logger
}

// upstreamConfig configures a forwarder.
type upstreamConfig struct {
	addr      string
	tls       bool
	maxConns  int
	timeout   time.Duration
	retries   int
	maxBody   int64
	forwarded forwarding
	protocol  upstreamProtocol
	conns     *connTracker // the server's
	metrics   *Metrics     // nil: none
}

// Defaults of every forwarder.
const (
	DefaultMaxRequestBody = 1 << 30
	// upstreamIdle is how long an idle connection to the upstream is
	// kept: below the keep-alive timeouts of common servers (Node's is
	// 5 s), so that a request is not sent on a connection the upstream is
	// closing, which, sent once, would fail.
	upstreamIdle = 4 * time.Second
)

func newForwarder(cfg upstreamConfig, log *slog.Logger) *forwarder {
	f := &forwarder{
		client: &fasthttp.HostClient{
			Addr:                      cfg.addr,
			IsTLS:                     cfg.tls,
			MaxConns:                  cfg.maxConns,
			MaxConnWaitTimeout:        5 * time.Second, // rather than failing at once when all are busy
			MaxIdleConnDuration:       upstreamIdle,
			MaxIdemponentCallAttempts: 1,
			ReadBufferSize:            readBufferSize,
			NoDefaultUserAgentHeader:  true,
			DisablePathNormalizing:    true, // the path sent is the one judged
			SecureErrorLogMessage:     true, // never log request contents: tokens
		},
		idle:       cfg.timeout,
		retries:    cfg.retries,
		maxBody:    cmp.Or(cfg.maxBody, DefaultMaxRequestBody),
		forwarding: cfg.forwarded,
		conns:      cfg.conns,
		metrics:    cfg.metrics,
		log:        log,
	}
	f.tooLarge = jsonVerdict(codeBodyTooLarge, 413, "", "invalid_request",
		fmt.Sprintf("the request body is larger than %d bytes, the most this proxy forwards", f.maxBody))
	if cfg.protocol == protocolH2C {
		f.h2c = newUpstreamTransport(cfg.addr, false, cfg.maxConns, cfg.timeout)
	}
	return f
}

// fieldBufs hold the values of the forwarded fields while they are built.
var fieldBufs = sync.Pool{New: func() any { return new([]byte) }}

// outbound is what a hop sets on the request it forwards.
type outbound struct {
	// authorization, if not nil, replaces the Authorization field: the
	// Edge's internal JWT, the Egress's exchanged token.
	authorization []byte
	// identity, if not nil, holds the identity and claim header values
	// the Sidecar sets from a verified token.
	identity *request
}

// forward sends ctx's request to the service and relays its answer; it
// returns codeAllowed, or why the service's answer could not be relayed,
// which ctx then holds. The hop-by-hop fields go first, both ways (RFC
// 9110 §7.6.1), and only then is what the hop sets written, so that no
// Connection option of the caller can remove it.
func (u *forwarder) forward(ctx *fasthttp.RequestCtx, set outbound) code {
	req := &ctx.Request
	if n := req.Header.ContentLength(); int64(n) > u.maxBody {
		return u.refuse(ctx, u.tooLarge)
	}
	clientClose := req.Header.ConnectionClose()
	upgrade := upgradeRequested(&req.Header)
	removeHopByHop(&req.Header)
	if set.authorization != nil {
		req.Header.SetBytesV(fasthttp.HeaderAuthorization, set.authorization)
	}
	if r := set.identity; r != nil {
		for i, name := range identityHeaders {
			value, _ := r.value(i)
			req.Header.SetBytesV(name, value)
		}
		for i, h := range r.route.claims {
			if value, ok := r.value(numIdentity + i); ok {
				req.Header.SetBytesV(h.name, value)
			}
		}
	}
	buf := fieldBufs.Get().(*[]byte)
	*buf = u.forwarding.set(&req.Header, req.Header.Host(), ctx.RemoteIP(), ctx.IsTLS(), *buf)
	fieldBufs.Put(buf)
	if len(req.Header.Host()) == 0 {
		// HTTP/1.0 without Host (RFC 9112 §3.2 requires it of HTTP/1.1
		// only): the upstream's own name.
		req.Header.SetHost(u.client.Addr)
		req.URI().SetHost(u.client.Addr)
	}
	if upgrade {
		req.Header.Set(fasthttp.HeaderConnection, "Upgrade")
		req.Header.Set(fasthttp.HeaderUpgrade, "websocket")
	}

	var c code
	if u.h2c != nil && !upgrade {
		c = u.forwardH2C(ctx)
	} else {
		c = u.forwardHTTP1(ctx, upgrade)
	}
	if clientClose {
		ctx.SetConnectionClose()
	}
	return c
}

// forwardHTTP1 sends ctx's request over HTTP/1.1, at most 1+u.retries
// times: again only if it is idempotent and no connection could be made.
func (u *forwarder) forwardHTTP1(ctx *fasthttp.RequestCtx, upgrade bool) code {
	req := &ctx.Request
	out := req
	if req.IsBodyStream() && req.Header.ContentLength() < 0 {
		// A chunked body of unknown length, counted as it goes.
		out = fasthttp.AcquireRequest()
		defer fasthttp.ReleaseRequest(out)
		req.CopyTo(out)
		out.SetBodyStream(&limitedBody{r: req.BodyStream(), left: u.maxBody}, -1)
	}
	var t *tunnel
	var err error
	for attempt := 0; ; attempt++ {
		t, err = roundTrip(u.client, u.idle, u.metrics, ctx, out, upgrade,
			(*fasthttp.HostClient).AcquireConn, (*fasthttp.HostClient).ReleaseConn, (*fasthttp.HostClient).CloseConn)
		if err == nil || attempt >= u.retries || !idempotent(req) || !isConnectError(err) || u.conns.stopping.Load() {
			break
		}
	}
	if err != nil {
		return u.failed(ctx, err)
	}
	if t != nil {
		return u.startTunnel(ctx, t)
	}
	removeHopByHop(&ctx.Response.Header)
	return codeAllowed
}

func isConnectError(err error) bool {
	var ce *connectError
	return errors.As(err, &ce)
}

// idempotent reports whether a request may be sent again (RFC 9110
// §9.2.2).
func idempotent(req *fasthttp.Request) bool {
	h := &req.Header
	return h.IsGet() || h.IsHead() || h.IsPut() || h.IsDelete() || h.IsOptions() || h.IsTrace()
}

// failed answers a request whose upstream exchange failed with err.
func (u *forwarder) failed(ctx *fasthttp.RequestCtx, err error) code {
	ctx.Response.Reset()
	if errors.Is(err, errBodyTooLarge) {
		return u.refuse(ctx, u.tooLarge)
	}
	// Whatever of the caller's body was not read is still on its
	// connection.
	ctx.SetConnectionClose()
	c := codeUpstream
	if timedOut(err) {
		c = codeUpstreamTimeout
	}
	deny(ctx, answers[c].verdict)
	u.log.Warn("proxy: upstream request failed", "upstream", u.client.Addr, "err", err)
	return c
}

// refuse answers a request that is not forwarded, closing the connection,
// which may hold the rest of its body.
func (u *forwarder) refuse(ctx *fasthttp.RequestCtx, v verdict) code {
	deny(ctx, v)
	ctx.SetConnectionClose()
	return v.code
}

// timedOut reports whether err is the upstream's silence beyond the
// timeout, rather than a refused or broken connection.
func timedOut(err error) bool {
	if isConnectError(err) {
		return false // connecting: the upstream is not there
	}
	if errors.Is(err, fasthttp.ErrTimeout) || errors.Is(err, context.DeadlineExceeded) {
		return true
	}
	var ne net.Error
	return errors.As(err, &ne) && ne.Timeout()
}

// errBodyTooLarge is a chunked body that went past the maximum.
var errBodyTooLarge = errors.New("request body too large")

// limitedBody reads a request body up to a maximum.
type limitedBody struct {
	r    io.Reader
	left int64
}

func (b *limitedBody) Read(p []byte) (int, error) {
	n, err := b.r.Read(p)
	if b.left -= int64(n); b.left < 0 {
		return 0, errBodyTooLarge
	}
	return n, err
}

// upgradeRequested reports whether h asks to upgrade to WebSocket (RFC
// 6455 §4.1): the one upgrade relayed. Others, such as h2c (RFC 7540
// §3.2), are dropped with the hop-by-hop fields, and the request goes on
// as HTTP/1.1.
func upgradeRequested(h *fasthttp.RequestHeader) bool {
	return h.IsGet() && hasToken(h.PeekAll(fasthttp.HeaderConnection), "upgrade") &&
		hasToken(h.PeekAll(fasthttp.HeaderUpgrade), "websocket")
}

// hasToken reports whether a comma-separated list field holds token, in
// any case.
func hasToken(values [][]byte, token string) bool {
	found := false
	eachListItem(values, func(item []byte) {
		found = found || equalFold(item, token)
	})
	return found
}

// eachListItem calls f with each non-empty item of the comma-separated
// list fields values (RFC 9110 §5.6.1), without their whitespace.
func eachListItem(values [][]byte, f func(item []byte)) {
	for _, v := range values {
		for len(v) > 0 {
			var item []byte
			if i := bytes.IndexByte(v, ','); i >= 0 {
				item, v = v[:i], v[i+1:]
			} else {
				item, v = v, nil
			}
			if item = trimOWS(item); len(item) > 0 {
				f(item)
			}
		}
	}
}

// bearerCredential is the bearer preamble of every entry point. It returns
// the token of a request's Authorization fields, or why there is none:
//
//   - codeQueryToken: an access_token query parameter, refused on every
//     route. RFC 6750 §2.3 is not supported: a token in the URI leaks into
//     logs and, unverified, could reach the upstream.
//   - codeNoToken: no Authorization field.
//   - codeMultiple: more than one. Which one would the upstream read?
//   - codeUnsupportedScheme, codeMalformed: see bearerToken.
func bearerCredential(uri *fasthttp.URI, authz [][]byte) ([]byte, code) {
	if uri.QueryArgs().Has("access_token") {
		return nil, codeQueryToken
	}
	switch len(authz) {
	case 0:
		return nil, codeNoToken
	case 1:
		return bearerToken(authz[0])
	}
	return nil, codeMultiple
}

// hopByHop are the fields that describe one connection only and that a
// proxy must not forward (RFC 9110 §7.6.1), with the Proxy-* fields meant
// for this hop (RFC 9110 §11.7) and Expect, which this proxy has already
// met by reading the whole body (RFC 9110 §10.1.1).
var hopByHop = []string{
	fasthttp.HeaderConnection, "Keep-Alive", "Proxy-Connection", fasthttp.HeaderTE,
	fasthttp.HeaderTrailer, fasthttp.HeaderTransferEncoding, fasthttp.HeaderUpgrade,
	fasthttp.HeaderProxyAuthorization, fasthttp.HeaderProxyAuthenticate, fasthttp.HeaderExpect,
}

// fields is what removeHopByHop needs of a request or response header.
type fields interface {
	PeekAll(key string) [][]byte
	DelBytes(key []byte)
	Del(key string)
	ResetConnectionClose()
}

// removeHopByHop removes the connection-specific fields of h, those named
// by its Connection fields included (RFC 9110 §7.6.1). fasthttp keeps
// "Connection: close" as a flag, which is reset: each connection's
// persistence is its own.
func removeHopByHop(h fields) {
	// DelBytes copies the name before deleting and deleting frees
	// nothing, so the values stay valid.
	eachListItem(h.PeekAll(fasthttp.HeaderConnection), h.DelBytes)
	for _, name := range hopByHop {
		h.Del(name)
	}
	h.ResetConnectionClose()
}
