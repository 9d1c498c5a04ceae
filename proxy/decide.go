package proxy

import (
	"cmp"
	"encoding/json"
	"errors"
	"log/slog"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/valyala/fasthttp"

	"github.com/meshauth/meshauth/internal/ratelog"
	"github.com/meshauth/meshauth/token"
)

// Verifier decides whether an access token is valid; *token.Verifier is
// one. VerifyInto must fail with a *token.Error for a refused token; any
// other error is taken as the verifier's own failure.
type Verifier interface {
	VerifyInto(tok []byte, c *token.Claims) error
}

// Config is what every entry point needs.
type Config struct {
	Verifier Verifier
	// Rules is the route policy (NewRules), which entry points may share
	// and which Rules.Replace changes for all of them at once; nil means
	// no routes: every request needs a valid token.
	Rules *Rules
	// Logger receives failures; nil discards them.
	Logger *slog.Logger
	// Metrics, if not nil, counts every decision.
	Metrics *Metrics
	// Decisions, if not nil, logs refusals and a sample of the allowed
	// requests.
	Decisions *DecisionLog
}

// realm is the protection space named in every challenge (RFC 9110 §11.5).
const realm = "meshauth"

// Identity headers, set for the upstream from a verified token. Any header
// the caller sent under the same prefix is removed first.
const (
	headerSubject = "X-Meshauth-Subject" // "sub", qualified
	headerClient  = "X-Meshauth-Client"  // "client_id", qualified
	headerScope   = "X-Meshauth-Scope"   // "scope"
	headerIssuer  = "X-Meshauth-Issuer"  // "iss": the issuer that vouched for the token
)

// identityHeaders are the identity headers in the order of request.value.
var identityHeaders = [numIdentity]string{headerSubject, headerClient, headerScope, headerIssuer}

const numIdentity = 4

// code names the outcome of a request; it indexes the fixed answers and
// the metrics. Codes from codeToken on carry a token.Reason.
type code uint16

const (
	codeAllowed code = iota
	codePublic
	codeNoToken
	codeUnsupportedScheme
	codeMalformed
	codeMultiple
	codeQueryToken
	codeInsufficientScope
	codeIssuerRefused
	codeConditionFalse
	codeConditionError
	codeUnforwardable
	codeBadTarget
	codeVerifier
	codeUpstream
	codeUpstreamTimeout
	codeBodyTooLarge
	codePath  // the first of a code per pathFault but pathOK
	codeToken = codePath + code(numPathFaults) - 1
	numCodes  = codeToken + 256
)

// pathCode is the code of a path that cannot be made safe.
func pathCode(f pathFault) code { return codePath + code(f) - 1 }

// Metric outcomes.
const (
	outcomeAllowed = "allowed"
	outcomePublic  = "public"
	outcomeDenied  = "denied"
	outcomeError   = "error"
)

// verdict is the answer to a request. Its strings are built once, at start
// or by compile, so that deciding allocates nothing.
type verdict struct {
	code      code
	status    int    // 200 when the request may proceed
	challenge string // WWW-Authenticate value; "" if none
	body      string // JSON error body; "" when allowed
}

func (v verdict) ok() bool { return v.status == 200 }

// jsonVerdict builds an answer with a JSON body {"error",
// "error_description"}; none if errCode is "".
func jsonVerdict(c code, status int, challenge, errCode, desc string) verdict {
	var body string
	if errCode != "" {
		b, err := json.Marshal(struct {
			Error       string `json:"error"`
			Description string `json:"error_description,omitempty"`
		}{errCode, desc})
		if err != nil {
			panic(err) // two strings always encode
		}
		body = string(b)
	}
	return verdict{c, status, challenge, body}
}

// answer describes a code: its metric labels and its verdict.
type answer struct {
	outcome, reason string
	verdict
}

