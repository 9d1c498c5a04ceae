package bench

import (
	"context"
	"crypto/sha256"
	"net"
	"net/url"
	"testing"
	"time"

	"github.com/valyala/fasthttp"

	"github.com/meshauth/meshauth/exchange"
	"github.com/meshauth/meshauth/issuer"
	"github.com/meshauth/meshauth/issuer/store"
	"github.com/meshauth/meshauth/issuer/store/filestore"
	"github.com/meshauth/meshauth/proxy"
)

// exchangeSetup serves an issuer with a client "web" holding a token for
// orders, and the exchanging client "orders" allowed to call payments.
func exchangeSetup(b *testing.B) (issuerURL, subject, ordersSecret string, st store.Store) {
	fst, err := filestore.Open(b.TempDir())
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { fst.Close() })
	issuerURL = startBenchIssuer(b, fst)
	webSecret := registerBench(b, fst, issuer.ClientMetadata{ClientID: "web", Scope: "payments.charge", AllowedAudiences: []string{"orders"}})
	ordersSecret = registerBench(b, fst, issuer.ClientMetadata{ClientID: "orders", Scope: "payments.charge",
		GrantTypes: []string{"client_credentials", issuer.GrantTypeTokenExchange}, AllowedAudiences: []string{"payments"}})
	c, err := exchange.NewClient(exchange.ClientConfig{TokenURL: issuerURL + "/token", ClientID: "web", ClientSecret: webSecret})
	if err != nil {
		b.Fatal(err)
	}
	tok, err := c.ClientCredentials(context.Background(), "orders", "")
	if err != nil {
		b.Fatal(err)
	}
	return issuerURL, tok.AccessToken, ordersSecret, fst
}

// BenchmarkTokenExchange measures uncached RFC 8693 exchanges through the
// issuer's HTTP endpoint (verify the subject token, decide, sign); the
// report compares it with the bare ES256 signature floor.
func BenchmarkTokenExchange(b *testing.B) {
	issuerURL, subject, ordersSecret, _ := exchangeSetup(b)
	body := url.Values{"grant_type": {issuer.GrantTypeTokenExchange}, "subject_token": {subject},
		"subject_token_type": {"urn:ietf:params:oauth:token-type:access_token"}, "audience": {"payments"}}.Encode()
	postTokens(b, issuerURL, basicAuth("orders", ordersSecret), body)
}

// BenchmarkEgressHop drives the same load over loopback through a bare
// fasthttp proxy hop (the floor) and through the egress with a warm
// exchange cache, both to the same upstream.
func BenchmarkEgressHop(b *testing.B) {
	issuerURL, subject, ordersSecret, _ := exchangeSetup(b)
	upstream := serveFast(b, func(ctx *fasthttp.RequestCtx) { ctx.SetBodyString("ok") })
	floorClient := &fasthttp.HostClient{Addr: upstream, MaxConns: 512}
	floor := serveFast(b, func(ctx *fasthttp.RequestCtx) {
		if err := floorClient.Do(&ctx.Request, &ctx.Response); err != nil {
			ctx.Error("bad gateway", fasthttp.StatusBadGateway)
		}
	})
	client, err := exchange.NewClient(exchange.ClientConfig{TokenURL: issuerURL + "/token", ClientID: "orders", ClientSecret: ordersSecret})
	if err != nil {
		b.Fatal(err)
	}
	eg, err := proxy.NewEgress(proxy.EgressConfig{Routes: map[string]string{"payments": "http://" + upstream}, Exchanger: client, UpstreamTimeout: 5 * time.Second})
	if err != nil {
		b.Fatal(err)
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		b.Fatal(err)
	}
	go eg.Serve(ln)
	b.Cleanup(func() { eg.Shutdown(context.Background()) })

	b.Run("floor", func(b *testing.B) { loadHTTP(b, floor, "/charge", "Bearer "+subject) })
	b.Run("egress", func(b *testing.B) { loadHTTP(b, ln.Addr().String(), "/payments/charge", "Bearer "+subject) })
}

// BenchmarkExchangeCacheHit measures an exchange answered from the exchange
// client's cache, with a real subject token, against its floor: the
// SHA-256 digest of the subject token and a Go map lookup of it. The
// difference is the digest of the request (subject digest, audience and
// scope) and the cache lookup.
func BenchmarkExchangeCacheHit(b *testing.B) {
	issuerURL, subject, ordersSecret, _ := exchangeSetup(b)
	client, err := exchange.NewClient(exchange.ClientConfig{TokenURL: issuerURL + "/token", ClientID: "orders", ClientSecret: ordersSecret})
	if err != nil {
		b.Fatal(err)
	}
	tok := []byte(subject)
	ctx := context.Background()
	if _, err := client.Exchange(ctx, tok, "payments", "payments.charge"); err != nil {
		b.Fatal(err)
	}
	b.Run("floor", func(b *testing.B) {
		m := map[[sha256.Size]byte]*exchange.Token{sha256.Sum256(tok): new(exchange.Token)}
		b.ReportAllocs()
		for b.Loop() {
			if m[sha256.Sum256(tok)] == nil {
				b.Fatal("not found")
			}
		}
	})
	b.Run("client", func(b *testing.B) {
		b.ReportAllocs()
		for b.Loop() {
			if _, err := client.Exchange(ctx, tok, "payments", "payments.charge"); err != nil {
				b.Fatal(err)
			}
		}
	})
}
