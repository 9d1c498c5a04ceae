package proxy

import (
	"bufio"
	"bytes"
	"context"
	"crypto/sha1"
	"encoding/base64"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/health"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"
)

// h2cClient speaks HTTP/2 with prior knowledge, as curl
// --http2-prior-knowledge and gRPC do.
func h2cClient() *http.Client {
	t := &http.Transport{Protocols: new(http.Protocols)}
	t.Protocols.SetUnencryptedHTTP2(true)
	return &http.Client{Transport: t, Timeout: 10 * time.Second}
}

// newH2CUpstream is an upstream that speaks HTTP/1.1 and h2c, and records
// what reaches it.
func newH2CUpstream(t *testing.T, h http.HandlerFunc) *upstream {
	t.Helper()
	u := &upstream{}
	u.Server = httptest.NewUnstartedServer(u.record(h))
	u.Config.Protocols = new(http.Protocols)
	u.Config.Protocols.SetHTTP1(true)
	u.Config.Protocols.SetUnencryptedHTTP2(true)
	u.Start()
	t.Cleanup(u.Close)
	return u
}

// TestSidecarHTTP2PriorKnowledge: an h2c caller is judged as an HTTP/1.1
// one and reaches the upstream over h2c, with the identity headers.
func TestSidecarHTTP2PriorKnowledge(t *testing.T) {
	up := newH2CUpstream(t, nil)
	base := startSidecar(t, SidecarConfig{Config: testConfig(t), Upstream: up.URL})
	client := h2cClient()
	for _, tc := range []struct {
		name, path, authz string
		status            int
	}{
		{"valid", "/orders/1", "Bearer " + validToken(), 200},
		{"missing", "/orders/1", "", 401},
		{"scope", "/admin", "Bearer " + validToken(), 403},
	} {
		t.Run(tc.name, func(t *testing.T) {
			req, _ := http.NewRequest("GET", base+tc.path, nil)
			req.Header.Set("X-Meshauth-Subject", "mallory")
			if tc.authz != "" {
				req.Header.Set("Authorization", tc.authz)
			}
			before := up.hits.Load()
			resp, err := client.Do(req)
			if err != nil {
				t.Fatal(err)
			}
			body, _ := io.ReadAll(resp.Body)
			resp.Body.Close()
			if resp.StatusCode != tc.status || resp.ProtoMajor != 2 {
				t.Fatalf("got %s %d %q, want HTTP/2 %d", resp.Proto, resp.StatusCode, body, tc.status)
			}
			if reached := up.hits.Load() != before; reached != (tc.status == 200) {
				t.Fatalf("reached the upstream: %v", reached)
			}
			if tc.status != 200 {
				if !strings.HasPrefix(resp.Header.Get("WWW-Authenticate"), "Bearer") {
					t.Errorf("WWW-Authenticate %q", resp.Header.Get("WWW-Authenticate"))
				}
				return
			}
			r, _ := up.lastRequest()
			if r.ProtoMajor != 2 || r.Header.Get("X-Meshauth-Subject") != "alice" || r.Header.Get("X-Meshauth-Scope") != "orders:read orders:write" {
				t.Errorf("upstream saw %s with %v", r.Proto, r.Header)
			}
		})
	}
}

