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
// The decision takes the request's method, its path and query, and its
// Authorization fields. In order:
//
//  1. An access_token query parameter is refused with 400 invalid_request,
//     on every route: RFC 6750 §2.3 is not supported, and an upstream that
//     read it would act on a token nobody verified.
//  2. The Policy picks a route by the path, percent-decoded and with dot
//     segments and repeated slashes removed, which is also the path the
//     Sidecar forwards: "/public/../admin" is "/admin" to both. A public
//     route is allowed without a token.
//  3. No Authorization field, or one of another scheme: 401 with
//     WWW-Authenticate: Bearer realm="meshauth" and no error code (RFC 6750
//     §3.1). More than one, or a Bearer field that is not "Bearer" 1*SP
//     token68 (RFC 6750 §2.1): 400 invalid_request.
//  4. The token goes to the Verifier, package token's, the only judge of
//     its validity; a refusal is 401 invalid_token with the token.Reason as
//     error_description (RFC 6750 §3.1). A verifier failure that is not a
//     refusal is 503.
//  5. A scope the route needs is missing: 403 insufficient_scope with the
//     needed scopes (RFC 6750 §3.1).
//
// Refusals carry a small JSON body that never quotes the token. Allowed
// requests reach the upstream with X-Meshauth-Subject, X-Meshauth-Client
// and X-Meshauth-Scope from the token's "sub", "client_id" and "scope";
// whatever the caller sent under X-Meshauth-* (or X_Meshauth_*) is removed
// on every route, first.
//
// NewMetrics and NewAdminHandler provide the metrics and the admin
// listener's /metrics, /healthz and /readyz.
package proxy
