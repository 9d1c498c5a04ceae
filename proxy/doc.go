// Package proxy holds the sidecar's entry points, which all make the same
// decision about a request:
//
//   - Sidecar: a fasthttp reverse proxy in front of one service.
//   - NewForwardAuth: the subrequest endpoint of nginx auth_request, Traefik
//     ForwardAuth and Caddy forward_auth; the Sidecar also answers it at
//     SidecarConfig.ForwardAuthPath.
//   - ExtAuthzServer: Envoy's ext_authz in gRPC mode; NewExtAuthzHTTP: in
//     HTTP mode.
//
// The Egress is the outbound side: it replaces the token of each call the
// service makes with one exchanged for the callee (RFC 8693), and is
// described on its type.
//
// The Sidecar, the Edge and the Egress forward through one step
// (forward.go): the bearer preamble, the hop-by-hop fields removed before
// anything is set, the forwarded fields, one attempt (transport.go),
// streamed bodies, WebSocket tunnels (tunnel.go). Their listeners serve
// HTTP/1.1 with fasthttp; the Sidecar's also hands connections that open
// with the HTTP/2 preface to net/http's HTTP/2 server (server.go, h2.go),
// judged by the same guard.
//
// The decision takes the request's method, its path and query, its
// Authorization fields and, for conditions, its other fields. In order:
//
//  1. An access_token query parameter is refused with 400 invalid_request,
//     on every route: RFC 6750 §2.3 is not supported, and an upstream that
//     read it would act on a token nobody verified.
//  2. The path is made canonical (RFC 3986 §5.2.4 dot segments removed,
//     unreserved characters decoded, repeated slashes merged; see
//     canonical.go). What cannot be made safe is refused before any policy
//     runs: 400 invalid_request for a dot or empty segment with parameters
//     ("..;"), an encoded slash or backslash (unless
//     Policy.AllowEncodedSlashes), a backslash, an encoded ';', a control
//     character, a malformed or double percent-encoding, or a ".." after
//     an empty segment; 414 for a path longer than 8 KiB.
//  3. The Rules pick the most specific route that matches both the path
//     (percent-decoded, without ";" parameters) and the method; a request
//     that no route matches gets the default. A public route is allowed
//     without a token.
//  4. No Authorization field, or one of another scheme: 401 with
//     WWW-Authenticate: Bearer realm="meshauth" and no error code (RFC 6750
//     §3.1). More than one, or a Bearer field that is not "Bearer" 1*SP
//     token68 (RFC 6750 §2.1): 400 invalid_request.
//  5. The token goes to the Verifier, package token's, the only judge of
//     its validity; a refusal is 401 invalid_token with the token.Reason as
//     error_description (RFC 6750 §3.1). A verifier failure that is not a
//     refusal is 503.
//  6. The route accepts only some issuers, and not this token's: 403
//     access_denied.
//  7. A scope the route needs is missing: 403 insufficient_scope with the
//     needed scopes (RFC 6750 §3.1).
//  8. The route's condition (CEL, see condition.go) is false, or fails
//     to evaluate: 403 access_denied; a failure is counted apart
//     (condition_error).
//  9. A value to be sent in a header field holds a control character: 401
//     invalid_token.
//
// Refusals carry a small JSON body that never quotes the token. Allowed
// requests reach the upstream with X-Meshauth-Subject and
// X-Meshauth-Client from the token's "sub" and "client_id", qualified by
// the issuer's namespace (token.Claims.SubjectPrefix), X-Meshauth-Scope
// from "scope", X-Meshauth-Issuer from "iss", and the route's claim
// headers; whatever the caller sent under X-Meshauth-* (or X_Meshauth_*)
// or under a claim header's name is removed on every route, first. The
// Sidecar forwards the canonical path unless Policy.ForwardPath says
// "original".
//
// Rules are shared by the entry points of a process, and replaced for all
// of them at once (Rules.Replace; PolicyFile follows a file). A
// DecisionLog, if configured, writes a line per refusal and per sampled
// allowed request, off the request's path.
//
// NewMetrics and NewAdminHandler provide the metrics and the admin
// listener's /metrics, /healthz and /readyz.
package proxy
