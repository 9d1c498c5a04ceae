package xds

import (
	"fmt"
	"net"
	"net/netip"
	"net/url"
	"regexp"
	"strconv"
	"strings"
	"time"
	"unicode"

	"gopkg.in/yaml.v3"
)

// Config is what the xDS server serves: the issuers whose keys Envoy's
// jwt_authn filters get, and the Envoy nodes with their service.
type Config struct {
	Issuers []Issuer
	Nodes   []Node
}

// Issuer is a trusted issuer whose current keys are inlined in the
// jwt_authn filters that name it. Its keys come from its metadata's
// jwks_uri, unless JWKSURL or JWKSFile is given.
type Issuer struct {
	Issuer   string // the exact "iss" of its tokens
	JWKSURL  string
	JWKSFile string
}

// Node is the configuration of one Envoy node, or of every node of one
// Envoy cluster: a listener in front of the service that asks the meshauth
// sidecar (ext_authz) about every request.
type Node struct {
	// ID matches the Envoy node id; Cluster matches the node's cluster
	// (--service-cluster) instead, for nodes that share one configuration.
	// Exactly one is set; an ID entry wins over a Cluster entry.
	ID, Cluster string
	// Service names the generated resources and the stats prefix.
	Service string
	// Listen is the listener's address, IP:port.
	Listen string
	// Upstream is the service itself, host:port.
	Upstream string
	// ExtAuthz is the meshauth sidecar's ext_authz gRPC address,
	// host:port (its --ext-authz-grpc).
	ExtAuthz string
	// ExtAuthzTimeout bounds each Check; default 500ms.
	ExtAuthzTimeout time.Duration
	// JWTAuthn, if not nil, adds Envoy's jwt_authn filter before ext_authz.
	JWTAuthn *JWTAuthn
	// Identities are the client certificates (SPIFFE ID, or subject
	// common name) that may receive this entry, when clients present
	// certificates ([Options].ClientCertificates).
	Identities []string

	line int // of the entry in the document, for errors found later
}

// JWTAuthn configures Envoy's jwt_authn filter for a node: Envoy checks the
// token's signature, iss, aud and exp itself, with the issuers' current keys
// inlined (local_jwks), and refuses bad tokens before asking the sidecar.
// The sidecar stays the judge of everything else (typ, scopes, routes).
type JWTAuthn struct {
	// Issuers lists the accepted issuers, each one of Config.Issuers.
	Issuers []string
	// Audiences accepted in "aud"; default the node's Service.
	Audiences []string
	// ForwardPayloadHeader, if set, names the header in which Envoy passes
	// the verified claims (base64url JSON) to the upstream.
	ForwardPayloadHeader string
	// RequireToken refuses requests without a token in Envoy. By default
	// they go on to the sidecar, which lets them through on public routes.
	RequireToken bool
}

// key is the snapshot key of the entry: its node id or its cluster.
func (n *Node) key() string {
	if n.ID != "" {
		return "node/" + n.ID
	}
	return "cluster/" + n.Cluster
}

// defaultExtAuthzTimeout bounds a Check when the config does not say.
const defaultExtAuthzTimeout = 500 * time.Millisecond

// serviceName is what a Service may be: it names Envoy resources and
// stats, where dots separate stat name parts.
var serviceName = regexp.MustCompile(`^[A-Za-z0-9][A-Za-z0-9_-]{0,62}$`)

// headerName is an HTTP field name (RFC 9110 §5.1) as Envoy wants it for
// forward_payload_header: lower case.
var headerName = regexp.MustCompile(`^[a-z0-9!#$%&'*+.^_` + "`" + `|~-]+$`)

// ConfigError is a problem of a config document, at a line.
type ConfigError struct {
	Line int    // 1-based; 0 when the problem is the whole document
	Path string // the field, like nodes[1].listen; "" for the document
	Msg  string
}

func (e *ConfigError) Error() string {
	switch {
	case e.Line > 0 && e.Path != "":
		return fmt.Sprintf("line %d: %s: %s", e.Line, e.Path, e.Msg)
	case e.Line > 0:
		return fmt.Sprintf("line %d: %s", e.Line, e.Msg)
	default:
		return e.Msg
	}
}

func errAt(n *yaml.Node, path, format string, args ...any) error {
	return &ConfigError{Line: n.Line, Path: path, Msg: fmt.Sprintf(format, args...)}
}

