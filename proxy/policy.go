package proxy

import (
	"cmp"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"strings"
)

// Policy says which requests need which scopes. Its YAML form is
//
//	default_scopes: [orders:read]
//	routes:
//	  - path_prefix: /healthz
//	    public: true
//	  - path_prefix: /orders
//	    methods: [POST, PUT, DELETE]
//	    scopes: [orders:write]
//
// A request is matched against the routes whose PathPrefix is the longest
// that matches its path; among those, the route that lists the request's
// method wins over one that lists no methods. If no route matches, or the
// longest matching prefix has no route for the method, the request needs a
// valid token with DefaultScopes: a shorter, more general route never
// applies where a longer one was written, so that adding a route can only
// narrow what it covers.
type Policy struct {
	Routes []Route `yaml:"routes"`
	// DefaultScopes are required of requests that no route matches.
	DefaultScopes []string `yaml:"default_scopes"`
}

// Route is one rule of a Policy.
type Route struct {
	// Methods lists the request methods the route applies to, in upper case
	// (methods are case-sensitive, RFC 9110 §9.1). Empty means any method.
	Methods []string `yaml:"methods"`
	// PathPrefix matches whole path segments: "/api" matches "/api",
	// "/api/" and "/api/x" but not "/apix". It is compared with the
	// request's path after percent-decoding and removal of dot segments and
	// repeated slashes (RFC 3986 §5.2.4), so it must itself be in that form.
	PathPrefix string `yaml:"path_prefix"`
	// Scopes must all be in the token's scope (RFC 6749 §3.3). Empty means
	// any valid token.
	Scopes []string `yaml:"scopes"`
	// Public routes need no token, and a token sent is not verified: the
	// upstream gets no identity headers (those the caller sent are still
	// removed) and must not read the Authorization field it may receive.
	Public bool `yaml:"public"`
}

// methods are the request methods a route may name: those of RFC 9110 §9
// and PATCH (RFC 5789).
var methods = []string{"GET", "HEAD", "POST", "PUT", "DELETE", "CONNECT", "OPTIONS", "TRACE", "PATCH"}

// Validate reports every error in p, each naming the route at fault.
func (p *Policy) Validate() error {
	var errs []error
	if err := checkScopes(p.DefaultScopes); err != nil {
		errs = append(errs, fmt.Errorf("proxy: default_scopes: %w", err))
	}
	for i, r := range p.Routes {
		for _, err := range r.problems() {
			errs = append(errs, fmt.Errorf("proxy: route %d (path_prefix %q): %w", i, r.PathPrefix, err))
		}
		for j, o := range p.Routes[:i] {
			if o.PathPrefix == r.PathPrefix && overlap(o.Methods, r.Methods) {
				errs = append(errs, fmt.Errorf("proxy: routes %d and %d both match path_prefix %q for the same methods", j, i, r.PathPrefix))
			}
		}
	}
	return errors.Join(errs...)
}

func (r *Route) problems() []error {
	var errs []error
	if err := checkPrefix(r.PathPrefix); err != nil {
		errs = append(errs, err)
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
	if r.Public && len(r.Scopes) > 0 {
		errs = append(errs, errors.New("a public route cannot require scopes"))
	}
	return errs
}

// checkPrefix accepts only prefixes that a normalized path can start with:
// anything else would silently never match. Its errors describe the
// prefix; the caller names it.
func checkPrefix(p string) error {
	switch {
	case !strings.HasPrefix(p, "/"):
		return errors.New(`must start with "/"`)
	case strings.Contains(p, "//"):
		return errors.New(`must not contain "//": paths are matched with repeated slashes merged`)
	case strings.ContainsAny(p, "%?#"):
		return errors.New("must be a decoded path, without '%', '?' or '#'")
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

// overlap reports whether two routes of one prefix would compete for a
// request: both list no method, or both list the same one. A route that
// lists methods beside one that lists none is not ambiguous: it wins for
// its methods.
func overlap(a, b []string) bool {
	if len(a) == 0 && len(b) == 0 {
		return true
	}
	for _, m := range a {
		if slices.Contains(b, m) {
			return true
		}
	}
	return false
}

// route is a compiled Route: the answers it may cause are built once, so
// that the hot path only copies strings.
type route struct {
	prefix  string
	methods []string
	scopes  []string
	public  bool
	denial  verdict // insufficient_scope answer
}

// rules is a compiled Policy.
type rules struct {
	routes []route // longest prefix first; same prefix adjacent
	deflt  route
}

func compile(p Policy) (*rules, error) {
	if err := p.Validate(); err != nil {
		return nil, err
	}
	rs := &rules{deflt: newRoute(Route{Scopes: p.DefaultScopes})}
	for _, r := range p.Routes {
		rs.routes = append(rs.routes, newRoute(r))
	}
	slices.SortStableFunc(rs.routes, func(a, b route) int {
		if c := cmp.Compare(len(b.prefix), len(a.prefix)); c != 0 {
			return c
		}
		return strings.Compare(a.prefix, b.prefix)
	})
	return rs, nil
}

func newRoute(r Route) route {
	scope := strings.Join(r.Scopes, " ")
	body, _ := json.Marshal(struct {
		Error string `json:"error"`
		Scope string `json:"scope"`
	}{"insufficient_scope", scope})
	return route{
		prefix:  r.PathPrefix,
		methods: slices.Clone(r.Methods),
		scopes:  slices.Clone(r.Scopes),
		public:  r.Public,
		denial: verdict{
			code:   codeInsufficientScope,
			status: 403,
			// RFC 6750 §3: the scope attribute lists the scopes needed.
			challenge: `Bearer realm="` + realm + `", error="insufficient_scope", scope="` + scope + `"`,
			body:      string(body),
		},
	}
}

// match returns the route for a request. path is normalized; method is
// compared exactly.
func (rs *rules) match(method, path []byte) *route {
	for i := range rs.routes {
		r := &rs.routes[i]
		if !prefixMatch(path, r.prefix) {
			continue
		}
		// The longest matching prefix decides: look no further than the
		// routes that share it.
		var anyMethod *route
		for j := i; j < len(rs.routes) && rs.routes[j].prefix == r.prefix; j++ {
			rj := &rs.routes[j]
			if len(rj.methods) == 0 {
				anyMethod = rj
				continue
			}
			for _, m := range rj.methods {
				if string(method) == m {
					return rj
				}
			}
		}
		if anyMethod != nil {
			return anyMethod
		}
		return &rs.deflt
	}
	return &rs.deflt
}

// prefixMatch reports whether prefix matches path on a segment boundary.
func prefixMatch(path []byte, prefix string) bool {
	if len(path) < len(prefix) || string(path[:len(prefix)]) != prefix {
		return false
	}
	return len(path) == len(prefix) || prefix[len(prefix)-1] == '/' || path[len(prefix)] == '/'
}
