package bench

import (
	"bufio"
	"bytes"
	"context"
	"crypto/tls"
	"encoding/binary"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	core "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	authv3 "github.com/envoyproxy/go-control-plane/envoy/service/auth/v3"
	discoverygrpc "github.com/envoyproxy/go-control-plane/envoy/service/discovery/v3"
	"github.com/envoyproxy/go-control-plane/pkg/resource/v3"
	"golang.org/x/net/http2"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"

	"github.com/meshauth/meshauth/internal/grpcserve"
	"github.com/meshauth/meshauth/internal/testlog"
	"github.com/meshauth/meshauth/jwks"
	"github.com/meshauth/meshauth/token"
)

// floodStreams is how many streams a stream flood holds open at once.
const floodStreams = 10000

// BenchmarkGRPCFlood measures the ext_authz and xDS gRPC servers under
// abuse, each run as the binary runs it (`meshauth sidecar
// --ext-authz-grpc`, `meshauth xds`, default --grpc-* limits) in a process
// of its own, so that its memory is its own:
//
//   - flood=none: nothing but the legitimate calls, the floor;
//   - flood=streams: 10,000 streams opened at once, over as many
//     connections as the client needs, and held without a message;
//   - flood=messages: 64 clients sending 64 MiB messages, one after the
//     other, as fast as they are refused;
//   - flood=partial: 10,000 streams each sending all of a message just
//     under --grpc-max-recv-bytes but its last byte, and holding it: what
//     a flood can make the server buffer at most.
//
// An op is a legitimate call made during the flood: a Check with a valid
// token on a connection opened before the flood (Envoy keeps its
// connections to ext_authz), or a new Envoy node that connects, opens an
// ADS stream and gets its listener. It reports the p50 and p99 of the
// calls that succeeded, the share that failed, the server's peak resident
// memory (MiB), the streams, connections and messages it refused, and
// what it logged.
func BenchmarkGRPCFlood(b *testing.B) {
	for _, server := range []floodServer{extAuthzServer(), xdsServer()} {
		for _, flood := range []string{"none", "streams", "messages", "partial"} {
			b.Run(server.name+"/flood="+flood, func(b *testing.B) { benchFlood(b, server, flood) })
		}
	}
}

// floodServer is a server to flood: how to start it and how to call it.
type floodServer struct {
	name   string
	method string // the gRPC method the flood uses
	limits grpcserve.Limits
	// start runs the server and returns its address, its admin address
	// and a legitimate call.
	start func(b *testing.B) (addr, admin string, call func(context.Context) error)
}

func extAuthzServer() floodServer {
	return floodServer{
		name: "ext_authz", method: "/envoy.service.auth.v3.Authorization/Check", limits: grpcserve.ExtAuthzLimits(),
		start: func(b *testing.B) (string, string, func(context.Context) error) {
			tok, key := benchToken(b)
			doc, err := jwks.PublicJWKS([]token.Key{key})
			if err != nil {
				b.Fatal(err)
			}
			keys := filepath.Join(b.TempDir(), "jwks.json")
			if err := os.WriteFile(keys, doc, 0o600); err != nil {
				b.Fatal(err)
			}
			addr, admin := freeAddr(b), freeAddr(b)
			startMeshauth(b, admin, "sidecar", "--listen", "127.0.0.1:0", "--upstream", "http://127.0.0.1:1", "--trust", benchIssuer,
				"--jwks-file", keys, "--audience", benchAudience, "--admin-listen", admin, "--ext-authz-grpc", addr)
			req := &authv3.CheckRequest{Attributes: &authv3.AttributeContext{Request: &authv3.AttributeContext_Request{Http: &authv3.AttributeContext_HttpRequest{
				Method: "GET", Path: "/charge", Host: "payments", Headers: map[string]string{"authorization": "Bearer " + tok},
			}}}}
			conn := dialBench(b, addr)
			return addr, admin, func(ctx context.Context) error {
				resp, err := authv3.NewAuthorizationClient(conn).Check(ctx, req)
				if err == nil && resp.GetOkResponse() == nil {
					err = fmt.Errorf("denied: %v", resp.GetStatus())
				}
				return err
			}
		},
	}
}

