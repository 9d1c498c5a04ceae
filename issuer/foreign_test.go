package issuer

import (
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/meshauth/meshauth/exchange"
	"github.com/meshauth/meshauth/issuer/exchangepolicy"
)

// fakeForeignAS is another vendor's authorization server: an RFC 7662
// endpoint that knows a few tokens and wants this issuer's credentials.
type fakeForeignAS struct {
	*httptest.Server
	answers  map[string]string // token → JSON answer
	requests atomic.Int64
}

func newFakeForeignAS(t *testing.T) *fakeForeignAS {
	f := &fakeForeignAS{answers: map[string]string{}}
	f.Server = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		f.requests.Add(1)
		if id, secret, ok := r.BasicAuth(); !ok || id != "meshauth" || secret != "foreign-secret" {
			w.WriteHeader(http.StatusUnauthorized)
			return
		}
		answer, ok := f.answers[r.PostFormValue("token")]
		if !ok {
			answer = `{"active":false}`
		}
		w.Header().Set("Content-Type", "application/json")
		w.Write([]byte(answer))
	}))
	t.Cleanup(f.Close)
	return f
}

func TestDereferenceForeign(t *testing.T) {
	e := newEnv(t)
	as := newFakeForeignAS(t)
	exp := time.Now().Add(3 * time.Minute).Unix()
	answer := func(extra string) string {
		return `{"active":true,"sub":"alice","client_id":"app","scope":"orders.read","exp":` + jsonInt(exp) + extra + `}`
	}
	as.answers["good"] = answer(`,"iss":"https://as.example","token_type":"Bearer","jti":"foreign-jti","aud":"https://api.example"`)
	as.answers["no-exp"] = `{"active":true,"sub":"alice"}`
	as.answers["other-iss"] = answer(`,"iss":"https://evil.example"`)
	as.answers["dpop"] = answer(`,"token_type":"DPoP"`)
	as.answers["expired"] = `{"active":true,"sub":"alice","exp":1000}`
	as.answers["duplicate"] = `{"active":true,"sub":"alice","sub":"root","exp":` + jsonInt(exp) + `}`
	// encoding/json's struct decoding would read ACTIVE and Sub for active
	// and sub: names must match exactly.
	as.answers["case-variant"] = `{"active":false,"sub":"alice","ACTIVE":true,"Sub":"root","exp":` + jsonInt(exp) + `}`
	var err error
	e.srv.foreign, err = newForeignIssuers([]ForeignIssuer{{ID: "https://as.example", IntrospectionURL: as.URL, ClientID: "meshauth", ClientSecret: "foreign-secret",
		Audiences: []string{"orders"}}}, e.url)
	if err != nil {
		t.Fatal(err)
	}
	edge := e.register(ClientMetadata{ClientID: "edge", GrantTypes: []string{GrantTypeTokenExchange}, Scope: exchangepolicy.DereferenceScope, AllowedAudiences: []string{"orders", "ledger"}})
	plain := e.register(ClientMetadata{ClientID: "orders", GrantTypes: []string{GrantTypeTokenExchange}, Scope: "orders.read", AllowedAudiences: []string{"orders"}})
	edgeAuth := basic("edge", edge.ClientSecret)
	params := []string{"audience", "orders", exchange.SubjectIssuerParam, "https://as.example"}

	status, _, m := e.tokenRequest(exchangeForm("good", params...), edgeAuth)
	if status != http.StatusOK {
		t.Fatalf("foreign dereference: %d %v", status, m)
	}
	c := e.verifyAccessToken(m["access_token"].(string), "orders")
	if c.Subject != "https://as.example#alice" || c.ClientID != "https://as.example#app" || c.Scope != "orders.read" ||
		c.ID == "foreign-jti" || c.ID == "" || c.Act != nil || c.ExpiresAt.Unix() > exp {
		t.Errorf("claims = %+v", c)
	}

	refused := []struct {
		name    string
		tok     string
		kv      []string
		authz   string
		status  int
		errCode string
	}{
		{"inactive", "unknown", nil, edgeAuth, 400, "invalid_grant"},
		{"no exp", "no-exp", nil, edgeAuth, 400, "invalid_grant"},
		{"another issuer's answer", "other-iss", nil, edgeAuth, 400, "invalid_grant"},
		{"not a bearer token", "dpop", nil, edgeAuth, 400, "invalid_grant"},
		{"expired", "expired", nil, edgeAuth, 400, "invalid_grant"},
		{"duplicate members", "duplicate", nil, edgeAuth, 503, "temporarily_unavailable"},
		{"case-variant members", "case-variant", nil, edgeAuth, 400, "invalid_grant"},
		{"audience not configured for the foreign issuer", "good", []string{"audience", "", "audience", "ledger"}, edgeAuth, 400, "invalid_target"},
		{"not an edge", "good", nil, basic("orders", plain.ClientSecret), 400, "unauthorized_client"},
	}
	for _, tc := range refused {
		t.Run(tc.name, func(t *testing.T) {
			f := exchangeForm(tc.tok, params...)
			for i := 0; i < len(tc.kv); i += 2 {
				if tc.kv[i+1] == "" {
					f.Del(tc.kv[i])
				} else {
					f.Set(tc.kv[i], tc.kv[i+1])
				}
			}
			status, _, m := e.tokenRequest(f, tc.authz)
			if status != tc.status || m["error"] != tc.errCode {
				t.Fatalf("%d %v, want %d %s", status, m, tc.status, tc.errCode)
			}
		})
	}
	if status, _, m := e.tokenRequest(exchangeForm("good", "audience", "orders", exchange.SubjectIssuerParam, "https://unknown.example"), edgeAuth); status != 400 || m["error"] != "invalid_request" {
		t.Errorf("unknown subject_issuer: %d %v", status, m)
	}

	as.Close()
	if status, h, m := e.tokenRequest(exchangeForm("good", params...), edgeAuth); status != 503 || h.Get("Retry-After") == "" {
		t.Errorf("foreign issuer down: %d %v", status, m)
	}
	if strings.Contains(e.logs.String(), "foreign-secret") {
		t.Error("the foreign client secret appeared in the logs")
	}
}