// ParseConfig parses a YAML (or JSON) config document strictly: unknown
// keys, repeated keys, wrong types and bad values are errors that name the
// line and the field. Top-level keys for which ignore returns true are
// skipped (the command's flags share the file); ignore may be nil.
//
//	issuers:
//	  - issuer: https://auth.example.com
//	    jwks_url: https://auth.example.com/jwks.json   # optional; or jwks_file
//	nodes:
//	  - node: payments-0          # Envoy node id; or cluster: payments
//	    service: payments
//	    listen: 0.0.0.0:8080
//	    upstream: 127.0.0.1:9000
//	    ext_authz: 127.0.0.1:9001
//	    ext_authz_timeout: 500ms
//	    jwt_authn:                # optional
//	      issuers: [https://auth.example.com]
//	      audiences: [payments]   # default [service]
//	      forward_payload_header: x-jwt-payload
//	      require_token: false
//	    identities:               # the client certificates that may receive it
//	      - spiffe://cluster.local/ns/shop/sa/payments
func ParseConfig(data []byte, ignore func(key string) bool) (*Config, error) {
	var doc yaml.Node
	if err := yaml.Unmarshal(data, &doc); err != nil {
		return nil, &ConfigError{Msg: strings.TrimPrefix(err.Error(), "yaml: ")}
	}
	if doc.Kind == 0 {
		return nil, &ConfigError{Msg: "empty document: want issuers and nodes"}
	}
	root := doc.Content[0]
	if err := noAliases(root); err != nil {
		return nil, err
	}
	var cfg Config
	var nodesNode *yaml.Node
	err := mapping(root, "", func(key string, v *yaml.Node, path string) (bool, error) {
		switch key {
		case "issuers":
			return true, sequence(v, path, func(item *yaml.Node, path string) error {
				iss, err := parseIssuer(item, path)
				cfg.Issuers = append(cfg.Issuers, iss)
				return err
			})
		case "nodes":
			nodesNode = v
			return true, sequence(v, path, func(item *yaml.Node, path string) error {
				n, err := parseNode(item, path)
				cfg.Nodes = append(cfg.Nodes, n)
				return err
			})
		}
		return ignore != nil && ignore(key), nil
	})
	if err != nil {
		return nil, err
	}
	if len(cfg.Nodes) == 0 {
		return nil, errAt(root, "nodes", "no nodes configured")
	}
	if err := cfg.check(root, nodesNode); err != nil {
		return nil, err
	}
	return &cfg, nil
}

// check verifies what spans entries: unique issuers and node keys, and
// jwt_authn issuers that are configured.
func (cfg *Config) check(root, nodes *yaml.Node) error {
	issuers := map[string]bool{}
	for i, iss := range cfg.Issuers {
		if issuers[iss.Issuer] {
			return errAt(issuerNode(root, i), fmt.Sprintf("issuers[%d].issuer", i), "issuer %q listed twice", iss.Issuer)
		}
		issuers[iss.Issuer] = true
	}
	keys := map[string]bool{}
	for i, n := range cfg.Nodes {
		item := nodes.Content[i]
		path := fmt.Sprintf("nodes[%d]", i)
		if keys[n.key()] {
			return errAt(item, path, "%s configured twice", n.key())
		}
		keys[n.key()] = true
		if n.JWTAuthn == nil {
			continue
		}
		for j, iss := range n.JWTAuthn.Issuers {
			if !issuers[iss] {
				return errAt(item, fmt.Sprintf("%s.jwt_authn.issuers[%d]", path, j), "issuer %q is not in the top-level issuers", iss)
			}
		}
	}
	return nil
}

func issuerNode(root *yaml.Node, i int) *yaml.Node {
	for k := 0; k+1 < len(root.Content); k += 2 {
		if root.Content[k].Value == "issuers" {
			return root.Content[k+1].Content[i]
		}
	}
	return root
}

// noAliases refuses anchors' aliases: a config has no use for them, and
// following them is how small documents become huge ones.
func noAliases(n *yaml.Node) error {
	if n.Kind == yaml.AliasNode {
		return errAt(n, "", "YAML aliases are not supported")
	}
	for _, c := range n.Content {
		if err := noAliases(c); err != nil {
			return err
		}
	}
	return nil
}

// mapping walks the keys of mapping node n in order, calling field for each;
// field reports whether it knows the key. Unknown and repeated keys are
// errors.
func mapping(n *yaml.Node, path string, field func(key string, v *yaml.Node, path string) (bool, error)) error {
	if n.Kind != yaml.MappingNode {
		return errAt(n, path, "want a mapping of keys to values")
	}
	seen := map[string]bool{}
	for i := 0; i+1 < len(n.Content); i += 2 {
		k, v := n.Content[i], n.Content[i+1]
		if k.Kind != yaml.ScalarNode {
			return errAt(k, path, "keys must be plain strings")
		}
		fieldPath := k.Value
		if path != "" {
			fieldPath = path + "." + k.Value
		}
		if seen[k.Value] {
			return errAt(k, fieldPath, "repeated key")
		}
		seen[k.Value] = true
		known, err := field(k.Value, v, fieldPath)
		if err != nil {
			return err
		}
		if !known {
			return errAt(k, fieldPath, "unknown key %q", k.Value)
		}
	}
	return nil
}

