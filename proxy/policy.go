package proxy

import (
	"cmp"
	"encoding/json"
	"errors"
	"fmt"
	"reflect"
	"slices"
	"strings"
	"sync/atomic"

	"gopkg.in/yaml.v3"
)

// Policy says which requests need what. Its YAML form is
//
//	default_scopes: [orders:read]
//	forward_path: canonical
//	routes:
//	  - path_prefix: /healthz
//	    public: true
//	  - path_prefix: /orders
//	    methods: [POST, PUT, DELETE]
//	    scopes: [orders:write]
//	  - path: /orders/export
//	    issuers: [https://auth.example.com]
//	    condition: size(chain) <= 1 && claims.tenant == "acme"
//	    claim_headers:
//	      - {header: X-Tenant, claim: tenant}
//
// A request is judged on its canonical path (see canonicalPath): the route
// that matches both that path and the request's method, and is the most
// specific, applies. An exact Path is more specific than any PathPrefix, a
// longer prefix than a shorter one, and a route that lists the method than
// one that lists none. So a method that a longer prefix does not list falls
// back to the next shorter prefix that matches, and only a request that no
// route matches needs DefaultScopes: adding a route can only narrow what it
// covers. Two routes that would match the same request with the same
// specificity are refused.
type Policy struct {
	Routes []Route `yaml:"routes"`
	// DefaultScopes are required of requests that no route matches.
	DefaultScopes []string `yaml:"default_scopes"`
	// ForwardPath is the path the Sidecar sends the upstream: "canonical"
	// (the default), the path the request was judged on, or "original",
	// the path as the client sent it. Forward-auth and ext_authz judge
	// only; the front proxy forwards its own form.
	ForwardPath string `yaml:"forward_path"`
	// AllowEncodedSlashes lets paths hold "%2F" and "%5C", kept encoded
	// and matched as part of a segment, never as a separator. Without it
	// such paths are refused with 400: an upstream that decodes them would
	// see other segments than the routes did.
	AllowEncodedSlashes bool `yaml:"allow_encoded_slashes"`
}

// Forward paths.
const (
	ForwardCanonical = "canonical"
	ForwardOriginal  = "original"
)

// Route is one rule of a Policy.
type Route struct {
	// Path matches one path exactly, with or without a trailing slash;
	// PathPrefix matches whole path segments: "/api" matches "/api",
	// "/api/" and "/api/x" but not "/apix". A route has one of them. Both
	// are compared with the request's path percent-decoded, without path
	// parameters, dot segments and repeated slashes, so they must be in
	// that form themselves.
	Path       string `yaml:"path"`
	PathPrefix string `yaml:"path_prefix"`
	// CaseInsensitive compares the path without regard to ASCII case, for
	// upstreams that fold it: "/Admin" is then "/admin".
	CaseInsensitive bool `yaml:"case_insensitive"`
	// Methods lists the request methods the route applies to, in upper case
	// (methods are case-sensitive, RFC 9110 §9.1). Empty means any method.
	Methods []string `yaml:"methods"`
	// Public routes need no token, and a token sent is not verified: the
	// upstream gets no identity headers (those the caller sent are still
	// removed) and must not read the Authorization field it may receive.
	// A public route has no other requirement.
	Public bool `yaml:"public"`
	// Issuers, if not empty, are the only issuers ("iss") whose tokens the
	// route accepts.
	Issuers []string `yaml:"issuers"`
	// Scopes must all be in the token's scope (RFC 6749 §3.3). Empty means
	// any valid token.
	Scopes []string `yaml:"scopes"`
	// Condition is a CEL expression that must be true (see the package
	// documentation for its variables). It is compiled and type-checked
	// when the Policy is; an error at run time, such as a claim that is
	// absent, refuses the request.
	Condition string `yaml:"condition"`
	// ConditionHeaders are the request header fields Condition may read,
	// as headers["name"] with the name in lower case.
	ConditionHeaders []string `yaml:"condition_headers"`
	// ClaimHeaders set header fields of the upstream request from claims.
	// The caller's own fields of these names are removed from every
	// request, on every route.
	ClaimHeaders []ClaimHeader `yaml:"claim_headers"`
	// Line is the route's line in the file it was read from; 0 if none.
	// Errors name it.
	Line int `yaml:"-"`
}