// TestSidecarGRPC puts the gRPC health service behind the sidecar: a
// valid token reaches it; a missing one and one without the scope get
// UNAUTHENTICATED and PERMISSION_DENIED with the RFC 6750 reason.
func TestSidecarGRPC(t *testing.T) {
	ln := listen(t)
	hs := health.NewServer()
	var calls atomic.Int32
	gs := grpc.NewServer(grpc.UnaryInterceptor(func(ctx context.Context, req any, info *grpc.UnaryServerInfo, h grpc.UnaryHandler) (any, error) {
		calls.Add(1)
		if md, _ := metadata.FromIncomingContext(ctx); len(md.Get("x-meshauth-subject")) != 1 || md.Get("x-meshauth-subject")[0] != "alice" {
			return nil, status.Errorf(codes.Internal, "identity headers: %v", md)
		}
		return h(ctx, req)
	}))
	healthpb.RegisterHealthServer(gs, hs)
	go gs.Serve(ln)
	t.Cleanup(gs.Stop)

	policy := Policy{Routes: []Route{{PathPrefix: "/grpc.health.v1.Health/Watch", Scopes: []string{"health:watch"}}}}
	base := startSidecar(t, SidecarConfig{Config: Config{Verifier: testVerifier(t), Rules: mustRules(t, policy)}, Upstream: "http://" + ln.Addr().String()})
	conn, err := grpc.NewClient(strings.TrimPrefix(base, "http://"), grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	client := healthpb.NewHealthClient(conn)
	withToken := func(tok string) context.Context {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		t.Cleanup(cancel)
		if tok == "" {
			return ctx
		}
		return metadata.AppendToOutgoingContext(ctx, "authorization", "Bearer "+tok, "x-meshauth-subject", "mallory")
	}

	resp, err := client.Check(withToken(validToken()), &healthpb.HealthCheckRequest{})
	if err != nil || resp.GetStatus() != healthpb.HealthCheckResponse_SERVING {
		t.Fatalf("valid token: %v %v", resp, err)
	}
	for _, tc := range []struct {
		name string
		call func() error
		code codes.Code
		msg  string
	}{
		{"missing token", func() error { _, err := client.Check(withToken(""), &healthpb.HealthCheckRequest{}); return err },
			codes.Unauthenticated, "unauthorized: a bearer token is required"},
		{"expired token", func() error {
			_, err := client.Check(withToken(tokenWith(func(_, c jsonObject) { c["exp"] = time.Now().Unix() - 3600 })), &healthpb.HealthCheckRequest{})
			return err
		}, codes.Unauthenticated, "invalid_token: expired"},
		{"insufficient scope", func() error {
			stream, err := client.Watch(withToken(validToken()), &healthpb.HealthCheckRequest{})
			if err != nil {
				return err
			}
			_, err = stream.Recv()
			return err
		}, codes.PermissionDenied, "insufficient_scope: scope health:watch required"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			before := calls.Load()
			err := tc.call()
			if s, _ := status.FromError(err); s.Code() != tc.code || s.Message() != tc.msg {
				t.Errorf("got %v, want %v %q", err, tc.code, tc.msg)
			}
			if calls.Load() != before {
				t.Error("a refused call reached the service")
			}
		})
	}
}

// wsAccept is the Sec-WebSocket-Accept of a key (RFC 6455 §4.2.2).
func wsAccept(key string) string {
	h := sha1.Sum([]byte(key + "258EAFA5-E914-47DA-95CA-C5AB0DC85B11"))
	return base64.StdEncoding.EncodeToString(h[:])
}

// newEchoUpstream accepts WebSocket upgrades and echoes every byte sent
// after them; a half-close by the caller is answered by "bye" and a
// half-close of its own. It counts the upgrades.
func newEchoUpstream(t *testing.T) (*httptest.Server, *atomic.Int32) {
	var upgrades atomic.Int32
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if !strings.EqualFold(r.Header.Get("Upgrade"), "websocket") {
			http.Error(w, "upgrade required: "+r.Header.Get("Upgrade"), http.StatusUpgradeRequired)
			return
		}
		upgrades.Add(1)
		conn, rw, err := http.NewResponseController(w).Hijack()
		if err != nil {
			return
		}
		defer conn.Close()
		rw.WriteString("HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Accept: " +
			wsAccept(r.Header.Get("Sec-WebSocket-Key")) + "\r\nX-Identity: " + r.Header.Get("X-Meshauth-Subject") + "\r\n\r\n")
		rw.Flush()
		io.Copy(conn, rw.Reader)
		conn.Write([]byte("bye"))
		conn.(*net.TCPConn).CloseWrite()
	}))
	t.Cleanup(srv.Close)
	return srv, &upgrades
}

// dialUpgrade sends a WebSocket upgrade to base and reads the answer's
// head.
func dialUpgrade(t *testing.T, base string, fields ...string) (net.Conn, *bufio.Reader, *http.Response) {
	t.Helper()
	conn, err := net.Dial("tcp", strings.TrimPrefix(base, "http://"))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close() })
	conn.SetDeadline(time.Now().Add(10 * time.Second))
	req := "GET /chat HTTP/1.1\r\nHost: svc\r\nConnection: Upgrade\r\nUpgrade: websocket\r\nSec-WebSocket-Version: 13\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n"
	for _, f := range fields {
		req += f + "\r\n"
	}
	io.WriteString(conn, req+"\r\n")
	br := bufio.NewReader(conn)
	resp, err := http.ReadResponse(br, &http.Request{Method: "GET"})
	if err != nil {
		t.Fatal(err)
	}
	return conn, br, resp
}