var answers = func() *[numCodes]answer {
	var a [numCodes]answer
	set := func(c code, outcome, reason string, status int, challenge, errCode, desc string) {
		a[c] = answer{outcome, reason, jsonVerdict(c, status, challenge, errCode, desc)}
	}
	// RFC 6750 §3.1: a request without credentials, or with those of
	// another scheme, gets a challenge without an error code.
	bare := `Bearer realm="` + realm + `"`
	invalidRequest := bare + `, error="invalid_request", error_description="`
	set(codeAllowed, outcomeAllowed, "none", 200, "", "", "")
	set(codePublic, outcomePublic, "none", 200, "", "", "")
	set(codeNoToken, outcomeDenied, "no_token", 401, bare, "unauthorized", "a bearer token is required")
	// Each route builds its own answer (route.denial); this one names it.
	set(codeInsufficientScope, outcomeDenied, "insufficient_scope", 403, "", "", "")
	set(codeUnsupportedScheme, outcomeDenied, "unsupported_scheme", 401, bare, "unauthorized", "a bearer token is required")
	for _, x := range []struct {
		c            code
		reason, desc string
	}{
		{codeMalformed, "malformed_authorization", "malformed Authorization header"},
		{codeMultiple, "multiple_authorization", "more than one Authorization header"},
		// RFC 6750 §2.3 is not supported: a token in the URI leaks into
		// logs and, unverified, could reach the upstream.
		{codeQueryToken, "token_in_query", "access_token in the query is not supported"},
		{codeBadTarget, "bad_target", "missing or conflicting original request"},
		// Paths that cannot be made safe, refused before any policy runs.
		{pathCode(pathNotAbsolute), "path_not_absolute", "the path does not start with /"},
		{pathCode(pathMalformedPercent), "path_malformed_percent", "malformed percent-encoding in the path"},
		{pathCode(pathDoubleEncoded), "path_double_encoded", "double percent-encoding in the path"},
		{pathCode(pathEncodedSlash), "path_encoded_slash", "encoded slash or backslash in the path"},
		{pathCode(pathBackslash), "path_backslash", "backslash in the path"},
		{pathCode(pathEncodedSemicolon), "path_encoded_semicolon", "encoded semicolon in the path"},
		{pathCode(pathControl), "path_control", "control character in the path"},
		{pathCode(pathDotParams), "path_dot_params", "dot or empty segment with parameters in the path"},
		{pathCode(pathAmbiguousDots), "path_ambiguous_dots", "dot-dot segment after an empty segment in the path"},
	} {
		set(x.c, outcomeDenied, x.reason, 400, invalidRequest+x.desc+`"`, "invalid_request", x.desc)
	}
	set(pathCode(pathTooLong), outcomeDenied, "path_too_long", 414, "", "invalid_request", "the path is too long")
	// A valid token that the route refuses for who vouched for it or for
	// its condition: no scope or new token would change that.
	set(codeIssuerRefused, outcomeDenied, "issuer_refused", 403, "", "access_denied", "tokens of this issuer are not accepted here")
	set(codeConditionFalse, outcomeDenied, "condition_false", 403, "", "access_denied", "the route's condition refused the request")
	set(codeConditionError, outcomeDenied, "condition_error", 403, "", "access_denied", "the route's condition refused the request")
	invalidToken := bare + `, error="invalid_token", error_description="`
	const unforwardable = "claims not valid in a header field"
	set(codeUnforwardable, outcomeDenied, "unforwardable_claims", 401, invalidToken+unforwardable+`"`, "invalid_token", unforwardable)
	set(codeVerifier, outcomeError, "verifier", 503, "", "temporarily_unavailable", "")
	set(codeUpstream, outcomeError, "upstream", 502, "", "bad_gateway", "the upstream could not be reached")
	set(codeUpstreamTimeout, outcomeError, "upstream_timeout", 504, "", "gateway_timeout", "the upstream did not answer in time")
	// Each forwarder builds its own answer, which names its maximum.
	set(codeBodyTooLarge, outcomeDenied, "body_too_large", 413, "", "", "")
	for r := range 256 {
		reason := token.Reason(r).String()
		desc := strings.ReplaceAll(reason, "_", " ")
		if token.Reason(r) == token.Revoked {
			desc = "token revoked" // "revoked" alone would not say what
		}
		set(codeToken+code(r), outcomeDenied, reason, 401, invalidToken+desc+`"`, "invalid_token", desc)
	}
	return &a
}()

// guard is the one decision every entry point makes.
type guard struct {
	verifier  Verifier
	rules     *Rules
	log       *slog.Logger
	metrics   *Metrics
	decisions *DecisionLog
	requests  sync.Pool // *request
	claims    sync.Pool // *token.Claims, for verify alone (the Edge)
}

// noRoutes are the rules of a Config without Rules.
var noRoutes = sync.OnceValue(func() *Rules {
	r, err := NewRules(Policy{})
	if err != nil {
		panic(err)
	}
	return r
})

