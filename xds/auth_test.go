package xds

import (
	"context"
	"strings"
	"testing"
	"time"

	core "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	listener "github.com/envoyproxy/go-control-plane/envoy/config/listener/v3"
	discoverygrpc "github.com/envoyproxy/go-control-plane/envoy/service/discovery/v3"
	"github.com/envoyproxy/go-control-plane/pkg/resource/v3"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/meshauth/meshauth/token"
)

const paymentsID = "spiffe://cluster.local/ns/shop/sa/payments"

// authConfig serves payments-0 to the SPIFFE ID of payments, and every
// node of cluster orders to certificates with CN orders.
var authConfig = strings.Replace(strings.Replace(serverConfig,
	"      issuers: [https://auth.example.com]\n",
	"      issuers: [https://auth.example.com]\n    identities: ["+paymentsID+"]\n", 1),
	"    ext_authz: 127.0.0.1:9101\n",
	"    ext_authz: 127.0.0.1:9101\n    identities: [orders]\n", 1)

// listenerOf asks for the listeners as node and returns the name of the
// one it gets, or the stream's error.
func listenerOf(t *testing.T, c *sotwClient) (string, error) {
	t.Helper()
	c.send(&discoverygrpc.DiscoveryRequest{Node: c.node, TypeUrl: resource.ListenerType})
	resp, err := c.resps.within(5 * time.Second)
	if err != nil {
		return "", err
	}
	return unpack[*listener.Listener](t, resp.GetResources()[0]).GetName(), nil
}

// TestMutualTLS: over mutual TLS, a node gets the resources of its entry
// only with a certificate the entry lists; what a client claims in its
// node is not an identity.
func TestMutualTLS(t *testing.T) {
	js := newJWKSServer(t, newKey(t, "k1"))
	env := startServerWith(t, authConfig, js.URL, true)
	payments := env.dial(t, env.ca.Client(t, "payments-0", paymentsID))
	orders := env.dial(t, env.ca.Client(t, "orders"))
	stranger := env.dial(t, env.ca.Client(t, "stranger"))

	for _, tc := range []struct {
		name string
		conn string
		node *core.Node
		want string     // listener
		code codes.Code // or the refusal
	}{
		{"payments by its SPIFFE ID", "payments", &core.Node{Id: "payments-0", Cluster: "payments"}, listenerName("payments"), codes.OK},
		{"orders by CN, any node of its cluster", "orders", &core.Node{Id: "orders-7f9c", Cluster: "orders"}, listenerName("orders"), codes.OK},
		{"orders asking as payments in cluster evil", "orders", &core.Node{Id: "payments-0", Cluster: "evil"}, "", codes.PermissionDenied},
		{"orders asking as payments in its own cluster", "orders", &core.Node{Id: "payments-0", Cluster: "orders"}, "", codes.PermissionDenied},
		{"payments asking as a node of orders", "payments", &core.Node{Id: "orders-1", Cluster: "orders"}, "", codes.PermissionDenied},
		{"empty node id in cluster orders", "orders", &core.Node{Id: "", Cluster: "orders"}, "", codes.InvalidArgument},
		{"no node at all", "orders", nil, "", codes.InvalidArgument},
		{"a certificate no entry lists", "stranger", &core.Node{Id: "orders-2", Cluster: "orders"}, "", codes.PermissionDenied},
		{"a node no entry configures", "orders", &core.Node{Id: "x", Cluster: "elsewhere"}, "", codes.NotFound},
	} {
		t.Run(tc.name, func(t *testing.T) {
			conn := map[string]*sotwClient{
				"payments": newSotwClientOn(t, payments, tc.node),
				"orders":   newSotwClientOn(t, orders, tc.node),
				"stranger": newSotwClientOn(t, stranger, tc.node),
			}[tc.conn]
			got, err := listenerOf(t, conn)
			if got != tc.want || status.Code(err) != tc.code {
				t.Fatalf("got listener %q, %v; want %q, %v", got, err, tc.want, tc.code)
			}
		})
	}

	// Without a client certificate, the handshake fails.
	stream, err := discoverygrpc.NewAggregatedDiscoveryServiceClient(env.conn).StreamAggregatedResources(t.Context())
	if err == nil {
		if err = stream.Send(&discoverygrpc.DiscoveryRequest{Node: &core.Node{Id: "payments-0"}, TypeUrl: resource.ListenerType}); err == nil {
			_, err = stream.Recv()
		}
	}
	if status.Code(err) != codes.Unavailable {
		t.Fatalf("without a certificate: %v", err)
	}

	st := env.srv.Stats()
	if st.Refused["not_allowed"] != 4 || st.Refused["no_node_id"] != 2 || st.Refused["not_configured"] != 1 {
		t.Fatalf("refusals %v", st.Refused)
	}
	waitLog(t, env.logs, `msg="xds stream refused: the entry of its node does not list its certificate" node=payments-0 cluster=evil identity=orders entry=node/payments-0`)
}

