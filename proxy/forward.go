package proxy

import (
	"bytes"
	"log/slog"
	"time"

	"github.com/valyala/fasthttp"
)

// upstream is the one step that forwards a request to a service, the same
// for the Sidecar, the Edge and each route of the Egress.
type forwarder struct {
	client *fasthttp.HostClient
	log    *slog.Logger
	failed verdict // the answer when the service cannot be reached
}

// newUpstream returns the forwarding step to the service at addr.
func newForwarder(addr string, tls bool, maxConns int, timeout time.Duration, failed verdict, log *slog.Logger) *forwarder {
	return &forwarder{
		client: &fasthttp.HostClient{
			Addr:                     addr,
			IsTLS:                    tls,
			MaxConns:                 maxConns,
			MaxConnWaitTimeout:       5 * time.Second, // rather than failing at once when all are busy
			MaxIdleConnDuration:      30 * time.Second,
			ReadTimeout:              timeout,
			WriteTimeout:             timeout,
			ReadBufferSize:           readBufferSize,
			NoDefaultUserAgentHeader: true,
			SecureErrorLogMessage:    true, // never log request contents: tokens
		},
		log:    log,
		failed: failed,
	}
}

// outbound is what a hop sets on the request it forwards.
type outbound struct {
	// authorization, if not nil, replaces the Authorization field: the
	// Edge's internal JWT, the Egress's exchanged token.
	authorization []byte
	// identity, if not nil, holds the identity and claim header values
	// the Sidecar sets from a verified token.
	identity *request
}

// forward sends ctx's request to the service and relays its answer. The
// hop-by-hop fields go first, both ways (RFC 9110 §7.6.1), and only then
// is what the hop sets written, so that no Connection option of the
// caller can remove it. It reports whether the service answered; if not,
// ctx holds u.failed.
func (u *forwarder) forward(ctx *fasthttp.RequestCtx, set outbound) bool {
	req := &ctx.Request
	clientClose := req.Header.ConnectionClose()
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
	resp := &ctx.Response
	ok := true
	if err := u.client.Do(req, resp); err != nil {
		resp.Reset()
		deny(ctx, u.failed)
		u.log.Warn("proxy: upstream request failed", "upstream", u.client.Addr, "err", err)
		ok = false
	} else {
		removeHopByHop(&resp.Header)
	}
	if clientClose {
		ctx.SetConnectionClose()
	}
	return ok
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
	for _, v := range h.PeekAll(fasthttp.HeaderConnection) {
		for len(v) > 0 {
			var opt []byte
			if i := bytes.IndexByte(v, ','); i >= 0 {
				opt, v = v[:i], v[i+1:]
			} else {
				opt, v = v, nil
			}
			// DelBytes copies the name before deleting and deleting frees
			// nothing, so v stays valid.
			if opt = trimOWS(opt); len(opt) > 0 {
				h.DelBytes(opt)
			}
		}
	}
	for _, name := range hopByHop {
		h.Del(name)
	}
	h.ResetConnectionClose()
}
