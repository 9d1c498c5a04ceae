package exchangepolicy

import (
	"encoding/json"
	"errors"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/meshauth/meshauth/token"
)

const testIssuer = "https://auth.example.com"

var decideNow = time.Unix(1_800_000_000, 0)

func subjectClaims(mod func(*token.Claims)) *token.Claims {
	c := &token.Claims{
		Issuer: testIssuer, Subject: "web", Audience: []string{"orders"}, ClientID: "web",
		ExpiresAt: decideNow.Add(10 * time.Minute), Scope: "payments.charge payments.read profile",
	}
	if mod != nil {
		mod(c)
	}
	return c
}

func registered(mod func(*Client)) *Client {
	c := &Client{
		ID: "orders", Scope: []string{"payments.charge", "payments.read", "ledger.write"},
		AllowedAudiences: []string{"payments", "ledger"}, ExchangeScopes: map[string][]string{},
	}
	if mod != nil {
		mod(c)
	}
	return c
}

// chain returns an act claim of n nested actors a1 (outermost) … an.
func actChain(n int) json.RawMessage {
	s := ""
	for i := n; i >= 1; i-- {
		inner := ""
		if s != "" {
			inner = `,"act":` + s
		}
		s = `{"sub":"a` + string(rune('0'+i)) + `"` + inner + `}`
	}
	return json.RawMessage(s)
}

