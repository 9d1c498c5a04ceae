package proxy

import (
	"bufio"
	"bytes"
	"fmt"
	"io"
	"net"
	"net/http"
	"strings"
	"testing"
	"time"
)

// TestRefusedBodyAnsweredCleanly: a caller uploading a body the sidecar
// refuses (no valid token, or over the maximum) reads the refusal, not a
// connection reset, however large the body.
func TestRefusedBodyAnsweredCleanly(t *testing.T) {
	up := newUpstream(t, nil)
	base := startSidecar(t, SidecarConfig{Config: testConfig(t), Upstream: up.URL, MaxRequestBody: 1 << 20})
	body := bytes.Repeat([]byte("x"), 8<<20)
	for _, tc := range []struct {
		name, authorization string
		status              int
	}{
		{"invalid token", "Bearer garbage", 401},
		{"over the maximum", "Bearer " + validToken(), 413},
	} {
		t.Run(tc.name, func(t *testing.T) {
			for i := range 20 {
				req, _ := http.NewRequest("PUT", base+"/orders/1", bytes.NewReader(body))
				req.Header.Set("Authorization", tc.authorization)
				resp, err := http.DefaultClient.Do(req)
				if err != nil {
					t.Fatalf("upload %d: %v", i, err)
				}
				io.Copy(io.Discard, resp.Body)
				resp.Body.Close()
				if resp.StatusCode != tc.status {
					t.Fatalf("upload %d: %d, want %d", i, resp.StatusCode, tc.status)
				}
			}
		})
	}
}

// TestRefusedSmallBodyKeepsConnection: the rest of a small refused body
// is read and dropped, so the connection serves the next request instead
// of parsing the body as one.
func TestRefusedSmallBodyKeepsConnection(t *testing.T) {
	up := newUpstream(t, nil)
	base := startSidecar(t, SidecarConfig{Config: testConfig(t), Upstream: up.URL})
	conn, err := net.Dial("tcp", strings.TrimPrefix(base, "http://"))
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	conn.SetDeadline(time.Now().Add(10 * time.Second))
	br := bufio.NewReader(conn)
	body := strings.Repeat("x", 100<<10) // beyond what is read before the handler runs
	fmt.Fprintf(conn, "PUT /orders/1 HTTP/1.1\r\nHost: svc\r\nAuthorization: Bearer garbage\r\nContent-Length: %d\r\n\r\n%s", len(body), body)
	resp, err := http.ReadResponse(br, nil)
	if err != nil {
		t.Fatal(err)
	}
	io.Copy(io.Discard, resp.Body)
	resp.Body.Close()
	if resp.StatusCode != 401 || resp.Close {
		t.Fatalf("refused upload: %d, close %v; want 401 on a kept connection", resp.StatusCode, resp.Close)
	}
	fmt.Fprintf(conn, "GET /orders/1 HTTP/1.1\r\nHost: svc\r\nAuthorization: Bearer %s\r\n\r\n", validToken())
	if resp, err = http.ReadResponse(br, nil); err != nil {
		t.Fatalf("next request on the connection: %v", err)
	}
	resp.Body.Close()
	if resp.StatusCode != 200 {
		t.Fatalf("next request on the connection: %d, want 200", resp.StatusCode)
	}
}
