package xds

import (
	"cmp"
	"context"
	"log/slog"
	"path/filepath"
	"strings"
	"testing"
	"time"

	core "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	listener "github.com/envoyproxy/go-control-plane/envoy/config/listener/v3"
	jwtauthn "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/http/jwt_authn/v3"
	hcm "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/network/http_connection_manager/v3"
	discoverygrpc "github.com/envoyproxy/go-control-plane/envoy/service/discovery/v3"
	"github.com/envoyproxy/go-control-plane/pkg/resource/v3"
	"google.golang.org/genproto/googleapis/rpc/status"
	"google.golang.org/grpc"
	"google.golang.org/protobuf/types/known/anypb"

	"github.com/meshauth/meshauth/jwks"
	"github.com/meshauth/meshauth/token"
)

const issuerURL = "https://auth.example.com"

const serverConfig = `issuers:
  - issuer: https://auth.example.com
nodes:
  - node: payments-0
    service: payments
    listen: 0.0.0.0:8080
    upstream: 127.0.0.1:9000
    ext_authz: 127.0.0.1:9001
    jwt_authn:
      issuers: [https://auth.example.com]
  - cluster: orders
    service: orders
    listen: 0.0.0.0:8080
    upstream: 127.0.0.1:9100
    ext_authz: 127.0.0.1:9101
`

// localJWKSKids returns the kids of the local_jwks of the listener in a.
func localJWKSKids(t *testing.T, a *anypb.Any) []string {
	t.Helper()
	lis := unpack[*listener.Listener](t, a)
	manager := unpack[*hcm.HttpConnectionManager](t, lis.GetFilterChains()[0].GetFilters()[0].GetTypedConfig())
	var kids []string
	for _, f := range manager.GetHttpFilters() {
		if f.GetName() != FilterJWTAuthn {
			continue
		}
		for _, p := range unpack[*jwtauthn.JwtAuthentication](t, f.GetTypedConfig()).GetProviders() {
			keys, err := token.ParseJWKS([]byte(p.GetLocalJwks().GetInlineString()))
			if err != nil {
				t.Fatal(err)
			}
			for _, k := range keys {
				kids = append(kids, k.ID)
			}
		}
	}
	return kids
}

// sotwClient is one Envoy node on an ADS state-of-the-world stream.
type sotwClient struct {
	t      *testing.T
	stream discoverygrpc.AggregatedDiscoveryService_StreamAggregatedResourcesClient
	node   *core.Node
	resps  *receiver[*discoverygrpc.DiscoveryResponse]
}

func newSotwClient(t *testing.T, env *testEnv, node *core.Node) *sotwClient {
	return newSotwClientOn(t, env.conn, node)
}

func newSotwClientOn(t *testing.T, conn *grpc.ClientConn, node *core.Node) *sotwClient {
	ctx, cancel := context.WithCancel(context.Background())
	t.Cleanup(cancel)
	stream, err := discoverygrpc.NewAggregatedDiscoveryServiceClient(conn).StreamAggregatedResources(ctx)
	if err != nil {
		t.Fatal(err)
	}
	return &sotwClient{t: t, stream: stream, node: node, resps: receive(stream.Recv)}
}

func (c *sotwClient) send(req *discoverygrpc.DiscoveryRequest) {
	c.t.Helper()
	if err := c.stream.Send(req); err != nil {
		c.t.Fatal(err)
	}
}

// recv waits for a response, failing after a few seconds.
func (c *sotwClient) recv() *discoverygrpc.DiscoveryResponse {
	c.t.Helper()
	resp, err := c.resps.within(5 * time.Second)
	if err != nil {
		c.t.Fatal(err)
	}
	return resp
}

// receiver reads a stream in one goroutine, so that a wait for a response
// that times out leaves no Recv behind to take the next response.
type receiver[T any] struct{ ch chan received[T] }

type received[T any] struct {
	v   T
	err error
}

func receive[T any](recv func() (T, error)) *receiver[T] {
	r := &receiver[T]{ch: make(chan received[T], 64)}
	go func() {
		for {
			v, err := recv()
			r.ch <- received[T]{v, err}
			if err != nil {
				return
			}
		}
	}()
	return r
}

// within returns the next response, or the stream's error, or
// context.DeadlineExceeded if neither comes within d.
func (r *receiver[T]) within(d time.Duration) (T, error) {
	select {
	case x := <-r.ch:
		return x.v, x.err
	case <-time.After(d):
		var zero T
		return zero, context.DeadlineExceeded
	}
}

