package proxy

import (
	"reflect"
	"strings"
	"sync"
	"testing"

	"gopkg.in/yaml.v3"
)

func TestPolicyYAML(t *testing.T) {
	const doc = `
default_scopes: [orders:read]
routes:
  - path_prefix: /healthz
    public: true
  - path_prefix: /orders
    methods: [POST, PUT, DELETE]
    scopes: [orders:write]
  - path_prefix: /orders/export
    scopes: [orders:export, orders:read]
`
	var p Policy
	dec := yaml.NewDecoder(strings.NewReader(doc))
	dec.KnownFields(true)
	if err := dec.Decode(&p); err != nil {
		t.Fatal(err)
	}
	if err := p.Validate(); err != nil {
		t.Fatal(err)
	}
	want := Policy{
		DefaultScopes: []string{"orders:read"},
		Routes: []Route{
			{PathPrefix: "/healthz", Public: true, Line: 4},
			{PathPrefix: "/orders", Methods: []string{"POST", "PUT", "DELETE"}, Scopes: []string{"orders:write"}, Line: 6},
			{PathPrefix: "/orders/export", Scopes: []string{"orders:export", "orders:read"}, Line: 9},
		},
	}
	if !reflect.DeepEqual(p, want) {
		t.Errorf("decoded %+v\nwant %+v", p, want)
	}
}