func xdsServer() floodServer {
	return floodServer{
		name: "xds", method: "/envoy.service.discovery.v3.AggregatedDiscoveryService/StreamAggregatedResources", limits: grpcserve.XDSLimits(),
		start: func(b *testing.B) (string, string, func(context.Context) error) {
			config := filepath.Join(b.TempDir(), "xds.yaml")
			if err := os.WriteFile(config, []byte("nodes:\n  - cluster: bench\n    service: payments\n    listen: 0.0.0.0:8080\n    upstream: 127.0.0.1:9000\n    ext_authz: 127.0.0.1:9001\n"), 0o600); err != nil {
				b.Fatal(err)
			}
			addr, admin := freeAddr(b), freeAddr(b)
			startMeshauth(b, admin, "xds", "--config", config, "--listen", addr, "--admin-listen", admin)
			var n int
			return addr, admin, func(ctx context.Context) error {
				n++
				conn, err := grpc.NewClient(addr, grpc.WithTransportCredentials(insecure.NewCredentials()))
				if err != nil {
					return err
				}
				defer conn.Close()
				stream, err := discoverygrpc.NewAggregatedDiscoveryServiceClient(conn).StreamAggregatedResources(ctx)
				if err != nil {
					return err
				}
				if err := stream.Send(&discoverygrpc.DiscoveryRequest{Node: &core.Node{Id: fmt.Sprint("legit-", n), Cluster: "bench"}, TypeUrl: resource.ListenerType}); err != nil {
					return err
				}
				_, err = stream.Recv()
				return err
			}
		},
	}
}

func benchFlood(b *testing.B, server floodServer, flood string) {
	addr, admin, call := server.start(b)
	if err := call(b.Context()); err != nil {
		b.Fatalf("first legitimate call: %v\n%s", err, processes.logs(admin))
	}

	ctx, stop := context.WithCancel(b.Context())
	var flooders sync.WaitGroup
	defer func() { stop(); flooders.Wait() }()
	startFlood(ctx, &flooders, addr, server, flood)
	waitSteady(b, admin, server.name)

	var lat []time.Duration
	failed := 0
	for b.Loop() {
		callCtx, cancel := context.WithTimeout(b.Context(), 2*time.Second)
		start := time.Now()
		err := call(callCtx)
		cancel()
		if err != nil {
			failed++
			continue
		}
		lat = append(lat, time.Since(start))
	}
	b.StopTimer()
	reportLatencies(b, false, lat)
	b.ReportMetric(100*float64(failed)/float64(failed+len(lat)), "failed-%")
	metrics := fetchMetrics(b, admin)
	b.ReportMetric(metricValue(metrics, "process_resident_memory_bytes")/(1<<20), "rss-MiB")
	b.ReportMetric(peakRSS(b, admin)/(1<<20), "peak-rss-MiB")
	label := `{server="` + server.name + `"}`
	b.ReportMetric(metricValue(metrics, "meshauth_grpc_streams_refused_total"+label), "refused-streams")
	b.ReportMetric(metricValue(metrics, "meshauth_grpc_connections_refused_total"+label), "refused-conns")
	b.ReportMetric(metricValue(metrics, "meshauth_grpc_oversized_messages_total"+label), "oversized")
	b.ReportMetric(float64(len(processes.logs(admin)))/1024, "log-KiB")
}

// startFlood starts the flood's clients, which stop when ctx ends. They
// speak HTTP/2 to the server directly, through one client that opens
// connections as its streams need them.
func startFlood(ctx context.Context, wg *sync.WaitGroup, addr string, server floodServer, flood string) {
	client := &http.Client{Transport: &http2.Transport{
		AllowHTTP: true,
		DialTLSContext: func(ctx context.Context, network, addr string, _ *tls.Config) (net.Conn, error) {
			return (&net.Dialer{}).DialContext(ctx, network, addr)
		},
	}}
	send := func(body io.Reader) {
		req, err := http.NewRequestWithContext(ctx, http.MethodPost, "http://"+addr+server.method, body)
		if err != nil {
			return
		}
		req.Header.Set("Content-Type", "application/grpc")
		req.Header.Set("TE", "trailers")
		if resp, err := client.Do(req); err == nil {
			io.Copy(io.Discard, resp.Body)
			resp.Body.Close()
		}
	}
	switch flood {
	case "streams":
		for range floodStreams {
			wg.Go(func() { send(held{ctx}) })
		}
	case "messages":
		for range 64 {
			wg.Go(func() {
				for ctx.Err() == nil {
					send(io.MultiReader(bytes.NewReader(grpcPrefix(64<<20)), &zeros{n: 64 << 20}))
				}
			})
		}
	case "partial":
		size := server.limits.MaxRecvBytes - 1
		for range floodStreams {
			wg.Go(func() { send(io.MultiReader(bytes.NewReader(grpcPrefix(size)), &zeros{n: size - 1}, held{ctx})) })
		}
	}
}

// grpcPrefix is the prefix of a gRPC message of n bytes, uncompressed.
func grpcPrefix(n int) []byte {
	p := make([]byte, 5)
	binary.BigEndian.PutUint32(p[1:], uint32(n))
	return p
}

// zeros reads n zero bytes.
type zeros struct{ n int }

func (z *zeros) Read(p []byte) (int, error) {
	if z.n == 0 {
		return 0, io.EOF
	}
	n := min(len(p), z.n)
	clear(p[:n])
	z.n -= n
	return n, nil
}