func sequence(n *yaml.Node, path string, item func(v *yaml.Node, path string) error) error {
	if n.Kind != yaml.SequenceNode {
		return errAt(n, path, "want a list")
	}
	for i, v := range n.Content {
		if err := item(v, fmt.Sprintf("%s[%d]", path, i)); err != nil {
			return err
		}
	}
	return nil
}

func scalar(n *yaml.Node, path string) (string, error) {
	if n.Kind != yaml.ScalarNode || n.Tag == "!!null" {
		return "", errAt(n, path, "want a value")
	}
	return n.Value, nil
}

func nonEmpty(n *yaml.Node, path string) (string, error) {
	s, err := scalar(n, path)
	if err == nil && s == "" {
		err = errAt(n, path, "must not be empty")
	}
	return s, err
}

func stringList(n *yaml.Node, path string) ([]string, error) {
	var out []string
	err := sequence(n, path, func(v *yaml.Node, path string) error {
		s, err := nonEmpty(v, path)
		out = append(out, s)
		return err
	})
	return out, err
}

func boolean(n *yaml.Node, path string) (bool, error) {
	s, err := scalar(n, path)
	if err != nil {
		return false, err
	}
	switch s {
	case "true":
		return true, nil
	case "false":
		return false, nil
	}
	return false, errAt(n, path, "want true or false, got %q", s)
}

func parseIssuer(n *yaml.Node, path string) (Issuer, error) {
	var iss Issuer
	err := mapping(n, path, func(key string, v *yaml.Node, path string) (bool, error) {
		var (
			dst *string
			err error
		)
		switch key {
		case "issuer":
			dst = &iss.Issuer
		case "jwks_url":
			dst = &iss.JWKSURL
		case "jwks_file":
			dst = &iss.JWKSFile
		default:
			return false, nil
		}
		*dst, err = nonEmpty(v, path)
		if err == nil && key != "jwks_file" {
			err = absoluteURL(v, path, *dst)
		}
		return true, err
	})
	if err != nil {
		return iss, err
	}
	switch {
	case iss.Issuer == "":
		return iss, errAt(n, path+".issuer", "required")
	case iss.JWKSURL != "" && iss.JWKSFile != "":
		return iss, errAt(n, path, "give jwks_url or jwks_file, not both")
	}
	return iss, nil
}

func absoluteURL(n *yaml.Node, path, s string) error {
	u, err := url.Parse(s)
	if err != nil || !u.IsAbs() || u.Host == "" {
		return errAt(n, path, "%q is not an absolute URL", s)
	}
	if u.User != nil {
		return errAt(n, path, "must not contain user information")
	}
	return nil
}

func parseNode(n *yaml.Node, path string) (Node, error) {
	node := Node{ExtAuthzTimeout: defaultExtAuthzTimeout, line: n.Line}
	err := mapping(n, path, func(key string, v *yaml.Node, path string) (bool, error) {
		var err error
		switch key {
		case "node":
			node.ID, err = nonEmpty(v, path)
		case "cluster":
			node.Cluster, err = nonEmpty(v, path)
		case "service":
			if node.Service, err = nonEmpty(v, path); err == nil && !serviceName.MatchString(node.Service) {
				err = errAt(v, path, "%q: use letters, digits, '-' and '_' (at most 63)", node.Service)
			}
		case "listen":
			node.Listen, err = hostPort(v, path, true)
		case "upstream":
			node.Upstream, err = hostPort(v, path, false)
		case "ext_authz":
			node.ExtAuthz, err = hostPort(v, path, false)
		case "ext_authz_timeout":
			node.ExtAuthzTimeout, err = positiveDuration(v, path)
		case "jwt_authn":
			node.JWTAuthn, err = parseJWTAuthn(v, path)
		case "identities":
			node.Identities, err = parseIdentities(v, path)
		default:
			return false, nil
		}
		return true, err
	})
	if err != nil {
		return node, err
	}
	if (node.ID == "") == (node.Cluster == "") {
		return node, errAt(n, path, "give exactly one of node (an Envoy node id) and cluster")
	}
	for _, req := range []struct{ name, v string }{
		{"service", node.Service}, {"listen", node.Listen}, {"upstream", node.Upstream}, {"ext_authz", node.ExtAuthz},
	} {
		if req.v == "" {
			return node, errAt(n, path+"."+req.name, "required")
		}
	}
	if node.JWTAuthn != nil && len(node.JWTAuthn.Audiences) == 0 {
		node.JWTAuthn.Audiences = []string{node.Service}
	}
	return node, nil
}

