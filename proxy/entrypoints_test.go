package proxy

import (
	"context"
	"strings"
	"testing"

	authv3 "github.com/envoyproxy/go-control-plane/envoy/service/auth/v3"
	"google.golang.org/grpc/codes"

	"github.com/meshauth/meshauth/token"
)

// entryAnswer is an entry point's answer to a request: its HTTP status
// (200 when allowed) and, when allowed, the header fields the service
// behind receives, by lower-case name.
type entryAnswer struct {
	status   int
	upstream map[string]string
}

// entryPoint sends one request, with the caller's fields ("Name: value"),
// to an entry point.
type entryPoint struct {
	name string
	ask  func(t *testing.T, method, target string, fields []string) entryAnswer
}

// entryPoints serves cfg at the four entry points, the Sidecar in front of
// up. For forward-auth and ext_authz, the fields the service receives are
// those the front proxy would send, configured as the package documents:
// the caller's fields, less those the answer removes, with those it sets.
func entryPoints(t *testing.T, cfg Config, up *upstream) []entryPoint {
	t.Helper()
	sidecar := startSidecar(t, SidecarConfig{Config: cfg, Upstream: up.URL})
	fa, err := NewForwardAuth(cfg)
	if err != nil {
		t.Fatal(err)
	}
	forwardAuth := serve(t, fa)
	ea, err := NewExtAuthzHTTP(cfg, "")
	if err != nil {
		t.Fatal(err)
	}
	extAuthzHTTP := serve(t, ea)
	grpcClient := extAuthzClientFor(t, cfg)
	request := func(start string, fields []string) string {
		return start + " HTTP/1.1\nHost: svc\nConnection: close\nContent-Length: 0\n" + strings.Join(append(fields, ""), "\n") + "\n"
	}
	return []entryPoint{
		{"proxy", func(t *testing.T, method, target string, fields []string) entryAnswer {
			before := up.hits.Load()
			resp := rawRequest(t, sidecar, request(method+" "+target, fields))
			a := entryAnswer{status: resp.status}
			if up.hits.Load() != before {
				r, _ := up.lastRequest()
				a.upstream = map[string]string{}
				for name, v := range r.Header {
					a.upstream[strings.ToLower(name)] = strings.Join(v, ",")
				}
			}
			return a
		}},
		{"forward_auth", func(t *testing.T, method, target string, fields []string) entryAnswer {
			resp := rawRequest(t, forwardAuth, request("GET /auth", append([]string{"X-Forwarded-Method: " + method, "X-Forwarded-Uri: " + target}, fields...)))
			a := entryAnswer{status: resp.status}
			if resp.status == 200 {
				// nginx: proxy_set_header of each answer field, which an
				// empty value removes; fields with '_' in their name are
				// not passed (underscores_in_headers off, its default).
				a.upstream = callerFields(fields)
				for name := range a.upstream {
					if strings.Contains(name, "_") {
						delete(a.upstream, name)
					}
				}
				for name, v := range resp.header {
					if name = strings.ToLower(name); answerField(name, cfg) {
						delete(a.upstream, name)
						if v[0] != "" {
							a.upstream[name] = v[0]
						}
					}
				}
			}
			return a
		}},
		{"ext_authz_http", func(t *testing.T, method, target string, fields []string) entryAnswer {
			resp := rawRequest(t, extAuthzHTTP, request(method+" "+target, fields))
			a := entryAnswer{status: resp.status}
			if resp.status == 200 {
				// Envoy: allowed_upstream_headers set, then
				// x-envoy-auth-headers-to-remove removed.
				a.upstream = callerFields(fields)
				for name, v := range resp.header {
					if name = strings.ToLower(name); answerField(name, cfg) {
						a.upstream[name] = v[0]
					}
				}
				for name := range strings.SplitSeq(resp.header.Get(envoyRemoveHeader), ",") {
					delete(a.upstream, name)
				}
			}
			return a
		}},
		{"ext_authz_grpc", func(t *testing.T, method, target string, fields []string) entryAnswer {
			headers := map[string]string{":path": target}
			for name, v := range callerFields(fields) {
				headers[name] = v
			}
			resp, err := grpcClient.Check(context.Background(), checkRequest(method, target, headers))
			if err != nil {
				t.Fatal(err)
			}
			if codes.Code(resp.GetStatus().GetCode()) != codes.OK {
				return entryAnswer{status: int(resp.GetDeniedResponse().GetStatus().GetCode())}
			}
			a := entryAnswer{status: 200, upstream: callerFields(fields)}
			ok := resp.GetOkResponse()
			for _, h := range ok.GetHeaders() {
				a.upstream[h.GetHeader().GetKey()] = h.GetHeader().GetValue()
			}
			for _, name := range ok.GetHeadersToRemove() {
				delete(a.upstream, name)
			}
			return a
		}},
	}
}

