package bench

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"fmt"
	"io"
	"log/slog"
	"net"
	"os"
	"path/filepath"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	core "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	discoverygrpc "github.com/envoyproxy/go-control-plane/envoy/service/discovery/v3"
	"github.com/envoyproxy/go-control-plane/pkg/resource/v3"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"

	"github.com/meshauth/meshauth/jwks"
	"github.com/meshauth/meshauth/token"
	"github.com/meshauth/meshauth/xds"
)

// streamsPerConn spreads the nodes' ADS streams over a few connections,
// as many Envoys would arrive on many.
const streamsPerConn = 100

// BenchmarkXDSRotation measures how long a key rotation takes to reach
// every subscribed Envoy node: from KeySetCache.Set with a new key (what a
// NATS push of `keys rotate` does) to the new listener, with the new key in
// its jwt_authn local_jwks, received by each node's ADS stream over
// loopback gRPC. One op is one rotation delivered to all nodes. It reports
// the p50, p99 and max delivery time over all nodes and rotations, and the
// cost per node (ns/op ÷ nodes). There is no ratio: the floor is the build
// of one node's resources (xds/BenchmarkBuildResources), which a rotation
// does once per config entry, not per node.
func BenchmarkXDSRotation(b *testing.B) {
	for _, nodes := range []int{1, 100, 1000} {
		b.Run(fmt.Sprintf("nodes=%d", nodes), func(b *testing.B) { benchRotation(b, nodes) })
	}
}

func benchRotation(b *testing.B, nodes int) {
	keys, addr := startXDS(b)
	var (
		start     atomic.Int64 // UnixNano of the rotation under way
		delivered = make(chan time.Duration, nodes)
	)
	ctx, cancel := context.WithCancel(context.Background())
	var wg sync.WaitGroup
	b.Cleanup(func() { cancel(); wg.Wait() })
	var conn *grpc.ClientConn
	subscribed := make(chan error, nodes)
	for i := range nodes {
		if i%streamsPerConn == 0 {
			var err error
			if conn, err = grpc.NewClient(addr, grpc.WithTransportCredentials(insecure.NewCredentials())); err != nil {
				b.Fatal(err)
			}
			b.Cleanup(func() { conn.Close() })
		}
		wg.Add(1)
		go func(conn *grpc.ClientConn, id string) {
			defer wg.Done()
			subscribeNode(ctx, conn, id, subscribed, func() {
				delivered <- time.Duration(time.Now().UnixNano() - start.Load())
			})
		}(conn, fmt.Sprintf("bench-%d", i))
	}
	for range nodes {
		if err := <-subscribed; err != nil {
			b.Fatal(err)
		}
	}

	lat := make([]time.Duration, 0, b.N*nodes)
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		b.StopTimer()
		next := []token.Key{benchKey(b, fmt.Sprintf("k%d", i))}
		b.StartTimer()
		start.Store(time.Now().UnixNano())
		keys.Set(next, "bench push")
		for range nodes {
			lat = append(lat, <-delivered)
		}
	}
	b.StopTimer()
	reportLatencies(b, true, lat)
	b.ReportMetric(float64(b.Elapsed().Nanoseconds())/float64(b.N*nodes)/1e3, "µs/node")
}

// subscribeNode runs one Envoy node of cluster "bench": it asks for
// listeners, ACKs every response, reports when it holds the first one on
// subscribed and calls got for each later one.
func subscribeNode(ctx context.Context, conn *grpc.ClientConn, id string, subscribed chan<- error, got func()) {
	stream, err := discoverygrpc.NewAggregatedDiscoveryServiceClient(conn).StreamAggregatedResources(ctx)
	if err != nil {
		subscribed <- err
		return
	}
	req := &discoverygrpc.DiscoveryRequest{Node: &core.Node{Id: id, Cluster: "bench"}, TypeUrl: resource.ListenerType}
	first := true
	for {
		if err := stream.Send(req); err != nil {
			if first {
				subscribed <- err
			}
			return
		}
		resp, err := stream.Recv()
		if err != nil {
			if first {
				subscribed <- err
			}
			return
		}
		if first {
			subscribed <- nil
			first = false
		} else {
			got()
		}
		req = &discoverygrpc.DiscoveryRequest{TypeUrl: resp.GetTypeUrl(), VersionInfo: resp.GetVersionInfo(), ResponseNonce: resp.GetNonce()}
	}
}

// startXDS serves `meshauth xds` for one Envoy cluster "bench" whose
// jwt_authn trusts one issuer, and returns that issuer's key set and the
// server's address.
func startXDS(b *testing.B) (*jwks.KeySetCache, string) {
	dir := b.TempDir()
	doc, err := jwks.PublicJWKS([]token.Key{benchKey(b, "k-initial")})
	if err != nil {
		b.Fatal(err)
	}
	jwksFile := filepath.Join(dir, "jwks.json")
	config := filepath.Join(dir, "xds.yaml")
	if err := os.WriteFile(jwksFile, doc, 0o600); err != nil {
		b.Fatal(err)
	}
	if err := os.WriteFile(config, []byte(`issuers:
  - issuer: `+benchIssuer+`
    jwks_file: `+jwksFile+`
nodes:
  - cluster: bench
    service: payments
    listen: 0.0.0.0:8080
    upstream: 127.0.0.1:9000
    ext_authz: 127.0.0.1:9001
    jwt_authn:
      issuers: [`+benchIssuer+`]
`), 0o600); err != nil {
		b.Fatal(err)
	}
	quiet := slog.New(slog.NewTextHandler(io.Discard, nil))
	var keys *jwks.KeySetCache
	srv, err := xds.New(xds.Options{
		ConfigFile: config,
		Logger:     quiet,
		KeySet: func(iss xds.Issuer) (*jwks.KeySetCache, error) {
			keys, err = jwks.NewKeySetCache(jwks.KeySetConfig{JWKSFile: iss.JWKSFile, Logger: quiet})
			return keys, err
		},
	})
	if err != nil {
		b.Fatal(err)
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		b.Fatal(err)
	}
	g := grpc.NewServer()
	srv.Register(g)
	ctx, cancel := context.WithCancel(context.Background())
	var wg sync.WaitGroup
	wg.Add(2)
	go func() { defer wg.Done(); g.Serve(ln) }()
	go func() { defer wg.Done(); srv.Run(ctx) }()
	b.Cleanup(func() { cancel(); g.Stop(); wg.Wait() })
	for !srv.Ready() {
		time.Sleep(time.Millisecond)
	}
	return keys, ln.Addr().String()
}

func benchKey(b *testing.B, kid string) token.Key {
	priv, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		b.Fatal(err)
	}
	return token.Key{ID: kid, Algorithm: "ES256", Public: priv.Public()}
}
