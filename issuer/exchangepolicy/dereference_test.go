package exchangepolicy

import (
	"errors"
	"slices"
	"testing"
	"time"

	"github.com/meshauth/meshauth/token"
)

func edgeClient(mod func(*Client)) *Client {
	c := &Client{
		ID: "edge", Scope: []string{DereferenceScope}, AllowedAudiences: []string{"orders", "ledger"},
		ExchangeScopes: map[string][]string{"ledger": {"ledger.read"}},
	}
	if mod != nil {
		mod(c)
	}
	return c
}

func TestDereference(t *testing.T) {
	ref := func(mod func(*token.Claims)) *token.Claims {
		return subjectClaims(func(c *token.Claims) {
			c.Subject, c.ClientID, c.ID, c.SessionID = "alice", "mobile", "ref-jti", "grant-1"
			c.Audience = []string{"orders", "ledger"}
			c.Scope = "orders.read ledger.read profile"
			if mod != nil {
				mod(c)
			}
		})
	}
	tests := []struct {
		name    string
		req     Request
		wantErr error
		aud     []string
		scope   []string
		exp     time.Time
	}{
		{name: "all of the reference token's scope", req: Request{Subject: ref(nil), Client: edgeClient(nil), Audiences: []string{"orders"}},
			aud: []string{"orders"}, scope: []string{"orders.read", "ledger.read", "profile"}, exp: decideNow.Add(5 * time.Minute)},
		{name: "narrowed by the audience's limit", req: Request{Subject: ref(nil), Client: edgeClient(nil), Audiences: []string{"ledger"}},
			aud: []string{"ledger"}, scope: []string{"ledger.read"}, exp: decideNow.Add(5 * time.Minute)},
		{name: "requested scope", req: Request{Subject: ref(nil), Client: edgeClient(nil), Audiences: []string{"orders"}, Scope: []string{"profile"}},
			aud: []string{"orders"}, scope: []string{"profile"}, exp: decideNow.Add(5 * time.Minute)},
		{name: "reference token expires first", req: Request{Subject: ref(func(c *token.Claims) { c.ExpiresAt = decideNow.Add(time.Minute) }), Client: edgeClient(nil), Audiences: []string{"orders"}},
			aud: []string{"orders"}, scope: []string{"orders.read", "ledger.read", "profile"}, exp: decideNow.Add(time.Minute)},
		{name: "reference token without scope", req: Request{Subject: ref(func(c *token.Claims) { c.Scope = "" }), Client: edgeClient(nil), Audiences: []string{"orders"}},
			aud: []string{"orders"}, exp: decideNow.Add(5 * time.Minute)},

		{name: "no dereference scope", req: Request{Subject: ref(nil), Client: edgeClient(func(c *Client) { c.Scope = []string{"introspect"} }), Audiences: []string{"orders"}}, wantErr: ErrNoDereference},
		{name: "no audience", req: Request{Subject: ref(nil), Client: edgeClient(nil)}, wantErr: ErrNoAudience},
		{name: "audience not allowed for the edge", req: Request{Subject: ref(func(c *token.Claims) { c.Audience = append(c.Audience, "payments") }), Client: edgeClient(nil), Audiences: []string{"payments"}}, wantErr: ErrTarget},
		{name: "audience not of the reference token", req: Request{Subject: ref(func(c *token.Claims) { c.Audience = []string{"ledger"} }), Client: edgeClient(nil), Audiences: []string{"orders"}}, wantErr: ErrTarget},
		{name: "reference token without audience", req: Request{Subject: ref(func(c *token.Claims) { c.Audience = nil }), Client: edgeClient(nil), Audiences: []string{"orders"}}, wantErr: ErrTarget},
		{name: "requested scope not held", req: Request{Subject: ref(nil), Client: edgeClient(nil), Audiences: []string{"orders"}, Scope: []string{"admin"}}, wantErr: ErrScope},
		{name: "requested scope beyond the audience's limit", req: Request{Subject: ref(nil), Client: edgeClient(nil), Audiences: []string{"ledger"}, Scope: []string{"profile"}}, wantErr: ErrScope},
		{name: "nothing allowed for the audience", req: Request{Subject: ref(func(c *token.Claims) { c.Scope = "profile" }), Client: edgeClient(nil), Audiences: []string{"ledger"}}, wantErr: ErrScope},
		{name: "expired", req: Request{Subject: ref(func(c *token.Claims) { c.ExpiresAt = decideNow }), Client: edgeClient(nil), Audiences: []string{"orders"}}, wantErr: ErrExpired},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			d, err := Dereference(tc.req, decideNow, 5*time.Minute)
			if tc.wantErr != nil {
				if !errors.Is(err, tc.wantErr) {
					t.Fatalf("err = %v, want %v", err, tc.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if !slices.Equal(d.Audience, tc.aud) || !slices.Equal(d.Scope, tc.scope) || !d.ExpiresAt.Equal(tc.exp) {
				t.Errorf("decision = %+v", d)
			}
			// The reference token's identity, not the edge's.
			if d.ClientID != "mobile" || d.ID != "ref-jti" || d.Act != nil {
				t.Errorf("client_id %q, jti %q, act %s", d.ClientID, d.ID, d.Act)
			}
		})
	}
	if _, err := Dereference(Request{Subject: ref(nil), Client: edgeClient(nil), Audiences: []string{"orders"}}, decideNow, 0); err == nil {
		t.Error("a zero lifetime was accepted")
	}
}

func TestDecideNamesTheExchangingClient(t *testing.T) {
	d, err := Decide(Request{Subject: subjectClaims(nil), Client: registered(nil), Audiences: []string{"payments"}}, decideNow, time.Minute)
	if err != nil {
		t.Fatal(err)
	}
	if d.ClientID != "orders" || d.ID != "" {
		t.Errorf("client_id %q, jti %q", d.ClientID, d.ID)
	}
}
