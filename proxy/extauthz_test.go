package proxy

import (
	"context"
	"slices"
	"testing"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	authv3 "github.com/envoyproxy/go-control-plane/envoy/service/auth/v3"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
)

// extAuthzClient serves an ExtAuthzServer over loopback gRPC and returns a
// client of it.
func extAuthzClient(t *testing.T) authv3.AuthorizationClient {
	t.Helper()
	s, err := NewExtAuthzServer(testConfig(t))
	if err != nil {
		t.Fatal(err)
	}
	return grpcClientOf(t, s)
}

// grpcClientOf serves s over loopback gRPC and returns a client of it.
func grpcClientOf(t *testing.T, s *ExtAuthzServer) authv3.AuthorizationClient {
	t.Helper()
	gs := grpc.NewServer()
	s.Register(gs)
	ln := listen(t)
	go gs.Serve(ln)
	t.Cleanup(gs.GracefulStop)
	conn, err := grpc.NewClient(ln.Addr().String(), grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close() })
	return authv3.NewAuthorizationClient(conn)
}

func checkRequest(method, path string, headers map[string]string) *authv3.CheckRequest {
	return &authv3.CheckRequest{Attributes: &authv3.AttributeContext{
		Request: &authv3.AttributeContext_Request{Http: &authv3.AttributeContext_HttpRequest{
			Method: method, Path: path, Headers: headers,
		}},
	}}
}