// TestSidecarWebSocket relays an authorized upgrade both ways, half-close
// included; an upgrade without a valid token never reaches the upstream.
func TestSidecarWebSocket(t *testing.T) {
	up, upgrades := newEchoUpstream(t)
	base := startSidecar(t, SidecarConfig{Config: testConfig(t), Upstream: up.URL})

	conn, br, resp := dialUpgrade(t, base, bearer(validToken()), "X-Meshauth-Subject: mallory")
	if resp.StatusCode != 101 || resp.Header.Get("Sec-WebSocket-Accept") != wsAccept("dGhlIHNhbXBsZSBub25jZQ==") ||
		!strings.EqualFold(resp.Header.Get("Upgrade"), "websocket") || resp.Header.Get("X-Identity") != "alice" {
		t.Fatalf("upgrade answered %d %v", resp.StatusCode, resp.Header)
	}
	for _, msg := range []string{"hello", strings.Repeat("x", 100<<10)} {
		if _, err := io.WriteString(conn, msg); err != nil {
			t.Fatal(err)
		}
		got := make([]byte, len(msg))
		if _, err := io.ReadFull(br, got); err != nil || string(got) != msg {
			t.Fatalf("echo: %v, %d bytes", err, len(got))
		}
	}
	// Half-close: the upstream sees the end, and its last words still
	// arrive.
	conn.(*net.TCPConn).CloseWrite()
	rest, err := io.ReadAll(br)
	if err != nil || string(rest) != "bye" {
		t.Fatalf("after half-close: %q %v", rest, err)
	}

	for _, fields := range [][]string{nil, {"Authorization: Bearer abc.def.ghi"}} {
		_, _, resp := dialUpgrade(t, base, fields...)
		if resp.StatusCode != 401 || !strings.HasPrefix(resp.Header.Get("WWW-Authenticate"), "Bearer") {
			t.Errorf("upgrade without a valid token: %d %v", resp.StatusCode, resp.Header)
		}
	}
	if n := upgrades.Load(); n != 1 {
		t.Errorf("%d upgrades reached the upstream, want 1", n)
	}
}

// TestSidecarLargeBody: a body over fasthttp's default 4 MiB is forwarded
// whole.
func TestSidecarLargeBody(t *testing.T) {
	up := newUpstream(t, nil)
	base := startSidecar(t, SidecarConfig{Config: testConfig(t), Upstream: up.URL})
	body := bytes.Repeat([]byte("0123456789abcdef"), 5<<20/16)
	req, _ := http.NewRequest("PUT", base+"/orders/1", bytes.NewReader(body))
	req.Header.Set("Authorization", "Bearer "+validToken())
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if _, got := up.lastRequest(); resp.StatusCode != 200 || !bytes.Equal(got, body) {
		t.Fatalf("status %d, upstream got %d bytes of %d", resp.StatusCode, len(got), len(body))
	}
}

// closingUpstream accepts connections and closes them at once, counting
// them.
func closingUpstream(t *testing.T) (string, *atomic.Int32) {
	ln := listen(t)
	var accepted atomic.Int32
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			accepted.Add(1)
			c.Close()
		}
	}()
	t.Cleanup(func() { ln.Close() })
	return "http://" + ln.Addr().String(), &accepted
}

// TestSidecarOneAttempt: a failing upstream is sent each request once,
// idempotent or not, and the answer is a short JSON 502.
func TestSidecarOneAttempt(t *testing.T) {
	addr, accepted := closingUpstream(t)
	base := startSidecar(t, SidecarConfig{Config: testConfig(t), Upstream: addr})
	for i, method := range []string{"GET", "PUT", "POST"} {
		resp := rawRequest(t, base, method+" /orders/1 HTTP/1.1\nHost: svc\nConnection: close\nContent-Length: 0\n"+bearer(validToken())+"\n\n")
		if resp.status != 502 || !strings.Contains(resp.body, `"bad_gateway"`) || resp.header.Get("Content-Type") != "application/json" {
			t.Errorf("%s: %d %q", method, resp.status, resp.body)
		}
		if n := accepted.Load(); n != int32(i+1) {
			t.Fatalf("%s: the upstream was hit %d times in all, want %d", method, n, i+1)
		}
	}
}