func TestPolicyValidate(t *testing.T) {
	tests := []struct {
		name  string
		p     Policy
		wants []string // each must appear in the error
	}{
		{"relative prefix", Policy{Routes: []Route{{PathPrefix: "orders"}}}, []string{`route 0 (path_prefix "orders")`, `must start with "/"`}},
		{"empty prefix", Policy{Routes: []Route{{}}}, []string{`must start with "/"`}},
		{"double slash", Policy{Routes: []Route{{PathPrefix: "/a//b"}}}, []string{`"//"`}},
		{"dot segment", Policy{Routes: []Route{{PathPrefix: "/a/../b"}}}, []string{`".."`}},
		{"trailing dot", Policy{Routes: []Route{{PathPrefix: "/a/."}}}, []string{`"."`}},
		{"encoded", Policy{Routes: []Route{{PathPrefix: "/a%20b"}}}, []string{"decoded path"}},
		{"query", Policy{Routes: []Route{{PathPrefix: "/a?b"}}}, []string{"decoded path"}},
		{"control", Policy{Routes: []Route{{PathPrefix: "/a\nb"}}}, []string{"control character"}},
		{"lower-case method", Policy{Routes: []Route{{PathPrefix: "/", Methods: []string{"get"}}}}, []string{`method "get" is not one of GET`}},
		{"unknown method", Policy{Routes: []Route{{PathPrefix: "/", Methods: []string{"BREW"}}}}, []string{`method "BREW"`}},
		{"repeated method", Policy{Routes: []Route{{PathPrefix: "/", Methods: []string{"GET", "GET"}}}}, []string{`"GET" listed twice`}},
		{"scope with space", Policy{Routes: []Route{{PathPrefix: "/", Scopes: []string{"a b"}}}}, []string{`scope "a b"`, "RFC 6749 §3.3"}},
		{"scope with quote", Policy{DefaultScopes: []string{`a"b`}}, []string{"default_scopes", `scope "a\"b"`}},
		{"empty scope", Policy{Routes: []Route{{PathPrefix: "/", Scopes: []string{""}}}}, []string{"empty scope"}},
		{"public with scopes", Policy{Routes: []Route{{PathPrefix: "/", Public: true, Scopes: []string{"a"}}}}, []string{"a public route verifies no token"}},
		{"same prefix, any method twice", Policy{Routes: []Route{{PathPrefix: "/a"}, {PathPrefix: "/a", Public: true}}}, []string{`route 0 (path_prefix "/a") and route 1`}},
		{"same prefix, shared method", Policy{Routes: []Route{{PathPrefix: "/a", Methods: []string{"GET", "PUT"}}, {PathPrefix: "/a", Methods: []string{"PUT"}}}}, []string{`route 0 (path_prefix "/a") and route 1`}},
		{"every error reported", Policy{Routes: []Route{{PathPrefix: "x"}, {PathPrefix: "/", Methods: []string{"get"}}}}, []string{"route 0", "route 1"}},
		{"exact and prefix", Policy{Routes: []Route{{Path: "/a", PathPrefix: "/a"}}}, []string{"not both"}},
		{"same exact path, trailing slash", Policy{Routes: []Route{{Path: "/a"}, {Path: "/a/"}}}, []string{`route 0 (path "/a") and route 1`}},
		{"same prefix, one case-insensitive", Policy{Routes: []Route{{PathPrefix: "/A"}, {PathPrefix: "/a", CaseInsensitive: true}}}, []string{"and route 1"}},
		{"parameter in a prefix", Policy{Routes: []Route{{PathPrefix: "/a;b"}}}, []string{"';'"}},
		{"public with a condition", Policy{Routes: []Route{{PathPrefix: "/", Public: true, Condition: "true"}}}, []string{"a public route verifies no token"}},
		{"condition headers alone", Policy{Routes: []Route{{PathPrefix: "/", ConditionHeaders: []string{"x-a"}}}}, []string{"without a condition"}},
		{"condition header authorization", Policy{Routes: []Route{{PathPrefix: "/", Condition: "true", ConditionHeaders: []string{"Authorization"}}}}, []string{"the verifier's alone"}},
		{"condition header in the identity namespace", Policy{Routes: []Route{{PathPrefix: "/", Condition: "true", ConditionHeaders: []string{"X-Meshauth-Role"}}}}, []string{"removed before"}},
		{"claim header reserved", Policy{Routes: []Route{{PathPrefix: "/", ClaimHeaders: []ClaimHeader{{Header: "X-Meshauth-Subject", Claim: "sub"}}}}}, []string{"owns"}},
		{"claim header hop-by-hop", Policy{Routes: []Route{{PathPrefix: "/", ClaimHeaders: []ClaimHeader{{Header: "connection", Claim: "sub"}}}}}, []string{"owns"}},
		{"claim header not a name", Policy{Routes: []Route{{PathPrefix: "/", ClaimHeaders: []ClaimHeader{{Header: "X Y", Claim: "sub"}}}}}, []string{"not a field name"}},
		{"claim header twice", Policy{Routes: []Route{{PathPrefix: "/", ClaimHeaders: []ClaimHeader{{Header: "X-A", Claim: "a"}, {Header: "x-a", Claim: "b"}}}}}, []string{"listed twice"}},
		{"claim header without claim", Policy{Routes: []Route{{PathPrefix: "/", ClaimHeaders: []ClaimHeader{{Header: "X-A"}}}}}, []string{"names no claim"}},
		{"empty issuer", Policy{Routes: []Route{{PathPrefix: "/", Issuers: []string{""}}}}, []string{"empty issuer"}},
		{"forward path", Policy{ForwardPath: "decoded"}, []string{`forward_path "decoded"`}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			err := tt.p.Validate()
			if err == nil {
				t.Fatal("accepted")
			}
			for _, w := range tt.wants {
				if !strings.Contains(err.Error(), w) {
					t.Errorf("error %q lacks %q", err, w)
				}
			}
		})
	}
	ok := Policy{Routes: []Route{
		{PathPrefix: "/a", Methods: []string{"GET"}},
		{PathPrefix: "/a", Methods: []string{"POST"}, Scopes: []string{"w"}},
		{PathPrefix: "/a"},
		{PathPrefix: "/", Public: true},
	}}
	if err := ok.Validate(); err != nil {
		t.Errorf("valid policy refused: %v", err)
	}
}

func TestCompileErrors(t *testing.T) {
	_, err := NewRules(Policy{Routes: []Route{
		{PathPrefix: "/a", ClaimHeaders: []ClaimHeader{{Header: "X-Tenant", Claim: "tenant"}}, Line: 3},
		{PathPrefix: "/b", Condition: `headers["x-tenant"] == "a"`, ConditionHeaders: []string{"x-tenant"}, Line: 5},
		{PathPrefix: "/c", Condition: `sub`, Line: 7},
		{PathPrefix: "/d", Methods: []string{"get"}, Line: 9},
	}})
	for _, want := range []string{
		`line 5: route 1 (path_prefix "/b"): condition header "x-tenant" is a claim header`,
		`line 7: route 2 (path_prefix "/c"): condition: is of type string, not bool`,
		`line 9: route 3 (path_prefix "/d"): method "get"`,
	} {
		if err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("error %v lacks %q", err, want)
		}
	}
}

