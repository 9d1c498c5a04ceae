package xds

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"log/slog"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/credentials/insecure"

	"github.com/meshauth/meshauth/internal/testlog"
	"github.com/meshauth/meshauth/internal/testpki"
	"github.com/meshauth/meshauth/internal/tlsfiles"
	"github.com/meshauth/meshauth/jwks"
	"github.com/meshauth/meshauth/token"
)

// newKey returns a fresh ES256 verification key.
func newKey(t testing.TB, kid string) token.Key {
	t.Helper()
	priv, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	return token.Key{ID: kid, Algorithm: "ES256", Public: priv.Public()}
}

// jwksServer serves a JWK Set that a test can replace, or fail.
type jwksServer struct {
	*httptest.Server
	doc    atomic.Pointer[[]byte]
	failed atomic.Bool
}

func newJWKSServer(t testing.TB, keys ...token.Key) *jwksServer {
	t.Helper()
	js := &jwksServer{}
	js.set(t, keys...)
	js.Server = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if js.failed.Load() {
			http.Error(w, "down", http.StatusServiceUnavailable)
			return
		}
		w.Header().Set("Content-Type", "application/jwk-set+json")
		w.Write(*js.doc.Load())
	}))
	t.Cleanup(js.Close)
	return js
}

func (js *jwksServer) set(t testing.TB, keys ...token.Key) {
	t.Helper()
	doc, err := jwks.PublicJWKS(keys)
	if err != nil {
		t.Fatal(err)
	}
	js.doc.Store(&doc)
}

// waitLog waits until the log holds want.
func waitLog(t testing.TB, logs *testlog.Buffer, want string) {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for !strings.Contains(logs.String(), want) {
		if time.Now().After(deadline) {
			t.Fatalf("log never said %q; log:\n%s", want, logs)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

func writeFile(t testing.TB, path, content string) {
	t.Helper()
	if err := os.WriteFile(path, []byte(content), 0o600); err != nil {
		t.Fatal(err)
	}
}

// testEnv is a running xDS server over loopback gRPC.
type testEnv struct {
	srv     *Server
	addr    string
	conn    *grpc.ClientConn // without a client certificate
	logs    *testlog.Buffer
	config  string
	ca      *testpki.CA // of the server's certificate and its clients', with TLS
	keySets sync.Map    // issuer → *jwks.KeySetCache
}

// startServer runs a Server on config (YAML) over loopback gRPC. Issuers
// without jwks_url or jwks_file get their keys from jwksURL.
func startServer(t testing.TB, config, jwksURL string) *testEnv {
	t.Helper()
	return startServerWith(t, config, jwksURL, false)
}

// startServerWith is startServer; with mutualTLS, the server requires
// client certificates from a test CA (env.ca) and runs with
// ClientCertificates.
func startServerWith(t testing.TB, config, jwksURL string, mutualTLS bool) *testEnv {
	t.Helper()
	env := &testEnv{logs: &testlog.Buffer{}, config: filepath.Join(t.TempDir(), "xds.yaml")}
	writeFile(t, env.config, config)
	log := slog.New(slog.NewTextHandler(env.logs, &slog.HandlerOptions{Level: slog.LevelDebug}))
	srv, err := New(Options{
		ConfigFile:         env.config,
		PollInterval:       10 * time.Millisecond,
		Logger:             log,
		ClientCertificates: mutualTLS,
		KeySet: func(iss Issuer) (*jwks.KeySetCache, error) {
			cfg := jwks.KeySetConfig{JWKSURL: iss.JWKSURL, JWKSFile: iss.JWKSFile, Logger: log, UnknownKIDInterval: time.Nanosecond}
			if cfg.JWKSURL == "" && cfg.JWKSFile == "" {
				cfg.JWKSURL = jwksURL
			}
			c, err := jwks.NewKeySetCache(cfg)
			if err == nil {
				env.keySets.Store(iss.Issuer, c)
			}
			return c, err
		},
	})
	if err != nil {
		t.Fatal(err)
	}
	env.srv = srv
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	env.addr = lis.Addr().String()
	var opts []grpc.ServerOption
	if mutualTLS {
		env.ca = testpki.NewCA(t, "xds test CA")
		dir := t.TempDir()
		certFile, keyFile := env.ca.Server(t).Files(t, dir, "xds")
		caFile := filepath.Join(dir, "ca.pem")
		testpki.WriteFile(t, caFile, env.ca.PEM)
		files, err := tlsfiles.Load(tlsfiles.Config{CertFile: certFile, KeyFile: keyFile, ClientCAFile: caFile})
		if err != nil {
			t.Fatal(err)
		}
		opts = append(opts, grpc.Creds(credentials.NewTLS(files.ServerConfig())))
	}
	g := grpc.NewServer(opts...)
	srv.Register(g)
	ctx, cancel := context.WithCancel(context.Background())
	var wg sync.WaitGroup
	wg.Add(2)
	go func() { defer wg.Done(); g.Serve(lis) }()
	go func() { defer wg.Done(); srv.Run(ctx) }()
	env.conn = env.dial(t, nil)
	t.Cleanup(func() {
		cancel()
		g.Stop()
		wg.Wait()
	})
	return env
}

// dial connects to the server, over TLS with client's certificate (none
// if nil) if the server takes TLS.
func (env *testEnv) dial(t testing.TB, client *testpki.Leaf) *grpc.ClientConn {
	t.Helper()
	creds := insecure.NewCredentials()
	if env.ca != nil {
		cfg := &tls.Config{RootCAs: env.ca.Pool()}
		if client != nil {
			cfg.Certificates = []tls.Certificate{client.TLS(t)}
		}
		creds = credentials.NewTLS(cfg)
	}
	conn, err := grpc.NewClient(env.addr, grpc.WithTransportCredentials(creds))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close() })
	return conn
}

func (env *testEnv) keySet(t testing.TB, issuer string) *jwks.KeySetCache {
	t.Helper()
	c, ok := env.keySets.Load(issuer)
	if !ok {
		t.Fatalf("no key set for %s", issuer)
	}
	return c.(*jwks.KeySetCache)
}