// callerFields returns fields, "Name: value", by lower-case name.
func callerFields(fields []string) map[string]string {
	m := map[string]string{}
	for _, f := range fields {
		name, value, _ := strings.Cut(f, ": ")
		m[strings.ToLower(name)] = value
	}
	return m
}

// answerField reports whether an auth answer's field name is one that an
// integration copies to the upstream: an identity header or a claim header
// of cfg's policy.
func answerField(name string, cfg Config) bool {
	if strings.HasPrefix(name, "x-meshauth-") {
		return true
	}
	if cfg.Rules == nil {
		return false
	}
	return containsFold(cfg.Rules.load().claimHeaders, []byte(name))
}

// extAuthzClientFor serves an ExtAuthzServer for cfg over loopback gRPC.
func extAuthzClientFor(t *testing.T, cfg Config) authv3.AuthorizationClient {
	t.Helper()
	s, err := NewExtAuthzServer(cfg)
	if err != nil {
		t.Fatal(err)
	}
	return grpcClientOf(t, s)
}

// issuePolicy is the policy of the report that routes could be
// side-stepped, with /refunds matched regardless of case.
func issuePolicy() Policy {
	return Policy{Routes: []Route{
		{PathPrefix: "/admin", Scopes: []string{"payments.refund"}},
		{PathPrefix: "/admin/reports", Methods: []string{"GET"}, Scopes: []string{"payments.read"}},
		{PathPrefix: "/refunds", Scopes: []string{"payments.refund"}, CaseInsensitive: true},
		{PathPrefix: "/health", Public: true},
	}}
}

