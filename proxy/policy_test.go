package proxy

import (
	"reflect"
	"strings"
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

func TestPolicyMatch(t *testing.T) {
	rs, err := compile(Policy{
		DefaultScopes: []string{"default"},
		Routes: []Route{
			{PathPrefix: "/", Public: true, Methods: []string{"GET"}},
			{PathPrefix: "/api", Scopes: []string{"api"}},
			{PathPrefix: "/api/admin", Methods: []string{"POST"}, Scopes: []string{"admin"}},
			{PathPrefix: "/api/admin", Methods: []string{"GET"}, Scopes: []string{"admin:read"}},
			{PathPrefix: "/files/", Scopes: []string{"files"}},
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
