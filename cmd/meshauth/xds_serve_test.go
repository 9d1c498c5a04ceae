package main

import (
	"context"
	"crypto/tls"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	core "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	listener "github.com/envoyproxy/go-control-plane/envoy/config/listener/v3"
	discoverygrpc "github.com/envoyproxy/go-control-plane/envoy/service/discovery/v3"
	"github.com/envoyproxy/go-control-plane/pkg/resource/v3"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/status"

	"github.com/meshauth/meshauth/internal/grpcserve"
	"github.com/meshauth/meshauth/internal/testlog"
	"github.com/meshauth/meshauth/internal/testpki"
)

// xdsTestConfig serves cluster orders to certificates with CN orders, and
// node payments-0 to the SPIFFE ID of payments. No jwt_authn: no issuer
// is needed.
const xdsTestConfig = `nodes:
  - cluster: orders
    service: orders
    listen: 0.0.0.0:8080
    upstream: 127.0.0.1:9000
    ext_authz: 127.0.0.1:9001
    identities: [orders]
  - node: payments-0
    service: payments
    listen: 0.0.0.0:8080
    upstream: 127.0.0.1:9100
    ext_authz: 127.0.0.1:9101
    identities: [spiffe://cluster.local/ns/shop/sa/payments]
`

// startXDS runs serveXDS with f on a config file until the test ends, and
// returns the xDS address and the log.
func startXDS(t *testing.T, f *xdsFlags, config string) (string, *testlog.Buffer) {
	t.Helper()
	file := filepath.Join(t.TempDir(), "xds.yaml")
	if err := os.WriteFile(file, []byte(config), 0o600); err != nil {
		t.Fatal(err)
	}
	if f.grpc.MaxConnections == 0 {
		f.grpc = grpcserve.XDSLimits()
	}
	f.listen, f.configPoll = "127.0.0.1:0", time.Second
	logs := &testlog.Buffer{}
	ctx, cancel := context.WithCancel(context.Background())
	addrc := make(chan string, 1)
	errc := make(chan error, 1)
	go func() {
		errc <- serveXDS(ctx, f, file, func(string) bool { return false }, slog.New(slog.NewTextHandler(logs, nil)), func(a string) { addrc <- a })
	}()
	t.Cleanup(func() {
		cancel()
		if err := <-errc; err != nil {
			t.Errorf("xds stop: %v", err)
		}
	})
	select {
	case addr := <-addrc:
		return addr, logs
	case err := <-errc:
		t.Fatal(err)
		return "", nil
	}
}

// listenerFor opens an ADS stream on conn as node and returns the name of
// the listener it gets, or the error.
func listenerFor(ctx context.Context, conn *grpc.ClientConn, node *core.Node) (string, error) {
	stream, err := discoverygrpc.NewAggregatedDiscoveryServiceClient(conn).StreamAggregatedResources(ctx)
	if err != nil {
		return "", err
	}
	if err := stream.Send(&discoverygrpc.DiscoveryRequest{Node: node, TypeUrl: resource.ListenerType}); err != nil {
		return "", err
	}
	resp, err := stream.Recv()
	if err != nil {
		return "", err
	}
	var lis listener.Listener
	if err := resp.GetResources()[0].UnmarshalTo(&lis); err != nil {
		return "", err
	}
	return lis.GetName(), nil
}

// TestXDSMutualTLS runs meshauth xds as its flags wire it, with client
// certificates required: the right node gets its resources, a
// certificate for orders asking as payments gets nothing, no certificate
// gets no connection, and the admin listener counts the refusals.
func TestXDSMutualTLS(t *testing.T) {
	dir := t.TempDir()
	ca := testpki.NewCA(t, "mesh CA")
	f := &xdsFlags{adminListen: freeAddr(t), tlsClientCAFile: filepath.Join(dir, "ca.pem")}
	f.tlsCertFile, f.tlsKeyFile = ca.Server(t).Files(t, dir, "xds")
	testpki.WriteFile(t, f.tlsClientCAFile, ca.PEM)
	addr, logs := startXDS(t, f, xdsTestConfig)

	dial := func(client *testpki.Leaf) *grpc.ClientConn {
		cfg := &tls.Config{RootCAs: ca.Pool()}
		if client != nil {
			cfg.Certificates = []tls.Certificate{client.TLS(t)}
		}
		conn, err := grpc.NewClient(addr, grpc.WithTransportCredentials(credentials.NewTLS(cfg)))
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { conn.Close() })
		return conn
	}
	ctx, cancel := context.WithTimeout(t.Context(), 10*time.Second)
	defer cancel()
	orders := dial(ca.Client(t, "orders"))
	if got, err := listenerFor(ctx, orders, &core.Node{Id: "orders-1", Cluster: "orders"}); err != nil || got != "orders-ingress" {
		t.Fatalf("orders as itself: %q, %v", got, err)
	}
	if _, err := listenerFor(ctx, orders, &core.Node{Id: "payments-0", Cluster: "evil"}); status.Code(err) != codes.PermissionDenied {
		t.Fatalf("orders as payments: %v", err)
	}
	if _, err := listenerFor(ctx, dial(nil), &core.Node{Id: "payments-0"}); status.Code(err) != codes.Unavailable {
		t.Fatalf("without a certificate: %v", err)
	}
	metrics := fetchBody(t, "http://"+f.adminListen+"/metrics")
	for _, want := range []string{
		`meshauth_xds_streams_refused_total{reason="not_allowed"} 1`,
		`meshauth_grpc_connections{server="xds"}`,
		`meshauth_tls_certificate_expiry_timestamp_seconds{listener="xds"}`,
		`meshauth_xds_nacks_total 0`,
	} {
		if !strings.Contains(metrics, want) {
			t.Errorf("metrics lack %s", want)
		}
	}
	if strings.Contains(logs.String(), "WITHOUT") || strings.Contains(logs.String(), "not authenticated") {
		t.Errorf("a warning about authentication with client certificates required:\n%s", logs)
	}
}

// TestXDSStreamsBounded: one connection opening 2,000 ADS streams gets
// --grpc-max-concurrent-streams served at once (before, every one was);
// and serving without TLS says loudly that anyone gets anything.
func TestXDSStreamsBounded(t *testing.T) {
	f := &xdsFlags{}
	addr, logs := startXDS(t, f, xdsTestConfig)
	conn, err := grpc.NewClient(addr, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	const streams = 2000
	var answered atomic.Int64
	ctx, cancel := context.WithCancel(t.Context())
	var wg sync.WaitGroup
	for i := range streams {
		wg.Go(func() {
			if _, err := listenerFor(ctx, conn, &core.Node{Id: fmt.Sprint("orders-", i), Cluster: "orders"}); err == nil {
				answered.Add(1)
			}
			<-ctx.Done()
		})
	}
	limit := int64(grpcserve.XDSLimits().MaxConcurrentStreams)
	for deadline := time.Now().Add(5 * time.Second); answered.Load() < limit && time.Now().Before(deadline); {
		time.Sleep(5 * time.Millisecond)
	}
	time.Sleep(300 * time.Millisecond) // for streams beyond the limit to be served, if they were
	n := answered.Load()
	cancel()
	wg.Wait()
	if n != limit {
		t.Fatalf("%d of %d streams on one connection served at once, want %d", n, streams, limit)
	}
	if !strings.Contains(logs.String(), "WITHOUT TLS AND WITHOUT CLIENT AUTHENTICATION") {
		t.Errorf("no warning when serving without TLS:\n%s", logs)
	}
}