// ClaimHeader sets header field Header from claim Claim of the verified
// token: a string as it is, a number or boolean as its JSON text, an array
// of those with its elements joined by ",". A claim that is absent, null
// or an object leaves the field unset. "sub" and "client_id" are qualified
// as the identity headers are (token.Claims.SubjectPrefix).
type ClaimHeader struct {
	Header string `yaml:"header"`
	Claim  string `yaml:"claim"`
}

// maxClaimHeaders bounds the claim headers of one route.
const maxClaimHeaders = 16

// UnmarshalYAML decodes a route strictly, noting its line.
func (r *Route) UnmarshalYAML(n *yaml.Node) error {
	type plain Route
	if err := decodeStrict(n, (*plain)(r)); err != nil {
		return err
	}
	r.Line = n.Line
	return nil
}

// UnmarshalYAML decodes a claim header strictly.
func (h *ClaimHeader) UnmarshalYAML(n *yaml.Node) error {
	type plain ClaimHeader
	return decodeStrict(n, (*plain)(h))
}

// decodeStrict decodes the mapping n into v, a pointer to a struct,
// refusing keys that none of its fields has: a custom unmarshaler does not
// inherit the decoder's KnownFields, and a misspelt key must not be a
// silently missing rule.
func decodeStrict(n *yaml.Node, v any) error {
	if n.Kind == yaml.MappingNode {
		t := reflect.TypeOf(v).Elem()
		for i := 0; i+1 < len(n.Content); i += 2 {
			k := n.Content[i]
			known := false
			for j := range t.NumField() {
				name, _, _ := strings.Cut(t.Field(j).Tag.Get("yaml"), ",")
				known = known || name == k.Value && name != "-"
			}
			if !known {
				return fmt.Errorf("line %d: unknown key %q", k.Line, k.Value)
			}
		}
	}
	return n.Decode(v)
}

// methods are the request methods a route may name: those of RFC 9110 §9
// and PATCH (RFC 5789).
var methods = []string{"GET", "HEAD", "POST", "PUT", "DELETE", "CONNECT", "OPTIONS", "TRACE", "PATCH"}

// Validate reports every error in p, each naming the route at fault, but
// those of conditions, which compiling finds (NewRules).
func (p *Policy) Validate() error {
	var errs []error
	if err := checkScopes(p.DefaultScopes); err != nil {
		errs = append(errs, fmt.Errorf("proxy: default_scopes: %w", err))
	}
	switch p.ForwardPath {
	case "", ForwardCanonical, ForwardOriginal:
	default:
		errs = append(errs, fmt.Errorf("proxy: forward_path %q is neither %q nor %q", p.ForwardPath, ForwardCanonical, ForwardOriginal))
	}
	for i := range p.Routes {
		r := &p.Routes[i]
		for _, err := range r.problems() {
			errs = append(errs, fmt.Errorf("proxy: %s: %w", r.where(i), err))
		}
		for j := range p.Routes[:i] {
			if o := &p.Routes[j]; ambiguous(o, r) {
				errs = append(errs, fmt.Errorf("proxy: %s and %s match the same requests: which applies would be a guess", o.where(j), r.where(i)))
			}
		}
	}
	return errors.Join(errs...)
}

// where names route i of a policy in errors: its place and line.
func (r *Route) where(i int) string {
	kind, pattern := r.pattern()
	if r.Line > 0 {
		return fmt.Sprintf("line %d: route %d (%s %q)", r.Line, i, kind, pattern)
	}
	return fmt.Sprintf("route %d (%s %q)", i, kind, pattern)
}

// pattern returns the route's path and whether it is exact or a prefix.
func (r *Route) pattern() (kind, pattern string) {
	if r.Path != "" {
		return "path", r.Path
	}
	return "path_prefix", r.PathPrefix
}

