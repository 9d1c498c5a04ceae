package proxy

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"io"
	"net/http"
	"strings"
	"testing"
	"time"
)

const (
	bareChallenge = `Bearer realm="meshauth"`
	invalidToken  = `Bearer realm="meshauth", error="invalid_token", error_description=`
	invalidReq    = `Bearer realm="meshauth", error="invalid_request", error_description=`
)

func TestSidecarForwardsValidToken(t *testing.T) {
	up := newUpstream(t, nil)
	base := startSidecar(t, SidecarConfig{Config: testConfig(t), Upstream: up.URL})
	tok := validToken()

	resp := get(t, base, "/orders/42?x=1", bearer(tok),
		"X-Meshauth-Subject: mallory",
		"x-meshauth-scope: admin",
		"X-Meshauth-Extra: 1",
		"X_Meshauth_Subject: mallory",
		"Cookie: a=b; c; d=e=f")
	if resp.status != 200 || resp.body != "upstream says hi" {
		t.Fatalf("got %d %q, want 200 from upstream", resp.status, resp.body)
	}
	r, _ := up.lastRequest()
	if got := r.URL.RequestURI(); got != "/orders/42?x=1" {
		t.Errorf("upstream saw %q, want /orders/42?x=1", got)
	}
	if got := r.Header.Get("Authorization"); got != "Bearer "+tok {
		t.Errorf("Authorization not kept: %q", got)
	}
	if got := r.Header.Get("Cookie"); got != "a=b; c; d=e=f" {
		t.Errorf("Cookie changed to %q", got)
	}
	want := map[string][]string{
		"X-Meshauth-Subject": {"alice"},
		"X-Meshauth-Client":  {"web"},
		"X-Meshauth-Scope":   {"orders:read orders:write"},
		"X-Meshauth-Issuer":  {testIssuer},
	}
	for name, values := range r.Header {
		if identityHeader([]byte(name)) && !equalStrings(values, want[name]) {
			t.Errorf("upstream saw %s: %q, want %q", name, values, want[name])
		}
	}
	for name, values := range want {
		if !equalStrings(r.Header.Values(name), values) {
			t.Errorf("upstream saw %s: %q, want %q", name, r.Header.Values(name), values)
		}
	}
}

func TestSidecarHead(t *testing.T) {
	up := newUpstream(t, func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Length", "5")
	})
	base := startSidecar(t, SidecarConfig{Config: testConfig(t), Upstream: up.URL})
	resp := rawRequest(t, base, "HEAD /orders HTTP/1.1\nHost: svc\nConnection: close\n"+bearer(validToken())+"\n\n")
	r, _ := up.lastRequest()
	if resp.status != 200 || r == nil || r.Method != "HEAD" {
		t.Errorf("HEAD: %d, upstream saw %v", resp.status, r)
	}
}

func equalStrings(a, b []string) bool {
	return strings.Join(a, "\x00") == strings.Join(b, "\x00")
}

