package natsconn

import (
	"flag"
	"log/slog"
	"net"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats.go"

	"github.com/meshauth/meshauth/internal/natstest"
)

func TestConnectRefusesBadFlags(t *testing.T) {
	log := slog.New(slog.DiscardHandler)
	for _, tt := range []struct {
		name string
		f    Flags
		want string
	}{
		{"no server", Flags{}, "no NATS server"},
		{"certificate without key", Flags{URLs: "nats://127.0.0.1:1", TLSCert: "c.pem"}, "go together"},
		{"creds and nkey", Flags{URLs: "nats://127.0.0.1:1", CredsFile: "a", NKeyFile: "b"}, "not both"},
		{"missing nkey file", Flags{URLs: "nats://127.0.0.1:1", NKeyFile: t.TempDir() + "/none"}, "--nats-nkey"},
	} {
		t.Run(tt.name, func(t *testing.T) {
			if _, err := Connect(&tt.f, "test", log); err == nil || !strings.Contains(err.Error(), tt.want) {
				t.Fatalf("err = %v, want one containing %q", err, tt.want)
			}
		})
	}
}

func TestConnectReconnects(t *testing.T) {
	dir := t.TempDir()
	ns := natstest.Start(t, dir, -1)
	var f Flags
	fs := flag.NewFlagSet("test", flag.ContinueOnError)
	f.Register(fs, "test")
	if err := fs.Parse([]string{"--nats", ns.ClientURL()}); err != nil {
		t.Fatal(err)
	}
	logs := &syncBuffer{}
	nc, err := Connect(&f, "test", slog.New(slog.NewTextHandler(logs, nil)), nats.ReconnectWait(10*time.Millisecond))
	if err != nil {
		t.Fatal(err)
	}
	defer nc.Close()
	wait := func(what string, cond func() bool) {
		t.Helper()
		deadline := time.Now().Add(10 * time.Second)
		for !cond() {
			if time.Now().After(deadline) {
				t.Fatalf("timed out waiting for %s", what)
			}
			time.Sleep(5 * time.Millisecond)
		}
	}
	wait("the connection", nc.IsConnected)
	port := ns.Addr().(*net.TCPAddr).Port
	ns.Shutdown()
	ns.WaitForShutdown()
	wait("the disconnect", func() bool { return !nc.IsConnected() })
	natstest.Start(t, dir, port)
	wait("the reconnect", nc.IsConnected)
	wait("the log lines", func() bool {
		s := logs.String()
		return strings.Contains(s, "NATS connected") && strings.Contains(s, "NATS disconnected") && strings.Contains(s, "NATS reconnected")
	})
}

// syncBuffer is a bytes buffer safe for one writer and one reader.
type syncBuffer struct {
	mu sync.Mutex
	b  strings.Builder
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}
