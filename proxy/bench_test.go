package proxy

import (
	"net"
	"testing"

	"github.com/valyala/fasthttp"
	"github.com/valyala/fasthttp/fasthttputil"

	"github.com/meshauth/meshauth/token"
)

// BenchmarkSidecarDecision measures the decision on a valid token against
// its floor, the verifier alone: the difference is what the proxy adds.
func BenchmarkSidecarDecision(b *testing.B) {
	cfg := testConfig(b)
	g, err := newGuard(cfg)
	if err != nil {
		b.Fatal(err)
	}
	tok := []byte(validToken())
	authz := [][]byte{[]byte("Bearer " + string(tok))}
	target := []byte("/orders/42?page=2&sort=desc")

	b.Run("verify", func(b *testing.B) {
		b.ReportAllocs()
		var c token.Claims
		for b.Loop() {
			if err := cfg.Verifier.VerifyInto(tok, &c); err != nil {
				b.Fatal(err)
			}
		}
	})
	b.Run("decide", func(b *testing.B) {
		b.ReportAllocs()
		method := []byte("POST")
		var uri fasthttp.URI
		for b.Loop() {
			// Parsed anew each time, as each request brings its own.
			if err := uri.Parse(targetHost, target); err != nil {
				b.Fatal(err)
			}
			c := g.getClaims()
			v := g.decide(method, &uri, authz, c)
			g.putClaims(c)
			if v.code != codeAllowed {
				b.Fatalf("refused: %s", answers[v.code].reason)
			}
		}
	})
}

// BenchmarkSidecarProxy measures a whole request through the sidecar,
// in memory, against its floor: the same fasthttp client, proxy hop and
// upstream with a handler that only forwards.
func BenchmarkSidecarProxy(b *testing.B) {
	upLn := fasthttputil.NewInmemoryListener()
	up := &fasthttp.Server{Handler: func(ctx *fasthttp.RequestCtx) { ctx.SetBodyString("ok") }}
	go up.Serve(upLn)
	defer up.Shutdown()
	dialUp := func(string) (net.Conn, error) { return upLn.Dial() }

	s, err := NewSidecar(SidecarConfig{Config: testConfig(b), Upstream: "http://upstream:80"})
	if err != nil {
		b.Fatal(err)
	}
	s.upstream.Dial = dialUp
	floor := &fasthttp.HostClient{Addr: "upstream:80", Dial: dialUp}
	auth := []byte("Bearer " + validToken())

	for _, bc := range []struct {
		name    string
		handler fasthttp.RequestHandler
	}{
		{"floor", func(ctx *fasthttp.RequestCtx) {
			if err := floor.Do(&ctx.Request, &ctx.Response); err != nil {
				ctx.Error(err.Error(), fasthttp.StatusBadGateway)
			}
		}},
		{"sidecar", s.serve},
	} {
		b.Run(bc.name, func(b *testing.B) {
			ln := fasthttputil.NewInmemoryListener()
			srv := newServer(bc.handler, s.g.log)
			go srv.Serve(ln)
			defer srv.Shutdown()
			client := &fasthttp.HostClient{Addr: "sidecar:80", Dial: func(string) (net.Conn, error) { return ln.Dial() }}
			req, resp := fasthttp.AcquireRequest(), fasthttp.AcquireResponse()
			defer fasthttp.ReleaseRequest(req)
			defer fasthttp.ReleaseResponse(resp)
			b.ReportAllocs()
			for b.Loop() {
				req.SetRequestURI("http://sidecar/orders/42?page=2")
				req.Header.SetMethod("POST")
				req.Header.SetBytesV(fasthttp.HeaderAuthorization, auth)
				req.Header.Set(headerSubject, "mallory")
				if err := client.Do(req, resp); err != nil || resp.StatusCode() != 200 {
					b.Fatalf("%v %d %s", err, resp.StatusCode(), resp.Body())
				}
			}
		})
	}
}
