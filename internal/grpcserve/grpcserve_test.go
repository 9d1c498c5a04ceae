package grpcserve

import (
	"context"
	"flag"
	"net"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/health"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/types/known/wrapperspb"
)

var testLimits = Limits{
	MaxConnections: 16, MaxStreams: 100, MaxConcurrentStreams: 10,
	MaxRecvBytes: 1 << 20, MaxSendBytes: 1 << 20, KeepaliveMinTime: 10 * time.Second,
}

// sinkDesc is a bidirectional streaming method whose handler reads until
// RecvMsg fails and then returns nil, as go-control-plane's xDS handlers
// do.
var sinkDesc = grpc.ServiceDesc{
	ServiceName: "test.Sink",
	HandlerType: (*any)(nil),
	Streams: []grpc.StreamDesc{{
		StreamName:    "Swallow",
		ClientStreams: true,
		ServerStreams: true,
		Handler: func(_ any, stream grpc.ServerStream) error {
			for {
				if err := stream.RecvMsg(new(wrapperspb.BytesValue)); err != nil {
					return nil
				}
			}
		},
	}},
}

// serve runs a Server with the health service and the sink on loopback
// until the test ends.
func serve(t *testing.T, l Limits) (*Server, string) {
	t.Helper()
	s, err := New("test", l, prometheus.NewRegistry())
	if err != nil {
		t.Fatal(err)
	}
	healthpb.RegisterHealthServer(s, health.NewServer())
	s.RegisterService(&sinkDesc, struct{}{})
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	done := make(chan struct{})
	go func() { s.Serve(ln); close(done) }()
	t.Cleanup(func() { s.Stop(); <-done })
	return s, ln.Addr().String()
}

func dial(t *testing.T, addr string) *grpc.ClientConn {
	t.Helper()
	c, err := grpc.NewClient(addr, grpc.WithTransportCredentials(insecure.NewCredentials()),
		grpc.WithDefaultCallOptions(grpc.MaxCallSendMsgSize(16<<20)))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	return c
}

func check(ctx context.Context, c *grpc.ClientConn) error {
	_, err := healthpb.NewHealthClient(c).Check(ctx, &healthpb.HealthCheckRequest{})
	return err
}

// eventually waits for cond, which a server's goroutines make true.
func eventually(t *testing.T, what string, cond func() bool) {
	t.Helper()
	for deadline := time.Now().Add(5 * time.Second); !cond(); time.Sleep(2 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatalf("never: %s", what)
		}
	}
}

func TestFlags(t *testing.T) {
	fs := flag.NewFlagSet("x", flag.ContinueOnError)
	l := testLimits
	l.Register(fs, "test server")
	if err := fs.Parse([]string{"--grpc-max-streams=7", "--grpc-keepalive-min-time=30s"}); err != nil {
		t.Fatal(err)
	}
	if l.MaxStreams != 7 || l.KeepaliveMinTime != 30*time.Second || l.MaxConnections != testLimits.MaxConnections {
		t.Fatalf("limits %+v", l)
	}
	fs.VisitAll(func(f *flag.Flag) {
		if !strings.Contains(f.Usage, "test server") {
			t.Errorf("--%s: usage %q does not name the server", f.Name, f.Usage)
		}
	})
	l.MaxRecvBytes = 0
	if _, err := New("x", l, prometheus.NewRegistry()); err == nil || err.Error() != "--grpc-max-recv-bytes must be positive" {
		t.Fatalf("error %v", err)
	}
	l = testLimits
	l.MaxConnections = 51
	if _, err := New("x", l, prometheus.NewRegistry()); err == nil || err.Error() != "--grpc-max-connections (51) must be at most half of --grpc-max-streams (100)" {
		t.Fatalf("error %v", err)
	}
	for _, d := range []Limits{ExtAuthzLimits(), XDSLimits()} {
		if err := d.check(); err != nil {
			t.Errorf("defaults %+v: %v", d, err)
		}
	}
}

// TestOversizedMessages: a message over MaxRecvBytes ends its RPC with
// RESOURCE_EXHAUSTED and is counted, unary or streaming, also when the
// streaming handler swallows the error; the server answers the next call.
func TestOversizedMessages(t *testing.T) {
	s, addr := serve(t, testLimits)
	c := dial(t, addr)
	ctx := t.Context()
	big := strings.Repeat("x", 8<<20)

	_, err := healthpb.NewHealthClient(c).Check(ctx, &healthpb.HealthCheckRequest{Service: big})
	if status.Code(err) != codes.ResourceExhausted {
		t.Fatalf("unary 8 MiB message: %v", err)
	}
	stream, err := c.NewStream(ctx, &sinkDesc.Streams[0], "/test.Sink/Swallow")
	if err != nil {
		t.Fatal(err)
	}
	if err := stream.SendMsg(wrapperspb.Bytes(make([]byte, 2<<20))); err != nil {
		t.Fatal(err)
	}
	if err := stream.RecvMsg(new(wrapperspb.BytesValue)); status.Code(err) != codes.ResourceExhausted {
		t.Fatalf("streaming 2 MiB message: %v", err)
	}
	if err := check(ctx, c); err != nil {
		t.Fatalf("a call after the oversized ones: %v", err)
	}
	eventually(t, "two oversized messages counted", func() bool { return s.Stats().OversizedMessages == 2 })
}