// TestSidecarUpstreamTimeout: an upstream that does not answer within
// the timeout gets 504, once.
func TestSidecarUpstreamTimeout(t *testing.T) {
	release := make(chan struct{})
	up := newUpstream(t, func(w http.ResponseWriter, r *http.Request) { <-release })
	defer close(release)
	base := startSidecar(t, SidecarConfig{Config: testConfig(t), Upstream: up.URL, UpstreamTimeout: 200 * time.Millisecond})
	start := time.Now()
	resp := get(t, base, "/orders/1", bearer(validToken()))
	if resp.status != 504 || !strings.Contains(resp.body, `"gateway_timeout"`) {
		t.Errorf("got %d %q, want 504", resp.status, resp.body)
	}
	if n := up.hits.Load(); n != 1 {
		t.Errorf("the upstream was hit %d times, want 1", n)
	}
	if d := time.Since(start); d > 2*time.Second {
		t.Errorf("answered after %v", d)
	}
}

// TestSidecarShutdownDoesNotWaitOutRetries: Shutdown ends with the one
// attempt in flight.
func TestSidecarShutdownDoesNotWaitOutRetries(t *testing.T) {
	started := make(chan struct{}, 10)
	release := make(chan struct{})
	up := newUpstream(t, func(w http.ResponseWriter, r *http.Request) { started <- struct{}{}; <-release })
	defer close(release)
	s, base, served := runSidecar(t, SidecarConfig{Config: testConfig(t), Upstream: up.URL, UpstreamTimeout: 300 * time.Millisecond})
	got := make(chan rawResponse, 1)
	go func() { got <- get(t, base, "/orders", bearer(validToken())) }()
	<-started
	start := time.Now()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := s.Shutdown(ctx); err != nil {
		t.Fatal(err)
	}
	if err := <-served; err != nil {
		t.Errorf("Serve: %v", err)
	}
	if d := time.Since(start); d > 2*time.Second {
		t.Errorf("Shutdown took %v", d)
	}
	if resp := <-got; resp.status != 504 {
		t.Errorf("in-flight request: %d", resp.status)
	}
	if n := up.hits.Load(); n != 1 {
		t.Errorf("the upstream was hit %d times, want 1", n)
	}
}

// TestSidecarHTTP10WithoutHost: forwarded with the upstream's own host.
func TestSidecarHTTP10WithoutHost(t *testing.T) {
	up := newUpstream(t, nil)
	var logs syncBuffer
	cfg := testConfig(t)
	cfg.Logger = slog.New(slog.NewTextHandler(&logs, nil))
	base := startSidecar(t, SidecarConfig{Config: cfg, Upstream: up.URL})
	resp := rawRequest(t, base, "GET /orders/1 HTTP/1.0\n"+bearer(validToken())+"\n\n")
	if resp.status != 200 || resp.body != "upstream says hi" {
		t.Fatalf("got %d %q", resp.status, resp.body)
	}
	if r, _ := up.lastRequest(); r.Host != strings.TrimPrefix(up.URL, "http://") {
		t.Errorf("upstream saw Host %q", r.Host)
	}
	if logs.String() != "" {
		t.Errorf("logged: %s", logs.String())
	}
}

// TestSidecarForwardedHeaders: the upstream learns who called, over what
// and for which host.
func TestSidecarForwardedHeaders(t *testing.T) {
	up := newUpstream(t, nil)
	base := startSidecar(t, SidecarConfig{Config: testConfig(t), Upstream: up.URL})
	resp := get(t, base, "/orders/1", bearer(validToken()), "X-Forwarded-For: 6.6.6.6", "X-Forwarded-Host: evil", "Forwarded: for=6.6.6.6")
	if resp.status != 200 {
		t.Fatal(resp.status)
	}
	r, _ := up.lastRequest()
	want := map[string]string{"X-Forwarded-For": "127.0.0.1", "X-Forwarded-Proto": "http", "X-Forwarded-Host": "svc", "Forwarded": ""}
	for name, v := range want {
		if got := strings.Join(r.Header.Values(name), ","); got != v {
			t.Errorf("%s: %q, want %q", name, got, v)
		}
	}
}

