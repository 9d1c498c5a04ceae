package bench

import (
	"bufio"
	"context"
	"io"
	"net"
	"net/http"
	"net/http/httputil"
	"sync"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/health"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
	"google.golang.org/grpc/metadata"

	"github.com/meshauth/meshauth/proxy"
)

// serveGRPCHealth serves the gRPC health service on loopback until the
// benchmark ends.
func serveGRPCHealth(b *testing.B) string {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		b.Fatal(err)
	}
	gs := grpc.NewServer()
	healthpb.RegisterHealthServer(gs, health.NewServer())
	go gs.Serve(ln)
	b.Cleanup(gs.Stop)
	return ln.Addr().String()
}

// serveH2CFloor serves the floor of an h2c hop: net/http's HTTP/2 server
// with prior knowledge and its reverse proxy, speaking h2c to upstream,
// without any check.
func serveH2CFloor(b *testing.B, upstream string) string {
	t := &http.Transport{Protocols: new(http.Protocols), DialContext: func(ctx context.Context, network, _ string) (net.Conn, error) {
		var d net.Dialer
		return d.DialContext(ctx, network, upstream)
	}}
	t.Protocols.SetUnencryptedHTTP2(true)
	rp := &httputil.ReverseProxy{
		Rewrite:       func(pr *httputil.ProxyRequest) { pr.Out.URL.Scheme, pr.Out.URL.Host = "http", upstream },
		Transport:     t,
		FlushInterval: -1,
	}
	srv := &http.Server{Handler: rp, Protocols: new(http.Protocols)}
	srv.Protocols.SetUnencryptedHTTP2(true)
	return serveHTTP(b, srv)
}

// serveHTTP serves srv on a fresh loopback port until the benchmark ends.
func serveHTTP(b *testing.B, srv *http.Server) string {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		b.Fatal(err)
	}
	go srv.Serve(ln)
	b.Cleanup(func() { srv.Close() })
	return ln.Addr().String()
}

// BenchmarkGRPCHop drives gRPC unary calls (the health service's Check)
// over loopback through a bare Go h2c reverse-proxy hop (the floor) and
// through the sidecar (h2c both ways, a valid token on every call, from
// its verified-token cache); the report takes the ratio of their
// throughputs.
func BenchmarkGRPCHop(b *testing.B) {
	upstream := serveGRPCHealth(b)
	auth, tok := benchAuthenticator(b)
	floor := serveH2CFloor(b, upstream)
	sidecar := serveSidecar(b, proxy.Config{Verifier: auth}, upstream)
	for _, target := range []struct{ name, addr string }{{"floor", floor}, {"sidecar", sidecar}} {
		b.Run(target.name, func(b *testing.B) { loadGRPC(b, target.addr, tok) })
	}
}

// loadGRPC makes b.N health Check calls to addr from loadWorkers workers,
// two to a connection (gRPC multiplexes calls, as a service's client
// does), and reports p50 and p99 latency.
func loadGRPC(b *testing.B, addr, tok string) {
	var conns []*grpc.ClientConn
	for range loadWorkers / 2 {
		conn, err := grpc.NewClient(addr, grpc.WithTransportCredentials(insecure.NewCredentials()))
		if err != nil {
			b.Fatal(err)
		}
		defer conn.Close()
		conns = append(conns, conn)
	}
	ctx := metadata.AppendToOutgoingContext(context.Background(), "authorization", "Bearer "+tok)
	var mu sync.Mutex
	var all []time.Duration
	var next int
	b.SetParallelism((loadWorkers + 1) / 2)
	b.ResetTimer()
	b.RunParallel(func(pb *testing.PB) {
		mu.Lock()
		client := healthpb.NewHealthClient(conns[next%len(conns)])
		next++
		mu.Unlock()
		lat := make([]time.Duration, 0, 1024)
		for pb.Next() {
			start := time.Now()
			resp, err := client.Check(ctx, &healthpb.HealthCheckRequest{})
			if err != nil || resp.GetStatus() != healthpb.HealthCheckResponse_SERVING {
				b.Errorf("%v %v", resp, err)
				return
			}
			lat = append(lat, time.Since(start))
		}
		mu.Lock()
		all = append(all, lat...)
		mu.Unlock()
	})
	b.StopTimer()
	reportLatencies(b, false, all)
}

// serveEcho accepts WebSocket upgrades (the handshake only, RFC 6455 §4)
// and echoes every byte after them, until the benchmark ends.
func serveEcho(b *testing.B) string {
	srv := &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		conn, rw, err := http.NewResponseController(w).Hijack()
		if err != nil {
			return
		}
		defer conn.Close()
		rw.WriteString("HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\r\n")
		rw.Flush()
		io.Copy(conn, rw.Reader)
	})}
	return serveHTTP(b, srv)
}

// wsMessage is a small WebSocket frame: FIN, binary, masked, 64 bytes.
var wsMessage = append([]byte{0x82, 0x80 | 64, 1, 2, 3, 4}, make([]byte, 64)...)

// BenchmarkWebSocketHop sends WebSocket messages and waits for their echo,
// from loadWorkers connections, straight to the echo service (the floor)
// and through the sidecar's tunnel; the report takes the ratio of their
// messages/s.
func BenchmarkWebSocketHop(b *testing.B) {
	echo := serveEcho(b)
	auth, tok := benchAuthenticator(b)
	sidecar := serveSidecar(b, proxy.Config{Verifier: auth}, echo)
	for _, target := range []struct{ name, addr string }{{"floor", echo}, {"sidecar", sidecar}} {
		b.Run(target.name, func(b *testing.B) {
			b.SetParallelism((loadWorkers + 1) / 2)
			b.ResetTimer()
			b.RunParallel(func(pb *testing.PB) {
				conn, br := upgrade(b, target.addr, tok)
				if conn == nil {
					return
				}
				defer conn.Close()
				got := make([]byte, len(wsMessage))
				for pb.Next() {
					if _, err := conn.Write(wsMessage); err != nil {
						b.Error(err)
						return
					}
					if _, err := io.ReadFull(br, got); err != nil {
						b.Error(err)
						return
					}
				}
			})
		})
	}
}

// upgrade opens a WebSocket connection to addr.
func upgrade(b *testing.B, addr, tok string) (net.Conn, *bufio.Reader) {
	conn, err := net.Dial("tcp", addr)
	if err != nil {
		b.Error(err)
		return nil, nil
	}
	io.WriteString(conn, "GET /ws HTTP/1.1\r\nHost: svc\r\nConnection: Upgrade\r\nUpgrade: websocket\r\nSec-WebSocket-Version: 13\r\n"+
		"Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nAuthorization: Bearer "+tok+"\r\n\r\n")
	br := bufio.NewReader(conn)
	resp, err := http.ReadResponse(br, nil)
	if err != nil || resp.StatusCode != http.StatusSwitchingProtocols {
		b.Errorf("upgrade: %v %v", resp, err)
		conn.Close()
		return nil, nil
	}
	return conn, br
}
