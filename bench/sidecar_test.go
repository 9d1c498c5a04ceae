package bench

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/sha256"
	"encoding/base64"
	"encoding/json"
	"maps"
	"net"
	"sync"
	"testing"
	"time"

	authv3 "github.com/envoyproxy/go-control-plane/envoy/service/auth/v3"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/valyala/fasthttp"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"

	"github.com/meshauth/meshauth/internal/grpcserve"
	"github.com/meshauth/meshauth/proxy"
	"github.com/meshauth/meshauth/token"
)

const (
	benchIssuer   = "https://issuer.bench.local"
	benchAudience = "payments"
	// loadWorkers is the number of concurrent clients of the load
	// generator: enough keep-alive connections to keep both cores busy.
	loadWorkers = 16
)

// benchAuthenticator returns the sidecar's verifier as `meshauth sidecar`
// wires it (one issuer, verified-token cache) and a valid token for it.
func benchAuthenticator(b *testing.B) (*token.Authenticator, string) {
	auth, mint := benchMinter(b)
	return auth, mint(nil)
}

// benchMinter returns the sidecar's verifier as benchAuthenticator does and
// a function that mints valid tokens for it, with extra claims.
func benchMinter(b *testing.B) (*token.Authenticator, func(extra map[string]any) string) {
	mint, key := benchSigner(b)
	cache, err := token.NewCache(token.CacheConfig{MaxBytes: 16 << 20})
	if err != nil {
		b.Fatal(err)
	}
	auth, err := token.NewAuthenticator([]token.Issuer{{Policy: token.Policy{Issuer: benchIssuer, Audiences: []string{benchAudience}}, Keys: token.NewKeySet([]token.Key{key})}},
		token.AuthenticatorOptions{Cache: cache})
	if err != nil {
		b.Fatal(err)
	}
	return auth, mint
}

// benchToken returns an access token of benchIssuer for benchAudience and
// the key that verifies it.
func benchToken(b *testing.B) (string, token.Key) {
	mint, key := benchSigner(b)
	return mint(nil), key
}

// benchSigner returns a function that mints access tokens of benchIssuer
// for benchAudience, with extra claims, and the key that verifies them.
func benchSigner(b *testing.B) (func(extra map[string]any) string, token.Key) {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		b.Fatal(err)
	}
	mint := func(extra map[string]any) string {
		enc := base64.RawURLEncoding
		header, _ := json.Marshal(map[string]string{"alg": "ES256", "kid": "k1", "typ": "at+jwt"})
		claims := map[string]any{"iss": benchIssuer, "sub": "orders", "aud": benchAudience, "client_id": "orders",
			"scope": "payments.charge", "iat": time.Now().Unix(), "exp": time.Now().Add(time.Hour).Unix(), "jti": "bench"}
		maps.Copy(claims, extra)
		body, _ := json.Marshal(claims)
		input := enc.EncodeToString(header) + "." + enc.EncodeToString(body)
		sum := sha256.Sum256([]byte(input))
		r, s, err := ecdsa.Sign(rand.Reader, key, sum[:])
		if err != nil {
			b.Fatal(err)
		}
		return input + "." + enc.EncodeToString(append(r.FillBytes(make([]byte, 32)), s.FillBytes(make([]byte, 32))...))
	}
	return mint, token.Key{ID: "k1", Algorithm: "ES256", Public: &key.PublicKey}
}

// serveFast serves h on a fresh loopback port until the benchmark ends.
func serveFast(b *testing.B, h fasthttp.RequestHandler) string {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		b.Fatal(err)
	}
	s := &fasthttp.Server{Handler: h}
	go s.Serve(ln)
	b.Cleanup(func() { s.Shutdown() })
	return ln.Addr().String()
}

// BenchmarkProxyHop drives the same load over loopback through a bare
// fasthttp reverse-proxy hop (the floor) and through the sidecar, both in
// front of the same upstream, with a valid token on every request (served
// from the verified-token cache after the first). It reports the latency
// percentiles of each; the report takes the ratio of their throughputs.
func BenchmarkProxyHop(b *testing.B) {
	upstream := serveFast(b, func(ctx *fasthttp.RequestCtx) { ctx.SetBodyString("ok") })
	floorClient := &fasthttp.HostClient{Addr: upstream, MaxConns: 512}
	floor := serveFast(b, func(ctx *fasthttp.RequestCtx) {
		if err := floorClient.Do(&ctx.Request, &ctx.Response); err != nil {
			ctx.Error("bad gateway", fasthttp.StatusBadGateway)
		}
	})
	auth, tok := benchAuthenticator(b)
	sidecar := serveSidecar(b, proxy.Config{Verifier: auth}, upstream)

	for _, target := range []struct{ name, addr string }{{"floor", floor}, {"sidecar", sidecar}} {
		b.Run(target.name, func(b *testing.B) { loadHTTP(b, target.addr, "/charge", "Bearer "+tok) })
	}
}

