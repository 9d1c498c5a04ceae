package proxy

import (
	"context"
	"encoding/json"
	"errors"
	"log/slog"
	"strings"
	"sync"
	"time"

	"github.com/valyala/fasthttp"

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
	Policy   Policy
	// Logger receives refusals (at debug level) and failures; nil
	// discards them.
	Logger *slog.Logger
	// Metrics, if not nil, counts every decision.
	Metrics *Metrics
}

// realm is the protection space named in every challenge (RFC 9110 §11.5).
const realm = "meshauth"

// Identity headers, set for the upstream from a verified token. Any header
// the caller sent under the same prefix is removed first.
const (
	headerSubject = "X-Meshauth-Subject" // "sub"
	headerClient  = "X-Meshauth-Client"  // "client_id"
	headerScope   = "X-Meshauth-Scope"   // "scope"
)

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
	codeUnforwardable
	codeBadTarget
	codeVerifier
	codeUpstream
	codeToken
	numCodes = codeToken + 256
)

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

// answer describes a code: its metric labels and its verdict.
type answer struct {
	outcome, reason string
	verdict
}

var answers = func() *[numCodes]answer {
	var a [numCodes]answer
	set := func(c code, outcome, reason string, status int, challenge, errCode, desc string) {
		var body string
		if errCode != "" {
			b, _ := json.Marshal(struct {
				Error       string `json:"error"`
				Description string `json:"error_description,omitempty"`
			}{errCode, desc})
			body = string(b)
		}
		a[c] = answer{outcome, reason, verdict{c, status, challenge, body}}
	}
	// RFC 6750 §3.1: a request without credentials, or with those of
	// another scheme, gets a challenge without an error code.
	bare := `Bearer realm="` + realm + `"`
	invalidRequest := bare + `, error="invalid_request", error_description="`
	set(codeAllowed, outcomeAllowed, "none", 200, "", "", "")
	set(codePublic, outcomePublic, "none", 200, "", "", "")
	set(codeNoToken, outcomeDenied, "no_token", 401, bare, "unauthorized", "a bearer token is required")
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
	} {
		set(x.c, outcomeDenied, x.reason, 400, invalidRequest+x.desc+`"`, "invalid_request", x.desc)
	}
	invalidToken := bare + `, error="invalid_token", error_description="`
	const unforwardable = "claims not valid in a header field"
	set(codeUnforwardable, outcomeDenied, "unforwardable_claims", 401, invalidToken+unforwardable+`"`, "invalid_token", unforwardable)
	set(codeVerifier, outcomeError, "verifier", 503, "", "temporarily_unavailable", "")
	set(codeUpstream, outcomeError, "upstream", 502, "", "bad_gateway", "")
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
	verifier Verifier
	rules    *rules
	log      *slog.Logger
	metrics  *Metrics
	claims   sync.Pool // *token.Claims: VerifyInto reuses their buffers
}

func newGuard(cfg Config) (*guard, error) {
	if cfg.Verifier == nil {
		return nil, errors.New("proxy: no verifier")
	}
	rs, err := compile(cfg.Policy)
	if err != nil {
		return nil, err
	}
	log := cfg.Logger
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	g := &guard{verifier: cfg.Verifier, rules: rs, log: log, metrics: cfg.Metrics}
	g.claims.New = func() any { return new(token.Claims) }
	return g, nil
}

// decide answers a request for uri with method, given the values of its
// Authorization fields. uri's path is matched after fasthttp's
// normalization (percent-decoding, dot segments, repeated slashes), which
// is also the path the sidecar forwards. On codeAllowed, c holds the
// verified claims.
func (g *guard) decide(method []byte, uri *fasthttp.URI, authz [][]byte, c *token.Claims) verdict {
	// Refused everywhere, public routes included: an upstream that reads
	// it would act on a token nobody verified (RFC 6750 §3.1: "uses more
	// than one method" and "unsupported parameter" are invalid_request).
	if uri.QueryArgs().Has("access_token") {
		return answers[codeQueryToken].verdict
	}
	r := g.rules.match(method, uri.Path())
	if r.public {
		return answers[codePublic].verdict
	}
	if len(authz) == 0 {
		return answers[codeNoToken].verdict
	}
	if len(authz) > 1 {
		// Which one would the upstream read? Refuse to guess.
		return answers[codeMultiple].verdict
	}
	tok, cd := bearerToken(authz[0])
	if cd != codeAllowed {
		return answers[cd].verdict
	}
	if cd := g.verify(tok, c); cd != codeAllowed {
		return answers[cd].verdict
	}
	for _, s := range r.scopes {
		if !c.HasScope(s) {
			return r.denial
		}
	}
	// A claim is copied into a header field: one that could not be sent
	// as-is must not be mangled into another identity.
	if !fieldValue(c.Subject) || !fieldValue(c.ClientID) || !fieldValue(c.Scope) {
		return answers[codeUnforwardable].verdict
	}
	return answers[codeAllowed].verdict
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

// record counts a finished request and logs a refusal.
func (g *guard) record(e entry, c code, method, path []byte) {
	if g.metrics != nil {
		g.metrics.requests[e][c].Inc()
	}
	if a := &answers[c]; a.outcome == outcomeDenied && g.log.Enabled(context.Background(), slog.LevelDebug) {
		g.log.LogAttrs(context.Background(), slog.LevelDebug, "proxy: request refused",
			slog.String("entry", entryNames[e]), slog.String("reason", a.reason),
			slog.String("method", string(method)), slog.String("path", string(path)))
	}
}

func (g *guard) getClaims() *token.Claims  { return g.claims.Get().(*token.Claims) }
func (g *guard) putClaims(c *token.Claims) { g.claims.Put(c) }

// fieldValue reports whether s can be sent as a header field value
// unchanged: no control character but HTAB (RFC 9110 §5.5).
func fieldValue(s string) bool {
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