// TestSidecarHTTP2UpstreamFailures: over h2c too, a silent upstream is a
// 504 and an unreachable one a 502, with a short JSON body.
func TestSidecarHTTP2UpstreamFailures(t *testing.T) {
	release := make(chan struct{})
	slow := newH2CUpstream(t, func(w http.ResponseWriter, r *http.Request) { <-release })
	defer close(release)
	addr, _ := closingUpstream(t)
	client := h2cClient()
	for _, tc := range []struct {
		name, upstream string
		status         int
		errCode        string
	}{
		{"timeout", slow.URL, 504, `"gateway_timeout"`},
		{"unreachable", addr, 502, `"bad_gateway"`},
	} {
		t.Run(tc.name, func(t *testing.T) {
			base := startSidecar(t, SidecarConfig{Config: testConfig(t), Upstream: tc.upstream, UpstreamTimeout: 200 * time.Millisecond})
			req, _ := http.NewRequest("GET", base+"/orders/1", nil)
			req.Header.Set("Authorization", "Bearer "+validToken())
			resp, err := client.Do(req)
			if err != nil {
				t.Fatal(err)
			}
			body, _ := io.ReadAll(resp.Body)
			resp.Body.Close()
			if resp.StatusCode != tc.status || !strings.Contains(string(body), tc.errCode) || len(body) > 100 {
				t.Errorf("got %d %q", resp.StatusCode, body)
			}
		})
	}
}

// TestSidecarUpstreamProtocols: h2c speaks HTTP/2 to the upstream for
// HTTP/1.1 callers too, http1 speaks HTTP/1.1 to it for HTTP/2 callers,
// and an HTTP/2 caller's forwarded fields from a trusted proxy are kept.
func TestSidecarUpstreamProtocols(t *testing.T) {
	up := newH2CUpstream(t, nil)
	_, loopback, _ := net.ParseCIDR("127.0.0.0/8")
	for _, tc := range []struct {
		protocol string
		client   *http.Client
		upstream int // the upstream's HTTP major version
	}{
		{UpstreamH2C, http.DefaultClient, 2},
		{UpstreamHTTP1, h2cClient(), 1},
		{UpstreamAuto, h2cClient(), 2},
		{UpstreamAuto, http.DefaultClient, 1},
	} {
		base := startSidecar(t, SidecarConfig{Config: testConfig(t), Upstream: up.URL, UpstreamProtocol: tc.protocol, TrustedProxies: []*net.IPNet{loopback}})
		req, _ := http.NewRequest("POST", base+"/orders/1?x=1", strings.NewReader("hello"))
		req.Header.Set("Authorization", "Bearer "+validToken())
		req.Header.Set("X-Forwarded-For", "6.6.6.6")
		resp, err := tc.client.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		got, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		r, body := up.lastRequest()
		if resp.StatusCode != 200 || r.ProtoMajor != tc.upstream || string(body) != "hello" || r.URL.RequestURI() != "/orders/1?x=1" ||
			r.Header.Get("X-Meshauth-Subject") != "alice" || r.Header.Get("X-Forwarded-For") != "6.6.6.6, 127.0.0.1" {
			t.Errorf("%s, caller %s: %d %q; upstream saw %s %s %q %v", tc.protocol, resp.Proto, resp.StatusCode, got, r.Proto, r.URL, body, r.Header)
		}
	}
	if _, err := NewSidecar(SidecarConfig{Config: testConfig(t), Upstream: up.URL, UpstreamProtocol: "h3"}); err == nil {
		t.Error("an unknown protocol was accepted")
	}
}

// TestSidecarAnswerUntilClose relays an HTTP/1.0-style answer, without
// Content-Length or chunks, that ends when the upstream closes.
func TestSidecarAnswerUntilClose(t *testing.T) {
	ln := listen(t)
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			go func() {
				defer c.Close()
				http.ReadRequest(bufio.NewReader(c))
				io.WriteString(c, "HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nConnection: close\r\n\r\n")
				c.Write(bytes.Repeat([]byte("z"), 200<<10))
			}()
		}
	}()
	t.Cleanup(func() { ln.Close() })
	base := startSidecar(t, SidecarConfig{Config: testConfig(t), Upstream: "http://" + ln.Addr().String()})
	for range 2 {
		resp := get(t, base, "/orders/1", bearer(validToken()))
		if resp.status != 200 || resp.body != strings.Repeat("z", 200<<10) {
			t.Fatalf("got %d, %d bytes", resp.status, len(resp.body))
		}
	}
}