// policyRules are the route policies BenchmarkPolicyHop compares, both
// applying to GET /charge: scopes only, and the same scopes with a CEL
// condition on the call chain and two claim headers.
func policyRules(b *testing.B) (scopes, cel *proxy.Rules) {
	route := proxy.Route{PathPrefix: "/charge", Scopes: []string{"payments.charge"}}
	scopes, err := proxy.NewRules(proxy.Policy{Routes: []proxy.Route{route}})
	if err != nil {
		b.Fatal(err)
	}
	route.Condition = `act.sub == "checkout" && size(chain) <= 2`
	route.ClaimHeaders = []proxy.ClaimHeader{{Header: "X-Tenant", Claim: "tenant"}, {Header: "X-Caller", Claim: "sub"}}
	cel, err = proxy.NewRules(proxy.Policy{Routes: []proxy.Route{route}})
	if err != nil {
		b.Fatal(err)
	}
	return scopes, cel
}

// policyTargets serves, in front of one upstream, a bare fasthttp proxy
// hop (the floor) and two sidecars, one per policyRules, and returns their
// addresses and a token all accept.
func policyTargets(b *testing.B) (floor, scopes, cel, tok string) {
	upstream := serveFast(b, func(ctx *fasthttp.RequestCtx) { ctx.SetBodyString("ok") })
	floorClient := &fasthttp.HostClient{Addr: upstream, MaxConns: 512}
	floor = serveFast(b, func(ctx *fasthttp.RequestCtx) {
		if err := floorClient.Do(&ctx.Request, &ctx.Response); err != nil {
			ctx.Error("bad gateway", fasthttp.StatusBadGateway)
		}
	})
	auth, mint := benchMinter(b)
	scopesRules, celRules := policyRules(b)
	scopes = serveSidecar(b, proxy.Config{Verifier: auth, Rules: scopesRules}, upstream)
	cel = serveSidecar(b, proxy.Config{Verifier: auth, Rules: celRules}, upstream)
	tok = mint(map[string]any{"act": map[string]any{"sub": "checkout"}, "tenant": "acme"})
	return floor, scopes, cel, tok
}

// serveSidecar serves a sidecar for cfg in front of upstream on a fresh
// loopback port until the benchmark ends, and returns its address.
func serveSidecar(b *testing.B, cfg proxy.Config, upstream string) string {
	sc, err := proxy.NewSidecar(proxy.SidecarConfig{Config: cfg, Upstream: "http://" + upstream})
	if err != nil {
		b.Fatal(err)
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		b.Fatal(err)
	}
	go sc.Serve(ln)
	b.Cleanup(func() { sc.Shutdown(context.Background()) })
	return ln.Addr().String()
}

// BenchmarkPolicyHop drives the same load through a bare proxy hop, the
// sidecar with a scopes-only route, and the sidecar with a route that adds
// a CEL condition and two claim headers, in one run; the report takes the
// ratios of their throughputs.
func BenchmarkPolicyHop(b *testing.B) {
	floor, scopes, cel, tok := policyTargets(b)
	for _, target := range []struct{ name, addr string }{{"floor", floor}, {"scopes", scopes}, {"cel", cel}} {
		b.Run(target.name, func(b *testing.B) { loadHTTP(b, target.addr, "/charge", "Bearer "+tok) })
	}
}

// BenchmarkPolicyHopPaired measures what BenchmarkPolicyHop does with the
// three targets interleaved: every worker sends one request to each in
// turn, in a rotating order, so that all three meet the same load on a
// shared machine. It reports the throughput ratios (the inverse of the
// ratios of the time spent on each target's requests): scopes/floor and
// cel/scopes.
func BenchmarkPolicyHopPaired(b *testing.B) {
	floor, scopes, cel, tok := policyTargets(b)
	addrs := [3]string{floor, scopes, cel}
	var clients [3]*fasthttp.HostClient
	for i, addr := range addrs {
		clients[i] = &fasthttp.HostClient{Addr: addr, MaxConns: loadWorkers}
	}
	var mu sync.Mutex
	var total [3]time.Duration
	b.SetParallelism((loadWorkers + 1) / 2)
	b.ResetTimer()
	b.RunParallel(func(pb *testing.PB) {
		var reqs [3]*fasthttp.Request
		for i, addr := range addrs {
			reqs[i] = fasthttp.AcquireRequest()
			defer fasthttp.ReleaseRequest(reqs[i])
			reqs[i].SetRequestURI("http://" + addr + "/charge")
			reqs[i].Header.Set("Authorization", "Bearer "+tok)
		}
		resp := fasthttp.AcquireResponse()
		defer fasthttp.ReleaseResponse(resp)
		var spent [3]time.Duration
		for n := 0; pb.Next(); n++ {
			for k := range 3 {
				i := (n + k) % 3
				start := time.Now()
				if err := clients[i].Do(reqs[i], resp); err != nil || resp.StatusCode() != fasthttp.StatusOK {
					b.Errorf("%s: %v %d", addrs[i], err, resp.StatusCode())
					return
				}
				spent[i] += time.Since(start)
			}
		}
		mu.Lock()
		for i := range total {
			total[i] += spent[i]
		}
		mu.Unlock()
	})
	b.StopTimer()
	if total[1] > 0 && total[2] > 0 {
		b.ReportMetric(float64(total[0])/float64(total[1]), "scopes/floor")
		b.ReportMetric(float64(total[1])/float64(total[2]), "cel/scopes")
	}
}