func jsonInt(n int64) string {
	b, _ := json.Marshal(n)
	return string(b)
}

func TestForeignIssuerConfig(t *testing.T) {
	good := ForeignIssuer{ID: "https://as.example", IntrospectionURL: "https://as.example/introspect", ClientID: "c", ClientSecret: "s", Audiences: []string{"orders"}}
	tests := []struct {
		name string
		mod  func(*ForeignIssuer)
	}{
		{"no id", func(f *ForeignIssuer) { f.ID = "" }},
		{"own id", func(f *ForeignIssuer) { f.ID = "https://self.example" }},
		{"plain http", func(f *ForeignIssuer) { f.IntrospectionURL = "http://as.example/introspect" }},
		{"no secret", func(f *ForeignIssuer) { f.ClientSecret = "" }},
		{"no audiences", func(f *ForeignIssuer) { f.Audiences = nil }},
	}
	for _, tc := range tests {
		f := good
		tc.mod(&f)
		if _, err := newForeignIssuers([]ForeignIssuer{f}, "https://self.example"); err == nil {
			t.Errorf("%s: accepted", tc.name)
		}
	}
	if _, err := newForeignIssuers([]ForeignIssuer{good, good}, "https://self.example"); err == nil {
		t.Error("the same foreign issuer twice: accepted")
	}
	m, err := newForeignIssuers([]ForeignIssuer{good}, "https://self.example")
	if err != nil || m[good.ID].SubjectPrefix != "https://as.example#" {
		t.Errorf("%v %+v", err, m)
	}
}

// FuzzForeignIntrospection: a foreign server's answer never yields claims
// without a prefixed subject, an expiry in the future and the configured
// audiences.
func FuzzForeignIntrospection(f *testing.F) {
	f.Add([]byte(`{"active":true,"sub":"alice","exp":4000000000}`))
	f.Add([]byte(`{"active":true,"sub":"a","sub":"b","exp":4000000000,"token_type":"bearer"}`))
	f.Add([]byte(`{"active":false}`))
	fi := &foreignIssuer{ForeignIssuer: ForeignIssuer{ID: "https://as.example", Audiences: []string{"orders"}, SubjectPrefix: "as#"}}
	now := time.Unix(1_800_000_000, 0)
	f.Fuzz(func(t *testing.T, answer []byte) {
		c, err := fi.claims(answer, now)
		if err != nil {
			return
		}
		if !strings.HasPrefix(c.Subject, "as#") || len(c.Subject) == 3 || !c.ExpiresAt.After(now) ||
			len(c.Audience) != 1 || c.Audience[0] != "orders" || c.Issuer != fi.ID || c.ID != "" || c.SessionID != "" {
			t.Fatalf("claims %+v from %q", c, answer)
		}
	})
}