// held is a request body that sends nothing more until ctx ends.
type held struct{ ctx context.Context }

func (h held) Read([]byte) (int, error) {
	<-h.ctx.Done()
	return 0, io.EOF
}

// waitSteady waits until the server's streams in flight and its refusals
// stop changing: the flood has reached what the limits let it have.
func waitSteady(b *testing.B, admin, server string) {
	label := `{server="` + server + `"}`
	var last string
	for steady, deadline := 0, time.Now().Add(30*time.Second); steady < 3 && time.Now().Before(deadline); {
		time.Sleep(200 * time.Millisecond)
		m := fetchMetrics(b, admin)
		now := fmt.Sprint(metricValue(m, "meshauth_grpc_streams"+label), metricValue(m, "meshauth_grpc_streams_refused_total"+label),
			metricValue(m, "meshauth_grpc_connections_refused_total"+label))
		if now == last {
			steady++
		} else {
			steady, last = 0, now
		}
	}
}

// peakRSS is the server's peak resident memory, from /proc: the admin
// listener's process is the server.
func peakRSS(b *testing.B, admin string) float64 {
	pid := processes.pid(admin)
	data, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		return 0 // not Linux
	}
	for line := range strings.Lines(string(data)) {
		if rest, ok := strings.CutPrefix(line, "VmHWM:"); ok {
			kb, _ := strconv.ParseFloat(strings.TrimSuffix(strings.TrimSpace(rest), " kB"), 64)
			return kb * 1024
		}
	}
	return 0
}

func fetchMetrics(b *testing.B, admin string) string {
	resp, err := http.Get("http://" + admin + "/metrics")
	if err != nil {
		b.Fatal(err)
	}
	defer resp.Body.Close()
	data, err := io.ReadAll(resp.Body)
	if err != nil {
		b.Fatal(err)
	}
	return string(data)
}

// metricValue returns the value of series (name and labels, as written)
// in metrics, the Prometheus text format.
func metricValue(metrics, series string) float64 {
	sc := bufio.NewScanner(strings.NewReader(metrics))
	for sc.Scan() {
		if rest, ok := strings.CutPrefix(sc.Text(), series+" "); ok {
			v, _ := strconv.ParseFloat(rest, 64)
			return v
		}
	}
	return 0
}

func dialBench(b *testing.B, addr string) *grpc.ClientConn {
	conn, err := grpc.NewClient(addr, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { conn.Close() })
	return conn
}

func freeAddr(b *testing.B) string {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		b.Fatal(err)
	}
	defer ln.Close()
	return ln.Addr().String()
}

// processes are the meshauth processes the benchmarks run, by admin
// address.
var processes = &running{byAdmin: map[string]process{}}

// TestMain removes the meshauth binary the benchmarks built.
func TestMain(m *testing.M) {
	code := m.Run()
	if processes.binary != "" {
		os.RemoveAll(filepath.Dir(processes.binary))
	}
	os.Exit(code)
}

type running struct {
	build   sync.Once
	binary  string
	err     error
	mu      sync.Mutex
	byAdmin map[string]process
}

type process struct {
	pid  int
	logs *testlog.Buffer
}

func (r *running) pid(admin string) int {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.byAdmin[admin].pid
}

func (r *running) logs(admin string) string {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.byAdmin[admin].logs.String()
}

// startMeshauth runs the meshauth binary (built once) with args until
// the benchmark ends, and waits until its admin listener says it is
// ready.
func startMeshauth(b *testing.B, admin string, args ...string) {
	r := processes
	r.build.Do(func() {
		dir, err := os.MkdirTemp("", "meshauth-bench")
		if err != nil {
			r.err = err
			return
		}
		r.binary = filepath.Join(dir, "meshauth")
		if out, err := exec.Command("go", "build", "-o", r.binary, "../cmd/meshauth").CombinedOutput(); err != nil {
			r.err = fmt.Errorf("go build: %v\n%s", err, out)
		}
	})
	if r.err != nil {
		b.Fatal(r.err)
	}
	logs := &testlog.Buffer{}
	cmd := exec.Command(r.binary, args...)
	cmd.Stdout, cmd.Stderr = logs, logs
	if err := cmd.Start(); err != nil {
		b.Fatal(err)
	}
	r.mu.Lock()
	r.byAdmin[admin] = process{cmd.Process.Pid, logs}
	r.mu.Unlock()
	b.Cleanup(func() {
		cmd.Process.Signal(syscall.SIGTERM)
		cmd.Wait()
	})
	for deadline := time.Now().Add(10 * time.Second); ; time.Sleep(20 * time.Millisecond) {
		if resp, err := http.Get("http://" + admin + "/readyz"); err == nil {
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				return
			}
		}
		if time.Now().After(deadline) {
			b.Fatalf("meshauth %s not ready:\n%s", args[0], logs.String())
		}
	}
}
