package main

import (
	"fmt"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/meshauth/meshauth/proxy"
)

// TestNginxAuthRequest puts Debian's nginx in front of a service with
// auth_request pointing at the sidecar's forward-auth endpoint, as the
// README documents, and checks what nginx lets through.
func TestNginxAuthRequest(t *testing.T) {
	nginx, err := exec.LookPath("nginx")
	if err != nil {
		if _, statErr := os.Stat("/usr/sbin/nginx"); statErr != nil {
			t.Skip("nginx not installed (apt-get install nginx-light; .ci/run installs it)")
		}
		nginx = "/usr/sbin/nginx"
	}
	issuerURL := startIssuer(t)
	var hits atomic.Int32
	var subject atomic.Value
	service := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		hits.Add(1)
		subject.Store(r.Header.Get("X-Meshauth-Subject"))
		w.Write([]byte("ok"))
	}))
	defer service.Close()

	// The sidecar here only answers forward-auth; its upstream is unused.
	f := sidecarFlags{upstream: service.URL, audience: "payments", listen: "127.0.0.1:0",
		forwardAuthPath: proxy.DefaultForwardAuthPath, upstreamTimeout: 5 * time.Second}
	f.trust = append(f.trust, issuerURL)
	policy := proxy.Policy{Routes: []proxy.Route{{PathPrefix: "/admin", Scopes: []string{"payments.admin"}}}}
	sidecar, _ := startSidecar(t, &f, policy)

	dir := t.TempDir()
	listen := freeAddr(t)
	conf := fmt.Sprintf(`daemon off;
master_process off;
worker_processes 1;
pid %[1]s/nginx.pid;
error_log %[1]s/error.log warn;
events { worker_connections 64; }
http {
  access_log off;
  client_body_temp_path %[1]s/body;
  proxy_temp_path %[1]s/proxy;
  fastcgi_temp_path %[1]s/fastcgi;
  uwsgi_temp_path %[1]s/uwsgi;
  scgi_temp_path %[1]s/scgi;
  server {
    listen %[2]s;
    location = /_meshauth {
      internal;
      proxy_pass http://%[3]s%[5]s;
      proxy_pass_request_body off;
      proxy_set_header Content-Length "";
      proxy_set_header X-Original-URI $request_uri;
      proxy_set_header X-Original-Method $request_method;
    }
    location / {
      auth_request /_meshauth;
      auth_request_set $meshauth_subject $upstream_http_x_meshauth_subject;
      proxy_set_header X-Meshauth-Subject $meshauth_subject;
      proxy_pass %[4]s;
    }
  }
}
`, dir, listen, sidecar, service.URL, proxy.DefaultForwardAuthPath)
	confPath := filepath.Join(dir, "nginx.conf")
	if err := os.WriteFile(confPath, []byte(conf), 0o600); err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(nginx, "-p", dir, "-c", confPath, "-e", filepath.Join(dir, "error.log"))
	cmd.Stderr = os.Stderr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	defer func() {
		cmd.Process.Kill()
		cmd.Wait()
	}()
	deadline := time.Now().Add(10 * time.Second)
	for {
		resp, err := http.Get("http://" + listen + "/")
		if err == nil {
			resp.Body.Close()
			break
		}
		if time.Now().After(deadline) {
			log, _ := os.ReadFile(filepath.Join(dir, "error.log"))
			t.Fatalf("nginx did not start: %v\n%s", err, log)
		}
		time.Sleep(50 * time.Millisecond)
	}

	good := clientToken(t, issuerURL, "orders", "payments.charge", "payments")
	tests := []struct {
		name    string
		path    string
		authz   string
		status  int
		reaches bool
	}{
		{"valid token", "/charge", "Bearer " + good, 200, true},
		{"no token", "/charge", "", 401, false},
		{"garbage token", "/charge", "Bearer abc.def.ghi", 401, false},
		{"missing scope", "/admin/users", "Bearer " + good, 403, false},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			before := hits.Load()
			req, _ := http.NewRequest(http.MethodGet, "http://"+listen+tc.path, nil)
			if tc.authz != "" {
				req.Header.Set("Authorization", tc.authz)
			}
			resp, err := http.DefaultClient.Do(req)
			if err != nil {
				t.Fatal(err)
			}
			resp.Body.Close()
			if resp.StatusCode != tc.status {
				t.Fatalf("status %d, want %d", resp.StatusCode, tc.status)
			}
			if (hits.Load() > before) != tc.reaches {
				t.Fatalf("reached the service = %v, want %v", hits.Load() > before, tc.reaches)
			}
			if tc.status == 401 && !strings.HasPrefix(resp.Header.Get("WWW-Authenticate"), "Bearer") {
				t.Errorf("WWW-Authenticate = %q", resp.Header.Get("WWW-Authenticate"))
			}
			if tc.reaches && subject.Load() != "orders" {
				t.Errorf("X-Meshauth-Subject = %v", subject.Load())
			}
		})
	}
}
