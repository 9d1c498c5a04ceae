package proxy

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httputil"
	"strconv"
	"strings"
	"time"

	"github.com/valyala/fasthttp"
)

// The protocols a Sidecar may speak to its upstream
// (SidecarConfig.UpstreamProtocol).
const (
	// UpstreamAuto speaks the caller's: HTTP/1.1 to HTTP/1.1 callers,
	// h2c to HTTP/2 ones.
	UpstreamAuto = "auto"
	// UpstreamHTTP1 speaks HTTP/1.1 only; HTTP/2 requests are sent as
	// HTTP/1.1 (gRPC, which needs HTTP/2, fails).
	UpstreamHTTP1 = "http1"
	// UpstreamH2C speaks HTTP/2 with prior knowledge only (RFC 9113
	// §3.3): for upstreams that know nothing else, such as gRPC servers.
	UpstreamH2C = "h2c"
)

type upstreamProtocol uint8

const (
	protocolAuto upstreamProtocol = iota
	protocolHTTP1
	protocolH2C
)

func parseUpstreamProtocol(s string) (upstreamProtocol, error) {
	switch s {
	case "", UpstreamAuto:
		return protocolAuto, nil
	case UpstreamHTTP1:
		return protocolHTTP1, nil
	case UpstreamH2C:
		return protocolH2C, nil
	}
	return 0, fmt.Errorf("proxy: upstream protocol %q: want %s, %s or %s", s, UpstreamAuto, UpstreamHTTP1, UpstreamH2C)
}

// newUpstreamTransport returns a net/http transport to the upstream at
// addr speaking HTTP/2 with prior knowledge, or HTTP/1.1 if http1.
func newUpstreamTransport(addr string, http1 bool, maxConns int, timeout time.Duration) *http.Transport {
	dialer := &net.Dialer{Timeout: 5 * time.Second}
	t := &http.Transport{
		ResponseHeaderTimeout: timeout,
		// Every request goes to the one upstream, whatever its URL says.
		DialContext: func(ctx context.Context, network, _ string) (net.Conn, error) {
			return dialer.DialContext(ctx, network, addr)
		},
		MaxConnsPerHost:    maxConns,
		IdleConnTimeout:    upstreamIdle,
		DisableCompression: true, // bodies are relayed as they are
		Protocols:          new(http.Protocols),
	}
	if http1 {
		t.Protocols.SetHTTP1(true)
	} else {
		t.Protocols.SetUnencryptedHTTP2(true)
	}
	return t
}

// roundTripHTTP sends req to the upstream through t, at most 1+u.retries
// times: again only if it is idempotent, has no body, and no connection
// could be made. The transport's ResponseHeaderTimeout bounds the wait for
// the answer to begin; its body is read under no deadline: a stream lasts
// as long as it flows.
func (u *forwarder) roundTripHTTP(t http.RoundTripper, req *http.Request) (*http.Response, error) {
	for attempt := 0; ; attempt++ {
		resp, err := t.RoundTrip(req)
		if err == nil {
			return resp, nil
		}
		var op *net.OpError
		dial := errors.As(err, &op) && op.Op == "dial"
		if !dial || attempt >= u.retries || !httpIdempotent(req.Method) || req.Body != nil && req.Body != http.NoBody || u.conns.stopping.Load() {
			if dial {
				err = &connectError{err}
			}
			return nil, err
		}
	}
}

func httpIdempotent(m string) bool {
	switch m {
	case "GET", "HEAD", "PUT", "DELETE", "OPTIONS", "TRACE":
		return true
	}
	return false
}

// forwardH2C sends an HTTP/1.x request to an upstream that speaks h2c
// only, streaming both bodies.
func (u *forwarder) forwardH2C(ctx *fasthttp.RequestCtx) code {
	req := &ctx.Request
	var body io.Reader = http.NoBody
	switch {
	case req.IsBodyStream():
		body = &limitedBody{r: req.BodyStream(), left: u.maxBody}
	case len(req.Body()) > 0:
		body = strings.NewReader(string(req.Body()))
	}
	out, err := http.NewRequest(string(req.Header.Method()), "http://"+u.client.Addr+string(req.URI().RequestURI()), body)
	if err != nil {
		return u.failed(ctx, err)
	}
	out.ContentLength = int64(req.Header.ContentLength())
	if out.ContentLength < 0 {
		out.ContentLength = -1
	}
	out.Host = string(req.Header.Host())
	for k, v := range req.Header.All() {
		if !equalFold(k, "Host") && !equalFold(k, "Content-Length") {
			out.Header.Add(string(k), string(v))
		}
	}
	resp, err := u.roundTripHTTP(u.h2c, out)
	if err != nil {
		return u.failed(ctx, err)
	}
	ctx.SetStatusCode(resp.StatusCode)
	ctx.Response.Header.SetNoDefaultContentType(true)
	for k, vs := range resp.Header {
		for _, v := range vs {
			ctx.Response.Header.Add(k, v)
		}
	}
	removeHopByHop(&ctx.Response.Header)
	size := int(resp.ContentLength)
	if size < 0 {
		size = -1
	}
	ctx.Response.SetBodyStream(resp.Body, size)
	return codeAllowed
}

