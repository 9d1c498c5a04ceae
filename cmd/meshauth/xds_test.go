package main

import (
	"context"
	"io"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/meshauth/meshauth/internal/testpki"
)

// TestXDSRefusesBadStarts: meshauth xds does not start on a config it
// cannot serve, and says why in one line.
func TestXDSRefusesBadStarts(t *testing.T) {
	dir := t.TempDir()
	bad := filepath.Join(dir, "bad.yaml")
	if err := os.WriteFile(bad, []byte("listen: 127.0.0.1:0\nnodes:\n  - node: a\n    service: a\n    listen: 0.0.0.0:1\n    upstreams: 127.0.0.1:2\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	good := filepath.Join(dir, "good.yaml")
	if err := os.WriteFile(good, []byte("listen: 127.0.0.1:0\nadmin-listen: ''\n"+xdsTestConfig+"  - cluster: billing\n    service: billing\n    listen: 0.0.0.0:1\n    upstream: a:1\n    ext_authz: a:2\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	ca := testpki.NewCA(t, "CA")
	certFile, keyFile := ca.Server(t).Files(t, dir, "xds")
	caFile := filepath.Join(dir, "ca.pem")
	testpki.WriteFile(t, caFile, ca.PEM)
	for _, tc := range []struct {
		args []string
		want string
	}{
		{nil, "--config is required"},
		{[]string{"--config", bad}, bad + `: line 6: nodes[0].upstreams: unknown key "upstreams"`},
		{[]string{"--config", bad, "--tls-cert-file", "x.pem"}, "give both --tls-cert-file and --tls-key-file"},
		{[]string{"--config", filepath.Join(dir, "missing.yaml")}, "missing.yaml"},
		{[]string{"--config", good, "--tls-client-ca-file", caFile}, "--tls-client-ca-file needs TLS"},
		{[]string{"--config", good, "--tls-cert-file", certFile, "--tls-key-file", caFile}, "xDS TLS: tls: certificate " + certFile + " and key " + caFile},
		{[]string{"--config", good, "--tls-cert-file", certFile, "--tls-key-file", keyFile, "--tls-client-ca-file", caFile}, good + ": line 16: nodes[2].identities: required"},
		{[]string{"--config", good, "--grpc-max-streams", "0"}, "--grpc-max-streams must be positive"},
	} {
		err := run(context.Background(), append([]string{"xds"}, tc.args...), io.Discard, io.Discard)
		if err == nil || !strings.Contains(err.Error(), tc.want) || strings.Contains(err.Error(), "\n") {
			t.Errorf("xds %v: error %v, want one line containing %q", tc.args, err, tc.want)
		}
	}
}