func newGuard(cfg Config) (*guard, error) {
	if cfg.Verifier == nil {
		return nil, errors.New("proxy: no verifier")
	}
	log := cfg.Logger
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	// Every line a request can cause is bounded per kind: a caller must
	// not be able to fill the disk.
	log = ratelog.New(log)
	g := &guard{verifier: cfg.Verifier, rules: cmp.Or(cfg.Rules, noRoutes()), log: log, metrics: cfg.Metrics, decisions: cfg.Decisions}
	g.requests.New = func() any { return new(request) }
	g.claims.New = func() any { return new(token.Claims) }
	return g, nil
}

// request is one request's passage through the guard. It is pooled, and
// its buffers reused, so that deciding allocates nothing.
type request struct {
	rules    *rules // the policy the request is judged by, whole
	route    *route // the route that applies; nil if none was chosen
	verified bool   // claims hold the verified token's
	claims   token.Claims
	canon    []byte // the canonical path
	key      []byte // the path as routes match it
	// values holds the header values set for the upstream, of the
	// identity headers then of the route's claim headers.
	values  []byte
	spans   [numIdentity + maxClaimHeaders]valueSpan
	scratch []byte // for an entry point's lists of field names
	act     activation
}

// valueSpan locates a value in request.values.
type valueSpan struct {
	start, end int
	set        bool
}

// begin starts judging a request under the rules in force.
func (g *guard) begin() *request {
	r := g.requests.Get().(*request)
	r.rules = g.rules.load()
	return r
}

// end returns r to the pool.
func (g *guard) end(r *request) {
	r.rules, r.route, r.verified = nil, nil, false
	r.canon, r.key = r.canon[:0], r.key[:0]
	r.spans = [len(r.spans)]valueSpan{}
	g.requests.Put(r)
}

// decide answers a request for uri with method, given the values of its
// Authorization fields and, for conditions, its header fields. On
// codeAllowed, r holds the verified claims and the values of the headers
// to set; on codePublic, no value is set.
func (g *guard) decide(r *request, method []byte, uri *fasthttp.URI, authz [][]byte, headers headerSource) verdict {
	// Refused everywhere, public routes included: an upstream that reads
	// it would act on a token nobody verified (RFC 6750 §3.1: "uses more
	// than one method" and "unsupported parameter" are invalid_request).
	tok, cred := bearerCredential(uri, authz)
	if cred == codeQueryToken {
		return answers[codeQueryToken].verdict
	}
	var fault pathFault
	raw := uri.PathOriginal()
	r.canon, r.key, fault = canonicalPath(r.canon, r.key, raw, r.rules.encodedSlashes)
	if fault != pathOK {
		r.canon = append(r.canon[:0], raw...) // for the decision log
		return answers[pathCode(fault)].verdict
	}
	rt := r.rules.match(method, r.key)
	r.route = rt
	if rt.public {
		return answers[codePublic].verdict
	}
	if cred != codeAllowed {
		return answers[cred].verdict
	}
	c := &r.claims
	if cd := g.verify(tok, c); cd != codeAllowed {
		return answers[cd].verdict
	}
	r.verified = true
	if len(rt.issuers) > 0 && !slices.Contains(rt.issuers, c.Issuer) {
		return answers[codeIssuerRefused].verdict
	}
	for _, s := range rt.scopes {
		if !c.HasScope(s) {
			return rt.denial
		}
	}
	if rt.cond != nil {
		r.act = activation{claims: c, method: method, path: r.key, headers: headers}
		ok, err := rt.cond.eval(&r.act)
		if err != nil {
			// Fail closed, and count it: a condition that errs on
			// every request is a policy bug, not a stream of refusals.
			g.log.Debug("proxy: condition failed", "route", rt.label, "err", err)
			return answers[codeConditionError].verdict
		}
		if !ok {
			return answers[codeConditionFalse].verdict
		}
	}
	// A claim is copied into a header field: one that could not be sent
	// as-is must not be mangled into another identity.
	if !r.setValues() {
		return answers[codeUnforwardable].verdict
	}
	return answers[codeAllowed].verdict
}