func TestSidecarRefusesHostileRequests(t *testing.T) {
	up := newUpstream(t, nil)
	base := startSidecar(t, SidecarConfig{Config: testConfig(t), Upstream: up.URL})
	valid := validToken()
	otherKey, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	none := b64.EncodeToString([]byte(`{"alg":"none","typ":"at+jwt","kid":"k1"}`)) + "." +
		b64.EncodeToString(mustJSON(validClaims())) + "."

	tests := []struct {
		name      string
		target    string
		fields    []string
		status    int
		challenge string
	}{
		{"missing", "/orders", nil, 401, bareChallenge},
		{"other scheme", "/orders", []string{"Authorization: Basic YWxpY2U6c2VjcmV0"}, 401, bareChallenge},
		{"alg none", "/orders", []string{bearer(none)}, 401, invalidToken + `"unsupported algorithm"`},
		{"wrong audience", "/orders", []string{bearer(tokenWith(func(_, c jsonObject) { c["aud"] = "payments" }))}, 401, invalidToken + `"bad audience"`},
		{"expired", "/orders", []string{bearer(tokenWith(func(_, c jsonObject) { c["exp"] = time.Now().Unix() - 3600 }))}, 401, invalidToken + `"expired"`},
		{"wrong typ", "/orders", []string{bearer(tokenWith(func(h, _ jsonObject) { h["typ"] = "JWT" }))}, 401, invalidToken + `"bad type"`},
		{"unknown kid", "/orders", []string{bearer(tokenWith(func(h, _ jsonObject) { h["kid"] = "k2" }))}, 401, invalidToken + `"unknown key"`},
		{"wrong key", "/orders", []string{bearer(signES256(otherKey, validHeader(), validClaims()))}, 401, invalidToken + `"bad signature"`},
		{"two authorization fields", "/orders", []string{bearer(valid), bearer(valid)}, 400, invalidReq + `"more than one Authorization header"`},
		{"query token", "/orders?access_token=" + valid, []string{bearer(valid)}, 400, invalidReq + `"access_token in the query is not supported"`},
		{"query token only", "/orders?access_token=" + valid, nil, 400, invalidReq + `"access_token in the query is not supported"`},
		{"query token encoded", "/orders?a=1&access%5Ftoken=" + valid, []string{bearer(valid)}, 400, invalidReq + `"access_token in the query is not supported"`},
		{"query token on public route", "/public/x?access_token=" + valid, nil, 400, invalidReq + `"access_token in the query is not supported"`},
		{"garbage", "/orders", []string{"Authorization: Bearer !!!garbage!!!"}, 400, invalidReq + `"malformed Authorization header"`},
		{"garbage token", "/orders", []string{"Authorization: Bearer abc.def.ghi"}, 401, invalidToken + `"malformed"`},
		{"scheme only", "/orders", []string{"Authorization: Bearer"}, 400, invalidReq + `"malformed Authorization header"`},
		{"two tokens", "/orders", []string{"Authorization: Bearer " + valid + " " + valid}, 400, invalidReq + `"malformed Authorization header"`},
		{"comma-joined", "/orders", []string{"Authorization: Bearer " + valid + ", Bearer " + valid}, 400, invalidReq + `"malformed Authorization header"`},
		{"dot segments out of public", "/public/../admin", nil, 401, bareChallenge},
		{"encoded dot segments", "/public/%2e%2e/admin", nil, 401, bareChallenge},
		{"encoded slashes", "/public%2F..%2Fadmin", nil, 400, invalidReq + `"encoded slash or backslash in the path"`},
		{"segment boundary", "/publicity", nil, 401, bareChallenge},
		{"double slash", "//public/../admin", nil, 401, bareChallenge},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			before := up.hits.Load()
			resp := get(t, base, tt.target, tt.fields...)
			if up.hits.Load() != before {
				t.Fatal("the upstream saw the request")
			}
			if resp.status != tt.status {
				t.Errorf("status %d, want %d", resp.status, tt.status)
			}
			if got := resp.header.Values("WWW-Authenticate"); len(got) != 1 || got[0] != tt.challenge {
				t.Errorf("WWW-Authenticate %q, want %q", got, tt.challenge)
			}
			if ct := resp.header.Get("Content-Type"); ct != "application/json" {
				t.Errorf("Content-Type %q", ct)
			}
			if strings.Contains(resp.body, valid[:20]) || strings.Contains(resp.body, "garbage") {
				t.Errorf("body echoes the token: %s", resp.body)
			}
		})
	}
}

