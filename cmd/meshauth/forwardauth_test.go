package main

import (
	"bufio"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/meshauth/meshauth/proxy"
)

// The addresses in the forward-auth configs of deploy/, which the tests
// replace with their own.
const (
	deploySidecar = "127.0.0.1:8000"
	deployApp     = "127.0.0.1:9000"
	deployListen  = "8080"
)

// frontProxy runs a front proxy with a config of deploy/ in front of
// sidecar and app, and returns its address.
type frontProxy struct {
	name  string
	start func(t *testing.T, sidecar, app string) string
}

var frontProxies = []frontProxy{
	{"nginx", startNginx},
	{"caddy", startCaddy},
}

// deployConfig reads a config of deploy/ with the tests' addresses put in.
func deployConfig(t *testing.T, path, sidecar, app, listen string) string {
	t.Helper()
	b, err := os.ReadFile(filepath.Join("..", "..", "deploy", path))
	if err != nil {
		t.Fatal(err)
	}
	s := strings.ReplaceAll(string(b), deploySidecar, sidecar)
	s = strings.ReplaceAll(s, deployApp, app)
	for _, form := range []string{"listen " + deployListen + ";", `":` + deployListen + `"`, ":" + deployListen + " {"} {
		s = strings.ReplaceAll(s, form, strings.ReplaceAll(form, deployListen, listen))
	}
	return s
}

// lookTool finds a front proxy's binary, or skips the test.
func lookTool(t *testing.T, name, debianPath, pkg string) string {
	t.Helper()
	if p, err := exec.LookPath(name); err == nil {
		return p
	}
	if _, err := os.Stat(debianPath); err == nil {
		return debianPath
	}
	t.Skipf("%s not installed (apt-get install %s)", name, pkg)
	return ""
}

// runTool runs a front proxy until the test ends and waits until addr
// answers.
func runTool(t *testing.T, cmd *exec.Cmd, addr string, log func() string) {
	t.Helper()
	var out strings.Builder
	cmd.Stdout, cmd.Stderr = &out, &out
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		cmd.Process.Kill()
		cmd.Wait()
	})
	deadline := time.Now().Add(15 * time.Second)
	for {
		c, err := net.Dial("tcp", addr)
		if err == nil {
			c.Close()
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s did not start: %v\n%s\n%s", cmd.Path, err, out.String(), log())
		}
		time.Sleep(50 * time.Millisecond)
	}
}