func TestDecide(t *testing.T) {
	tests := []struct {
		name    string
		req     Request
		wantErr error
		aud     []string
		scope   []string
		act     string
		exp     time.Time
	}{
		{
			name:  "narrowed",
			req:   Request{Subject: subjectClaims(nil), Client: registered(nil), Audiences: []string{"payments"}, Scope: []string{"payments.charge"}},
			aud:   []string{"payments"},
			scope: []string{"payments.charge"},
			act:   `{"sub":"orders"}`,
			exp:   decideNow.Add(5 * time.Minute),
		},
		{
			name:  "all in common when none requested",
			req:   Request{Subject: subjectClaims(nil), Client: registered(nil), Audiences: []string{"payments", "payments"}},
			aud:   []string{"payments"},
			scope: []string{"payments.charge", "payments.read"},
			act:   `{"sub":"orders"}`,
			exp:   decideNow.Add(5 * time.Minute),
		},
		{
			name:  "nests the prior actors",
			req:   Request{Subject: subjectClaims(func(c *token.Claims) { c.Act = json.RawMessage(`{ "sub": "edge", "act": {"sub":"gw"} }`) }), Client: registered(nil), Audiences: []string{"ledger"}, Scope: []string{"payments.read"}},
			aud:   []string{"ledger"},
			scope: []string{"payments.read"},
			act:   `{"sub":"orders","act":{"sub":"edge","act":{"sub":"gw"}}}`,
			exp:   decideNow.Add(5 * time.Minute),
		},
		{
			name:  "never outlives the subject token",
			req:   Request{Subject: subjectClaims(func(c *token.Claims) { c.ExpiresAt = decideNow.Add(time.Minute) }), Client: registered(nil), Audiences: []string{"payments"}},
			aud:   []string{"payments"},
			scope: []string{"payments.charge", "payments.read"},
			act:   `{"sub":"orders"}`,
			exp:   decideNow.Add(time.Minute),
		},
		{
			name:  "may_act by sub",
			req:   Request{Subject: subjectClaims(func(c *token.Claims) { c.Audience = []string{"api"}; c.MayAct = json.RawMessage(`{"sub":"orders"}`) }), Client: registered(nil), Audiences: []string{"payments"}},
			aud:   []string{"payments"},
			scope: []string{"payments.charge", "payments.read"},
			act:   `{"sub":"orders"}`,
			exp:   decideNow.Add(5 * time.Minute),
		},
		{
			name: "may_act by client_id with this issuer",
			req: Request{Subject: subjectClaims(func(c *token.Claims) {
				c.Audience = []string{"api"}
				c.MayAct = json.RawMessage(`{"client_id":"orders","iss":"` + testIssuer + `"}`)
			}), Client: registered(nil), Audiences: []string{"payments"}},
			aud:   []string{"payments"},
			scope: []string{"payments.charge", "payments.read"},
			act:   `{"sub":"orders"}`,
			exp:   decideNow.Add(5 * time.Minute),
		},
		{
			name:  "malformed may_act ignored when the client is an audience",
			req:   Request{Subject: subjectClaims(func(c *token.Claims) { c.MayAct = json.RawMessage(`{"sub":1}`) }), Client: registered(nil), Audiences: []string{"payments"}, Scope: []string{"payments.read"}},
			aud:   []string{"payments"},
			scope: []string{"payments.read"},
			act:   `{"sub":"orders"}`,
			exp:   decideNow.Add(5 * time.Minute),
		},
		{
			name:  "within the per-audience limit",
			req:   Request{Subject: subjectClaims(nil), Client: registered(func(c *Client) { c.ExchangeScopes = map[string][]string{"payments": {"payments.read"}} }), Audiences: []string{"payments"}},
			aud:   []string{"payments"},
			scope: []string{"payments.read"},
			act:   `{"sub":"orders"}`,
			exp:   decideNow.Add(5 * time.Minute),
		},
		{
			name:  "chain at the default limit",
			req:   Request{Subject: subjectClaims(func(c *token.Claims) { c.Act = actChain(DefaultMaxDelegationDepth - 1) }), Client: registered(nil), Audiences: []string{"payments"}, Scope: []string{"payments.read"}},
			aud:   []string{"payments"},
			scope: []string{"payments.read"},
			act:   `{"sub":"orders","act":` + string(actChain(DefaultMaxDelegationDepth-1)) + `}`,
			exp:   decideNow.Add(5 * time.Minute),
		},

		{name: "no audience", req: Request{Subject: subjectClaims(nil), Client: registered(nil)}, wantErr: ErrNoAudience},
		{name: "not an audience", req: Request{Subject: subjectClaims(func(c *token.Claims) { c.Audience = []string{"api"} }), Client: registered(nil), Audiences: []string{"payments"}}, wantErr: ErrNotAudience},
		{name: "may_act names another", req: Request{Subject: subjectClaims(func(c *token.Claims) { c.Audience = []string{"api"}; c.MayAct = json.RawMessage(`{"sub":"billing"}`) }), Client: registered(nil), Audiences: []string{"payments"}}, wantErr: ErrNotAudience},
		{name: "may_act of another issuer", req: Request{Subject: subjectClaims(func(c *token.Claims) {
			c.Audience = []string{"api"}
			c.MayAct = json.RawMessage(`{"sub":"orders","iss":"https://other"}`)
		}), Client: registered(nil), Audiences: []string{"payments"}}, wantErr: ErrNotAudience},
		{name: "may_act name case differs", req: Request{Subject: subjectClaims(func(c *token.Claims) { c.Audience = []string{"api"}; c.MayAct = json.RawMessage(`{"SUB":"orders"}`) }), Client: registered(nil), Audiences: []string{"payments"}}, wantErr: ErrNotAudience},
		{name: "may_act sub not a string", req: Request{Subject: subjectClaims(func(c *token.Claims) { c.Audience = []string{"api"}; c.MayAct = json.RawMessage(`{"sub":["orders"]}`) }), Client: registered(nil), Audiences: []string{"payments"}}, wantErr: ErrClaim},
		{name: "audience not allowed", req: Request{Subject: subjectClaims(nil), Client: registered(nil), Audiences: []string{"payments", "admin"}}, wantErr: ErrTarget},
		{name: "scope not held by the subject", req: Request{Subject: subjectClaims(nil), Client: registered(nil), Audiences: []string{"ledger"}, Scope: []string{"ledger.write"}}, wantErr: ErrScope},
		{name: "scope not registered for the client", req: Request{Subject: subjectClaims(nil), Client: registered(nil), Audiences: []string{"payments"}, Scope: []string{"profile"}}, wantErr: ErrScope},
		{name: "scope over the per-audience limit", req: Request{Subject: subjectClaims(nil), Client: registered(func(c *Client) { c.ExchangeScopes = map[string][]string{"ledger": {"payments.read"}} }), Audiences: []string{"payments", "ledger"}, Scope: []string{"payments.charge"}}, wantErr: ErrScope},
		{name: "empty per-audience limit", req: Request{Subject: subjectClaims(nil), Client: registered(func(c *Client) { c.ExchangeScopes = map[string][]string{"payments": {}} }), Audiences: []string{"payments"}}, wantErr: ErrScope},
		{name: "no scope in common", req: Request{Subject: subjectClaims(func(c *token.Claims) { c.Scope = "profile" }), Client: registered(nil), Audiences: []string{"payments"}}, wantErr: ErrScope},
		{name: "no scope at all", req: Request{Subject: subjectClaims(func(c *token.Claims) { c.Scope = "" }), Client: registered(nil), Audiences: []string{"payments"}}, wantErr: ErrScope},
		{name: "past the default depth", req: Request{Subject: subjectClaims(func(c *token.Claims) { c.Act = actChain(DefaultMaxDelegationDepth) }), Client: registered(nil), Audiences: []string{"payments"}}, wantErr: ErrDepth},
		{name: "past the client's depth", req: Request{Subject: subjectClaims(func(c *token.Claims) { c.Act = actChain(1) }), Client: registered(func(c *Client) { c.MaxDelegationDepth = 1 }), Audiences: []string{"payments"}}, wantErr: ErrDepth},
		{name: "negative depth fails closed", req: Request{Subject: subjectClaims(nil), Client: registered(func(c *Client) { c.MaxDelegationDepth = -1 }), Audiences: []string{"payments"}}, wantErr: ErrDepth},
		{name: "act level without sub", req: Request{Subject: subjectClaims(func(c *token.Claims) { c.Act = json.RawMessage(`{"sub":"a","act":{"iss":"x"}}`) }), Client: registered(nil), Audiences: []string{"payments"}}, wantErr: ErrClaim},
		{name: "act null inside", req: Request{Subject: subjectClaims(func(c *token.Claims) { c.Act = json.RawMessage(`{"sub":"a","act":null}`) }), Client: registered(nil), Audiences: []string{"payments"}}, wantErr: ErrClaim},
		{name: "expired within the leeway", req: Request{Subject: subjectClaims(func(c *token.Claims) { c.ExpiresAt = decideNow.Add(-10 * time.Second) }), Client: registered(nil), Audiences: []string{"payments"}}, wantErr: ErrExpired},
		{name: "expiring decideNow", req: Request{Subject: subjectClaims(func(c *token.Claims) { c.ExpiresAt = decideNow }), Client: registered(nil), Audiences: []string{"payments"}}, wantErr: ErrExpired},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			d, err := Decide(tc.req, decideNow, 5*time.Minute)
			if tc.wantErr != nil {
				if !errors.Is(err, tc.wantErr) {
					t.Fatalf("err = %v, want %v", err, tc.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if !slices.Equal(d.Audience, tc.aud) || !slices.Equal(d.Scope, tc.scope) || string(d.Act) != tc.act || !d.ExpiresAt.Equal(tc.exp) {
				t.Errorf("decision = aud %v scope %v act %s exp %v\nwant aud %v scope %v act %s exp %v", d.Audience, d.Scope, d.Act, d.ExpiresAt, tc.aud, tc.scope, tc.act, tc.exp)
			}
		})
	}
}

func TestDecideLifetime(t *testing.T) {
	if _, err := Decide(Request{Subject: subjectClaims(nil), Client: registered(nil), Audiences: []string{"payments"}}, decideNow, 0); err == nil {
		t.Error("zero lifetime accepted")
	}
}

// TestDecideErrorText checks that refusals name what was refused, and that
// attacker-chosen text is truncated before it reaches an error_description.
func TestDecideErrorText(t *testing.T) {
	long := strings.Repeat("x", 1000)
	_, err := Decide(Request{Subject: subjectClaims(nil), Client: registered(nil), Audiences: []string{long}}, decideNow, time.Minute)
	if !errors.Is(err, ErrTarget) || len(err.Error()) > 300 {
		t.Errorf("long audience: %v", err)
	}
	_, err = Decide(Request{Subject: subjectClaims(nil), Client: registered(nil), Audiences: []string{"payments"}, Scope: []string{long}}, decideNow, time.Minute)
	if !errors.Is(err, ErrScope) || len(err.Error()) > 300 {
		t.Errorf("long scope: %v", err)
	}
	_, err = Decide(Request{Subject: subjectClaims(nil), Client: registered(nil), Audiences: []string{"payments"}, Scope: []string{"profile"}}, decideNow, time.Minute)
	if err == nil || !strings.Contains(err.Error(), `"profile" is not registered for this client`) {
		t.Errorf("scope refusal: %v", err)
	}
}

// FuzzDecide feeds arbitrary act and may_act claims (the package's only
// parsing) through Decide: it must never panic, refuse malformed claims with
// ErrClaim, and on success nest the old chain under exactly one new actor.
func FuzzDecide(f *testing.F) {
	for _, s := range [][2]string{
		{`{"sub":"a"}`, ``},
		{`{"sub":"a","act":{"sub":"b"}}`, `{"sub":"orders"}`},
		{`{"sub":"a","act":null}`, `{"client_id":"orders","iss":"x"}`},
		{`{}`, `[]`},
		{`{"sub":"a","act":{"sub":"b","act":{"sub":"c","act":{"sub":"d","act":{"sub":"e"}}}}}`, `{"sub":1}`},
		{`"x"`, `{"SUB":"orders"}`},
	} {
		f.Add(s[0], s[1], true)
		f.Add(s[0], s[1], false)
	}
	f.Fuzz(func(t *testing.T, act, mayAct string, inAud bool) {
		sub := subjectClaims(nil)
		if !inAud {
			sub.Audience = []string{"api"}
		}
		if act != "" {
			if !json.Valid([]byte(act)) {
				return // the token package hands over only valid JSON
			}
			sub.Act = json.RawMessage(act)
		}
		if mayAct != "" {
			if !json.Valid([]byte(mayAct)) {
				return
			}
			sub.MayAct = json.RawMessage(mayAct)
		}
		d, err := Decide(Request{Subject: sub, Client: registered(nil), Audiences: []string{"payments"}}, decideNow, time.Minute)
		if err != nil {
			for _, known := range []error{ErrNotAudience, ErrDepth, ErrClaim, ErrScope} {
				if errors.Is(err, known) {
					return
				}
			}
			t.Fatalf("unexpected error %v", err)
		}
		var got struct {
			Sub string          `json:"sub"`
			Act json.RawMessage `json:"act"`
		}
		if err := json.Unmarshal(d.Act, &got); err != nil || got.Sub != "orders" {
			t.Fatalf("act = %s", d.Act)
		}
		n, err := chainLength(got.Act, DefaultMaxDelegationDepth)
		if err != nil || n+1 > DefaultMaxDelegationDepth {
			t.Fatalf("act %s: prior chain %d, %v", d.Act, n, err)
		}
	})
}