func TestPolicyMatch(t *testing.T) {
	rs, err := compile(Policy{
		DefaultScopes: []string{"default"},
		Routes: []Route{
			{PathPrefix: "/", Public: true, Methods: []string{"GET"}},
			{PathPrefix: "/api", Scopes: []string{"api"}},
			{PathPrefix: "/api/admin", Methods: []string{"POST"}, Scopes: []string{"admin"}},
			{PathPrefix: "/api/admin", Methods: []string{"GET"}, Scopes: []string{"admin:read"}},
			{PathPrefix: "/files/", Scopes: []string{"files"}},
			{Path: "/api/admin/exact", Scopes: []string{"exact"}},
			{PathPrefix: "/Docs", CaseInsensitive: true, Scopes: []string{"docs"}},
			{PathPrefix: "/docs/private", Scopes: []string{"private"}},
		},
	}, 1)
	if err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		method, path string
		want         string // the route's scopes, or "public"
	}{
		{"GET", "/", "public"},
		{"GET", "/index.html", "public"},
		{"POST", "/index.html", "default"}, // "/" has no POST route
		{"GET", "/api", "api"},
		{"GET", "/api/", "api"},
		{"GET", "/api/x", "api"},
		{"GET", "/apix", "public"}, // not a segment of /api
		{"POST", "/api/admin/users", "admin"},
		{"GET", "/api/admin", "admin:read"},
		// /api/admin has no DELETE route: the next shorter prefix that
		// matches applies, never straight the default.
		{"DELETE", "/api/admin/users", "api"},
		{"GET", "/api/administrator", "api"},
		{"GET", "/files/a", "files"},
		{"GET", "/files", "public"}, // "/files/" needs the slash
		// An exact path is more specific than any prefix, for every
		// method; below it, the prefixes apply.
		{"DELETE", "/api/admin/exact", "exact"},
		{"GET", "/api/admin/exact/", "exact"},
		{"GET", "/api/admin/exact/x", "admin:read"},
		{"GET", "/DOCS/a", "docs"},
		{"GET", "/docs/private/a", "private"},
		{"GET", "/Docs/Private/a", "docs"}, // the longer prefix is case-sensitive
	}
	for _, tt := range tests {
		r := rs.match([]byte(tt.method), []byte(tt.path))
		got := strings.Join(r.scopes, " ")
		if r.public {
			got = "public"
		}
		if got != tt.want {
			t.Errorf("%s %s: matched %q, want %q", tt.method, tt.path, got, tt.want)
		}
	}
}

// TestRulesReplace checks that a replacement reaches every entry point
// sharing the Rules at once, that an invalid policy changes nothing, and
// that deciding meanwhile sees one policy or the other, whole.
func TestRulesReplace(t *testing.T) {
	open := Policy{Routes: []Route{{PathPrefix: "/a", Public: true}, {PathPrefix: "/b", Public: true}}}
	closed := Policy{Routes: []Route{{PathPrefix: "/a", Scopes: []string{"x"}}, {PathPrefix: "/b", Scopes: []string{"x"}}}}
	rules := mustRules(t, open)
	if err := rules.Replace(Policy{Routes: []Route{{PathPrefix: "a"}}}); err == nil || rules.Version() != 1 {
		t.Fatalf("invalid policy: %v, version %d", err, rules.Version())
	}
	var wg sync.WaitGroup
	stop := make(chan struct{})
	for range 4 {
		wg.Go(func() {
			for {
				select {
				case <-stop:
					return
				default:
				}
				rs := rules.load()
				a, b := rs.match([]byte("GET"), []byte("/a")), rs.match([]byte("GET"), []byte("/b"))
				if a.public != b.public {
					t.Error("a decision saw two policies")
					return
				}
			}
		})
	}
	for i := range 200 {
		if err := rules.Replace([]Policy{closed, open}[i%2]); err != nil {
			t.Fatal(err)
		}
	}
	close(stop)
	wg.Wait()
	if rules.Version() != 201 || !rules.load().match([]byte("GET"), []byte("/a")).public {
		t.Errorf("version %d, last policy not in force", rules.Version())
	}
}
