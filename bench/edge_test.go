package bench

import (
	"context"
	"crypto/rand"
	"encoding/base64"
	"io"
	"net"
	"net/http"
	"strconv"
	"sync/atomic"
	"testing"
	"time"

	"github.com/valyala/fasthttp"

	"github.com/meshauth/meshauth/exchange"
	"github.com/meshauth/meshauth/issuer"
	"github.com/meshauth/meshauth/issuer/exchangepolicy"
	"github.com/meshauth/meshauth/issuer/store"
	"github.com/meshauth/meshauth/issuer/store/filestore"
	"github.com/meshauth/meshauth/proxy"
	"github.com/meshauth/meshauth/token"
)

// fixedDereferencer answers every dereference with one JWT: the warm
// benchmark asks it once.
type fixedDereferencer struct{ jwt string }

func (d fixedDereferencer) Dereference(context.Context, string, string) (exchange.Token, error) {
	return exchange.Token{AccessToken: d.jwt, ExpiresAt: time.Now().Add(time.Hour)}, nil
}

// startEdge serves an edge in front of upstream until the benchmark ends.
func startEdge(b *testing.B, upstream string, d proxy.Dereferencer, v proxy.Verifier) string {
	e, err := proxy.NewEdge(proxy.EdgeConfig{Upstream: "http://" + upstream, Audience: benchAudience, Dereferencer: d, Verifier: v,
		CacheBytes: 64 << 20, MaxCacheLifetime: time.Hour, DereferenceRate: 1e9, DereferenceBurst: 1 << 30})
	if err != nil {
		b.Fatal(err)
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		b.Fatal(err)
	}
	go e.Serve(ln)
	b.Cleanup(func() { e.Shutdown(context.Background()) })
	return ln.Addr().String()
}

// BenchmarkEdgeHop drives the same load over loopback through the sidecar
// (a JWT on every request, from its verified-token cache) and through the
// edge (a reference token on every request, from its dereference cache),
// both in front of the same upstream: the report takes the edge's
// throughput over the sidecar's.
func BenchmarkEdgeHop(b *testing.B) {
	upstream := serveFast(b, func(ctx *fasthttp.RequestCtx) { ctx.SetBodyString("ok") })
	auth, jwt := benchAuthenticator(b)
	sc, err := proxy.NewSidecar(proxy.SidecarConfig{Config: proxy.Config{Verifier: auth}, Upstream: "http://" + upstream})
	if err != nil {
		b.Fatal(err)
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		b.Fatal(err)
	}
	go sc.Serve(ln)
	b.Cleanup(func() { sc.Shutdown(context.Background()) })
	edge := startEdge(b, upstream, fixedDereferencer{jwt}, auth)

	b.Run("sidecar", func(b *testing.B) { loadHTTP(b, ln.Addr().String(), "/charge", "Bearer "+jwt) })
	b.Run("edge", func(b *testing.B) { loadHTTP(b, edge, "/charge", "Bearer "+referenceValue()) })
}

func referenceValue() string {
	return base64.RawURLEncoding.EncodeToString([]byte(rand.Text()))
}

// BenchmarkEdgeColdDereference sends requests through the edge each with a
// reference token it has not seen: every one costs a dereference, a token
// exchange at a real issuer (file store), and the verification of the JWT
// it returns. The report compares it with uncached token exchanges.
func BenchmarkEdgeColdDereference(b *testing.B) {
	fst, err := filestore.Open(b.TempDir())
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { fst.Close() })
	issuerURL := startBenchIssuer(b, fst)
	edgeSecret := registerBench(b, fst, issuer.ClientMetadata{ClientID: "edge", Scope: exchangepolicy.DereferenceScope,
		GrantTypes: []string{issuer.GrantTypeTokenExchange}, AllowedAudiences: []string{benchAudience}})
	client, err := exchange.NewClient(exchange.ClientConfig{TokenURL: issuerURL + "/token", ClientID: "edge", ClientSecret: edgeSecret})
	if err != nil {
		b.Fatal(err)
	}
	resp, err := http.Get(issuerURL + "/jwks.json")
	if err != nil {
		b.Fatal(err)
	}
	doc, err := io.ReadAll(resp.Body)
	resp.Body.Close()
	if err != nil {
		b.Fatal(err)
	}
	keys, err := token.ParseJWKS(doc)
	if err != nil {
		b.Fatal(err)
	}
	auth, err := token.NewAuthenticator([]token.Issuer{{Policy: token.Policy{Issuer: issuerURL, Audiences: []string{benchAudience}}, Keys: token.NewKeySet(keys)}}, token.AuthenticatorOptions{})
	if err != nil {
		b.Fatal(err)
	}
	upstream := serveFast(b, func(ctx *fasthttp.RequestCtx) { ctx.SetBodyString("ok") })
	edge := startEdge(b, upstream, client, auth)

	// The reference tokens go straight into the store, as the token
	// endpoint would put them, outside the measurement.
	refs := make([]string, b.N)
	now := time.Now()
	for i := range refs {
		refs[i] = referenceValue()
		err := fst.PutAccessToken(context.Background(), &store.AccessToken{Hash: issuer.ReferenceTokenHash(refs[i]), ID: "ref-" + strconv.Itoa(i),
			ClientID: "mobile", Subject: "mobile", Audience: []string{benchAudience}, Scope: []string{"payments.charge"}, IssuedAt: now, ExpiresAt: now.Add(time.Hour)})
		if err != nil {
			b.Fatal(err)
		}
	}
	hc := &fasthttp.HostClient{Addr: edge, MaxConns: loadWorkers}
	var next atomic.Int64
	b.SetParallelism((loadWorkers + 1) / 2)
	b.ResetTimer()
	b.RunParallel(func(pb *testing.PB) {
		req, resp := fasthttp.AcquireRequest(), fasthttp.AcquireResponse()
		defer fasthttp.ReleaseRequest(req)
		defer fasthttp.ReleaseResponse(resp)
		req.SetRequestURI("http://" + edge + "/charge")
		for pb.Next() {
			req.Header.Set("Authorization", "Bearer "+refs[next.Add(1)-1])
			if err := hc.Do(req, resp); err != nil {
				b.Error(err)
				return
			}
			if resp.StatusCode() != fasthttp.StatusOK {
				b.Errorf("status %d: %s", resp.StatusCode(), resp.Body())
				return
			}
		}
	})
}