func TestExtAuthzGRPC(t *testing.T) {
	client := extAuthzClient(t)
	tok := validToken()
	readOnly := tokenWith(func(_, c jsonObject) { c["scope"] = "orders:read" })

	tests := []struct {
		name      string
		req       *authv3.CheckRequest
		code      codes.Code
		status    int32
		challenge string
		set       map[string]string
		remove    []string
	}{
		{
			name: "allowed",
			req: checkRequest("POST", "/orders/1?x=1", map[string]string{
				":path": "/orders/1?x=1", "authorization": "Bearer " + tok,
				"x-meshauth-subject": "mallory", "x-meshauth-role": "admin", "x_meshauth_client": "evil",
			}),
			code: codes.OK,
			set: map[string]string{"x-meshauth-subject": "alice", "x-meshauth-client": "web", "x-meshauth-scope": "orders:read orders:write",
				"x-meshauth-issuer": testIssuer},
			// Set fields are overwritten, never removed: Envoy removes
			// after setting.
			remove: []string{"x-meshauth-role", "x_meshauth_client"},
		},
		{
			name:   "public",
			req:    checkRequest("GET", "/public/x", map[string]string{"x-meshauth-subject": "mallory"}),
			code:   codes.OK,
			remove: []string{"x-meshauth-subject", "x-meshauth-client", "x-meshauth-scope"},
		},
		{
			name: "raw header map",
			req: &authv3.CheckRequest{Attributes: &authv3.AttributeContext{Request: &authv3.AttributeContext_Request{
				Http: &authv3.AttributeContext_HttpRequest{Method: "GET", Path: "/orders", HeaderMap: &corev3.HeaderMap{
					Headers: []*corev3.HeaderValue{{Key: "authorization", RawValue: []byte("Bearer " + tok)}},
				}},
			}}},
			code: codes.OK,
			set: map[string]string{"x-meshauth-subject": "alice", "x-meshauth-client": "web", "x-meshauth-scope": "orders:read orders:write",
				"x-meshauth-issuer": testIssuer},
			remove: nil,
		},
		{
			name: "raw header map, two authorization fields",
			req: &authv3.CheckRequest{Attributes: &authv3.AttributeContext{Request: &authv3.AttributeContext_Request{
				Http: &authv3.AttributeContext_HttpRequest{Method: "GET", Path: "/orders", HeaderMap: &corev3.HeaderMap{
					Headers: []*corev3.HeaderValue{
						{Key: "authorization", RawValue: []byte("Bearer " + tok)},
						{Key: "authorization", RawValue: []byte("Bearer " + tok)},
					},
				}},
			}}},
			code: codes.InvalidArgument, status: 400, challenge: invalidReq + `"more than one Authorization header"`,
		},
		{
			name: "missing token", req: checkRequest("GET", "/orders", nil),
			code: codes.Unauthenticated, status: 401, challenge: bareChallenge,
		},
		{
			name: "expired",
			req: checkRequest("GET", "/orders", map[string]string{
				"authorization": "Bearer " + tokenWith(func(_, c jsonObject) { c["exp"] = 1 }),
			}),
			code: codes.Unauthenticated, status: 401, challenge: invalidToken + `"expired"`,
		},
		{
			name: "scope",
			req:  checkRequest("DELETE", "/orders/1", map[string]string{"authorization": "Bearer " + readOnly}),
			code: codes.PermissionDenied, status: 403,
			challenge: `Bearer realm="meshauth", error="insufficient_scope", scope="orders:write"`,
		},
		{
			// Envoy joins repeated fields with commas in the map form.
			name: "joined authorization fields",
			req:  checkRequest("GET", "/orders", map[string]string{"authorization": "Bearer " + tok + ",Bearer " + tok}),
			code: codes.InvalidArgument, status: 400, challenge: invalidReq + `"malformed Authorization header"`,
		},
		{
			name: "query token",
			req:  checkRequest("GET", "/public?access_token="+tok, nil),
			code: codes.InvalidArgument, status: 400, challenge: invalidReq + `"access_token in the query is not supported"`,
		},
		{
			name: "escape from public",
			req:  checkRequest("GET", "/public/../admin", nil),
			code: codes.Unauthenticated, status: 401, challenge: bareChallenge,
		},
		{
			// Refused before any route is chosen: an upstream that
			// decodes it would see other segments.
			name: "encoded slash",
			req:  checkRequest("GET", "/public/..%2fadmin", nil),
			code: codes.InvalidArgument, status: 400, challenge: invalidReq + `"encoded slash or backslash in the path"`,
		},
		{
			name: "no http attributes", req: &authv3.CheckRequest{},
			code: codes.InvalidArgument, status: 400, challenge: invalidReq + `"missing or conflicting original request"`,
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			resp, err := client.Check(context.Background(), tt.req)
			if err != nil {
				t.Fatal(err)
			}
			if got := codes.Code(resp.GetStatus().GetCode()); got != tt.code {
				t.Fatalf("status %v, want %v", got, tt.code)
			}
			if tt.code != codes.OK {
				d := resp.GetDeniedResponse()
				if d == nil || int32(d.GetStatus().GetCode()) != tt.status {
					t.Fatalf("denied response %v, want HTTP %d", d, tt.status)
				}
				var challenge string
				for _, h := range d.GetHeaders() {
					if h.GetHeader().GetKey() == "www-authenticate" {
						challenge = h.GetHeader().GetValue()
					}
				}
				if challenge != tt.challenge {
					t.Errorf("www-authenticate %q, want %q", challenge, tt.challenge)
				}
				if d.GetBody() == "" || len(d.GetBody()) > 200 {
					t.Errorf("body %q", d.GetBody())
				}
				return
			}
			ok := resp.GetOkResponse()
			set := map[string]string{}
			for _, h := range ok.GetHeaders() {
				if h.GetAppendAction() != corev3.HeaderValueOption_OVERWRITE_IF_EXISTS_OR_ADD {
					t.Errorf("%s appended, not overwritten", h.GetHeader().GetKey())
				}
				set[h.GetHeader().GetKey()] = h.GetHeader().GetValue()
			}
			if len(set) != len(tt.set) {
				t.Errorf("set %v, want %v", set, tt.set)
			}
			for k, v := range tt.set {
				if set[k] != v {
					t.Errorf("set %s = %q, want %q", k, set[k], v)
				}
			}
			var wantRemove []string
			for _, name := range append(slices.Clone(envoyIdentityHeaders[:]), tt.remove...) {
				if _, isSet := tt.set[name]; !isSet && !slices.Contains(wantRemove, name) {
					wantRemove = append(wantRemove, name)
				}
			}
			if !sameSet(ok.GetHeadersToRemove(), wantRemove) {
				t.Errorf("headers_to_remove %q, want %q", ok.GetHeadersToRemove(), wantRemove)
			}
		})
	}
}