// TestEntryPointsJudgeOnePath runs one table against the reverse proxy,
// forward-auth, ext_authz HTTP and ext_authz gRPC: each must reach the same
// answer for the same request.
func TestEntryPointsJudgeOnePath(t *testing.T) {
	up := newUpstream(t, nil)
	points := entryPoints(t, Config{Verifier: testVerifier(t), Rules: mustRules(t, issuePolicy())}, up)
	read := "Authorization: Bearer " + tokenWith(func(_, c jsonObject) { c["scope"] = "payments.read" })

	tests := []struct {
		name, method, target, authz string
		status                      int
		upstream                    string // the path the Sidecar forwards, when allowed
	}{
		// The enclosing /admin route applies to the methods /admin/reports
		// does not list, not default_scopes.
		{"listed method", "GET", "/admin/reports", read, 200, "/admin/reports"},
		{"unlisted method falls back to the shorter prefix", "POST", "/admin/reports", read, 403, ""},
		{"unlisted method, below", "DELETE", "/admin/reports/2026", read, 403, ""},
		{"unlisted method, trailing slash", "PUT", "/admin/reports/", read, 403, ""},
		{"listed method, trailing slash", "GET", "/admin/reports/", read, 200, "/admin/reports/"},
		// RFC 3986 path parameters are stripped per segment for matching,
		// and kept for the upstream.
		{"parameter in a protected segment", "GET", "/refunds;x/1", read, 403, ""},
		{"session id parameter", "GET", "/refunds;jsessionid=1", read, 403, ""},
		{"parameter on the last segment", "GET", "/refunds/1;x", read, 403, ""},
		{"parameter before the protected segment", "GET", "/x;y/../refunds/1", read, 403, ""},
		{"parameters kept", "GET", "/admin/reports;v=1/x;a=b", read, 200, "/admin/reports;v=1/x;a=b"},
		// What cannot be made safe is refused before any policy runs.
		{"dot-dot with a parameter, no token", "GET", "/health/..;/refunds/1", "", 400, ""},
		{"dot with a parameter", "GET", "/health/.;x/refunds", "", 400, ""},
		{"encoded dot-dot with a parameter", "GET", "/health/%2e%2e;/refunds/1", "", 400, ""},
		{"empty segment with a parameter", "GET", "/health/;x/../refunds", "", 400, ""},
		{"double-encoded dot segments", "GET", "/health/%252e%252e/refunds/1", "", 400, ""},
		{"double-encoded slash", "GET", "/health/..%252frefunds", "", 400, ""},
		{"double encoding spelt out", "GET", "/health/%25%32%65", "", 400, ""},
		{"encoded slash", "GET", "/health%2f..%2frefunds/1", "", 400, ""},
		{"encoded slash, upper case", "GET", "/admin%2Freports", read, 400, ""},
		{"encoded backslash", "GET", "/health/..%5crefunds/1", "", 400, ""},
		{"backslash", "GET", `/health/..\refunds/1`, "", 400, ""},
		{"encoded semicolon", "GET", "/refunds%3bx/1", read, 400, ""},
		{"encoded NUL", "GET", "/health/%00/x", "", 400, ""},
		{"encoded line feed", "GET", "/health/%0a", "", 400, ""},
		{"encoded DEL", "GET", "/health/%7F", "", 400, ""},
		{"malformed percent-encoding", "GET", "/health/%zz", "", 400, ""},
		{"truncated percent-encoding", "GET", "/health/%2", "", 400, ""},
		{"dot-dot after an empty segment", "GET", "/refunds//../health", "", 400, ""},
		{"very long path", "GET", "/health/" + strings.Repeat("a", maxPathLength), "", 414, ""},
		// Dot segments are removed (RFC 3986 §5.2.4), encoded or not.
		{"dot segments out of public", "GET", "/health/../refunds/1", "", 401, ""},
		{"encoded dot segments", "GET", "/health/%2E%2e/refunds/1", "", 401, ""},
		{"dot-dot at the root", "GET", "/../refunds/1", read, 403, ""},
		{"dot-dot above the root", "GET", "/health/../../../refunds", read, 403, ""},
		{"dot-dot before an empty segment", "GET", "//health/../admin//reports", read, 200, "/admin/reports"},
		{"encoded unreserved letters", "POST", "/%61dmin/%72eports", read, 403, ""},
		{"repeated slashes", "POST", "//admin///reports", read, 403, ""},
		// Case is folded where the route says so.
		{"case variant", "GET", "/Refunds/1", read, 403, ""},
		{"case variant, encoded", "GET", "/%52EFUNDS", read, 403, ""},
		{"case variant of a case-sensitive route", "POST", "/Admin/reports", read, 200, "/Admin/reports"},
		{"public", "GET", "/health/live", "", 200, "/health/live"},
		{"public, dot segments inside", "GET", "/health/./a/../b", "", 200, "/health/b"},
		{"public, trailing dot", "GET", "/health/a/.", "", 200, "/health/a/"},
		{"public, trailing dot-dot", "GET", "/health/a/..", "", 200, "/health/"},
		{"segment boundary", "GET", "/healthz", "", 401, ""},
		{"other percent-encodings normalized", "GET", "/health/a%20b%c3%a9%41", "", 200, "/health/a%20b%C3%A9A"},
		{"query token", "GET", "/health?access_token=x", "", 400, ""},
	}
	for _, ep := range points {
		for _, tt := range tests {
			t.Run(ep.name+"/"+tt.name, func(t *testing.T) {
				before := up.hits.Load()
				var fields []string
				if tt.authz != "" {
					fields = append(fields, tt.authz)
				}
				got := ep.ask(t, tt.method, tt.target, fields)
				if got.status != tt.status {
					t.Errorf("%s %s: status %d, want %d", tt.method, tt.target, got.status, tt.status)
				}
				if reached := up.hits.Load() != before; reached != (ep.name == "proxy" && tt.status == 200) {
					t.Errorf("reached the upstream: %v", reached)
				}
				if ep.name == "proxy" && tt.status == 200 {
					if r, _ := up.lastRequest(); r.RequestURI != tt.upstream {
						t.Errorf("the upstream got %q, want %q", r.RequestURI, tt.upstream)
					}
				}
			})
		}
	}
}