// ack acknowledges resp, as Envoy does after applying it.
func (c *sotwClient) ack(resp *discoverygrpc.DiscoveryResponse, names ...string) {
	c.send(&discoverygrpc.DiscoveryRequest{TypeUrl: resp.GetTypeUrl(), VersionInfo: resp.GetVersionInfo(), ResponseNonce: resp.GetNonce(), ResourceNames: names})
}

func TestADSStateOfTheWorld(t *testing.T) {
	js := newJWKSServer(t, newKey(t, "k1"))
	env := startServer(t, serverConfig, js.URL)
	c := newSotwClient(t, env, &core.Node{Id: "payments-0"})

	c.send(&discoverygrpc.DiscoveryRequest{Node: c.node, TypeUrl: resource.ClusterType})
	clusters := c.recv()
	if len(clusters.GetResources()) != 2 {
		t.Fatalf("%d clusters", len(clusters.GetResources()))
	}
	c.ack(clusters)
	c.send(&discoverygrpc.DiscoveryRequest{TypeUrl: resource.ListenerType})
	listeners := c.recv()
	if len(listeners.GetResources()) != 1 {
		t.Fatalf("%d listeners", len(listeners.GetResources()))
	}
	if kids := localJWKSKids(t, listeners.GetResources()[0]); len(kids) != 1 || kids[0] != "k1" {
		t.Fatalf("local_jwks kids %v", kids)
	}
	c.ack(listeners)
	c.send(&discoverygrpc.DiscoveryRequest{TypeUrl: resource.RouteType, ResourceNames: []string{routeName("payments")}})
	routes := c.recv()
	if len(routes.GetResources()) != 1 {
		t.Fatalf("%d routes", len(routes.GetResources()))
	}
	c.ack(routes, routeName("payments"))

	// A rotation (as a push from the issuer would install it): a new
	// listener version with the new key; clusters do not change.
	env.keySet(t, issuerURL).Set([]token.Key{newKey(t, "k1"), newKey(t, "k2")}, "test push")
	rotated := c.recv()
	if rotated.GetTypeUrl() != resource.ListenerType || rotated.GetVersionInfo() == listeners.GetVersionInfo() {
		t.Fatalf("after rotation: %s version %s (was %s)", rotated.GetTypeUrl(), rotated.GetVersionInfo(), listeners.GetVersionInfo())
	}
	if kids := localJWKSKids(t, rotated.GetResources()[0]); len(kids) != 2 || kids[1] != "k2" {
		t.Fatalf("after rotation, local_jwks kids %v", kids)
	}

	// A NACK is logged and the stream goes on. It names the last version
	// Envoy applied; the rejected one is not sent again, but the next
	// rotation arrives.
	c.send(&discoverygrpc.DiscoveryRequest{
		TypeUrl: resource.ListenerType, VersionInfo: listeners.GetVersionInfo(), ResponseNonce: rotated.GetNonce(),
		ErrorDetail: &status.Status{Code: 3, Message: "listener payments-ingress: bad filter"},
	})
	waitLog(t, env.logs, "NACK")
	waitLog(t, env.logs, "bad filter")
	if resp, err := c.resps.within(300 * time.Millisecond); err == nil {
		t.Fatalf("after a NACK, the rejected version %s was sent again", resp.GetVersionInfo())
	}
	env.keySet(t, issuerURL).Set([]token.Key{newKey(t, "k3")}, "test push")
	again := c.recv()
	if kids := localJWKSKids(t, again.GetResources()[0]); len(kids) != 1 || kids[0] != "k3" {
		t.Fatalf("after NACK and rotation, local_jwks kids %v", kids)
	}
}

