package xds

import (
	"path/filepath"
	"reflect"
	"strings"
	"testing"
	"time"
)

const goodConfig = `listen: 127.0.0.1:18000   # a flag of the command, ignored here
issuers:
  - issuer: https://auth.example.com
  - issuer: https://partner.example.net
    jwks_url: https://partner.example.net/keys
nodes:
  - node: payments-0
    service: payments
    listen: 0.0.0.0:8080
    upstream: 127.0.0.1:9000
    ext_authz: 127.0.0.1:9001
    jwt_authn:
      issuers: [https://auth.example.com, https://partner.example.net]
      forward_payload_header: x-jwt-payload
    identities: [spiffe://cluster.local/ns/shop/sa/payments, payments-0]
  - cluster: orders
    service: orders
    listen: "[::]:8080"
    upstream: orders.default.svc.cluster.local:9000
    ext_authz: localhost:9001
    ext_authz_timeout: 250ms
`

func TestParseConfig(t *testing.T) {
	cfg, err := ParseConfig([]byte(goodConfig), func(k string) bool { return k == "listen" })
	if err != nil {
		t.Fatal(err)
	}
	want := &Config{
		Issuers: []Issuer{
			{Issuer: "https://auth.example.com"},
			{Issuer: "https://partner.example.net", JWKSURL: "https://partner.example.net/keys"},
		},
		Nodes: []Node{
			{
				ID: "payments-0", Service: "payments", Listen: "0.0.0.0:8080", Upstream: "127.0.0.1:9000", ExtAuthz: "127.0.0.1:9001",
				ExtAuthzTimeout: defaultExtAuthzTimeout,
				JWTAuthn: &JWTAuthn{
					Issuers:              []string{"https://auth.example.com", "https://partner.example.net"},
					Audiences:            []string{"payments"},
					ForwardPayloadHeader: "x-jwt-payload",
				},
				Identities: []string{"spiffe://cluster.local/ns/shop/sa/payments", "payments-0"},
				line:       7,
			},
			{
				Cluster: "orders", Service: "orders", Listen: "[::]:8080", Upstream: "orders.default.svc.cluster.local:9000", ExtAuthz: "localhost:9001",
				ExtAuthzTimeout: 250 * time.Millisecond,
				line:            16,
			},
		},
	}
	if !reflect.DeepEqual(cfg, want) {
		t.Fatalf("got %+v\nwant %+v", cfg, want)
	}
}