// h2Handler serves the Sidecar's HTTP/2 requests: the same decision as
// HTTP/1.1's, then the request is proxied by net/http's reverse proxy,
// which streams both ways and relays trailers (gRPC's status).
type h2Handler struct {
	s     *Sidecar
	proxy *httputil.ReverseProxy
}

// h2State is what the reverse proxy's hooks need of one request.
type h2State struct {
	r       *request
	set     outbound
	outcome code
}

type h2StateKey struct{}

func newH2Handler(s *Sidecar, t http.RoundTripper) *h2Handler {
	h := &h2Handler{s: s}
	up := s.upstream
	h.proxy = &httputil.ReverseProxy{
		// The hop-by-hop fields are gone when Rewrite runs: what it sets
		// stays.
		Rewrite: func(pr *httputil.ProxyRequest) {
			st := pr.In.Context().Value(h2StateKey{}).(*h2State)
			pr.Out.URL.Scheme, pr.Out.URL.Host = "http", up.client.Addr
			pr.Out.Host = pr.In.Host
			// ReverseProxy drops the caller's X-Forwarded-*: forwarding.set
			// decides whether they stay.
			for _, name := range [...]string{"X-Forwarded-For", headerXForwardedProto, headerXForwardedHost} {
				if vs, ok := pr.In.Header[name]; ok {
					pr.Out.Header[name] = vs
				}
			}
			out := httpFields{pr.Out.Header}
			if r := st.set.identity; r != nil {
				for i, name := range identityHeaders {
					value, _ := r.value(i)
					out.SetBytesV(name, value)
				}
				for i, c := range r.route.claims {
					if value, ok := r.value(numIdentity + i); ok {
						out.SetBytesV(c.name, value)
					}
				}
			}
			up.forwarding.set(out, []byte(pr.In.Host), remoteIP(pr.In.RemoteAddr), pr.In.TLS != nil, nil)
		},
		Transport:     roundTripFunc(func(r *http.Request) (*http.Response, error) { return up.roundTripHTTP(t, r) }),
		FlushInterval: -1, // gRPC and other streams: each write as it comes
		ErrorLog:      nil,
		ErrorHandler: func(w http.ResponseWriter, r *http.Request, err error) {
			st := r.Context().Value(h2StateKey{}).(*h2State)
			st.outcome = codeUpstream
			if errors.Is(err, errBodyTooLarge) {
				h.deny(w, r, up.tooLarge)
				st.outcome = codeBodyTooLarge
				return
			}
			if timedOut(err) {
				st.outcome = codeUpstreamTimeout
			}
			up.log.Warn("proxy: upstream request failed", "upstream", up.client.Addr, "err", err)
			h.deny(w, r, answers[st.outcome].verdict)
		},
	}
	return h
}

type roundTripFunc func(*http.Request) (*http.Response, error)

func (f roundTripFunc) RoundTrip(r *http.Request) (*http.Response, error) { return f(r) }