// loadHTTP sends b.N GET requests for path from loadWorkers keep-alive clients and
// reports p50 and p99 latency.
func loadHTTP(b *testing.B, addr, path, authz string) {
	client := &fasthttp.HostClient{Addr: addr, MaxConns: loadWorkers}
	var mu sync.Mutex
	var all []time.Duration
	b.SetParallelism((loadWorkers + 1) / 2) // GOMAXPROCS is 2 here
	b.ResetTimer()
	b.RunParallel(func(pb *testing.PB) {
		req, resp := fasthttp.AcquireRequest(), fasthttp.AcquireResponse()
		defer fasthttp.ReleaseRequest(req)
		defer fasthttp.ReleaseResponse(resp)
		req.SetRequestURI("http://" + addr + path)
		req.Header.Set("Authorization", authz)
		lat := make([]time.Duration, 0, 1024)
		for pb.Next() {
			start := time.Now()
			if err := client.Do(req, resp); err != nil {
				b.Error(err)
				return
			}
			lat = append(lat, time.Since(start))
			if resp.StatusCode() != fasthttp.StatusOK {
				b.Errorf("status %d", resp.StatusCode())
				return
			}
		}
		mu.Lock()
		all = append(all, lat...)
		mu.Unlock()
	})
	b.StopTimer()
	reportLatencies(b, false, all)
}

// allowAll is the floor for ext_authz: a Check server that allows
// everything without looking.
type allowAll struct {
	authv3.UnimplementedAuthorizationServer
}

func (allowAll) Check(context.Context, *authv3.CheckRequest) (*authv3.CheckResponse, error) {
	return &authv3.CheckResponse{HttpResponse: &authv3.CheckResponse_OkResponse{OkResponse: &authv3.OkHttpResponse{}}}, nil
}

// BenchmarkExtAuthzCheck measures Envoy ext_authz gRPC Check calls over
// loopback against meshauth, served as `meshauth sidecar` serves it (with
// its gRPC limits), and against an always-allow bare gRPC server.
func BenchmarkExtAuthzCheck(b *testing.B) {
	auth, tok := benchAuthenticator(b)
	meshauth, err := proxy.NewExtAuthzServer(proxy.Config{Verifier: auth})
	if err != nil {
		b.Fatal(err)
	}
	bare := func() (*grpc.Server, func(net.Listener) error) {
		gs := grpc.NewServer()
		return gs, gs.Serve
	}
	limited := func() (*grpc.Server, func(net.Listener) error) {
		gs, err := grpcserve.New("ext_authz", grpcserve.ExtAuthzLimits(), prometheus.NewRegistry())
		if err != nil {
			b.Fatal(err)
		}
		return gs.Server, gs.Serve
	}
	for _, srv := range []struct {
		name   string
		impl   authv3.AuthorizationServer
		server func() (*grpc.Server, func(net.Listener) error)
	}{{"floor", allowAll{}, bare}, {"meshauth", meshauth, limited}} {
		b.Run(srv.name, func(b *testing.B) {
			ln, err := net.Listen("tcp", "127.0.0.1:0")
			if err != nil {
				b.Fatal(err)
			}
			gs, serve := srv.server()
			authv3.RegisterAuthorizationServer(gs, srv.impl)
			go serve(ln)
			defer gs.Stop()
			conn, err := grpc.NewClient(ln.Addr().String(), grpc.WithTransportCredentials(insecure.NewCredentials()))
			if err != nil {
				b.Fatal(err)
			}
			defer conn.Close()
			client := authv3.NewAuthorizationClient(conn)
			req := &authv3.CheckRequest{Attributes: &authv3.AttributeContext{Request: &authv3.AttributeContext_Request{Http: &authv3.AttributeContext_HttpRequest{
				Method: "GET", Path: "/charge", Host: "payments", Headers: map[string]string{"authorization": "Bearer " + tok},
			}}}}
			var mu sync.Mutex
			var all []time.Duration
			b.SetParallelism((loadWorkers + 1) / 2)
			b.ResetTimer()
			b.RunParallel(func(pb *testing.PB) {
				lat := make([]time.Duration, 0, 1024)
				for pb.Next() {
					start := time.Now()
					resp, err := client.Check(context.Background(), req)
					if err != nil {
						b.Error(err)
						return
					}
					lat = append(lat, time.Since(start))
					if resp.GetOkResponse() == nil {
						b.Error("denied")
						return
					}
				}
				mu.Lock()
				all = append(all, lat...)
				mu.Unlock()
			})
			b.StopTimer()
			reportLatencies(b, false, all)
		})
	}
}