// TestForwardOriginalPath checks forward_path: original: the upstream gets
// the path as sent, judged on its canonical form all the same.
func TestForwardOriginalPath(t *testing.T) {
	up := newUpstream(t, nil)
	p := issuePolicy()
	p.ForwardPath = ForwardOriginal
	base := startSidecar(t, SidecarConfig{Config: Config{Verifier: testVerifier(t), Rules: mustRules(t, p)}, Upstream: up.URL})
	for _, target := range []string{"/health/./a/../b%41;x", "/health//x?y=1"} {
		if resp := get(t, base, target); resp.status != 200 {
			t.Fatalf("%s: status %d", target, resp.status)
		}
		if r, _ := up.lastRequest(); r.RequestURI != target {
			t.Errorf("the upstream got %q, want %q", r.RequestURI, target)
		}
	}
	if resp := get(t, base, "/health/..;/refunds"); resp.status != 400 {
		t.Errorf("..; forwarded as original: status %d", resp.status)
	}
}

const providerIssuer = "https://provider.example"

// federatedVerifier trusts the test issuer and a federated provider,
// whose names are qualified, both with the test key.
func federatedVerifier(t *testing.T) Verifier {
	t.Helper()
	keys := token.NewKeySet([]token.Key{{ID: testKID, Algorithm: "ES256", Public: &testKey().PublicKey}})
	a, err := token.NewAuthenticator([]token.Issuer{
		{Policy: token.Policy{Issuer: testIssuer, Audiences: []string{testAudience}}, Keys: keys},
		{Policy: token.Policy{Issuer: providerIssuer, Audiences: []string{testAudience}, SubjectPrefix: providerIssuer + "#"}, Keys: keys},
	}, token.AuthenticatorOptions{})
	if err != nil {
		t.Fatal(err)
	}
	return a
}

