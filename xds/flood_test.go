package xds

import (
	"context"
	"io"
	"log/slog"
	"path/filepath"
	"strings"
	"sync/atomic"
	"testing"
	"testing/synctest"
	"time"

	core "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	discoverygrpc "github.com/envoyproxy/go-control-plane/envoy/service/discovery/v3"
	"github.com/envoyproxy/go-control-plane/pkg/resource/v3"
	"google.golang.org/genproto/googleapis/rpc/status"
	"google.golang.org/grpc"
	"google.golang.org/grpc/metadata"

	"github.com/meshauth/meshauth/jwks"
	"github.com/meshauth/meshauth/token"
)

// countingWriter counts what is written to it, and keeps nothing.
type countingWriter struct{ n atomic.Int64 }

func (w *countingWriter) Write(p []byte) (int, error) { w.n.Add(int64(len(p))); return len(p), nil }

// memADS is an ADS stream in memory, for a server run in a synctest
// bubble (a gRPC stream over a socket never lets the bubble's clock move).
type memADS struct {
	grpc.ServerStream
	ctx   context.Context
	reqs  chan *discoverygrpc.DiscoveryRequest
	resps chan *discoverygrpc.DiscoveryResponse
}

func newMemADS(ctx context.Context) *memADS {
	return &memADS{ctx: ctx, reqs: make(chan *discoverygrpc.DiscoveryRequest), resps: make(chan *discoverygrpc.DiscoveryResponse, 64)}
}

func (m *memADS) Context() context.Context     { return m.ctx }
func (m *memADS) SetHeader(metadata.MD) error  { return nil }
func (m *memADS) SendHeader(metadata.MD) error { return nil }
func (m *memADS) SetTrailer(metadata.MD)       {}

func (m *memADS) Send(r *discoverygrpc.DiscoveryResponse) error {
	select {
	case m.resps <- r:
		return nil
	case <-m.ctx.Done():
		return m.ctx.Err()
	}
}

func (m *memADS) Recv() (*discoverygrpc.DiscoveryRequest, error) {
	select {
	case r := <-m.reqs:
		return r, nil
	case <-m.ctx.Done():
		return nil, io.EOF
	}
}

// bubbleServer runs a Server on serverConfig inside the current synctest
// bubble, its keys from a file, logging to a counter. It stops when the
// bubble's test ends.
func bubbleServer(t *testing.T) (*Server, *countingWriter, *jwks.KeySetCache) {
	t.Helper()
	dir := t.TempDir()
	doc, err := jwks.PublicJWKS([]token.Key{newKey(t, "k1")})
	if err != nil {
		t.Fatal(err)
	}
	keysFile := filepath.Join(dir, "jwks.json")
	writeFile(t, keysFile, string(doc))
	config := filepath.Join(dir, "xds.yaml")
	writeFile(t, config, strings.Replace(serverConfig, "  - issuer: https://auth.example.com\n",
		"  - issuer: https://auth.example.com\n    jwks_file: "+keysFile+"\n", 1))
	logs := &countingWriter{}
	var keys *jwks.KeySetCache
	srv, err := New(Options{
		ConfigFile: config,
		Logger:     slog.New(slog.NewTextHandler(logs, nil)),
		KeySet: func(iss Issuer) (*jwks.KeySetCache, error) {
			keys, err = jwks.NewKeySetCache(jwks.KeySetConfig{JWKSFile: iss.JWKSFile, Logger: slog.New(slog.DiscardHandler)})
			return keys, err
		},
	})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	ran := make(chan struct{})
	go func() { srv.Run(ctx); close(ran) }()
	t.Cleanup(func() { cancel(); <-ran })
	synctest.Wait()
	return srv, logs, keys
}

// openADS serves one in-memory ADS stream until the test ends.
func openADS(t *testing.T, srv *Server) *memADS {
	ctx, cancel := context.WithCancel(context.Background())
	st := newMemADS(ctx)
	done := make(chan struct{})
	go func() { srv.xds.StreamAggregatedResources(st); close(done) }()
	t.Cleanup(func() { cancel(); <-done })
	return st
}

// TestNACKFlood: one stream answering every response with a NACK carrying
// a 1 MiB error_detail, and NACKing again every millisecond, for 10 s.
// Before, each NACK was logged whole (10 GB of log) and answered with the
// rejected version again (10,000 responses). Now: a bounded log, the
// rejected version never sent again, and the next snapshot delivered.
func TestNACKFlood(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		srv, logs, keys := bubbleServer(t)
		st := openADS(t, srv)
		st.reqs <- &discoverygrpc.DiscoveryRequest{Node: &core.Node{Id: "payments-0"}, TypeUrl: resource.ListenerType}
		first := <-st.resps
		nonce, responses := first.GetNonce(), 0
		detail := strings.Repeat("x", 1<<20)
		before := logs.n.Load()
		for end := time.Now().Add(10 * time.Second); time.Now().Before(end); {
			st.reqs <- &discoverygrpc.DiscoveryRequest{TypeUrl: resource.ListenerType, ResponseNonce: nonce, ErrorDetail: &status.Status{Code: 3, Message: detail}}
			time.Sleep(time.Millisecond)
			for len(st.resps) > 0 {
				nonce = (<-st.resps).GetNonce()
				responses++
			}
		}
		logged := logs.n.Load() - before
		t.Logf("10 s of NACKs: %d log bytes, %d responses", logged, responses)
		if logged > 4<<10 {
			t.Errorf("10 s of NACKs wrote %d bytes of log", logged)
		}
		if responses != 0 {
			t.Errorf("the rejected version was sent %d times again", responses)
		}
		if stats := srv.Stats(); stats.NACKs != 10000 || stats.LogLinesDropped != 9999 {
			t.Errorf("stats %+v", stats)
		}

		keys.Set([]token.Key{newKey(t, "k2")}, "test push")
		synctest.Wait()
		if len(st.resps) != 1 {
			t.Fatalf("after a new snapshot, %d responses", len(st.resps))
		}
		if next := <-st.resps; next.GetVersionInfo() == first.GetVersionInfo() {
			t.Fatal("the new snapshot has the rejected version")
		}
	})
}

// TestRefusedNodesLoggedPerInterval: a client opening stream after stream
// as a node nobody configured, or without a node id, is refused each time
// and logged once per minute per node.
func TestRefusedNodesLoggedPerInterval(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		srv, logs, _ := bubbleServer(t)
		before := logs.n.Load()
		attempts := func() {
			for i := range 1000 {
				node := &core.Node{Id: "stranger", Cluster: "elsewhere"}
				if i%2 == 1 {
					node = &core.Node{Cluster: "orders"}
				}
				st := newMemADS(t.Context())
				go func() { st.reqs <- &discoverygrpc.DiscoveryRequest{Node: node, TypeUrl: resource.ListenerType} }()
				if err := srv.xds.StreamAggregatedResources(st); err == nil {
					t.Fatalf("stream of %v not refused", node)
				}
				time.Sleep(10 * time.Millisecond)
			}
		}
		attempts() // 10 s
		first := logs.n.Load() - before
		if first > 1<<10 {
			t.Fatalf("1000 refused streams in 10 s wrote %d bytes of log", first)
		}
		time.Sleep(time.Minute)
		attempts()
		if second := logs.n.Load() - before - first; second == 0 || second > 1<<10 {
			t.Fatalf("a minute later, %d bytes", second)
		}
		if r := srv.Stats().Refused; r["not_configured"] != 1000 || r["no_node_id"] != 1000 {
			t.Fatalf("refusals %v", r)
		}
	})
}