func startNginx(t *testing.T, sidecar, app string) string {
	nginx := lookTool(t, "nginx", "/usr/sbin/nginx", "nginx-light")
	dir := t.TempDir()
	listen := freeAddr(t)
	_, port, _ := net.SplitHostPort(listen)
	site := filepath.Join(dir, "meshauth.conf")
	if err := os.WriteFile(site, []byte(deployConfig(t, "nginx/meshauth-forward-auth.conf", sidecar, app, "127.0.0.1:"+port)), 0o600); err != nil {
		t.Fatal(err)
	}
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
  include %[2]s;
}
`, dir, site)
	confPath := filepath.Join(dir, "nginx.conf")
	if err := os.WriteFile(confPath, []byte(conf), 0o600); err != nil {
		t.Fatal(err)
	}
	runTool(t, exec.Command(nginx, "-p", dir, "-c", confPath, "-e", filepath.Join(dir, "error.log")), listen, func() string {
		b, _ := os.ReadFile(filepath.Join(dir, "error.log"))
		return string(b)
	})
	return listen
}

func startCaddy(t *testing.T, sidecar, app string) string {
	caddy := lookTool(t, "caddy", "/usr/bin/caddy", "caddy")
	dir := t.TempDir()
	listen := freeAddr(t)
	_, port, _ := net.SplitHostPort(listen)
	conf := "{\n\tadmin off\n\tauto_https off\n}\n" + deployConfig(t, "caddy/Caddyfile", sidecar, app, port)
	confPath := filepath.Join(dir, "Caddyfile")
	if err := os.WriteFile(confPath, []byte(conf), 0o600); err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(caddy, "run", "--config", confPath, "--adapter", "caddyfile")
	cmd.Env = append(os.Environ(), "HOME="+dir, "XDG_DATA_HOME="+dir, "XDG_CONFIG_HOME="+dir)
	runTool(t, cmd, listen, func() string { return "" })
	return listen
}

// identityFields are what the service may trust, from the policy of
// TestForwardAuthIntegrations.
var identityFields = []string{"X-Meshauth-Subject", "X-Meshauth-Client", "X-Meshauth-Scope", "X-Meshauth-Issuer", "X-Caller"}

// TestForwardAuthIntegrations puts each front proxy of deploy/ (real nginx
// and Caddy) in front of a service, with the sidecar's forward-auth
// deciding, and checks what reaches the service and what callers get: the
// identity fields from meshauth's answer only, never the caller's, and
// meshauth's refusals as it sent them.
func TestForwardAuthIntegrations(t *testing.T) {
	issuerURL := startIssuer(t)
	var mu sync.Mutex
	var seen http.Header
	var hits int
	service := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		mu.Lock()
		seen, hits = r.Header.Clone(), hits+1
		mu.Unlock()
		io.WriteString(w, "ok")
	}))
	defer service.Close()
	last := func() (http.Header, int) {
		mu.Lock()
		defer mu.Unlock()
		return seen, hits
	}

	// The sidecar here only answers forward-auth; its upstream is unused.
	f := sidecarFlags{upstream: service.URL, audience: "payments", listen: "127.0.0.1:0",
		forwardAuthPath: proxy.DefaultForwardAuthPath, upstreamTimeout: 5 * time.Second}
	f.trust = append(f.trust, issuerURL)
	policy := proxy.Policy{Routes: []proxy.Route{
		{PathPrefix: "/admin", Scopes: []string{"payments.admin"}},
		{PathPrefix: "/health", Public: true},
		{PathPrefix: "/charge", ClaimHeaders: []proxy.ClaimHeader{{Header: "X-Caller", Claim: "client_id"}}},
	}}
	sidecar, _ := startSidecar(t, &f, policy)
	good := clientToken(t, issuerURL, "orders", "payments.charge", "payments")
	forged := []string{"X-Meshauth-Scope: admin", "X-Meshauth-Client: root", "X-Meshauth-Subject: root", "X-Meshauth-Issuer: https://evil",
		"X-Caller: root", "X_Meshauth_Subject: root", "x-meshauth-scope: admin"}
	allowed := map[string]string{"X-Meshauth-Subject": "orders", "X-Meshauth-Client": "orders", "X-Meshauth-Scope": "payments.charge",
		"X-Meshauth-Issuer": issuerURL, "X-Caller": "orders"}

	tests := []struct {
		name      string
		target    string
		fields    []string
		status    int
		challenge string // WWW-Authenticate, exactly
		body      string // in the JSON body
		service   map[string]string
	}{
		{"valid token", "/charge", []string{"Authorization: Bearer " + good}, 200, "", "", allowed},
		{"valid token, forged identity", "/charge", append([]string{"Authorization: Bearer " + good}, forged...), 200, "", "", allowed},
		{"public route, forged identity", "/health", forged, 200, "", "", map[string]string{}},
		{"no token", "/charge", nil, 401, `Bearer realm="meshauth"`, `"unauthorized"`, nil},
		{"garbage token", "/charge", []string{"Authorization: Bearer abc.def.ghi"}, 401,
			`Bearer realm="meshauth", error="invalid_token", error_description="malformed"`, `"invalid_token"`, nil},
		{"missing scope", "/admin/users", []string{"Authorization: Bearer " + good}, 403,
			`Bearer realm="meshauth", error="insufficient_scope", scope="payments.admin"`, `"insufficient_scope"`, nil},
		{"token in the query", "/charge?access_token=x", nil, 400,
			`Bearer realm="meshauth", error="invalid_request", error_description="access_token in the query is not supported"`, `"invalid_request"`, nil},
	}
	for _, fp := range frontProxies {
		t.Run(fp.name, func(t *testing.T) {
			front := fp.start(t, sidecar, strings.TrimPrefix(service.URL, "http://"))
			for _, tc := range tests {
				t.Run(tc.name, func(t *testing.T) {
					_, before := last()
					resp := rawGet(t, front, tc.target, tc.fields)
					_, after := last()
					if resp.status != tc.status {
						t.Fatalf("status %d, want %d: %s", resp.status, tc.status, resp.body)
					}
					if reached := after != before; reached != (tc.status == 200) {
						t.Fatalf("reached the service: %v", reached)
					}
					if tc.status != 200 {
						if got := resp.header.Values("WWW-Authenticate"); len(got) != 1 || got[0] != tc.challenge {
							t.Errorf("WWW-Authenticate %q, want %q", got, tc.challenge)
						}
						if ct := resp.header.Get("Content-Type"); ct != "application/json" || !strings.Contains(resp.body, tc.body) {
							t.Errorf("body %s %q, want meshauth's JSON with %s", ct, resp.body, tc.body)
						}
						for _, name := range identityFields {
							if v := resp.header.Get(name); v != "" {
								t.Errorf("the refusal carries %s: %q", name, v)
							}
						}
						return
					}
					h, _ := last()
					for _, name := range identityFields {
						if got := strings.Join(h.Values(name), ","); got != tc.service[name] {
							t.Errorf("the service got %s: %q, want %q", name, got, tc.service[name])
						}
					}
					for name := range h {
						if strings.HasPrefix(strings.ToLower(name), "x_meshauth") {
							t.Errorf("the service got %s", name)
						}
					}
				})
			}
		})
	}
}

// rawGet sends a GET with the given fields, "Name: value", exactly as
// written.
func rawGet(t *testing.T, addr, target string, fields []string) struct {
	status int
	header http.Header
	body   string
} {
	t.Helper()
	conn, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	conn.SetDeadline(time.Now().Add(10 * time.Second))
	req := "GET " + target + " HTTP/1.1\r\nHost: app.example\r\nConnection: close\r\n"
	for _, f := range fields {
		req += f + "\r\n"
	}
	io.WriteString(conn, req+"\r\n")
	resp, err := http.ReadResponse(bufio.NewReader(conn), nil)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(resp.Body)
	return struct {
		status int
		header http.Header
		body   string
	}{resp.StatusCode, resp.Header, string(body)}
}
