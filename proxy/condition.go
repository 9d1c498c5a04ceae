package proxy

import (
	"errors"
	"fmt"
	"strings"
	"sync"

	"github.com/google/cel-go/cel"
	"github.com/google/cel-go/common/types"
	"github.com/google/cel-go/common/types/ref"
	"github.com/google/cel-go/interpreter"

	"github.com/meshauth/meshauth/token"
)

// A route's condition is a CEL expression (github.com/google/cel-go) over
// the verified token and the request, of these variables:
//
//	sub, client_id   string        the token's, qualified (token.Claims.SubjectPrefix)
//	iss, scope       string
//	aud, scopes      list(string)  scopes: scope split at spaces
//	claims           map(string, dyn)  every claim, as JSON decodes (numbers are doubles)
//	act              map(string, dyn)  the "act" claim (RFC 8693 §4.1), {} if absent
//	chain            list(string)  the actors' sub, nearest first: act.sub, act.act.sub, ...
//	method, path     string        path: the canonical path as routes match it
//	headers          map(string, string)  the route's condition_headers, in lower case
//
// Identities are qualified wherever they appear: sub and client_id in
// claims, act and chain too. "Only when the call came through orders" is
// act.sub == "orders" (or chain[0]); "at most 2 hops" is size(chain) <= 2.
// Numbers compare across types (claims.level >= 2).

// conditionVars are the variables of every condition.
var conditionVars = []cel.EnvOption{
	cel.Variable("sub", cel.StringType),
	cel.Variable("client_id", cel.StringType),
	cel.Variable("iss", cel.StringType),
	cel.Variable("scope", cel.StringType),
	cel.Variable("aud", cel.ListType(cel.StringType)),
	cel.Variable("scopes", cel.ListType(cel.StringType)),
	cel.Variable("claims", cel.MapType(cel.StringType, cel.DynType)),
	cel.Variable("act", cel.MapType(cel.StringType, cel.DynType)),
	cel.Variable("chain", cel.ListType(cel.StringType)),
	cel.Variable("method", cel.StringType),
	cel.Variable("path", cel.StringType),
	cel.Variable("headers", cel.MapType(cel.StringType, cel.StringType)),
}

var conditionEnv = sync.OnceValues(func() (*cel.Env, error) {
	return cel.NewEnv(append(conditionVars, cel.CrossTypeNumericComparisons(true))...)
})

// maxConditionLength bounds a condition's source.
const maxConditionLength = 4 << 10

// condition is a compiled Route.Condition.
type condition struct {
	prg     cel.Program
	headers []string // condition_headers, in lower case
}

// compileCondition parses and type-checks expr, which must be a bool.
func compileCondition(expr string, headers []string) (*condition, error) {
	if len(expr) > maxConditionLength {
		return nil, fmt.Errorf("longer than %d bytes", maxConditionLength)
	}
	env, err := conditionEnv()
	if err != nil {
		return nil, err
	}
	ast, iss := env.Compile(expr)
	if iss.Err() != nil {
		// One line per route: each error at its line:column in expr.
		var msgs []string
		for _, e := range iss.Errors() {
			msgs = append(msgs, fmt.Sprintf("%d:%d: %s", e.Location.Line(), e.Location.Column()+1, e.Message))
		}
		return nil, errors.New(strings.Join(msgs, "; "))
	}
	if !ast.OutputType().IsExactType(cel.BoolType) {
		return nil, fmt.Errorf("is of type %s, not bool", ast.OutputType())
	}
	prg, err := env.Program(ast, cel.EvalOptions(cel.OptOptimize))
	if err != nil {
		return nil, err
	}
	cd := &condition{prg: prg}
	for _, h := range headers {
		cd.headers = append(cd.headers, strings.ToLower(h))
	}
	return cd, nil
}

// eval evaluates the condition for the request a describes. An error
// (a claim that is absent, a value of the wrong type) is a refusal too.
func (cd *condition) eval(a *activation) (bool, error) {
	a.cond = cd
	defer a.reset()
	out, _, err := cd.prg.Eval(a)
	if err != nil {
		return false, err
	}
	b, ok := out.(types.Bool)
	if !ok {
		return false, fmt.Errorf("result %v is not a bool", out)
	}
	return bool(b), nil
}

// headerSource gives a condition the request's header fields.
type headerSource interface {
	// field returns the first value of the named field, and whether
	// there is one; name is in lower case.
	field(name string) ([]byte, bool)
}

// activation resolves a condition's variables for one request, each only
// when the expression reads it and once: a condition on sub alone decodes
// no JSON, one on act decodes that claim alone. It lives in the request's
// pooled state.
type activation struct {
	claims  *token.Claims
	method  []byte
	path    []byte
	headers headerSource
	cond    *condition
	// Values decoded, on first use.
	all, act, chain ref.Val
}

var _ interpreter.Activation = (*activation)(nil)

func (a *activation) reset() { *a = activation{} }

func (a *activation) Parent() interpreter.Activation { return nil }

// ResolveName implements interpreter.Activation.
func (a *activation) ResolveName(name string) (any, bool) {
	c := a.claims
	switch name {
	case "sub":
		return types.String(c.AppendQualified(nil, c.Subject)), true
	case "client_id":
		return types.String(c.AppendQualified(nil, c.ClientID)), true
	case "iss":
		return types.String(c.Issuer), true
	case "scope":
		return types.String(c.Scope), true
	case "aud":
		return types.NewStringList(types.DefaultTypeAdapter, c.Audience), true
	case "scopes":
		return types.NewStringList(types.DefaultTypeAdapter, strings.Fields(c.Scope)), true
	case "claims":
		if a.all == nil {
			m, err := c.Values()
			if err != nil {
				return types.WrapErr(err), true
			}
			qualify(c, m)
			a.all = types.NewStringInterfaceMap(types.DefaultTypeAdapter, m)
		}
		return a.all, true
	case "act":
		if a.act == nil {
			v, _, err := c.Value("act")
			if err != nil {
				return types.WrapErr(err), true
			}
			m, _ := v.(map[string]any)
			if m == nil {
				m = map[string]any{}
			}
			qualify(c, m)
			a.act = types.NewStringInterfaceMap(types.DefaultTypeAdapter, m)
		}
		return a.act, true
	case "chain":
		if a.chain == nil {
			chain, err := c.AppendActors(nil)
			if err != nil {
				return types.WrapErr(err), true
			}
			if c.SubjectPrefix != "" {
				for i, sub := range chain {
					chain[i] = string(c.AppendQualified(nil, sub))
				}
			}
			a.chain = types.NewStringList(types.DefaultTypeAdapter, chain)
		}
		return a.chain, true
	case "method":
		return types.String(a.method), true
	case "path":
		return types.String(a.path), true
	case "headers":
		h := make(map[string]string, len(a.cond.headers))
		for _, name := range a.cond.headers {
			if v, ok := a.headers.field(name); ok {
				h[name] = string(v)
			}
		}
		return types.NewStringStringMap(types.DefaultTypeAdapter, h), true
	}
	return nil, false
}

// qualify qualifies the identities of m, claims or an actor decoded from
// c: "sub" and "client_id" at the top and in every "act" and "may_act"
// below.
func qualify(c *token.Claims, m map[string]any) {
	if c.SubjectPrefix == "" {
		return
	}
	for k, v := range m {
		switch k {
		case "sub", "client_id":
			if s, ok := v.(string); ok {
				m[k] = string(c.AppendQualified(nil, s))
			}
		case "act", "may_act":
			if inner, ok := v.(map[string]any); ok {
				qualify(c, inner)
			}
		}
	}
}