func (h *h2Handler) ServeHTTP(w http.ResponseWriter, in *http.Request) {
	s := h.s
	if h.s.server.draining.Load() {
		// net/http sends a GOAWAY for this (RFC 9113 §6.8).
		w.Header().Set("Connection", "close")
	}
	r := s.g.begin()
	defer s.g.end(r)
	for name := range in.Header {
		if strippedHeader([]byte(name), r.rules) {
			delete(in.Header, name)
		}
	}
	method := []byte(in.Method)
	if in.ContentLength > s.upstream.maxBody {
		h.deny(w, in, s.upstream.tooLarge)
		s.g.record(entryProxy, codeBodyTooLarge, r, method)
		return
	}
	uri := fasthttp.AcquireURI()
	defer fasthttp.ReleaseURI(uri)
	if !parseTarget(uri, []byte(in.RequestURI)) {
		h.deny(w, in, answers[codeBadTarget].verdict)
		s.g.record(entryProxy, codeBadTarget, r, method)
		return
	}
	var authz [][]byte
	for _, v := range in.Header.Values("Authorization") {
		authz = append(authz, []byte(v))
	}
	v := s.g.decide(r, method, uri, authz, httpFields{in.Header})
	if !v.ok() {
		h.deny(w, in, v)
		s.g.record(entryProxy, v.code, r, method)
		return
	}
	st := &h2State{r: r, outcome: v.code}
	if v.code == codeAllowed {
		st.set.identity = r
	}
	if !r.rules.forwardOrig && string(r.canon) != in.URL.EscapedPath() {
		// The upstream gets the path judged.
		in.URL.Path, in.URL.RawPath = pathUnescape(r.canon), string(r.canon)
	}
	if in.Body != nil && in.Body != http.NoBody {
		in.Body = &limitedReadCloser{limitedBody{r: in.Body, left: s.upstream.maxBody}, in.Body}
	}
	h.proxy.ServeHTTP(w, in.WithContext(context.WithValue(in.Context(), h2StateKey{}, st)))
	s.g.record(entryProxy, st.outcome, r, method)
}

// pathUnescape decodes a canonical path for net/http's URL.Path, whose
// RawPath keeps the encoding sent.
func pathUnescape(p []byte) string {
	u := fasthttp.AcquireURI()
	defer fasthttp.ReleaseURI(u)
	u.SetPathBytes(p)
	return string(u.Path())
}

type limitedReadCloser struct {
	limitedBody
	io.Closer
}

// deny answers a refusal: to a gRPC caller as gRPC does, a trailers-only
// answer with grpc-status and grpc-message (the RFC 6750 error and
// description), else as the HTTP/1.1 entry points do.
func (h *h2Handler) deny(w http.ResponseWriter, r *http.Request, v verdict) {
	hdr := w.Header()
	if v.challenge != "" {
		hdr.Set("WWW-Authenticate", v.challenge)
	}
	if isGRPC(r.Header.Get("Content-Type")) {
		hdr.Set("Content-Type", "application/grpc")
		hdr.Set("Grpc-Status", strconv.Itoa(int(grpcCode(v.status))))
		hdr.Set("Grpc-Message", grpcMessage(v))
		w.WriteHeader(http.StatusOK)
		return
	}
	hdr.Set("Cache-Control", "no-store")
	hdr.Set("Content-Type", "application/json")
	w.WriteHeader(v.status)
	io.WriteString(w, v.body)
}

func isGRPC(contentType string) bool {
	return contentType == "application/grpc" || strings.HasPrefix(contentType, "application/grpc+") || strings.HasPrefix(contentType, "application/grpc;")
}

// grpcMessage is the gRPC message of a refusal, "error: description",
// percent-encoded as gRPC requires.
func grpcMessage(v verdict) string {
	var b struct {
		Error       string `json:"error"`
		Description string `json:"error_description"`
		Scope       string `json:"scope"`
	}
	json.Unmarshal([]byte(v.body), &b)
	msg := b.Error
	switch {
	case b.Description != "":
		msg += ": " + b.Description
	case b.Scope != "":
		msg += ": scope " + b.Scope + " required"
	}
	var out []byte
	for i := 0; i < len(msg); i++ {
		if c := msg[i]; c < 0x20 || c > 0x7e || c == '%' {
			out = fmt.Appendf(out, "%%%02X", c)
		} else {
			out = append(out, c)
		}
	}
	return string(out)
}

// remoteIP is the IP address of a net/http request's peer.
func remoteIP(addr string) net.IP {
	host, _, err := net.SplitHostPort(addr)
	if err != nil {
		return nil
	}
	return net.ParseIP(host)
}

// httpFields are a net/http request's header fields, as the forwarding
// rules and conditions read and write them.
type httpFields struct{ h http.Header }

func (f httpFields) PeekAll(key string) [][]byte {
	var out [][]byte
	for _, v := range f.h.Values(key) {
		out = append(out, []byte(v))
	}
	return out
}

func (f httpFields) Peek(key string) []byte { return []byte(f.h.Get(key)) }
func (f httpFields) Del(key string)         { f.h.Del(key) }
func (f httpFields) Set(key, value string)  { f.h.Set(key, value) }
func (f httpFields) SetBytesV(key string, value []byte) {
	f.h.Set(key, string(value))
}

func (f httpFields) field(name string) ([]byte, bool) {
	vs := f.h.Values(name)
	if len(vs) == 0 {
		return nil, false
	}
	return []byte(vs[0]), true
}