func (r *Route) problems() []error {
	var errs []error
	switch {
	case r.Path != "" && r.PathPrefix != "":
		errs = append(errs, errors.New("give path or path_prefix, not both"))
	default:
		_, p := r.pattern()
		if err := checkPrefix(p); err != nil {
			errs = append(errs, err)
		}
	}
	for i, m := range r.Methods {
		if !slices.Contains(methods, m) {
			errs = append(errs, fmt.Errorf("method %q is not one of %s", m, strings.Join(methods, ", ")))
		} else if slices.Contains(r.Methods[:i], m) {
			errs = append(errs, fmt.Errorf("method %q listed twice", m))
		}
	}
	if err := checkScopes(r.Scopes); err != nil {
		errs = append(errs, err)
	}
	for i, iss := range r.Issuers {
		switch {
		case iss == "":
			errs = append(errs, errors.New("empty issuer"))
		case slices.Contains(r.Issuers[:i], iss):
			errs = append(errs, fmt.Errorf("issuer %q listed twice", iss))
		}
	}
	if len(r.ConditionHeaders) > 0 && r.Condition == "" {
		errs = append(errs, errors.New("condition_headers without a condition"))
	}
	for i, name := range r.ConditionHeaders {
		switch {
		case !fieldName(name):
			errs = append(errs, fmt.Errorf("condition header %q is not a field name", name))
		case strings.EqualFold(name, "authorization") || strings.EqualFold(name, "proxy-authorization"):
			errs = append(errs, fmt.Errorf("condition header %q: the token is the verifier's alone", name))
		case identityHeader([]byte(name)):
			errs = append(errs, fmt.Errorf("condition header %q: X-Meshauth-* fields are removed before any rule runs", name))
		case slices.ContainsFunc(r.ConditionHeaders[:i], func(o string) bool { return strings.EqualFold(o, name) }):
			errs = append(errs, fmt.Errorf("condition header %q listed twice", name))
		}
	}
	if len(r.ClaimHeaders) > maxClaimHeaders {
		errs = append(errs, fmt.Errorf("%d claim headers, at most %d", len(r.ClaimHeaders), maxClaimHeaders))
	}
	for i, h := range r.ClaimHeaders {
		switch {
		case !fieldName(h.Header):
			errs = append(errs, fmt.Errorf("claim header %q is not a field name", h.Header))
		case reservedHeader(h.Header):
			errs = append(errs, fmt.Errorf("claim header %q: a field the sidecar or the front proxy owns", h.Header))
		case h.Claim == "":
			errs = append(errs, fmt.Errorf("claim header %q names no claim", h.Header))
		case slices.ContainsFunc(r.ClaimHeaders[:i], func(o ClaimHeader) bool { return strings.EqualFold(o.Header, h.Header) }):
			errs = append(errs, fmt.Errorf("claim header %q listed twice", h.Header))
		}
	}
	if r.Public && (len(r.Scopes) > 0 || len(r.Issuers) > 0 || r.Condition != "" || len(r.ClaimHeaders) > 0) {
		errs = append(errs, errors.New("a public route verifies no token: it cannot require scopes, issuers or a condition, nor set claim headers"))
	}
	return errs
}

// checkPrefix accepts only paths that a request's path, as routes match
// it, can equal or start with: anything else would silently never match.
// Its errors describe the path; the caller names it.
func checkPrefix(p string) error {
	switch {
	case !strings.HasPrefix(p, "/"):
		return errors.New(`must start with "/"`)
	case strings.Contains(p, "//"):
		return errors.New(`must not contain "//": paths are matched with repeated slashes merged`)
	case strings.ContainsAny(p, "%?#;\\"):
		return errors.New(`must be a decoded path, without '%', '?', '#', ';' (parameters are not matched) or '\'`)
	case strings.ContainsFunc(p, func(r rune) bool { return r < ' ' || r == 0x7f }):
		return errors.New("contains a control character")
	}
	for seg := range strings.SplitSeq(p[1:], "/") {
		if seg == "." || seg == ".." {
			return errors.New(`must not contain "." or ".." segments: paths are matched with them removed`)
		}
	}
	return nil
}

// checkScopes checks scope tokens against RFC 6749 §3.3, which also makes
// them safe inside a quoted WWW-Authenticate parameter (RFC 6750 §3).
func checkScopes(scopes []string) error {
	for i, s := range scopes {
		if s == "" {
			return errors.New("empty scope")
		}
		for j := 0; j < len(s); j++ {
			if c := s[j]; c < 0x21 || c == '"' || c == '\\' || c > 0x7e {
				return fmt.Errorf("scope %q: byte %q is not allowed in a scope token (RFC 6749 §3.3)", s, c)
			}
		}
		if slices.Contains(scopes[:i], s) {
			return fmt.Errorf("scope %q listed twice", s)
		}
	}
	return nil
}

// fieldName reports whether s is a header field name (RFC 9110 §5.1).
func fieldName(s string) bool {
	for i := 0; i < len(s); i++ {
		if !tchar(s[i]) {
			return false
		}
	}
	return s != ""
}