// TestEntryPointsPolicy runs conditions, issuers, claim headers and exact
// and case-insensitive routes against the four entry points, checking
// what the service behind receives.
func TestEntryPointsPolicy(t *testing.T) {
	rules := mustRules(t, Policy{Routes: []Route{
		{PathPrefix: "/health", Public: true},
		{PathPrefix: "/charge", Scopes: []string{"payments.charge"}, Condition: `act.sub == "orders" && size(chain) <= 2`,
			ClaimHeaders: []ClaimHeader{{Header: "X-Tenant", Claim: "tenant"}, {Header: "X-Caller", Claim: "sub"}}},
		{Path: "/Refunds/", CaseInsensitive: true, Scopes: []string{"payments.refund"}},
		{PathPrefix: "/local", Issuers: []string{testIssuer}},
		{PathPrefix: "/tenant", Condition: `headers["x-tenant-hint"] == claims.tenant`, ConditionHeaders: []string{"X-Tenant-Hint"}},
		{PathPrefix: "/broken", Condition: `claims.missing == "x"`},
	}})
	up := newUpstream(t, nil)
	points := entryPoints(t, Config{Verifier: federatedVerifier(t), Rules: rules}, up)
	mint := func(edit func(c jsonObject)) string {
		return "Authorization: Bearer " + tokenWith(func(_, c jsonObject) {
			c["scope"] = "payments.charge"
			c["tenant"] = "acme"
			c["act"] = jsonObject{"sub": "orders", "act": jsonObject{"sub": "web"}}
			if edit != nil {
				edit(c)
			}
		})
	}
	viaOrders := mint(nil)
	provider := mint(func(c jsonObject) { c["iss"] = providerIssuer })
	forged := []string{"X-Tenant: evil", "x_tenant: evil", "X-Caller: root", "X-Meshauth-Issuer: " + testIssuer, "X-Meshauth-Subject: root"}

	tests := []struct {
		name, method, target string
		fields               []string
		status               int
		want                 map[string]string // fields the service gets; "" for none
	}{
		{"condition true, claim headers set", "POST", "/charge", append(forged, viaOrders), 200, map[string]string{
			"x-tenant": "acme", "x-caller": "alice", "x_tenant": "",
			"x-meshauth-subject": "alice", "x-meshauth-client": "web", "x-meshauth-issuer": testIssuer}},
		{"claim absent: its header removed", "POST", "/charge", append(forged, mint(func(c jsonObject) { delete(c, "tenant") })), 200, map[string]string{
			"x-tenant": "", "x-caller": "alice", "x_tenant": ""}},
		{"not through orders", "POST", "/charge", []string{mint(func(c jsonObject) { c["act"] = jsonObject{"sub": "billing"} })}, 403, nil},
		{"three hops", "POST", "/charge", []string{mint(func(c jsonObject) {
			c["act"] = jsonObject{"sub": "orders", "act": jsonObject{"sub": "a", "act": jsonObject{"sub": "b"}}}
		})}, 403, nil},
		{"no act: the condition errs, refused", "POST", "/charge", []string{mint(func(c jsonObject) { delete(c, "act") })}, 403, nil},
		// A federated provider's "orders" is not the local orders.
		{"provider's orders", "POST", "/charge", []string{provider}, 403, nil},
		{"public: claim headers still removed", "GET", "/health", forged, 200, map[string]string{
			"x-tenant": "", "x-caller": "", "x_tenant": "", "x-meshauth-issuer": "", "x-meshauth-subject": ""}},
		{"exact path, case folded", "GET", "/REFUNDS", []string{viaOrders}, 403, nil},
		{"exact path, trailing slash", "GET", "/refunds/", []string{viaOrders}, 403, nil},
		{"below an exact path", "GET", "/refunds/1", []string{viaOrders}, 200, nil},
		{"local issuer", "GET", "/local/x", []string{viaOrders}, 200, map[string]string{"x-meshauth-issuer": testIssuer}},
		{"issuer not accepted", "GET", "/local/x", []string{provider}, 403, nil},
		{"provider's identity qualified", "GET", "/other", append(forged, provider), 200, map[string]string{
			"x-meshauth-subject": providerIssuer + "#alice", "x-meshauth-client": providerIssuer + "#web",
			"x-meshauth-issuer": providerIssuer, "x-tenant": ""}},
		{"header condition true", "GET", "/tenant", []string{viaOrders, "X-Tenant-Hint: acme"}, 200, nil},
		{"header condition false", "GET", "/tenant", []string{viaOrders, "X-Tenant-Hint: other"}, 403, nil},
		{"header absent: the condition errs", "GET", "/tenant", []string{viaOrders}, 403, nil},
		{"missing claim fails closed", "GET", "/broken", []string{viaOrders}, 403, nil},
	}
	for _, ep := range points {
		for _, tt := range tests {
			t.Run(ep.name+"/"+tt.name, func(t *testing.T) {
				got := ep.ask(t, tt.method, tt.target, tt.fields)
				if got.status != tt.status {
					t.Fatalf("status %d, want %d", got.status, tt.status)
				}
				for name, want := range tt.want {
					if v, ok := got.upstream[name]; v != want || ok != (want != "") {
						t.Errorf("the service got %s: %q (present %v), want %q", name, v, ok, want)
					}
				}
			})
		}
	}
}