func TestSidecarScopes(t *testing.T) {
	up := newUpstream(t, nil)
	base := startSidecar(t, SidecarConfig{Config: testConfig(t), Upstream: up.URL})
	readOnly := tokenWith(func(_, c jsonObject) { c["scope"] = "orders:read" })
	admin := tokenWith(func(_, c jsonObject) { c["scope"] = "orders:read admin" })

	tests := []struct {
		name, method, target, tok string
		status                    int
		challenge                 string
	}{
		{"read allowed", "GET", "/orders/1", readOnly, 200, ""},
		{"write refused", "POST", "/orders/1", readOnly, 403, `Bearer realm="meshauth", error="insufficient_scope", scope="orders:write"`},
		{"write allowed", "POST", "/orders/1", validToken(), 200, ""},
		{"admin refused", "GET", "/admin", validToken(), 403, `Bearer realm="meshauth", error="insufficient_scope", scope="admin orders:read"`},
		{"admin allowed", "GET", "/admin/users", admin, 200, ""},
		// Methods are case-sensitive: "post" is not POST, so the route's
		// prefix falls back to the default, any valid token.
		{"lower-case method", "post", "/orders/1", readOnly, 200, ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			before := up.hits.Load()
			resp := rawRequest(t, base, tt.method+" "+tt.target+" HTTP/1.1\nHost: svc\nConnection: close\n"+
				bearer(tt.tok)+"\nContent-Length: 0\n\n")
			if resp.status != tt.status {
				t.Fatalf("status %d, want %d (%s)", resp.status, tt.status, resp.body)
			}
			if got := resp.header.Get("WWW-Authenticate"); got != tt.challenge {
				t.Errorf("WWW-Authenticate %q, want %q", got, tt.challenge)
			}
			if forwarded := up.hits.Load() != before; forwarded != (tt.status == 200) {
				t.Errorf("forwarded = %v", forwarded)
			}
		})
	}
}

func TestSidecarPublicRoute(t *testing.T) {
	up := newUpstream(t, nil)
	base := startSidecar(t, SidecarConfig{Config: testConfig(t), Upstream: up.URL})

	for _, fields := range [][]string{
		{"X-Meshauth-Subject: mallory", "X-Meshauth-Client: evil"},
		{"Authorization: Bearer not.a.token", "X_Meshauth_Scope: admin"},
	} {
		resp := get(t, base, "/public/./a//b?q=1", fields...)
		if resp.status != 200 {
			t.Fatalf("status %d, want 200", resp.status)
		}
		r, _ := up.lastRequest()
		if got := r.URL.RequestURI(); got != "/public/a/b?q=1" {
			t.Errorf("upstream saw %q, want the normalized /public/a/b?q=1", got)
		}
		for name := range r.Header {
			if identityHeader([]byte(name)) {
				t.Errorf("upstream saw %s on a public route", name)
			}
		}
	}
}

func TestSidecarHopByHop(t *testing.T) {
	up := newUpstream(t, func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Connection", "X-Up-Hop")
		w.Header().Set("X-Up-Hop", "secret")
		w.Header().Set("Keep-Alive", "timeout=5")
		w.Header().Set("X-Up-End", "kept")
		io.WriteString(w, "ok")
	})
	base := startSidecar(t, SidecarConfig{Config: testConfig(t), Upstream: up.URL})
	tok := validToken()

	resp := rawRequest(t, base, "POST /orders HTTP/1.1\nHost: svc\n"+bearer(tok)+"\n"+
		"Connection: X-Custom, keep-alive, X-Meshauth-Subject\nX-Custom: 1\nKeep-Alive: timeout=5\n"+
		"TE: trailers\nUpgrade: websocket\nProxy-Authorization: Basic eDp5\nProxy-Connection: keep-alive\n"+
		"X-End: kept\nTransfer-Encoding: chunked\n\n5\nhello\n6\n world\n0\n\n")
	if resp.status != 200 {
		t.Fatalf("status %d: %s", resp.status, resp.body)
	}
	r, body := up.lastRequest()
	for _, name := range []string{"Connection", "X-Custom", "Keep-Alive", "Te", "Upgrade", "Proxy-Authorization", "Proxy-Connection", "Transfer-Encoding"} {
		if v, ok := r.Header[name]; ok {
			t.Errorf("upstream saw hop-by-hop %s: %q", name, v)
		}
	}
	// The body of unknown length is streamed, so chunked again: by the
	// sidecar, not as the caller's field.
	if !equalStrings(r.TransferEncoding, []string{"chunked"}) {
		t.Errorf("upstream saw Transfer-Encoding %q", r.TransferEncoding)
	}
	if r.Header.Get("X-End") != "kept" || r.Header.Get("X-Meshauth-Subject") != "alice" {
		t.Errorf("end-to-end fields lost: %v", r.Header)
	}
	if string(body) != "hello world" {
		t.Errorf("upstream body %q, want the de-chunked %q", body, "hello world")
	}
	if resp.header.Get("X-Up-Hop") != "" || resp.header.Get("Keep-Alive") != "" {
		t.Errorf("client saw the upstream's hop-by-hop fields: %v", resp.header)
	}
	if resp.header.Get("X-Up-End") != "kept" || resp.body != "ok" {
		t.Errorf("response lost end-to-end content: %v %q", resp.header, resp.body)
	}
}