// reservedHeader reports whether a claim header may not be named name:
// the identity headers, the fields that carry the token or frame the
// message, and those that steer the front proxy or the forward-auth
// request.
func reservedHeader(name string) bool {
	switch strings.ToLower(name) {
	case "authorization", "proxy-authorization", "host", "content-length", "content-type", "cookie", "forwarded",
		"x-forwarded-method", "x-forwarded-uri", "x-original-method", "x-original-uri":
		return true
	}
	for _, n := range hopByHop {
		if strings.EqualFold(n, name) {
			return true
		}
	}
	if isIdentityHeaderName([]byte(name)) {
		return true
	}
	l := strings.ToLower(name)
	return strings.HasPrefix(l, "x-forwarded-") || strings.HasPrefix(l, "x-envoy-") || strings.HasPrefix(l, ":")
}

// ambiguous reports whether routes a and b match some request with the
// same specificity: of the same kind, with the same path (regardless of
// case if either ignores it), and methods in common (or both any method).
// A route that lists methods beside one that lists none is not ambiguous:
// it wins for its methods.
func ambiguous(a, b *Route) bool {
	ka, pa := a.pattern()
	kb, pb := b.pattern()
	if ka != kb {
		return false
	}
	if ka == "path" {
		pa, pb = trimSlash(pa), trimSlash(pb)
	}
	same := pa == pb || (a.CaseInsensitive || b.CaseInsensitive) && strings.EqualFold(pa, pb)
	if !same {
		return false
	}
	if len(a.Methods) == 0 && len(b.Methods) == 0 {
		return true
	}
	for _, m := range a.Methods {
		if slices.Contains(b.Methods, m) {
			return true
		}
	}
	return false
}

// trimSlash removes the trailing slash of a path other than "/".
func trimSlash[T string | []byte](p T) T {
	if len(p) > 1 && p[len(p)-1] == '/' {
		return p[:len(p)-1]
	}
	return p
}

// Rules is a compiled Policy that entry points share. Replace swaps in
// another for all of them at once; a request is judged wholly by the rules
// it started with, and judging takes no lock.
type Rules struct {
	cur atomic.Pointer[rules]
}

// NewRules compiles p: it validates p, type-checks its conditions, and
// refuses it with every error found.
func NewRules(p Policy) (*Rules, error) {
	rs, err := compile(p, 1)
	if err != nil {
		return nil, err
	}
	r := &Rules{}
	r.cur.Store(rs)
	return r, nil
}

// Replace compiles p and, if it is valid, makes it the policy of every
// entry point that shares r. Otherwise the policy in force stays, and the
// error says why.
func (r *Rules) Replace(p Policy) error {
	old := r.cur.Load()
	rs, err := compile(p, old.version+1)
	if err != nil {
		return err
	}
	// Replacements are serialized by their callers; a lost race would
	// only skip a version number.
	r.cur.Store(rs)
	return nil
}

// Version counts the policies r has held: 1 for the first.
func (r *Rules) Version() uint64 { return r.cur.Load().version }

func (r *Rules) load() *rules { return r.cur.Load() }

// rules is a compiled Policy. It never changes.
type rules struct {
	version        uint64
	routes         []route // most specific first: see compile
	deflt          route
	forwardOrig    bool
	encodedSlashes bool
	// claimHeaders are the names of every route's claim headers: the
	// caller's fields of these names are removed from every request.
	claimHeaders []string
}

// route is a compiled Route: what it may answer is built once, so that
// the hot path only copies strings.
type route struct {
	label   string // names the route in the decision log
	pattern string // without a trailing slash if exact
	exact   bool
	fold    bool
	methods []string
	public  bool
	issuers []string
	scopes  []string
	cond    *condition
	claims  []claimHeader
	denial  verdict // insufficient_scope answer
}

// claimHeader is a compiled ClaimHeader.
type claimHeader struct {
	name  string
	lower string // as Envoy spells it
	claim string
}