// setValues computes the values of the identity headers and of the
// route's claim headers, and reports whether all can be sent as they are.
func (r *request) setValues() bool {
	c := &r.claims
	b := r.values[:0]
	for i := range numIdentity {
		start := len(b)
		switch i {
		case 0:
			b = c.AppendQualified(b, c.Subject)
		case 1:
			b = c.AppendQualified(b, c.ClientID)
		case 2:
			b = append(b, c.Scope...)
		case 3:
			b = append(b, c.Issuer...)
		}
		r.spans[i] = valueSpan{start, len(b), true}
	}
	for i, h := range r.route.claims {
		start := len(b)
		var ok bool
		b, ok = appendClaim(b, c, h.claim)
		r.spans[numIdentity+i] = valueSpan{start, len(b), ok}
	}
	r.values = b
	return fieldValue(b)
}

// appendClaim appends the header text of the claim name (ClaimHeader).
func appendClaim(b []byte, c *token.Claims, name string) ([]byte, bool) {
	var s string
	switch name {
	case "sub":
		return c.AppendQualified(b, c.Subject), c.Subject != ""
	case "client_id":
		return c.AppendQualified(b, c.ClientID), c.ClientID != ""
	case "iss":
		s = c.Issuer
	case "scope":
		s = c.Scope
	case "jti":
		s = c.ID
	default:
		return c.AppendClaimText(b, name)
	}
	return append(b, s...), s != ""
}

// value returns the value of identity header i (identityHeaders) or, from
// numIdentity on, of the route's claim header i-numIdentity, and whether it
// is set.
func (r *request) value(i int) ([]byte, bool) {
	s := r.spans[i]
	return r.values[s.start:s.end], s.set
}

// claimValue returns the value of the claim header name if the route
// that applies sets it.
func (r *request) claimValue(name string) ([]byte, bool) {
	if r.route == nil || r.route.public {
		return nil, false
	}
	for i, h := range r.route.claims {
		if strings.EqualFold(h.name, name) {
			return r.value(numIdentity + i)
		}
	}
	return nil, false
}

func (g *guard) verify(tok []byte, c *token.Claims) code {
	var start time.Time
	if g.metrics != nil {
		start = time.Now()
	}
	err := g.verifier.VerifyInto(tok, c)
	if g.metrics != nil {
		g.metrics.verify.Observe(time.Since(start).Seconds())
	}
	if err == nil {
		return codeAllowed
	}
	var te *token.Error
	if errors.As(err, &te) {
		return codeToken + code(te.Reason)
	}
	g.log.Error("proxy: token verifier failed", "err", err)
	return codeVerifier
}

// record counts a finished request and passes it to the decision log.
func (g *guard) record(e entry, c code, r *request, method []byte) {
	if g.metrics != nil {
		g.metrics.requests[e][c].Inc()
	}
	if g.decisions != nil {
		g.decisions.record(e, c, r, method)
	}
}

func (g *guard) getClaims() *token.Claims  { return g.claims.Get().(*token.Claims) }
func (g *guard) putClaims(c *token.Claims) { g.claims.Put(c) }

// fieldValue reports whether s can be sent as a header field value
// unchanged: no control character but HTAB (RFC 9110 §5.5).
func fieldValue[T string | []byte](s T) bool {
	for i := 0; i < len(s); i++ {
		if c := s[i]; (c < ' ' && c != '\t') || c == 0x7f {
			return false
		}
	}
	return true
}

// identityHeader reports whether name is in the identity headers'
// namespace, X-Meshauth-*, in any case and with '_' for '-': CGI-style
// servers and some frameworks read X_Meshauth_Subject as
// X-Meshauth-Subject.
func identityHeader(name []byte) bool {
	const prefix = "x-meshauth-"
	if len(name) < len(prefix) {
		return false
	}
	for i := range len(prefix) {
		c := lower(name[i])
		if c != prefix[i] && !(prefix[i] == '-' && c == '_') {
			return false
		}
	}
	return true
}

// strippedHeader reports whether the caller's field name must not reach
// the upstream: it is in the identity namespace or a claim header of rs,
// if not nil (in any case and with '_' for '-', as identityHeader).
func strippedHeader(name []byte, rs *rules) bool {
	if identityHeader(name) {
		return true
	}
	if rs == nil {
		return false
	}
	for _, n := range rs.claimHeaders {
		if sameFieldName(name, n) {
			return true
		}
	}
	return false
}

// sameFieldName compares field names case-insensitively, '_' matching '-'.
func sameFieldName(name []byte, s string) bool {
	if len(name) != len(s) {
		return false
	}
	for i := range len(name) {
		a, b := lower(name[i]), lower(s[i])
		if a != b && !(a == '_' && b == '-') {
			return false
		}
	}
	return true
}
