package tlsfiles

import (
	"bytes"
	"context"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"io"
	"log/slog"
	"net/url"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"testing/synctest"
	"time"

	"github.com/meshauth/meshauth/internal/testpki"
)

// served returns the subject CN of the certificate a handshake would get.
func served(t *testing.T, f *Files) string {
	t.Helper()
	c, err := f.ServerConfig().GetConfigForClient(&tls.ClientHelloInfo{})
	if err != nil {
		t.Fatal(err)
	}
	return c.Certificates[0].Leaf.Subject.CommonName
}

// leafFiles writes a certificate with CN cn as dir/server.crt and
// dir/server.key; only GetConfigForClient sees it, no handshake.
func leafFiles(t *testing.T, ca *testpki.CA, dir, cn string) (string, string) {
	t.Helper()
	return ca.Client(t, cn).Files(t, dir, "server")
}

// TestRotation: a replaced certificate is served from the next check on,
// a garbage file or a key that does not match is refused (the previous
// certificate stays, Status and one log line say why, however many checks
// see it), and an expired one too.
func TestRotation(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		dir := t.TempDir()
		ca := testpki.NewCA(t, "test CA")
		certFile, keyFile := leafFiles(t, ca, dir, "first")
		var logs bytes.Buffer
		f, err := Load(Config{CertFile: certFile, KeyFile: keyFile, PollInterval: time.Second, Logger: slog.New(slog.NewTextHandler(&logs, nil))})
		if err != nil {
			t.Fatal(err)
		}
		ctx, cancel := context.WithCancel(t.Context())
		defer cancel()
		go f.Run(ctx)
		tick := func() { time.Sleep(time.Second); synctest.Wait() }

		if got := served(t, f); got != "first" {
			t.Fatalf("serves %s", got)
		}
		second := ca.Client(t, "second")
		testpki.WriteFile(t, certFile, second.CertPEM)
		testpki.WriteFile(t, keyFile, second.KeyPEM)
		tick()
		if got, st := served(t, f), f.Status(); got != "second" || st.Reloads != 1 || st.Subject != "CN=second" || st.LastError != "" {
			t.Fatalf("after a rotation: serves %s, status %+v", got, st)
		}

		testpki.WriteFile(t, certFile, []byte("-----BEGIN CERTIFICATE-----\ngarbage\n"))
		tick()
		tick()
		st := f.Status()
		if got := served(t, f); got != "second" || st.Failures != 1 || !strings.Contains(st.LastError, certFile) {
			t.Fatalf("after a garbage certificate: serves %s, status %+v", got, st)
		}
		if n := strings.Count(logs.String(), "TLS files refused"); n != 1 {
			t.Fatalf("refusal logged %d times:\n%s", n, logs.String())
		}

		third := ca.Client(t, "third")
		testpki.WriteFile(t, certFile, third.CertPEM) // its key not written yet
		tick()
		if st := f.Status(); served(t, f) != "second" || !strings.Contains(st.LastError, "private key does not match") {
			t.Fatalf("after a certificate without its key: status %+v", st)
		}
		testpki.WriteFile(t, keyFile, third.KeyPEM)
		tick()
		if st := f.Status(); served(t, f) != "third" || st.LastError != "" || st.Reloads != 2 {
			t.Fatalf("after the key arrived: status %+v", st)
		}

		// Certificates from testpki last a day; one that expired is not
		// taken.
		time.Sleep(25 * time.Hour)
		old := third.CertPEM
		testpki.WriteFile(t, certFile, append([]byte("\n"), old...))
		tick()
		if st := f.Status(); !strings.Contains(st.LastError, "expired") {
			t.Fatalf("an expired certificate: status %+v", st)
		}
	})
}

func TestLoadRefuses(t *testing.T) {
	dir := t.TempDir()
	ca := testpki.NewCA(t, "test CA")
	certFile, keyFile := leafFiles(t, ca, dir, "server")
	garbage := filepath.Join(dir, "garbage.pem")
	testpki.WriteFile(t, garbage, []byte("not PEM"))
	for _, tc := range []struct {
		name string
		cfg  Config
		want string
	}{
		{"no key", Config{CertFile: certFile}, "both required"},
		{"missing", Config{CertFile: filepath.Join(dir, "missing.crt"), KeyFile: keyFile}, "missing.crt"},
		{"garbage", Config{CertFile: garbage, KeyFile: keyFile}, garbage},
		{"swapped", Config{CertFile: keyFile, KeyFile: certFile}, "server.key"},
		{"client CA garbage", Config{CertFile: certFile, KeyFile: keyFile, ClientCAFile: garbage}, "client CA file " + garbage + " holds no PEM certificate"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := Load(tc.cfg)
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("error %v, want one containing %q", err, tc.want)
			}
		})
	}
}

