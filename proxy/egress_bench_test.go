package proxy

import (
	"net"
	"testing"

	"github.com/valyala/fasthttp"
	"github.com/valyala/fasthttp/fasthttputil"

	"github.com/meshauth/meshauth/exchange"
)

// BenchmarkEgressWarm measures a call through the egress whose exchanged
// token is cached, in memory, against its floor: the same fasthttp client,
// proxy hop and service with a handler that only sets a token and
// forwards. The difference is what routing, the cache lookup (a SHA-256 of
// the inbound token) and the header rewriting add.
func BenchmarkEgressWarm(b *testing.B) {
	upLn := fasthttputil.NewInmemoryListener()
	up := &fasthttp.Server{Handler: func(ctx *fasthttp.RequestCtx) { ctx.SetBodyString("ok") }}
	go up.Serve(upLn)
	defer up.Shutdown()
	dialUp := func(string) (net.Conn, error) { return upLn.Dial() }

	issuer := newTokenEndpoint(b)
	x, err := exchange.NewClient(exchange.ClientConfig{TokenURL: issuer.URL + "/token", ClientID: egressClientID, ClientSecret: egressSecret})
	if err != nil {
		b.Fatal(err)
	}
	e, err := NewEgress(EgressConfig{
		Routes:    map[string]string{"payments": "http://payments:80"},
		Scopes:    map[string]string{"payments": "payments.charge"},
		Exchanger: x,
	})
	if err != nil {
		b.Fatal(err)
	}
	e.routes["payments"].client.Dial = dialUp
	floor := &fasthttp.HostClient{Addr: "payments:80", Dial: dialUp}
	exchanged := []byte("Bearer " + issuedFor(1, "payments"))
	auth := []byte("Bearer " + validToken())

	for _, bc := range []struct {
		name string
		srv  *fasthttp.Server
	}{
		{"floor", newServer(func(ctx *fasthttp.RequestCtx) {
			ctx.Request.Header.SetBytesV(fasthttp.HeaderAuthorization, exchanged)
			if err := floor.Do(&ctx.Request, &ctx.Response); err != nil {
				ctx.Error(err.Error(), fasthttp.StatusBadGateway)
			}
		}, e.log)},
		{"egress", e.server.fast},
	} {
		b.Run(bc.name, func(b *testing.B) {
			ln := fasthttputil.NewInmemoryListener()
			srv := bc.srv
			go srv.Serve(ln)
			defer srv.Shutdown()
			client := &fasthttp.HostClient{Addr: "egress:80", Dial: func(string) (net.Conn, error) { return ln.Dial() }}
			req, resp := fasthttp.AcquireRequest(), fasthttp.AcquireResponse()
			defer fasthttp.ReleaseRequest(req)
			defer fasthttp.ReleaseResponse(resp)
			b.ReportAllocs()
			for b.Loop() {
				req.SetRequestURI("http://egress/payments/charge?id=42")
				req.Header.SetMethod("POST")
				req.Header.SetBytesV(fasthttp.HeaderAuthorization, auth)
				if err := client.Do(req, resp); err != nil || resp.StatusCode() != 200 {
					b.Fatalf("%v %d %s", err, resp.StatusCode(), resp.Body())
				}
			}
		})
	}
	if n := issuer.calls.Load(); n != 1 {
		b.Fatalf("%d exchanges, want 1", n)
	}
}