// TestStreamCannotChangeNode: a stream bound to its node by its first
// request cannot name another in a later one.
func TestStreamCannotChangeNode(t *testing.T) {
	js := newJWKSServer(t, newKey(t, "k1"))
	env := startServerWith(t, authConfig, js.URL, true)
	orders := env.dial(t, env.ca.Client(t, "orders"))

	c := newSotwClientOn(t, orders, &core.Node{Id: "orders-1", Cluster: "orders"})
	if name, err := listenerOf(t, c); err != nil || name != listenerName("orders") {
		t.Fatalf("got %q, %v", name, err)
	}
	c.send(&discoverygrpc.DiscoveryRequest{Node: &core.Node{Id: "payments-0"}, TypeUrl: resource.ClusterType})
	if _, err := c.resps.within(5 * time.Second); status.Code(err) != codes.InvalidArgument {
		t.Fatalf("a request naming another node: %v", err)
	}

	// Delta: the same.
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	stream, err := discoverygrpc.NewAggregatedDiscoveryServiceClient(orders).DeltaAggregatedResources(ctx)
	if err != nil {
		t.Fatal(err)
	}
	resps := receive(stream.Recv)
	stream.Send(&discoverygrpc.DeltaDiscoveryRequest{Node: &core.Node{Id: "orders-1", Cluster: "orders"}, TypeUrl: resource.ListenerType})
	if _, err := resps.within(5 * time.Second); err != nil {
		t.Fatal(err)
	}
	stream.Send(&discoverygrpc.DeltaDiscoveryRequest{Node: &core.Node{Id: "payments-0"}, TypeUrl: resource.ClusterType})
	if _, err := resps.within(5 * time.Second); status.Code(err) != codes.InvalidArgument {
		t.Fatalf("a delta request naming another node: %v", err)
	}
	// And a delta stream of orders asking as payments gets nothing.
	stream, err = discoverygrpc.NewAggregatedDiscoveryServiceClient(orders).DeltaAggregatedResources(ctx)
	if err != nil {
		t.Fatal(err)
	}
	stream.Send(&discoverygrpc.DeltaDiscoveryRequest{Node: &core.Node{Id: "payments-0", Cluster: "evil"}, TypeUrl: resource.ListenerType})
	if _, err := receive(stream.Recv).within(5 * time.Second); status.Code(err) != codes.PermissionDenied {
		t.Fatalf("delta, orders as payments: %v", err)
	}
}

// TestReloadWithdrawsNode: when a config change no longer lists a node's
// certificate, the node gets no new snapshot (it keeps what it has), its
// stream is refused at its next request, and a new stream is refused.
func TestReloadWithdrawsNode(t *testing.T) {
	js := newJWKSServer(t, newKey(t, "k1"))
	env := startServerWith(t, authConfig, js.URL, true)
	orders := env.dial(t, env.ca.Client(t, "orders"))
	node := &core.Node{Id: "orders-1", Cluster: "orders"}
	c := newSotwClientOn(t, orders, node)
	c.send(&discoverygrpc.DiscoveryRequest{Node: node, TypeUrl: resource.ListenerType})
	first := c.recv()
	c.ack(first)

	writeFile(t, env.config, strings.Replace(authConfig, "identities: [orders]", "identities: [orders-v2]", 1))
	waitLog(t, env.logs, "xds config reloaded")
	env.keySet(t, issuerURL).Set([]token.Key{newKey(t, "k2")}, "test push")
	if resp, err := c.resps.within(300 * time.Millisecond); err == nil {
		t.Fatalf("a withdrawn node got version %s", resp.GetVersionInfo())
	}
	c.ack(first)
	if _, err := c.resps.within(5 * time.Second); status.Code(err) != codes.PermissionDenied {
		t.Fatalf("the next request of a withdrawn node: %v", err)
	}
	if _, err := listenerOf(t, newSotwClientOn(t, orders, node)); status.Code(err) != codes.PermissionDenied {
		t.Fatalf("a new stream of a withdrawn node: %v", err)
	}
	if n := env.srv.Stats().Nodes; n != 0 {
		t.Fatalf("%d nodes open", n)
	}
}
