package proxy

import (
	"net"
	"testing"

	"github.com/valyala/fasthttp"
	"github.com/valyala/fasthttp/fasthttputil"
)

// BenchmarkEdgeProxy measures a whole request through the edge with its
// dereference cached, in memory, against the sidecar's whole request on
// the same upstream: with -benchmem, the edge's hot path must allocate no
// more than the sidecar's.
func BenchmarkEdgeProxy(b *testing.B) {
	upLn := fasthttputil.NewInmemoryListener()
	up := &fasthttp.Server{Handler: func(ctx *fasthttp.RequestCtx) { ctx.SetBodyString("ok") }}
	go up.Serve(upLn)
	defer up.Shutdown()
	dialUp := func(string) (net.Conn, error) { return upLn.Dial() }

	s, err := NewSidecar(SidecarConfig{Config: testConfig(b), Upstream: "http://upstream:80"})
	if err != nil {
		b.Fatal(err)
	}
	s.upstream.client.Dial = dialUp
	f := newFakeIssuer()
	f.add("ref-bench", "alice", "j-bench")
	cfg := EdgeConfig{Upstream: "http://upstream:80", Audience: testAudience, Dereferencer: f, Verifier: testVerifier(b), CacheBytes: 1 << 20}
	e, err := NewEdge(cfg)
	if err != nil {
		b.Fatal(err)
	}
	e.upstream.client.Dial = dialUp

	for _, bc := range []struct {
		name string
		srv  *fasthttp.Server
		auth []byte
	}{
		{"sidecar", s.server.fast, []byte("Bearer " + validToken())},
		{"edge", e.server.fast, []byte("Bearer ref-bench")},
	} {
		b.Run(bc.name, func(b *testing.B) {
			ln := fasthttputil.NewInmemoryListener()
			srv := bc.srv
			go srv.Serve(ln)
			defer srv.Shutdown()
			client := &fasthttp.HostClient{Addr: "proxy:80", Dial: func(string) (net.Conn, error) { return ln.Dial() }}
			req, resp := fasthttp.AcquireRequest(), fasthttp.AcquireResponse()
			defer fasthttp.ReleaseRequest(req)
			defer fasthttp.ReleaseResponse(resp)
			b.ReportAllocs()
			for b.Loop() {
				req.SetRequestURI("http://proxy/orders/42?page=2")
				req.Header.SetMethod("POST")
				req.Header.SetBytesV(fasthttp.HeaderAuthorization, bc.auth)
				req.Header.Set(headerSubject, "mallory")
				if err := client.Do(req, resp); err != nil || resp.StatusCode() != 200 {
					b.Fatalf("%v %d %s", err, resp.StatusCode(), resp.Body())
				}
			}
		})
	}
	if c := f.calls.Load(); c != 1 {
		b.Errorf("%d dereferences, want 1", c)
	}
}