// TestParseConfigRefuses checks that every mistake is refused with its line
// and field.
func TestParseConfigRefuses(t *testing.T) {
	node := func(extra string) string {
		return "issuers:\n  - issuer: https://a.example\nnodes:\n  - node: n1\n    service: svc\n    listen: 0.0.0.0:8080\n    upstream: 127.0.0.1:9000\n    ext_authz: 127.0.0.1:9001\n" + extra
	}
	for _, tc := range []struct {
		name, doc, want string
	}{
		{"empty", "", "empty document"},
		{"not yaml", "nodes: [", "did not find expected"},
		{"top-level list", "- a\n- b\n", "line 1: want a mapping"},
		{"unknown top-level key", "nodse: []\n", `line 1: nodse: unknown key "nodse"`},
		{"no nodes", "issuers: []\nnodes: []\n", "nodes: no nodes configured"},
		{"unknown node key", node("    lisen: 1.2.3.4:1\n"), `line 9: nodes[0].lisen: unknown key "lisen"`},
		{"repeated key", node("    service: again\n"), "line 9: nodes[0].service: repeated key"},
		{"bad port", strings.Replace(node(""), "0.0.0.0:8080", "0.0.0.0:80800", 1), "line 6: nodes[0].listen: \"0.0.0.0:80800\": port must be 1 to 65535"},
		{"listen on a name", strings.Replace(node(""), "0.0.0.0:8080", "localhost:8080", 1), "line 6: nodes[0].listen: \"localhost:8080\": the host must be an IP address"},
		{"no port", strings.Replace(node(""), "127.0.0.1:9000", "127.0.0.1", 1), "line 7: nodes[0].upstream: \"127.0.0.1\" is not host:port"},
		{"bad host", strings.Replace(node(""), "127.0.0.1:9001", "bad_host!:9001", 1), "line 8: nodes[0].ext_authz: \"bad_host!:9001\": the host is neither"},
		{"missing field", strings.Replace(node(""), "    upstream: 127.0.0.1:9000\n", "", 1), "line 4: nodes[0].upstream: required"},
		{"node and cluster", node("    cluster: c\n"), "line 4: nodes[0]: give exactly one of node"},
		{"bad service", strings.Replace(node(""), "service: svc", "service: a.b", 1), `line 5: nodes[0].service: "a.b": use letters`},
		{"list for a value", strings.Replace(node(""), "service: svc", "service: [a]", 1), "line 5: nodes[0].service: want a value"},
		{"bad timeout", node("    ext_authz_timeout: soon\n"), `line 9: nodes[0].ext_authz_timeout: "soon" is not a positive duration`},
		{"negative timeout", node("    ext_authz_timeout: -1s\n"), "line 9: nodes[0].ext_authz_timeout"},
		{"jwt_authn without issuers", node("    jwt_authn: {audiences: [x]}\n"), "line 9: nodes[0].jwt_authn.issuers: name at least one issuer"},
		{"jwt_authn unknown issuer", node("    jwt_authn: {issuers: [https://b.example]}\n"), `line 4: nodes[0].jwt_authn.issuers[0]: issuer "https://b.example" is not in the top-level issuers`},
		{"jwt_authn bad header", node("    jwt_authn: {issuers: [https://a.example], forward_payload_header: X-Payload}\n"), "line 9: nodes[0].jwt_authn.forward_payload_header"},
		{"jwt_authn bad bool", node("    jwt_authn: {issuers: [https://a.example], require_token: yes}\n"), `line 9: nodes[0].jwt_authn.require_token: want true or false, got "yes"`},
		{"jwt_authn unknown key", node("    jwt_authn: {issuers: [https://a.example], audience: x}\n"), `line 9: nodes[0].jwt_authn.audience: unknown key`},
		{"duplicate node", node("  - node: n1\n    service: s2\n    listen: 0.0.0.0:1\n    upstream: a:1\n    ext_authz: a:2\n"), "line 9: nodes[1]: node/n1 configured twice"},
		{"issuer not a URL", strings.Replace(node(""), "https://a.example", "a.example", 1), `line 2: issuers[0].issuer: "a.example" is not an absolute URL`},
		{"issuer with password", strings.Replace(node(""), "https://a.example", "https://u:p@a.example", 1), "line 2: issuers[0].issuer: must not contain user information"},
		{"issuer twice", strings.Replace(node(""), "issuers:\n", "issuers:\n  - issuer: https://a.example\n", 1), `line 3: issuers[1].issuer: issuer "https://a.example" listed twice`},
		{"jwks_url and jwks_file", strings.Replace(node(""), "  - issuer: https://a.example\n", "  - issuer: https://a.example\n    jwks_url: https://a.example/k\n    jwks_file: /k\n", 1), "line 2: issuers[0]: give jwks_url or jwks_file, not both"},
		{"alias", "issuers: &a []\nnodes: *a\n", "line 2: YAML aliases are not supported"},
		{"no identities", node("    identities: []\n"), "line 9: nodes[0].identities: name at least one identity"},
		{"identity not a list", node("    identities: spiffe://a/b\n"), "line 9: nodes[0].identities: want a list"},
		{"empty identity", node("    identities: ['']\n"), "line 9: nodes[0].identities[0]: must not be empty"},
		{"identity with a newline", node("    identities: [\"a\\nb\"]\n"), `line 9: nodes[0].identities[0]: "a\nb" contains control characters`},
		{"SPIFFE ID with a port", node("    identities: [a, 'spiffe://td:8443/x']\n"), `line 9: nodes[0].identities[1]: "spiffe://td:8443/x" is not a SPIFFE ID`},
		{"SPIFFE ID in capitals", node("    identities: ['SPIFFE://td/x']\n"), `nodes[0].identities[0]: "SPIFFE://td/x" is not a SPIFFE ID`},
		{"SPIFFE ID without trust domain", node("    identities: ['spiffe:///x']\n"), `is not a SPIFFE ID`},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := ParseConfig([]byte(tc.doc), nil)
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("error %v, want one containing %q", err, tc.want)
			}
		})
	}
}

// TestNewRequiresIdentities: when clients authenticate with certificates,
// an entry that lists no identity could be given to nobody: it is refused
// at start, with its line.
func TestNewRequiresIdentities(t *testing.T) {
	path := filepath.Join(t.TempDir(), "xds.yaml")
	writeFile(t, path, goodConfig)
	_, err := New(Options{ConfigFile: path, IgnoreKey: func(k string) bool { return k == "listen" }, ClientCertificates: true})
	want := path + ": line 16: nodes[1].identities: required"
	if err == nil || !strings.Contains(err.Error(), want) {
		t.Fatalf("error %v, want one containing %q", err, want)
	}
}

// TestNewRefusesMalformedConfig: a bad file is refused at start, naming the
// file, the line and the field.
func TestNewRefusesMalformedConfig(t *testing.T) {
	path := filepath.Join(t.TempDir(), "xds.yaml")
	writeFile(t, path, "nodes:\n  - node: a\n    servce: a\n")
	_, err := New(Options{ConfigFile: path})
	want := path + `: line 3: nodes[0].servce: unknown key "servce"`
	if err == nil || !strings.Contains(err.Error(), want) {
		t.Fatalf("error %v, want one containing %q", err, want)
	}
	if _, err := New(Options{ConfigFile: filepath.Join(t.TempDir(), "missing.yaml")}); err == nil {
		t.Fatal("no error for a missing file")
	}
}