func TestADSDelta(t *testing.T) {
	js := newJWKSServer(t, newKey(t, "k1"))
	env := startServer(t, serverConfig, js.URL)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	stream, err := discoverygrpc.NewAggregatedDiscoveryServiceClient(env.conn).DeltaAggregatedResources(ctx)
	if err != nil {
		t.Fatal(err)
	}
	resps := receive(stream.Recv)
	recv := func() *discoverygrpc.DeltaDiscoveryResponse {
		t.Helper()
		resp, err := resps.within(5 * time.Second)
		if err != nil {
			t.Fatal(err)
		}
		return resp
	}
	if err := stream.Send(&discoverygrpc.DeltaDiscoveryRequest{Node: &core.Node{Id: "payments-0"}, TypeUrl: resource.ListenerType}); err != nil {
		t.Fatal(err)
	}
	first := recv()
	if len(first.GetResources()) != 1 || first.GetResources()[0].GetName() != listenerName("payments") {
		t.Fatalf("delta response %v", first.GetResources())
	}
	if err := stream.Send(&discoverygrpc.DeltaDiscoveryRequest{TypeUrl: resource.ListenerType, ResponseNonce: first.GetNonce()}); err != nil {
		t.Fatal(err)
	}
	env.keySet(t, issuerURL).Set([]token.Key{newKey(t, "k2")}, "test push")
	rotated := recv()
	if len(rotated.GetResources()) != 1 || rotated.GetResources()[0].GetVersion() == first.GetResources()[0].GetVersion() {
		t.Fatalf("after rotation, delta response %v", rotated.GetResources())
	}
	if kids := localJWKSKids(t, rotated.GetResources()[0].GetResource()); len(kids) != 1 || kids[0] != "k2" {
		t.Fatalf("after rotation, local_jwks kids %v", kids)
	}
	// A delta NACK is logged too, and the stream stays.
	if err := stream.Send(&discoverygrpc.DeltaDiscoveryRequest{TypeUrl: resource.ListenerType, ResponseNonce: rotated.GetNonce(), ErrorDetail: &status.Status{Code: 3, Message: "delta says no"}}); err != nil {
		t.Fatal(err)
	}
	waitLog(t, env.logs, "delta says no")
	if resp, err := resps.within(300 * time.Millisecond); err == nil {
		t.Fatalf("after a delta NACK, resources sent again: %v", resp.GetResources())
	}
	env.keySet(t, issuerURL).Set([]token.Key{newKey(t, "k3")}, "test push")
	if kids := localJWKSKids(t, recv().GetResources()[0].GetResource()); len(kids) != 1 || kids[0] != "k3" {
		t.Fatalf("after NACK and rotation, local_jwks kids %v", kids)
	}
}

// TestADSClusterAndUnknownNodes: a node of a configured cluster gets its
// cluster's resources; a node nobody configured gets none, and a log line.
func TestADSClusterAndUnknownNodes(t *testing.T) {
	js := newJWKSServer(t, newKey(t, "k1"))
	env := startServer(t, serverConfig, js.URL)

	orders := newSotwClient(t, env, &core.Node{Id: "orders-7f9c", Cluster: "orders"})
	orders.send(&discoverygrpc.DiscoveryRequest{Node: orders.node, TypeUrl: resource.ListenerType})
	resp := orders.recv()
	lis := unpack[*listener.Listener](t, resp.GetResources()[0])
	if lis.GetName() != listenerName("orders") {
		t.Fatalf("node of cluster orders got listener %s", lis.GetName())
	}

	stranger := newSotwClient(t, env, &core.Node{Id: "stranger", Cluster: "elsewhere"})
	stranger.send(&discoverygrpc.DiscoveryRequest{Node: stranger.node, TypeUrl: resource.ListenerType})
	waitLog(t, env.logs, "node=stranger cluster=elsewhere")
	if resp, err := stranger.resps.within(300 * time.Millisecond); err == nil {
		t.Fatalf("unknown node got %v", resp)
	}
	if n := strings.Count(env.logs.String(), "node=stranger"); n != 1 {
		t.Fatalf("unknown node logged %d times", n)
	}
}

// TestKeyFetchFailureKeepsSnapshot: when keys cannot be refreshed (the
// issuer, or NATS, is down), the last good keys stay, and so does the
// snapshot; a refresh that brings the same keys changes nothing either.
func TestKeyFetchFailureKeepsSnapshot(t *testing.T) {
	js := newJWKSServer(t, newKey(t, "k1"))
	env := startServer(t, serverConfig, js.URL)
	c := newSotwClient(t, env, &core.Node{Id: "payments-0"})
	c.send(&discoverygrpc.DiscoveryRequest{Node: c.node, TypeUrl: resource.ListenerType})
	first := c.recv()
	c.ack(first)

	keys := env.keySet(t, issuerURL)
	js.failed.Store(true)
	fetches := keys.Status().Fetches
	keys.Lookup("unknown-kid") // starts a refresh, which fails
	for keys.Status().LastError == "" || keys.Status().Fetches == fetches {
		time.Sleep(5 * time.Millisecond)
	}
	js.failed.Store(false)
	keys.Lookup("another-unknown-kid") // a refresh with the same keys
	for keys.Status().LastError != "" {
		time.Sleep(5 * time.Millisecond)
	}
	if resp, err := c.resps.within(300 * time.Millisecond); err == nil {
		t.Fatalf("snapshot changed after a failed and an identical refresh: %v", resp.GetVersionInfo())
	}
	snap, err := env.srv.cache.GetSnapshot(snapshotKey(c.node))
	if err != nil {
		t.Fatal(err)
	}
	if v := snap.GetVersion(resource.ListenerType); v != first.GetVersionInfo() {
		t.Fatalf("listener version %s, want %s", v, first.GetVersionInfo())
	}
}