// TestHandshakesAcrossRotation: over real TLS connections, a connection
// made before a rotation goes on; new ones get the new certificate; a
// client CA that changes admits the new CA's clients and refuses the old
// one's; a client without a certificate is refused.
func TestHandshakesAcrossRotation(t *testing.T) {
	dir := t.TempDir()
	ca := testpki.NewCA(t, "first CA")
	certFile, keyFile := ca.Server(t).Files(t, dir, "server")
	caFile := filepath.Join(dir, "ca.pem")
	testpki.WriteFile(t, caFile, ca.PEM)
	f, err := Load(Config{CertFile: certFile, KeyFile: keyFile, ClientCAFile: caFile, Logger: slog.New(slog.DiscardHandler)})
	if err != nil {
		t.Fatal(err)
	}
	ln, err := tls.Listen("tcp", "127.0.0.1:0", f.ServerConfig())
	if err != nil {
		t.Fatal(err)
	}
	var wg sync.WaitGroup
	defer func() { ln.Close(); wg.Wait() }()
	wg.Add(1)
	go func() {
		defer wg.Done()
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			wg.Add(1)
			go func() { defer wg.Done(); defer c.Close(); io.Copy(c, c) }()
		}
	}()
	other := testpki.NewCA(t, "second CA")
	roots := x509.NewCertPool()
	roots.AddCert(ca.Cert)
	roots.AddCert(other.Cert)
	dial := func(client *testpki.Leaf) (*tls.Conn, error) {
		cfg := &tls.Config{RootCAs: roots, ServerName: "localhost"}
		if client != nil {
			cfg.Certificates = []tls.Certificate{client.TLS(t)}
		}
		c, err := tls.Dial("tcp", ln.Addr().String(), cfg)
		if err != nil {
			return nil, err
		}
		// TLS 1.3 reports a refused client certificate on the first read.
		if _, err := c.Write([]byte("x")); err != nil {
			c.Close()
			return nil, err
		}
		if _, err := io.ReadFull(c, make([]byte, 1)); err != nil {
			c.Close()
			return nil, err
		}
		return c, nil
	}
	echo := func(c *tls.Conn) error {
		if _, err := c.Write([]byte("ping")); err != nil {
			return err
		}
		_, err := io.ReadFull(c, make([]byte, 4))
		return err
	}

	if c, err := dial(nil); err == nil {
		c.Close()
		t.Fatal("a client without a certificate was admitted")
	}
	before, err := dial(ca.Client(t, "orders"))
	if err != nil {
		t.Fatal(err)
	}
	defer before.Close()
	firstServer := before.ConnectionState().PeerCertificates[0].SerialNumber

	testpki.WriteFile(t, caFile, other.PEM)
	next := other.Server(t)
	testpki.WriteFile(t, certFile, next.CertPEM)
	testpki.WriteFile(t, keyFile, next.KeyPEM)
	f.check()
	if st := f.Status(); st.Reloads != 1 || st.LastError != "" {
		t.Fatalf("status %+v", st)
	}
	if err := echo(before); err != nil {
		t.Fatalf("a connection made before the rotation: %v", err)
	}
	if c, err := dial(ca.Client(t, "orders")); err == nil {
		c.Close()
		t.Fatal("a client of the replaced CA was admitted")
	}
	after, err := dial(other.Client(t, "orders"))
	if err != nil {
		t.Fatalf("a client of the new CA: %v", err)
	}
	defer after.Close()
	if got := after.ConnectionState().PeerCertificates[0].SerialNumber; got.Cmp(next.Cert.SerialNumber) != 0 || got.Cmp(firstServer) == 0 {
		t.Fatal("a new connection did not get the new server certificate")
	}
}

func TestIdentity(t *testing.T) {
	uri := func(s string) *url.URL {
		u, err := url.Parse(s)
		if err != nil {
			t.Fatal(err)
		}
		return u
	}
	for _, tc := range []struct {
		name string
		cert x509.Certificate
		want string
		err  string
	}{
		{"SPIFFE ID wins", x509.Certificate{Subject: pkix.Name{CommonName: "orders"}, URIs: []*url.URL{uri("https://example.com"), uri("spiffe://cluster.local/ns/shop/sa/orders")}}, "spiffe://cluster.local/ns/shop/sa/orders", ""},
		{"common name", x509.Certificate{Subject: pkix.Name{CommonName: "payments-0"}, URIs: []*url.URL{uri("https://example.com")}}, "payments-0", ""},
		{"two SPIFFE IDs", x509.Certificate{URIs: []*url.URL{uri("spiffe://a/x"), uri("spiffe://a/y")}}, "", "names 2 SPIFFE IDs"},
		{"nothing", x509.Certificate{}, "", "neither a SPIFFE ID nor"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got, err := Identity(&tc.cert)
			if got != tc.want || (err == nil) != (tc.err == "") || err != nil && !strings.Contains(err.Error(), tc.err) {
				t.Fatalf("Identity = %q, %v; want %q, error containing %q", got, err, tc.want, tc.err)
			}
		})
	}
}