// hostPort checks a host:port value; a listener's host must be an IP
// address, since Envoy binds it without resolving names.
func hostPort(n *yaml.Node, path string, ipOnly bool) (string, error) {
	s, err := nonEmpty(n, path)
	if err != nil {
		return "", err
	}
	host, port, err := net.SplitHostPort(s)
	if err != nil {
		return "", errAt(n, path, "%q is not host:port", s)
	}
	if p, err := strconv.ParseUint(port, 10, 16); err != nil || p == 0 {
		return "", errAt(n, path, "%q: port must be 1 to 65535", s)
	}
	if _, err := netip.ParseAddr(host); err != nil && (ipOnly || !validHostname(host)) {
		if ipOnly {
			return "", errAt(n, path, "%q: the host must be an IP address", s)
		}
		return "", errAt(n, path, "%q: the host is neither an IP address nor a DNS name", s)
	}
	return s, nil
}

// validHostname reports whether s is a DNS name of letters, digits, '-'
// and '.' (RFC 1123 §2.1).
func validHostname(s string) bool {
	if s == "" || len(s) > 253 {
		return false
	}
	for label := range strings.SplitSeq(strings.TrimSuffix(s, "."), ".") {
		if label == "" || len(label) > 63 || label[0] == '-' || label[len(label)-1] == '-' {
			return false
		}
		for _, c := range label {
			if !(c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == '-') {
				return false
			}
		}
	}
	return true
}

// parseIdentities reads the identities a client certificate may have: a
// SPIFFE ID (spiffe://trust-domain/path) or a subject common name.
func parseIdentities(n *yaml.Node, path string) ([]string, error) {
	ids, err := stringList(n, path)
	if err != nil {
		return nil, err
	}
	if len(ids) == 0 {
		return nil, errAt(n, path, "name at least one identity")
	}
	for i, id := range ids {
		item := n.Content[i]
		if strings.ContainsFunc(id, unicode.IsControl) {
			return nil, errAt(item, fmt.Sprintf("%s[%d]", path, i), "%q contains control characters", id)
		}
		if len(id) >= 7 && strings.EqualFold(id[:7], "spiffe:") {
			u, err := url.Parse(id)
			if err != nil || !strings.HasPrefix(id, "spiffe://") || u.Host == "" || u.Port() != "" || u.User != nil || u.RawQuery != "" || u.Fragment != "" {
				return nil, errAt(item, fmt.Sprintf("%s[%d]", path, i), "%q is not a SPIFFE ID like spiffe://cluster.local/ns/shop/sa/orders", id)
			}
		}
	}
	return ids, nil
}

// requireIdentities reports the first entry that names no identity: when
// clients present certificates, nobody could receive it.
func (cfg *Config) requireIdentities() error {
	for i := range cfg.Nodes {
		if n := &cfg.Nodes[i]; len(n.Identities) == 0 {
			return &ConfigError{Line: n.line, Path: fmt.Sprintf("nodes[%d].identities", i),
				Msg: "required: clients authenticate with certificates, and only the identities listed receive the entry"}
		}
	}
	return nil
}

func positiveDuration(n *yaml.Node, path string) (time.Duration, error) {
	s, err := nonEmpty(n, path)
	if err != nil {
		return 0, err
	}
	d, err := time.ParseDuration(s)
	if err != nil || d <= 0 {
		return 0, errAt(n, path, "%q is not a positive duration like 500ms", s)
	}
	return d, nil
}

func parseJWTAuthn(n *yaml.Node, path string) (*JWTAuthn, error) {
	var j JWTAuthn
	err := mapping(n, path, func(key string, v *yaml.Node, path string) (bool, error) {
		var err error
		switch key {
		case "issuers":
			j.Issuers, err = stringList(v, path)
		case "audiences":
			j.Audiences, err = stringList(v, path)
		case "forward_payload_header":
			if j.ForwardPayloadHeader, err = nonEmpty(v, path); err == nil && !headerName.MatchString(j.ForwardPayloadHeader) {
				err = errAt(v, path, "%q is not a lower-case HTTP header name", j.ForwardPayloadHeader)
			}
		case "require_token":
			j.RequireToken, err = boolean(v, path)
		default:
			return false, nil
		}
		return true, err
	})
	if err != nil {
		return nil, err
	}
	if len(j.Issuers) == 0 {
		return nil, errAt(n, path+".issuers", "name at least one issuer")
	}
	return &j, nil
}
