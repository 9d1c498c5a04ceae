package proxy

import (
	"context"
	"strings"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	authv3 "github.com/envoyproxy/go-control-plane/envoy/service/auth/v3"
	typev3 "github.com/envoyproxy/go-control-plane/envoy/type/v3"
	"github.com/valyala/fasthttp"
	rpcstatus "google.golang.org/genproto/googleapis/rpc/status"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
)

// ExtAuthzServer is Envoy's external authorization service
// (envoy.service.auth.v3.Authorization) for the ext_authz HTTP filter in
// gRPC mode. An allowed request gets the identity and claim headers that
// have a value, overwriting any the caller sent, and has the others and
// every other X-Meshauth-* field the caller sent removed. A refused one gets the status, WWW-Authenticate field and
// JSON body the sidecar would send.
type ExtAuthzServer struct {
	authv3.UnimplementedAuthorizationServer
	g *guard
}

// NewExtAuthzServer returns an ExtAuthzServer; Register it with a gRPC
// server.
func NewExtAuthzServer(cfg Config) (*ExtAuthzServer, error) {
	g, err := newGuard(cfg)
	if err != nil {
		return nil, err
	}
	return &ExtAuthzServer{g: g}, nil
}

// Register registers s with gs.
func (s *ExtAuthzServer) Register(gs *grpc.Server) {
	authv3.RegisterAuthorizationServer(gs, s)
}

// Check implements authv3.AuthorizationServer.
func (s *ExtAuthzServer) Check(_ context.Context, req *authv3.CheckRequest) (*authv3.CheckResponse, error) {
	hr := req.GetAttributes().GetRequest().GetHttp()
	method := []byte(hr.GetMethod())
	r := s.g.begin()
	defer s.g.end(r)

	// Header names arrive in lower case. The map form joins repeated
	// fields with commas, which the bearer syntax refuses; the raw form
	// (encode_raw_headers) keeps them apart.
	var authz [][]byte
	var caller []string // the caller's fields that must not reach the upstream
	if hm := hr.GetHeaderMap(); hm != nil {
		for _, h := range hm.GetHeaders() {
			authz, caller = sortHeader(h.GetKey(), h.GetRawValue(), authz, caller, r.rules)
		}
	} else {
		for k, v := range hr.GetHeaders() {
			authz, caller = sortHeader(k, v, authz, caller, r.rules)
		}
	}

	uri := fasthttp.AcquireURI()
	defer fasthttp.ReleaseURI(uri)
	if len(method) == 0 || !parseTarget(uri, []byte(hr.GetPath())) {
		s.g.record(entryExtAuthzGRPC, codeBadTarget, r, method)
		return denied(answers[codeBadTarget].verdict), nil
	}
	v := s.g.decide(r, method, uri, authz, grpcHeaders{hr})
	s.g.record(entryExtAuthzGRPC, v.code, r, method)
	if !v.ok() {
		return denied(v), nil
	}

	ok := &authv3.OkHttpResponse{}
	set := map[string]bool{}
	add := func(name string, value []byte) {
		if len(value) == 0 {
			return // Envoy drops empty values; the removal below covers it
		}
		set[name] = true
		ok.Headers = append(ok.Headers, headerOption(name, string(value)))
	}
	for i, name := range envoyIdentityHeaders {
		value, _ := r.value(i)
		add(name, value)
	}
	if v.code == codeAllowed {
		for i, h := range r.route.claims {
			if value, isSet := r.value(numIdentity + i); isSet {
				add(h.lower, value)
			}
		}
	}
	// Envoy applies removals after the headers above: remove only what is
	// not set, and the identity and claim header names whether or not
	// they were seen.
	for _, names := range [][]string{envoyIdentityHeaders[:], r.rules.claimHeaders, caller} {
		for _, name := range names {
			name = strings.ToLower(name)
			if !set[name] {
				set[name] = true
				ok.HeadersToRemove = append(ok.HeadersToRemove, name)
			}
		}
	}
	return &authv3.CheckResponse{
		Status:       &rpcstatus.Status{Code: int32(codes.OK)},
		HttpResponse: &authv3.CheckResponse_OkResponse{OkResponse: ok},
	}, nil
}

// envoyIdentityHeaders are identityHeaders as Envoy spells them.
var envoyIdentityHeaders = [numIdentity]string{
	strings.ToLower(headerSubject), strings.ToLower(headerClient), strings.ToLower(headerScope), strings.ToLower(headerIssuer),
}

// sortHeader collects the Authorization values and the names of the
// fields that must not reach the upstream (strippedHeader) of a request's
// header fields. A value is copied, from the map form's strings, only if
// it is an Authorization value.
func sortHeader[V string | []byte](name string, value V, authz [][]byte, caller []string, rs *rules) ([][]byte, []string) {
	switch {
	case strings.EqualFold(name, "authorization"):
		authz = append(authz, []byte(value))
	case strippedHeader([]byte(name), rs):
		caller = append(caller, strings.ToLower(name))
	}
	return authz, caller
}

// grpcHeaders are an ext_authz request's fields, for conditions.
type grpcHeaders struct {
	hr *authv3.AttributeContext_HttpRequest
}

func (g grpcHeaders) field(name string) ([]byte, bool) {
	if hm := g.hr.GetHeaderMap(); hm != nil {
		for _, h := range hm.GetHeaders() {
			if strings.EqualFold(h.GetKey(), name) {
				return h.GetRawValue(), true
			}
		}
		return nil, false
	}
	v, ok := g.hr.GetHeaders()[name]
	return []byte(v), ok
}

// grpcCode maps the status of a refusal to a gRPC status: the one Envoy
// reads (anything but OK denies), and the one the Sidecar answers gRPC
// callers.
func grpcCode(status int) codes.Code {
	switch status {
	case 400:
		return codes.InvalidArgument
	case 401:
		return codes.Unauthenticated
	case 413:
		return codes.ResourceExhausted
	case 502, 503:
		return codes.Unavailable
	case 504:
		return codes.DeadlineExceeded
	}
	return codes.PermissionDenied
}

func denied(v verdict) *authv3.CheckResponse {
	resp := &authv3.DeniedHttpResponse{
		Status: &typev3.HttpStatus{Code: typev3.StatusCode(v.status)},
		Headers: []*corev3.HeaderValueOption{
			headerOption("content-type", "application/json"),
			headerOption("cache-control", "no-store"),
		},
		Body: v.body,
	}
	if v.challenge != "" {
		resp.Headers = append(resp.Headers, headerOption("www-authenticate", v.challenge))
	}
	return &authv3.CheckResponse{
		Status:       &rpcstatus.Status{Code: int32(grpcCode(v.status)), Message: answers[v.code].reason},
		HttpResponse: &authv3.CheckResponse_DeniedResponse{DeniedResponse: resp},
	}
}

// headerOption sets a header field, replacing any of the same name.
func headerOption(name, value string) *corev3.HeaderValueOption {
	return &corev3.HeaderValueOption{
		Header:       &corev3.HeaderValue{Key: name, Value: value},
		AppendAction: corev3.HeaderValueOption_OVERWRITE_IF_EXISTS_OR_ADD,
	}
}
