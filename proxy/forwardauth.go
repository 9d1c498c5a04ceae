package proxy

import (
	"bytes"
	"context"
	"fmt"
	"net"
	"strings"

	"github.com/valyala/fasthttp"
)

// AuthServer answers authorization subrequests on a listener of its own:
// the request is not proxied, only judged. Allowed: 200 with the identity
// headers. Refused: the status, WWW-Authenticate field and JSON body the
// sidecar would send, which the front proxy passes to the client.
type AuthServer struct {
	server *fasthttp.Server
}

// NewForwardAuth returns an AuthServer for nginx auth_request, Traefik
// ForwardAuth and Caddy forward_auth. The sidecar also answers these at
// SidecarConfig.ForwardAuthPath.
//
// The original request is read from X-Forwarded-Method and X-Forwarded-Uri
// (set by Traefik and Caddy) or X-Original-Method and X-Original-URI
// (nginx: proxy_set_header X-Original-URI $request_uri; and
// X-Original-Method $request_method), else from the subrequest itself. A
// client can send any of these fields through a proxy that does not set
// them, so a field repeated, or both spellings present and disagreeing, is
// refused with 400 rather than resolved.
//
// An allowed answer always carries X-Meshauth-Subject, X-Meshauth-Client,
// X-Meshauth-Scope and X-Meshauth-Issuer, and every claim header of the
// policy, empty when not set (on public routes, say), for the proxy to copy
// over the caller's: meshauth only judges, and the caller's own fields
// reach the service unless the proxy replaces them. The configs of
// deploy/nginx, deploy/caddy and deploy/traefik do (nginx
// auth_request_set and proxy_set_header, Caddy copy_headers after removing
// the caller's X-Meshauth-* and X_Meshauth_*, Traefik
// authResponseHeadersRegex and authResponseHeaders), and pass meshauth's
// refusals through as sent. It forwards the path as it has it: configure it
// to normalize the path as the canonical form does (merge slashes, remove
// dot segments), or it may serve a path other than the one judged. nginx treats
// any status from the subrequest other than 2xx, 401 and 403 as an error
// (500): invalid_request answers (400) surface that way.
func NewForwardAuth(cfg Config) (*AuthServer, error) {
	g, err := newGuard(cfg)
	if err != nil {
		return nil, err
	}
	h := &authHandler{g: g, entry: entryForwardAuth}
	return &AuthServer{server: newServer(h.serve, g.log)}, nil
}

// NewExtAuthzHTTP returns an AuthServer for Envoy's ext_authz filter in
// HTTP mode (http_service), which sends the original method and headers
// with pathPrefix (server_uri's path_prefix, "" if none) put before the
// original path. Configure authorization_request.allowed_headers to
// include authorization, the prefix x-meshauth-, the claim headers and the
// fields conditions read, and
// authorization_response.allowed_upstream_headers with the prefix
// x-meshauth- and the claim headers. An allowed answer sets the identity
// and claim headers that have a value, and lists in
// x-envoy-auth-headers-to-remove the others and every other field the
// caller sent in their names or under X-Meshauth-*.
func NewExtAuthzHTTP(cfg Config, pathPrefix string) (*AuthServer, error) {
	if pathPrefix != "" && (!strings.HasPrefix(pathPrefix, "/") || strings.HasSuffix(pathPrefix, "/")) {
		return nil, fmt.Errorf(`proxy: ext_authz path prefix %q must start and not end with "/"`, pathPrefix)
	}
	g, err := newGuard(cfg)
	if err != nil {
		return nil, err
	}
	h := &authHandler{g: g, entry: entryExtAuthzHTTP, prefix: []byte(pathPrefix)}
	return &AuthServer{server: newServer(h.serve, g.log)}, nil
}

// Serve accepts connections on ln until Shutdown. It returns nil after
// Shutdown.
func (s *AuthServer) Serve(ln net.Listener) error {
	return s.server.Serve(ln)
}

// Shutdown stops accepting connections and waits until the requests in
// flight are answered or ctx is done. Call it once Serve has started.
func (s *AuthServer) Shutdown(ctx context.Context) error {
	if err := s.server.ShutdownWithContext(ctx); err != nil {
		return fmt.Errorf("proxy: shutdown: %w", err)
	}
	return nil
}

// authHandler answers forward-auth (entryForwardAuth) and ext_authz HTTP
// (entryExtAuthzHTTP) requests; they differ only in where the original
// request is read from and in how identity headers are withdrawn.
type authHandler struct {
	g      *guard
	entry  entry
	prefix []byte // entryExtAuthzHTTP: put before the original path
}

// envoyRemoveHeader lists the fields Envoy removes from the upstream
// request in ext_authz HTTP mode.
const envoyRemoveHeader = "X-Envoy-Auth-Headers-To-Remove"

