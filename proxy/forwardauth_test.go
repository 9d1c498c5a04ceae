package proxy

import (
	"strings"
	"testing"
)

func TestForwardAuth(t *testing.T) {
	fa, err := NewForwardAuth(testConfig(t))
	if err != nil {
		t.Fatal(err)
	}
	own := serve(t, fa)
	up := newUpstream(t, nil)
	mounted := startSidecar(t, SidecarConfig{Config: testConfig(t), Upstream: up.URL})
	readOnly := bearer(tokenWith(func(_, c jsonObject) { c["scope"] = "orders:read" }))
	valid := bearer(validToken())

	tests := []struct {
		name      string
		path      string // the subrequest's own target
		fields    []string
		status    int
		challenge string
		subject   string
	}{
		{"nginx allowed", "/auth", []string{"X-Original-Method: POST", "X-Original-URI: /orders/1?x=1", valid}, 200, "", "alice"},
		{"nginx scope", "/auth", []string{"X-Original-Method: POST", "X-Original-URI: /orders/1", readOnly}, 403,
			`Bearer realm="meshauth", error="insufficient_scope", scope="orders:write"`, ""},
		{"traefik allowed", "/", []string{"X-Forwarded-Method: DELETE", "X-Forwarded-Uri: /orders/1", "X-Forwarded-Host: svc", valid}, 200, "", "alice"},
		{"traefik scope", "/", []string{"X-Forwarded-Method: DELETE", "X-Forwarded-Uri: /orders/1", readOnly}, 403,
			`Bearer realm="meshauth", error="insufficient_scope", scope="orders:write"`, ""},
		{"caddy missing token", "/", []string{"X-Forwarded-Method: GET", "X-Forwarded-Uri: /orders"}, 401, bareChallenge, ""},
		{"public", "/", []string{"X-Forwarded-Method: GET", "X-Forwarded-Uri: /public/x"}, 200, "", ""},
		{"escape from public", "/", []string{"X-Forwarded-Uri: /public/%2e%2e/admin"}, 401, bareChallenge, ""},
		{"authority-like path", "/", []string{"X-Forwarded-Uri: //public/../admin"}, 401, bareChallenge, ""},
		{"query token", "/", []string{"X-Forwarded-Uri: /public?access_token=x"}, 400, invalidReq + `"access_token in the query is not supported"`, ""},
		{"own target", "/public/x", nil, 200, "", ""},
		{"own method", "/auth", []string{"X-Original-URI: /orders/1", readOnly}, 200, "", "alice"},
		{"both spellings agree", "/", []string{"X-Original-URI: /orders", "X-Forwarded-Uri: /orders", valid}, 200, "", "alice"},
		// nginx passes the client's X-Forwarded-Uri along with its own
		// X-Original-URI: a disagreement must not pick the client's.
		{"both spellings disagree", "/", []string{"X-Original-URI: /orders", "X-Forwarded-Uri: /public"}, 400, invalidReq + `"missing or conflicting original request"`, ""},
		{"methods disagree", "/", []string{"X-Original-Method: POST", "X-Forwarded-Method: GET", "X-Forwarded-Uri: /orders"}, 400, invalidReq + `"missing or conflicting original request"`, ""},
		{"repeated", "/", []string{"X-Forwarded-Uri: /public", "X-Forwarded-Uri: /orders"}, 400, invalidReq + `"missing or conflicting original request"`, ""},
		{"not a path", "/", []string{"X-Forwarded-Uri: public"}, 400, invalidReq + `"missing or conflicting original request"`, ""},
		{"bad method", "/", []string{"X-Forwarded-Method: GE T", "X-Forwarded-Uri: /public"}, 400, invalidReq + `"missing or conflicting original request"`, ""},
	}
	for _, where := range []struct{ name, base, prefix string }{{"own listener", own, ""}, {"sidecar", mounted, DefaultForwardAuthPath}} {
		for _, tt := range tests {
			if where.prefix != "" && tt.path != "/" && tt.path != "/auth" {
				continue // the subrequest's own target is the mount path
			}
			path := tt.path
			if where.prefix != "" {
				path = where.prefix
			}
			t.Run(where.name+"/"+tt.name, func(t *testing.T) {
				resp := get(t, where.base, path, append(tt.fields, "X-Meshauth-Subject: mallory")...)
				if resp.status != tt.status {
					t.Fatalf("status %d, want %d (%s)", resp.status, tt.status, resp.body)
				}
				if got := resp.header.Get("WWW-Authenticate"); got != tt.challenge {
					t.Errorf("WWW-Authenticate %q, want %q", got, tt.challenge)
				}
				if tt.status == 200 {
					for _, name := range identityHeaders {
						if _, ok := resp.header[name]; !ok {
							t.Errorf("allowed answer lacks %s", name)
						}
					}
					if got := resp.header.Get(headerSubject); got != tt.subject {
						t.Errorf("%s %q, want %q", headerSubject, got, tt.subject)
					}
				}
			})
		}
	}
	if up.hits.Load() != 0 {
		t.Errorf("forward-auth requests reached the upstream")
	}
}

