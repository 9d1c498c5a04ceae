package proxy

import (
	"log/slog"
	"net"
	"slices"
	"testing"

	"github.com/valyala/fasthttp"
	"github.com/valyala/fasthttp/fasthttputil"

	"github.com/meshauth/meshauth/token"
)

// BenchmarkSidecarDecision measures the decision on a valid token against
// its floor, the verifier alone: the difference is what the proxy adds.
// The cached cases verify as `meshauth sidecar` does, through the
// verified-token cache, for a route with scopes only and for one with a
// condition and claim headers.
func BenchmarkSidecarDecision(b *testing.B) {
	cfg := testConfig(b)
	tok := []byte(benchToken())
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
	cached := cachedVerifier(b)
	policies := benchPolicies(b)
	for _, bc := range []struct {
		name     string
		verifier Verifier
		rules    *Rules
	}{
		{"decide", cfg.Verifier, cfg.Rules},
		{"decide-cached/scopes", cached, policies[0]},
		{"decide-cached/cel", cached, policies[1]},
	} {
		b.Run(bc.name, func(b *testing.B) {
			g, err := newGuard(Config{Verifier: bc.verifier, Rules: bc.rules})
			if err != nil {
				b.Fatal(err)
			}
			b.ReportAllocs()
			method := []byte("POST")
			var uri fasthttp.URI
			for b.Loop() {
				// Parsed anew each time, as each request brings its own.
				if err := uri.Parse(targetHost, target); err != nil {
					b.Fatal(err)
				}
				r := g.begin()
				v := g.decide(r, method, &uri, authz, nil)
				g.end(r)
				if v.code != codeAllowed {
					b.Fatalf("refused: %s", answers[v.code].reason)
				}
			}
		})
	}
}

// BenchmarkSidecarProxy measures a whole request through the sidecar,
// in memory, against its floor: the same fasthttp client, proxy hop and
// upstream with a handler that only forwards. The cached cases are those
// of BenchmarkSidecarDecision.
func BenchmarkSidecarProxy(b *testing.B) {
	upLn := fasthttputil.NewInmemoryListener()
	up := &fasthttp.Server{Handler: func(ctx *fasthttp.RequestCtx) { ctx.SetBodyString("ok") }}
	go up.Serve(upLn)
	defer up.Shutdown()
	dialUp := func(string) (net.Conn, error) { return upLn.Dial() }
	// The sidecar's own server, as it serves: bodies streamed.
	sidecar := func(v Verifier, rules *Rules) *fasthttp.Server {
		s, err := NewSidecar(SidecarConfig{Config: Config{Verifier: v, Rules: rules}, Upstream: "http://upstream:80"})
		if err != nil {
			b.Fatal(err)
		}
		s.upstream.client.Dial = dialUp
		return s.server.fast
	}
	floor := &fasthttp.HostClient{Addr: "upstream:80", Dial: dialUp}
	auth := []byte("Bearer " + benchToken())
	cfg := testConfig(b)
	cached := cachedVerifier(b)
	policies := benchPolicies(b)

	for _, bc := range []struct {
		name string
		srv  *fasthttp.Server
	}{
		{"floor", newServer(func(ctx *fasthttp.RequestCtx) {
			if err := floor.Do(&ctx.Request, &ctx.Response); err != nil {
				ctx.Error(err.Error(), fasthttp.StatusBadGateway)
			}
		}, slog.New(slog.DiscardHandler))},
		{"sidecar", sidecar(cfg.Verifier, cfg.Rules)},
		{"sidecar-cached/scopes", sidecar(cached, policies[0])},
		{"sidecar-cached/cel", sidecar(cached, policies[1])},
	} {
		b.Run(bc.name, func(b *testing.B) {
			ln := fasthttputil.NewInmemoryListener()
			srv := bc.srv
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
				req.Header.Set("X-Tenant", "evil")
				if err := client.Do(req, resp); err != nil || resp.StatusCode() != 200 {
					b.Fatalf("%v %d %s", err, resp.StatusCode(), resp.Body())
				}
			}
		})
	}
}

// cachedVerifier is the verifier as `meshauth sidecar` wires it: an
// Authenticator with a verified-token cache, so that deciding on a token
// seen before costs a digest and a lookup.
func cachedVerifier(tb testing.TB) Verifier {
	keys := token.NewKeySet([]token.Key{{ID: testKID, Algorithm: "ES256", Public: &testKey().PublicKey}})
	cache, err := token.NewCache(token.CacheConfig{MaxBytes: 8 << 20})
	if err != nil {
		tb.Fatal(err)
	}
	a, err := token.NewAuthenticator([]token.Issuer{{Policy: token.Policy{Issuer: testIssuer, Audiences: []string{testAudience}}, Keys: keys}},
		token.AuthenticatorOptions{Cache: cache})
	if err != nil {
		tb.Fatal(err)
	}
	return a
}

// benchPolicies are the route policies the benchmarks compare, each
// applying to POST /orders/42: scopes only, and scopes with a CEL
// condition on the call chain and two claim headers.
func benchPolicies(tb testing.TB) [2]*Rules {
	scopes := testPolicy()
	cel := testPolicy()
	cel.Routes = slices.DeleteFunc(cel.Routes, func(r Route) bool { return r.PathPrefix == "/orders" })
	cel.Routes = append(cel.Routes, Route{PathPrefix: "/orders", Methods: []string{"POST", "DELETE"}, Scopes: []string{"orders:write"},
		Condition:    `act.sub == "checkout" && size(chain) <= 2`,
		ClaimHeaders: []ClaimHeader{{Header: "X-Tenant", Claim: "tenant"}, {Header: "X-Caller", Claim: "sub"}}})
	return [2]*Rules{mustRules(tb, scopes), mustRules(tb, cel)}
}

// benchToken is valid for both benchPolicies.
func benchToken() string {
	return tokenWith(func(_, c jsonObject) {
		c["tenant"] = "acme"
		c["act"] = jsonObject{"sub": "checkout"}
	})
}