func (a *authHandler) serve(ctx *fasthttp.RequestCtx) {
	h := &ctx.Request.Header
	r := a.g.begin()
	defer a.g.end(r)
	uri := fasthttp.AcquireURI()
	defer fasthttp.ReleaseURI(uri)
	var method []byte
	var ok bool
	if a.entry == entryExtAuthzHTTP {
		method, ok = h.Method(), a.envoyTarget(h.RequestURI(), uri)
	} else {
		method, ok = forwardedTarget(h, uri)
	}
	if !ok {
		deny(ctx, answers[codeBadTarget].verdict)
		a.g.record(a.entry, codeBadTarget, r, method)
		return
	}

	v := a.g.decide(r, method, uri, h.PeekAll(fasthttp.HeaderAuthorization), requestHeaders{h})
	if !v.ok() {
		deny(ctx, v)
		a.g.record(a.entry, v.code, r, method)
		return
	}
	// Values are set on codeAllowed only: empty on public routes.
	rh := &ctx.Response.Header
	claims := r.rules.claimHeaders
	if a.entry == entryExtAuthzHTTP {
		// Envoy applies set headers before removals, so a header is either
		// set or removed, never both.
		remove := r.scratch[:0]
		for i, name := range identityHeaders {
			if value, _ := r.value(i); len(value) > 0 {
				rh.SetBytesV(name, value)
			} else {
				remove = appendName(remove, name)
			}
		}
		for _, name := range claims {
			if value, set := r.claimValue(name); set {
				rh.SetBytesV(name, value)
			} else {
				remove = appendName(remove, name)
			}
		}
		for k := range h.AllInOrder() {
			if strippedHeader(k, r.rules) && !isIdentityHeaderName(k) && !containsFold(claims, k) {
				remove = appendName(remove, k)
			}
		}
		if len(remove) > 0 {
			rh.SetBytesV(envoyRemoveHeader, remove)
		}
		r.scratch = remove
	} else {
		// Every field, empty if unset, for the front proxy to copy over
		// the caller's.
		for i, name := range identityHeaders {
			value, _ := r.value(i)
			rh.SetBytesV(name, value)
		}
		for _, name := range claims {
			value, _ := r.claimValue(name)
			rh.SetBytesV(name, value)
		}
	}
	ctx.SetStatusCode(fasthttp.StatusOK)
	a.g.record(a.entry, v.code, r, method)
}

// isIdentityHeaderName reports whether name is one of identityHeaders.
func isIdentityHeaderName(name []byte) bool {
	return containsFold(identityHeaders[:], name)
}

// containsFold reports whether names holds name, compared
// case-insensitively.
func containsFold(names []string, name []byte) bool {
	for _, n := range names {
		if equalFold(name, n) {
			return true
		}
	}
	return false
}

// appendName appends a field name, in lower case as Envoy has them, to a
// comma-separated list.
func appendName[T string | []byte](list []byte, name T) []byte {
	if len(list) > 0 {
		list = append(list, ',')
	}
	for i := 0; i < len(name); i++ {
		list = append(list, lower(name[i]))
	}
	return list
}

// envoyTarget parses the original request target: raw less a.prefix.
func (a *authHandler) envoyTarget(raw []byte, uri *fasthttp.URI) bool {
	if !bytes.HasPrefix(raw, a.prefix) {
		return false
	}
	return parseTarget(uri, raw[len(a.prefix):])
}

// forwardedTarget reads the original request's method and target from the
// fields front proxies set, into uri.
func forwardedTarget(h *fasthttp.RequestHeader, uri *fasthttp.URI) (method []byte, ok bool) {
	method, ok = agreed(h, "X-Forwarded-Method", "X-Original-Method")
	if !ok {
		return nil, false
	}
	if method == nil {
		method = h.Method()
	}
	for _, c := range method {
		if !tchar(c) { // RFC 9110 §9.1: method = token
			return nil, false
		}
	}
	target, ok := agreed(h, "X-Forwarded-Uri", "X-Original-Uri")
	if !ok {
		return nil, false
	}
	if target == nil {
		target = h.RequestURI()
	}
	return method, len(method) > 0 && parseTarget(uri, target)
}

// agreed returns the value of field a or b, nil if neither is present. It
// fails if either is repeated or empty, or both are present and differ.
func agreed(h *fasthttp.RequestHeader, a, b string) ([]byte, bool) {
	va, ok := single(h, a)
	if !ok {
		return nil, false
	}
	vb, ok := single(h, b)
	switch {
	case !ok:
		return nil, false
	case va == nil:
		return vb, true
	case vb == nil || bytes.Equal(va, vb):
		return va, true
	}
	return nil, false
}

// single returns the value of a field present at most once, nil if absent.
func single(h *fasthttp.RequestHeader, name string) ([]byte, bool) {
	vs := h.PeekAll(name)
	switch {
	case len(vs) == 0:
		return nil, true
	case len(vs) > 1 || len(vs[0]) == 0:
		return nil, false
	}
	return vs[0], true
}

// targetHost is given to URI.Parse so that it never reads a target
// starting with "//" as an authority: "//admin/x" is the path /admin/x.
var targetHost = []byte("target.invalid")

// parseTarget parses an origin-form or absolute-form request target (RFC
// 9112 §3.2) into uri.
func parseTarget(uri *fasthttp.URI, raw []byte) bool {
	if len(raw) == 0 || (raw[0] != '/' && !bytes.HasPrefix(raw, []byte("http://")) && !bytes.HasPrefix(raw, []byte("https://"))) {
		return false
	}
	return uri.Parse(targetHost, raw) == nil
}