func TestExtAuthzHTTP(t *testing.T) {
	s, err := NewExtAuthzHTTP(testConfig(t), "/authz")
	if err != nil {
		t.Fatal(err)
	}
	base := serve(t, s)
	noClient := bearer(tokenWith(func(_, c jsonObject) { delete(c, "client_id") }))

	tests := []struct {
		name, method, target string
		fields               []string
		status               int
		challenge            string
		set                  map[string]string
		remove               string
	}{
		{"allowed", "POST", "/authz/orders/1", []string{bearer(validToken()), "x-meshauth-subject: mallory", "x-meshauth-role: admin"}, 200, "",
			map[string]string{headerSubject: "alice", headerClient: "web", headerScope: "orders:read orders:write", headerIssuer: testIssuer}, "x-meshauth-role"},
		{"no client_id", "GET", "/authz/orders", []string{noClient}, 200, "",
			map[string]string{headerSubject: "alice", headerScope: "orders:read orders:write", headerIssuer: testIssuer}, "x-meshauth-client"},
		{"public", "GET", "/authz/public", nil, 200, "", nil, "x-meshauth-subject,x-meshauth-client,x-meshauth-scope,x-meshauth-issuer"},
		{"missing token", "GET", "/authz/orders", nil, 401, bareChallenge, nil, ""},
		{"scope", "DELETE", "/authz/orders/1", []string{bearer(tokenWith(func(_, c jsonObject) { c["scope"] = "x" }))}, 403,
			`Bearer realm="meshauth", error="insufficient_scope", scope="orders:write"`, nil, ""},
		{"prefix only", "GET", "/authz", nil, 400, invalidReq + `"missing or conflicting original request"`, nil, ""},
		{"outside prefix", "GET", "/public", nil, 400, invalidReq + `"missing or conflicting original request"`, nil, ""},
		{"prefix not a segment", "GET", "/authzpublic", nil, 400, invalidReq + `"missing or conflicting original request"`, nil, ""},
		{"forwarded fields ignored", "GET", "/authz/orders", []string{"X-Forwarded-Uri: /public"}, 401, bareChallenge, nil, ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			req := tt.method + " " + tt.target + " HTTP/1.1\nHost: svc\nConnection: close\nContent-Length: 0\n"
			for _, f := range tt.fields {
				req += f + "\n"
			}
			resp := rawRequest(t, base, req+"\n")
			if resp.status != tt.status {
				t.Fatalf("status %d, want %d (%s)", resp.status, tt.status, resp.body)
			}
			if got := resp.header.Get("WWW-Authenticate"); got != tt.challenge {
				t.Errorf("WWW-Authenticate %q, want %q", got, tt.challenge)
			}
			if tt.status != 200 {
				return
			}
			for _, name := range identityHeaders {
				got, ok := resp.header[name]
				if want, set := tt.set[name]; set != ok || (ok && got[0] != want) {
					t.Errorf("%s = %q, want %q", name, got, want)
				}
			}
			removed := resp.header.Get(envoyRemoveHeader)
			want := strings.Split(tt.remove, ",")
			if got := strings.Split(removed, ","); !sameSet(got, want) {
				t.Errorf("%s: %q, want %q", envoyRemoveHeader, removed, tt.remove)
			}
		})
	}
	if _, err := NewExtAuthzHTTP(testConfig(t), "/authz/"); err == nil {
		t.Error("prefix ending in / accepted")
	}
}

func sameSet(a, b []string) bool {
	if len(a) != len(b) {
		return false
	}
	seen := map[string]int{}
	for _, s := range a {
		seen[s]++
	}
	for _, s := range b {
		seen[s]--
	}
	for _, n := range seen {
		if n != 0 {
			return false
		}
	}
	return true
}