func compile(p Policy, version uint64) (*rules, error) {
	errs := []error{p.Validate()}
	rs := &rules{
		version:        version,
		deflt:          newRoute(Route{Scopes: p.DefaultScopes}, "default"),
		forwardOrig:    p.ForwardPath == ForwardOriginal,
		encodedSlashes: p.AllowEncodedSlashes,
	}
	for i, r := range p.Routes {
		cr := newRoute(r, routeLabel(&r))
		if r.Condition != "" {
			cond, err := compileCondition(r.Condition, r.ConditionHeaders)
			if err != nil {
				errs = append(errs, fmt.Errorf("proxy: %s: condition: %w", r.where(i), err))
			}
			cr.cond = cond
		}
		for _, h := range cr.claims {
			if !slices.ContainsFunc(rs.claimHeaders, func(n string) bool { return strings.EqualFold(n, h.name) }) {
				rs.claimHeaders = append(rs.claimHeaders, h.name)
			}
		}
		rs.routes = append(rs.routes, cr)
	}
	for i, r := range p.Routes {
		for _, h := range r.ConditionHeaders {
			if containsFold(rs.claimHeaders, []byte(h)) {
				errs = append(errs, fmt.Errorf("proxy: %s: condition header %q is a claim header, whose value the caller sent is removed before any rule runs", r.where(i), h))
			}
		}
	}
	if err := errors.Join(errs...); err != nil {
		return nil, err
	}
	// Most specific first, so that the first route that matches a request
	// is the one that applies: exact paths, then longer prefixes, then
	// routes that list methods; ties (which Validate allows only between
	// routes no request can both match) keep the file's order.
	slices.SortStableFunc(rs.routes, func(a, b route) int {
		if a.exact != b.exact {
			if a.exact {
				return -1
			}
			return 1
		}
		if c := cmp.Compare(len(b.pattern), len(a.pattern)); c != 0 {
			return c
		}
		switch anyA, anyB := len(a.methods) == 0, len(b.methods) == 0; {
		case anyA == anyB:
			return 0
		case anyB:
			return -1
		}
		return 1
	})
	return rs, nil
}

func routeLabel(r *Route) string {
	kind, pattern := r.pattern()
	label := kind + " " + pattern
	if len(r.Methods) > 0 {
		label += " " + strings.Join(r.Methods, ",")
	}
	if r.Line > 0 {
		label += fmt.Sprintf(" (line %d)", r.Line)
	}
	return label
}

func newRoute(r Route, label string) route {
	scope := strings.Join(r.Scopes, " ")
	body, _ := json.Marshal(struct {
		Error string `json:"error"`
		Scope string `json:"scope"`
	}{"insufficient_scope", scope})
	cr := route{
		label:   label,
		pattern: r.PathPrefix,
		fold:    r.CaseInsensitive,
		methods: slices.Clone(r.Methods),
		public:  r.Public,
		issuers: slices.Clone(r.Issuers),
		scopes:  slices.Clone(r.Scopes),
		denial: verdict{
			code:   codeInsufficientScope,
			status: 403,
			// RFC 6750 §3: the scope attribute lists the scopes needed.
			challenge: `Bearer realm="` + realm + `", error="insufficient_scope", scope="` + scope + `"`,
			body:      string(body),
		},
	}
	if r.Path != "" {
		cr.pattern, cr.exact = trimSlash(r.Path), true
	}
	for _, h := range r.ClaimHeaders {
		cr.claims = append(cr.claims, claimHeader{name: h.Header, lower: strings.ToLower(h.Header), claim: h.Claim})
	}
	return cr
}

// match returns the route for a request: key is its path as routes match
// it (canonicalPath), method is compared exactly.
func (rs *rules) match(method, key []byte) *route {
	for i := range rs.routes {
		r := &rs.routes[i]
		if r.matchesPath(key) && r.matchesMethod(method) {
			return r
		}
	}
	return &rs.deflt
}

func (r *route) matchesMethod(method []byte) bool {
	if len(r.methods) == 0 {
		return true
	}
	for _, m := range r.methods {
		if string(method) == m {
			return true
		}
	}
	return false
}

// matchesPath reports whether the route's path matches key: all of it if
// exact (less a trailing slash), else on a segment boundary.
func (r *route) matchesPath(key []byte) bool {
	if r.exact {
		return samePath(trimSlash(key), r.pattern, r.fold)
	}
	p := r.pattern
	if len(key) < len(p) || !samePath(key[:len(p)], p, r.fold) {
		return false
	}
	return len(key) == len(p) || p[len(p)-1] == '/' || key[len(p)] == '/'
}

func samePath(b []byte, s string, fold bool) bool {
	if fold {
		return equalFold(b, s)
	}
	return string(b) == s
}
