package proxy

import (
	"strings"
	"testing"

	"github.com/meshauth/meshauth/token"
)

func TestConditionCompile(t *testing.T) {
	for _, tt := range []struct{ expr, want string }{
		{`sub`, "not bool"},
		{`sub == 1`, "1:5: found no matching overload"},
		{`nope`, "undeclared reference to 'nope'"},
		{"true &&\n  nope", "2:3: undeclared reference"},
		{`sub ==`, "1:7: Syntax error"},
		{strings.Repeat("true && ", 600) + "true", "longer than"},
	} {
		_, err := compileCondition(tt.expr, nil)
		if err == nil || !strings.Contains(err.Error(), tt.want) || strings.Contains(err.Error(), "\n") {
			t.Errorf("%.40q: error %v, want one line with %q", tt.expr, err, tt.want)
		}
	}
	// Every variable type-checks as documented.
	const all = `sub == "a" && client_id == "b" && iss == "c" && scope == "d" && "e" in aud && "f" in scopes &&
		claims.g == 1 && act.sub == "h" && chain[0] == "i" && method == "GET" && path.startsWith("/") && headers["j"] == "k"`
	if _, err := compileCondition(all, []string{"J"}); err != nil {
		t.Error(err)
	}
}

func TestConditionEval(t *testing.T) {
	const act = `{"sub":"orders","client_id":"orders","act":{"sub":"web"}}`
	raw := `{"iss":"https://p.example","sub":"alice","client_id":"web","aud":["orders","x"],"scope":"a b","level":3,` +
		`"roles":["admin"],"act":` + act + `}`
	claims := func(prefix string) *token.Claims {
		return &token.Claims{Raw: []byte(raw), Issuer: "https://p.example", Subject: "alice", ClientID: "web",
			Audience: []string{"orders", "x"}, Scope: "a b", Act: []byte(act), SubjectPrefix: prefix}
	}
	headers := mapHeaders{"x-tenant": "acme"}
	for _, tt := range []struct {
		expr   string
		prefix string
		want   bool
		err    bool
	}{
		{`sub == "alice" && client_id == "web"`, "", true, false},
		{`sub == "https://p.example#alice" && client_id == "https://p.example#web"`, "https://p.example#", true, false},
		{`claims.sub == "https://p.example#alice" && act.sub == "https://p.example#orders"`, "https://p.example#", true, false},
		{`act.sub == "orders"`, "https://p.example#", false, false},
		{`chain == ["https://p.example#orders", "https://p.example#web"]`, "https://p.example#", true, false},
		{`chain == ["orders", "web"] && size(chain) <= 2`, "", true, false},
		{`act.act.sub == "web" && !has(act.act.act)`, "", true, false},
		{`iss == "https://p.example" && "orders" in aud && "b" in scopes && scope == "a b"`, "", true, false},
		{`claims.level >= 2 && claims.level < 3.5 && "admin" in claims.roles`, "", true, false},
		{`method == "POST" && path == "/a/b"`, "", true, false},
		{`headers["x-tenant"] == "acme" && !("x-other" in headers)`, "", true, false},
		{`claims.missing == "x"`, "", false, true},
		{`headers["x-other"] == "x"`, "", false, true},
		{`claims.level == "3"`, "", false, false},
	} {
		cd, err := compileCondition(tt.expr, []string{"X-Tenant", "X-Other"})
		if err != nil {
			t.Fatalf("%s: %v", tt.expr, err)
		}
		a := activation{claims: claims(tt.prefix), method: []byte("POST"), path: []byte("/a/b"), headers: headers}
		got, err := cd.eval(&a)
		if got != tt.want || (err != nil) != tt.err {
			t.Errorf("%s (prefix %q): %v, %v; want %v, error %v", tt.expr, tt.prefix, got, err, tt.want, tt.err)
		}
	}
	// A token without act: act is empty, and so is chain.
	c := claims("")
	c.Raw, c.Act = []byte(`{"sub":"alice"}`), nil
	cd, _ := compileCondition(`size(chain) == 0 && !has(act.sub)`, nil)
	if ok, err := cd.eval(&activation{claims: c}); !ok || err != nil {
		t.Errorf("no act: %v, %v", ok, err)
	}
}

// mapHeaders is a headerSource for tests.
type mapHeaders map[string]string

func (m mapHeaders) field(name string) ([]byte, bool) {
	v, ok := m[name]
	return []byte(v), ok
}