// TestConfigReload: a changed config file becomes a new snapshot; a
// malformed one is refused and logged, and the last good one stays.
func TestConfigReload(t *testing.T) {
	js := newJWKSServer(t, newKey(t, "k1"))
	env := startServer(t, serverConfig, js.URL)
	c := newSotwClient(t, env, &core.Node{Id: "payments-0"})
	c.send(&discoverygrpc.DiscoveryRequest{Node: c.node, TypeUrl: resource.ListenerType})
	first := c.recv()
	c.ack(first)

	writeFile(t, env.config, strings.Replace(serverConfig, "0.0.0.0:8080", "0.0.0.0:8443", 1))
	changed := c.recv()
	if port := unpack[*listener.Listener](t, changed.GetResources()[0]).GetAddress().GetSocketAddress().GetPortValue(); port != 8443 || changed.GetVersionInfo() == first.GetVersionInfo() {
		t.Fatalf("after reload: port %d, version %s", port, changed.GetVersionInfo())
	}
	c.ack(changed)

	writeFile(t, env.config, serverConfig+"    bogus: 1\n")
	waitLog(t, env.logs, `line 16: nodes[1].bogus: unknown key`)
	if resp, err := c.resps.within(300 * time.Millisecond); err == nil {
		t.Fatalf("malformed config changed the snapshot: %v", resp.GetVersionInfo())
	}
	snap, err := env.srv.cache.GetSnapshot(snapshotKey(c.node))
	if err != nil {
		t.Fatal(err)
	}
	if v := snap.GetVersion(resource.ListenerType); v != changed.GetVersionInfo() {
		t.Fatalf("listener version %s after a refused config, want %s", v, changed.GetVersionInfo())
	}
	if !env.srv.Ready() {
		t.Fatal("not ready")
	}
}

// TestFollowLivesWithItsKeySet checks that Options.Follow runs beside each
// issuer's key set and ends when the server drops that key set (here: the
// issuer's keys move to another JWKS URL), not only when the server stops.
func TestFollowLivesWithItsKeySet(t *testing.T) {
	js := newJWKSServer(t, newKey(t, "k1"))
	config := filepath.Join(t.TempDir(), "xds.yaml")
	writeFile(t, config, serverConfig)
	follows := make(chan context.Context, 4)
	srv, err := New(Options{
		ConfigFile:   config,
		PollInterval: 10 * time.Millisecond,
		Logger:       slog.New(slog.DiscardHandler),
		KeySet: func(iss Issuer) (*jwks.KeySetCache, error) {
			return jwks.NewKeySetCache(jwks.KeySetConfig{JWKSURL: cmp.Or(iss.JWKSURL, js.URL), Logger: slog.New(slog.DiscardHandler)})
		},
		Follow: func(ctx context.Context, _ Issuer, _ *jwks.KeySetCache) { follows <- ctx; <-ctx.Done() },
	})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { srv.Run(ctx); close(done) }()
	defer func() { cancel(); <-done }()

	first := recvFollow(t, follows)
	writeFile(t, config, strings.Replace(serverConfig, "  - issuer: https://auth.example.com\n",
		"  - issuer: https://auth.example.com\n    jwks_url: "+js.URL+"/other\n", 1))
	second := recvFollow(t, follows)
	select {
	case <-first.Done():
	case <-time.After(5 * time.Second):
		t.Fatal("the dropped key set's Follow still runs")
	}
	cancel()
	<-done
	if second.Err() == nil {
		t.Error("Follow still runs after the server stopped")
	}
}

func recvFollow(t *testing.T, follows <-chan context.Context) context.Context {
	t.Helper()
	select {
	case ctx := <-follows:
		return ctx
	case <-time.After(5 * time.Second):
		t.Fatal("Follow not called")
		return nil
	}
}
