// Package natstest runs embedded NATS servers with JetStream for tests: one
// server, or a cluster on loopback ports, each stopped when the test ends.
package natstest

import (
	"fmt"
	"net"
	"net/url"
	"path/filepath"
	"testing"
	"time"

	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go"
)

// Start runs a NATS server with JetStream storing in dir, on 127.0.0.1 and
// port (-1 for a free one). The server stops at the end of the test; a
// test that stops it earlier may start another on the same dir and port.
func Start(tb testing.TB, dir string, port int) *server.Server {
	tb.Helper()
	return run(tb, &server.Options{
		ServerName: "meshauth-test",
		Host:       "127.0.0.1",
		Port:       port,
		JetStream:  true,
		StoreDir:   dir,
		NoSigs:     true,
		NoLog:      true,
	})
}

func run(tb testing.TB, opts *server.Options) *server.Server {
	tb.Helper()
	s, err := server.NewServer(opts)
	if err != nil {
		tb.Fatalf("NATS server: %v", err)
	}
	go s.Start()
	if !s.ReadyForConnections(10 * time.Second) {
		s.Shutdown()
		tb.Fatal("NATS server did not start")
	}
	tb.Cleanup(func() {
		s.Shutdown()
		s.WaitForShutdown()
	})
	return s
}

// Cluster runs n NATS servers with JetStream, routed to each other on
// loopback ports, each storing in its own directory under base, and waits
// until JetStream has a meta leader. The i-th server's options are
// returned with it, so a test can restart it.
func Cluster(tb testing.TB, base string, n int) ([]*server.Server, []*server.Options) {
	tb.Helper()
	ports := freePorts(tb, n)
	routes := make([]*url.URL, n)
	for i, p := range ports {
		routes[i] = &url.URL{Scheme: "nats", Host: fmt.Sprintf("127.0.0.1:%d", p)}
	}
	servers := make([]*server.Server, n)
	opts := make([]*server.Options, n)
	for i := range n {
		opts[i] = &server.Options{
			ServerName: fmt.Sprintf("meshauth-test-%d", i),
			Host:       "127.0.0.1",
			Port:       -1,
			JetStream:  true,
			StoreDir:   filepath.Join(base, fmt.Sprint(i)),
			NoSigs:     true,
			NoLog:      true,
			Cluster:    server.ClusterOpts{Name: "meshauth-test", Host: "127.0.0.1", Port: ports[i]},
			Routes:     routes,
		}
		servers[i] = run(tb, opts[i])
	}
	deadline := time.Now().Add(20 * time.Second)
	for !servers[0].JetStreamIsClustered() || !servers[0].JetStreamIsCurrent() || !haveMetaLeader(servers) {
		if time.Now().After(deadline) {
			tb.Fatal("NATS cluster: no JetStream meta leader")
		}
		time.Sleep(20 * time.Millisecond)
	}
	return servers, opts
}

func haveMetaLeader(servers []*server.Server) bool {
	for _, s := range servers {
		if s.JetStreamIsLeader() {
			return true
		}
	}
	return false
}

// freePorts returns n ports free on 127.0.0.1 a moment ago.
func freePorts(tb testing.TB, n int) []int {
	tb.Helper()
	var lns []net.Listener
	defer func() {
		for _, ln := range lns {
			ln.Close()
		}
	}()
	ports := make([]int, n)
	for i := range n {
		ln, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			tb.Fatal(err)
		}
		lns = append(lns, ln)
		ports[i] = ln.Addr().(*net.TCPAddr).Port
	}
	return ports
}

// Connect connects to urls (comma-separated), reconnecting forever every
// 20 ms, and closes the connection at the end of the test.
func Connect(tb testing.TB, urls string) *nats.Conn {
	tb.Helper()
	nc, err := nats.Connect(urls, Options()...)
	if err != nil {
		tb.Fatalf("connect to NATS: %v", err)
	}
	tb.Cleanup(nc.Close)
	return nc
}

// Options are the connection options of Connect, for tests that connect
// otherwise: reconnect forever, quickly.
func Options() []nats.Option {
	return []nats.Option{
		nats.MaxReconnects(-1),
		nats.ReconnectWait(20 * time.Millisecond),
		nats.ReconnectJitter(0, 0),
		nats.RetryOnFailedConnect(true),
	}
}