// watch opens a health Watch stream on c and waits for its first answer:
// a stream in flight until ctx ends.
func watch(ctx context.Context, c *grpc.ClientConn) error {
	w, err := healthpb.NewHealthClient(c).Watch(ctx, &healthpb.HealthCheckRequest{})
	if err == nil {
		_, err = w.Recv()
	}
	return err
}

// TestStreamLimit: a connection's first stream is refused only beyond
// MaxStreams in flight, its others beyond MaxStreams − MaxConnections;
// refusals are RESOURCE_EXHAUSTED and counted; when streams end, their
// slots come back.
func TestStreamLimit(t *testing.T) {
	l := testLimits
	l.MaxStreams, l.MaxConnections = 8, 4
	s, addr := serve(t, l)
	ctx, cancel := context.WithCancel(t.Context())
	defer cancel()
	conns := []*grpc.ClientConn{dial(t, addr), dial(t, addr), dial(t, addr), dial(t, addr)}
	eventually(t, "connections open", func() bool {
		for _, c := range conns {
			c.Connect()
		}
		return s.Stats().Connections == 4
	})
	// The first connection takes the 8 − 4 streams that are not firsts;
	// each other one gets its first.
	for i, want := range []int{4, 1, 1, 1} {
		got := 0
		for watch(ctx, conns[i]) == nil {
			got++
		}
		if got != want {
			t.Fatalf("connection %d got %d streams, want %d; stats %+v", i, got, want, s.Stats())
		}
	}
	if st := s.Stats(); st.Streams != 7 || st.RefusedStreams != 4 {
		t.Fatalf("stats %+v", st)
	}
	if err := check(t.Context(), conns[3]); status.Code(err) != codes.ResourceExhausted {
		t.Fatalf("a call beyond the limit: %v", err)
	}
	cancel()
	eventually(t, "the streams' slots given back", func() bool { return s.Stats().Streams == 0 })
	if err := check(t.Context(), conns[0]); err != nil {
		t.Fatal(err)
	}
}

// TestLegitimateCallDuringFlood: a client that opens 2,000 streams on
// one connection is held to MaxConcurrentStreams on it; clients that fill
// every connection they may get with streams are held to MaxStreams. In
// both, a client on another connection that makes one call at a time is
// answered.
func TestLegitimateCallDuringFlood(t *testing.T) {
	for _, tc := range []struct {
		name           string
		conns, perConn int
		steady         func(st Stats, decided int64) bool
	}{
		{"one connection", 1, 2000, func(st Stats, _ int64) bool { return st.Streams == int64(testLimits.MaxConcurrentStreams) }},
		{"every connection", testLimits.MaxConnections - 1, testLimits.MaxConcurrentStreams, func(_ Stats, decided int64) bool {
			return decided == int64((testLimits.MaxConnections-1)*testLimits.MaxConcurrentStreams)
		}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			s, addr := serve(t, testLimits)
			ctx, cancel := context.WithCancel(t.Context())
			var wg sync.WaitGroup
			defer func() { cancel(); wg.Wait() }()
			var decided atomic.Int64 // flood streams served or refused
			for range tc.conns {
				c := dial(t, addr)
				for range tc.perConn {
					wg.Go(func() {
						err := watch(ctx, c)
						decided.Add(1)
						if err == nil {
							<-ctx.Done()
						}
					})
				}
			}
			eventually(t, "the flood at its limit", func() bool { return tc.steady(s.Stats(), decided.Load()) })
			callCtx, callCancel := context.WithTimeout(t.Context(), 5*time.Second)
			defer callCancel()
			if err := check(callCtx, dial(t, addr)); err != nil {
				t.Fatalf("a legitimate call during the flood: %v; stats %+v", err, s.Stats())
			}
			if st := s.Stats(); st.Streams > int64(testLimits.MaxStreams) {
				t.Fatalf("stats during the flood %+v", st)
			}
		})
	}
}

// TestConnectionLimit: beyond MaxConnections open, a new connection is
// closed at once and counted; a closed one gives its slot back.
func TestConnectionLimit(t *testing.T) {
	l := testLimits
	l.MaxConnections = 2
	s, addr := serve(t, l)
	var held []net.Conn
	for range 2 {
		c, err := net.Dial("tcp", addr)
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		held = append(held, c)
	}
	eventually(t, "two connections open", func() bool { return s.Stats().Connections == 2 })
	extra, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	defer extra.Close()
	extra.SetReadDeadline(time.Now().Add(5 * time.Second))
	if n, err := extra.Read(make([]byte, 1)); n != 0 || err == nil || strings.Contains(err.Error(), "timeout") {
		t.Fatalf("the connection beyond the limit: read %d, %v", n, err)
	}
	if st := s.Stats(); st.RefusedConns != 1 || st.Connections != 2 {
		t.Fatalf("stats %+v", st)
	}
	held[0].Close()
	eventually(t, "the slot given back", func() bool { return s.Stats().Connections == 1 })
	if err := check(t.Context(), dial(t, addr)); err != nil {
		t.Fatal(err)
	}
}