func TestSidecarUpstreamDown(t *testing.T) {
	ln := listen(t)
	addr := ln.Addr().String()
	ln.Close()
	base := startSidecar(t, SidecarConfig{Config: testConfig(t), Upstream: "http://" + addr})

	resp := get(t, base, "/orders", bearer(validToken()))
	if resp.status != 502 || len(resp.body) > 100 || !strings.Contains(resp.body, `"bad_gateway"`) || resp.header.Get("WWW-Authenticate") != "" {
		t.Errorf("got %d %q %v, want a short 502", resp.status, resp.body, resp.header)
	}
}

func TestSidecarHeaderTooLarge(t *testing.T) {
	up := newUpstream(t, nil)
	base := startSidecar(t, SidecarConfig{Config: testConfig(t), Upstream: up.URL})
	resp := get(t, base, "/orders", "X-Big: "+strings.Repeat("a", 20<<10))
	if resp.status != 431 || up.hits.Load() != 0 {
		t.Errorf("status %d, hits %d; want 431, 0", resp.status, up.hits.Load())
	}
}

func TestSidecarGracefulShutdown(t *testing.T) {
	started := make(chan struct{})
	up := newUpstream(t, func(w http.ResponseWriter, r *http.Request) {
		close(started)
		time.Sleep(300 * time.Millisecond)
		io.WriteString(w, "slow")
	})
	s, base, served := runSidecar(t, SidecarConfig{Config: testConfig(t), Upstream: up.URL})
	got := make(chan rawResponse, 1)
	go func() { got <- get(t, base, "/orders", bearer(validToken())) }()
	<-started
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if err := s.Shutdown(ctx); err != nil {
		t.Fatalf("Shutdown: %v", err)
	}
	if err := <-served; err != nil {
		t.Errorf("Serve: %v", err)
	}
	if resp := <-got; resp.status != 200 || resp.body != "slow" {
		t.Errorf("in-flight request got %d %q, want 200 slow", resp.status, resp.body)
	}
}

func TestNewSidecarErrors(t *testing.T) {
	cfg := testConfig(t)
	for _, tt := range []struct {
		name string
		cfg  SidecarConfig
		want string
	}{
		{"https upstream", SidecarConfig{Config: cfg, Upstream: "https://svc:443"}, "not of the form"},
		{"no port", SidecarConfig{Config: cfg, Upstream: "http://svc"}, "not of the form"},
		{"path", SidecarConfig{Config: cfg, Upstream: "http://svc:80/api"}, "not of the form"},
		{"no verifier", SidecarConfig{Upstream: "http://svc:80"}, "no verifier"},
		{"bad auth path", SidecarConfig{Config: cfg, Upstream: "http://svc:80", ForwardAuthPath: "auth"}, `ForwardAuthPath "auth": must start with "/"`},
	} {
		t.Run(tt.name, func(t *testing.T) {
			_, err := NewSidecar(tt.cfg)
			if err == nil || !strings.Contains(err.Error(), tt.want) {
				t.Errorf("err = %v, want one containing %q", err, tt.want)
			}
		})
	}
}
