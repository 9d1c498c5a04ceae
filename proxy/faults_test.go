package proxy

import (
	"bufio"
	"bytes"
	"context"
	"crypto/sha256"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"runtime"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	dto "github.com/prometheus/client_model/go"
)

// counted is the value of a counter.
func counted(c prometheus.Counter) float64 {
	var m dto.Metric
	c.Write(&m)
	return m.GetCounter().GetValue()
}

// settle waits until cond holds, reporting what the last try said.
func settle(t *testing.T, what string, cond func() error) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for {
		err := cond()
		if err == nil {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s: %v", what, err)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// goroutinesBack checks that the goroutines started since baseline end.
func goroutinesBack(t *testing.T, baseline int) {
	t.Helper()
	settle(t, "goroutines back to their baseline", func() error {
		if n := runtime.NumGoroutine(); n > baseline {
			return fmt.Errorf("%d goroutines, %d before", n, baseline)
		}
		return nil
	})
}

// startSidecarServer starts a Sidecar and returns it with its base URL;
// it stops with the test.
func startSidecarServer(t *testing.T, cfg SidecarConfig) (*Sidecar, string) {
	t.Helper()
	s, err := NewSidecar(cfg)
	if err != nil {
		t.Fatal(err)
	}
	return s, serve(t, s)
}

func metricsConfig(t *testing.T) (Config, *Metrics) {
	reg := prometheus.NewRegistry()
	m, err := NewMetrics(reg)
	if err != nil {
		t.Fatal(err)
	}
	cfg := testConfig(t)
	cfg.Metrics = m
	return cfg, m
}

// TestSidecarBodyOverMaximum: a body over MaxRequestBody is refused with
// 413 and a JSON body that says the maximum, HTTP/1.1 and HTTP/2, known
// length or not; it never reaches the upstream whole.
func TestSidecarBodyOverMaximum(t *testing.T) {
	up := newH2CUpstream(t, nil)
	cfg, m := metricsConfig(t)
	base := startSidecar(t, SidecarConfig{Config: cfg, Upstream: up.URL, MaxRequestBody: 1 << 20})
	body := bytes.Repeat([]byte("x"), 2<<20)
	for _, tc := range []struct {
		name   string
		client *http.Client
		length bool
	}{
		{"http1 content-length", http.DefaultClient, true},
		{"http1 chunked", http.DefaultClient, false},
		{"h2c content-length", h2cClient(), true},
		{"h2c unknown length", h2cClient(), false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var r io.Reader = bytes.NewReader(body)
			if !tc.length {
				r = io.MultiReader(r) // hides the length
			}
			req, _ := http.NewRequest("PUT", base+"/orders/1", r)
			req.Header.Set("Authorization", "Bearer "+validToken())
			resp, err := tc.client.Do(req)
			if err != nil {
				t.Fatal(err)
			}
			got, _ := io.ReadAll(resp.Body)
			resp.Body.Close()
			if resp.StatusCode != 413 || !strings.Contains(string(got), "larger than 1048576 bytes") || resp.Header.Get("Content-Type") != "application/json" {
				t.Errorf("got %d %q", resp.StatusCode, got)
			}
			if _, seen := up.lastRequest(); len(seen) == len(body) {
				t.Error("the upstream got the whole body")
			}
		})
	}
	if n := counted(m.requests[entryProxy][codeBodyTooLarge]); n != 4 {
		t.Errorf("body_too_large counted %v times, want 4", n)
	}
}

// patternReader yields n bytes of a fixed pattern without holding them.
type patternReader struct{ left, at int64 }

func (p *patternReader) Read(b []byte) (int, error) {
	if p.left == 0 {
		return 0, io.EOF
	}
	n := min(int64(len(b)), p.left)
	for i := range n {
		b[i] = byte('a' + (p.at+i)%251%26)
	}
	p.left -= n
	p.at += n
	return int(n), nil
}

// TestSidecarStreams64MiB sends 64 MiB up and 64 MiB down through the
// sidecar, over HTTP/1.1 and h2c, and checks that the process allocated
// far less than that meanwhile: the bodies were streamed, not held.
func TestSidecarStreams64MiB(t *testing.T) {
	const size = 64 << 20
	want := sha256.New()
	io.Copy(want, &patternReader{left: size})
	wantSum := want.Sum(nil)
	var upSum atomic.Value
	up := newH2CUpstream(t, nil)
	up.Config.Handler = http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.Method == "PUT" {
			h := sha256.New()
			io.Copy(h, r.Body)
			upSum.Store(h.Sum(nil))
			return
		}
		w.Header().Set("Content-Length", fmt.Sprint(size))
		io.Copy(w, &patternReader{left: size})
	})
	cfg, m := metricsConfig(t)
	base := startSidecar(t, SidecarConfig{Config: cfg, Upstream: up.URL})
	for _, tc := range []struct {
		name   string
		client *http.Client
	}{{"http1", &http.Client{}}, {"h2c", h2cClient()}} {
		t.Run(tc.name, func(t *testing.T) {
			runtime.GC()
			var before runtime.MemStats
			runtime.ReadMemStats(&before)

			req, _ := http.NewRequest("PUT", base+"/orders/up", &patternReader{left: size})
			req.Header.Set("Authorization", "Bearer "+validToken())
			resp, err := tc.client.Do(req)
			if err != nil {
				t.Fatal(err)
			}
			resp.Body.Close()
			if resp.StatusCode != 200 || !bytes.Equal(upSum.Load().([]byte), wantSum) {
				t.Fatalf("upload: %d, upstream's digest differs", resp.StatusCode)
			}
			req, _ = http.NewRequest("GET", base+"/orders/down", nil)
			req.Header.Set("Authorization", "Bearer "+validToken())
			resp, err = tc.client.Do(req)
			if err != nil {
				t.Fatal(err)
			}
			h := sha256.New()
			n, err := io.Copy(h, resp.Body)
			resp.Body.Close()
			if err != nil || n != size || !bytes.Equal(h.Sum(nil), wantSum) {
				t.Fatalf("download: %d bytes, %v", n, err)
			}

			var after runtime.MemStats
			runtime.ReadMemStats(&after)
			// Sidecar, client and upstream together: a body held whole
			// would be 64 MiB on its own.
			if grown := after.TotalAlloc - before.TotalAlloc; grown > 24<<20 && !raceEnabled {
				t.Errorf("%d MiB allocated while moving 128 MiB", grown>>20)
			}
			if n := counted(m.broken); n != 0 {
				t.Errorf("%v streams counted as broken", n)
			}
		})
	}
}

// TestSidecarUpstreamResetMidStream: an upstream that dies in the middle
// of its answer ends the caller's too, is counted, and leaves no
// goroutine behind.
func TestSidecarUpstreamResetMidStream(t *testing.T) {
	up := newUpstream(t, func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path != "/orders/1" {
			return
		}
		w.Header().Set("Content-Length", fmt.Sprint(1<<20))
		w.WriteHeader(200)
		w.Write(bytes.Repeat([]byte("y"), 100<<10))
		w.(http.Flusher).Flush()
		conn, _, _ := http.NewResponseController(w).Hijack()
		conn.(*net.TCPConn).SetLinger(0)
		conn.Close() // a reset
	})
	cfg, m := metricsConfig(t)
	base := startSidecar(t, SidecarConfig{Config: cfg, Upstream: up.URL})
	// The pools started: what stays is the baseline.
	if resp := get(t, base, "/public/x"); resp.status != 200 {
		t.Fatal(resp.status)
	}
	baseline := runtime.NumGoroutine()
	client := &http.Client{Transport: &http.Transport{DisableKeepAlives: true}}
	for range 3 {
		req, _ := http.NewRequest("GET", base+"/orders/1", nil)
		req.Header.Set("Authorization", "Bearer "+validToken())
		resp, err := client.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		n, err := io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
		if resp.StatusCode != 200 || err == nil || n >= 1<<20 {
			t.Fatalf("status %d, %d bytes, %v: want a truncated body", resp.StatusCode, n, err)
		}
	}
	settle(t, "broken streams counted", func() error {
		if n := counted(m.broken); n != 3 {
			return fmt.Errorf("%v", n)
		}
		return nil
	})
	goroutinesBack(t, baseline)
}

// TestSidecarMalformedHTTP2: garbage after the preface ends the
// connection (GOAWAY, or a close), is counted, and leaves no goroutine
// behind; the sidecar serves on.
func TestSidecarMalformedHTTP2(t *testing.T) {
	up := newH2CUpstream(t, nil)
	cfg, m := metricsConfig(t)
	base := startSidecar(t, SidecarConfig{Config: cfg, Upstream: up.URL})
	// The pools of both servers started: what stays is the baseline.
	for _, c := range []*http.Client{http.DefaultClient, h2cClient()} {
		req, _ := http.NewRequest("GET", base+"/public/x", nil)
		resp, err := c.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		c.CloseIdleConnections()
	}
	baseline := runtime.NumGoroutine()
	for _, garbage := range []string{
		"\x00\x00\x04\x08\x00\x00\x00\x00\x00\x00\x00\x00\x00",                             // WINDOW_UPDATE first, of increment 0
		"\x00\x00\x06\x04\x00\x00\x00\x00\x00\x00\x02\x00\x00\x00\x07",                     // SETTINGS with ENABLE_PUSH 7
		"\x00\x00\x00\x04\x00\x00\x00\x00\x00\x00\x00\x05\x01\x05\x00\x00\x00\x01\xffhell", // HEADERS whose block is no HPACK
		"\x00\x00\x00\x04\x00\x00\x00\x00\x00\x00\x00\x01\x00\x05\x00\x00\x00\x02x",        // DATA on an idle stream
	} {
		conn, err := net.Dial("tcp", strings.TrimPrefix(base, "http://"))
		if err != nil {
			t.Fatal(err)
		}
		conn.SetDeadline(time.Now().Add(10 * time.Second))
		io.WriteString(conn, clientPreface+prefaceRest+garbage)
		// Frames until a GOAWAY (type 7) or the end.
		br := bufio.NewReader(conn)
		for {
			var head [9]byte
			if _, err := io.ReadFull(br, head[:]); err != nil {
				if errors.Is(err, os.ErrDeadlineExceeded) {
					t.Errorf("%q: the connection stayed open", garbage)
				}
				break
			}
			if _, err := br.Discard(int(head[0])<<16 | int(head[1])<<8 | int(head[2])); err != nil || head[3] == 7 {
				break
			}
		}
		conn.Close()
	}
	settle(t, "HTTP/2 errors counted", func() error {
		ch := make(chan prometheus.Metric, 16)
		m.h2errors.Collect(ch)
		if len(ch) == 0 {
			return errors.New("none")
		}
		return nil
	})
	goroutinesBack(t, baseline)
	if resp := get(t, base, "/orders/1", bearer(validToken())); resp.status != 200 {
		t.Errorf("after the garbage: %d", resp.status)
	}
}

// TestSidecarRetries: with retries, an idempotent request is sent again
// only when no connection could be made.
func TestSidecarRetries(t *testing.T) {
	ln := listen(t)
	refused := ln.Addr().String()
	ln.Close()
	s, base := startSidecarServer(t, SidecarConfig{Config: testConfig(t), Upstream: "http://" + refused, UpstreamRetries: 2})
	var dials atomic.Int32
	s.upstream.client.Dial = func(addr string) (net.Conn, error) {
		dials.Add(1)
		return net.Dial("tcp", addr)
	}
	for _, tc := range []struct {
		method string
		dials  int32
	}{{"GET", 3}, {"POST", 1}, {"DELETE", 3}} {
		dials.Store(0)
		resp := rawRequest(t, base, tc.method+" /orders/1 HTTP/1.1\nHost: svc\nConnection: close\nContent-Length: 0\n"+bearer(validToken())+"\n\n")
		if resp.status != 502 || dials.Load() != tc.dials {
			t.Errorf("%s: %d after %d dials, want 502 after %d", tc.method, resp.status, dials.Load(), tc.dials)
		}
	}

	// A connection made is never tried again.
	addr, accepted := closingUpstream(t)
	_, base = startSidecarServer(t, SidecarConfig{Config: testConfig(t), Upstream: addr, UpstreamRetries: 2})
	if resp := get(t, base, "/orders/1", bearer(validToken())); resp.status != 502 || accepted.Load() != 1 {
		t.Errorf("closing upstream: %d after %d connections", resp.status, accepted.Load())
	}
}

// TestSidecarForwardedModes: the caller's forwarded fields are kept and
// appended to only from a trusted proxy, in both modes; none leaves them.
func TestSidecarForwardedModes(t *testing.T) {
	up := newUpstream(t, nil)
	_, loopback, _ := net.ParseCIDR("127.0.0.0/8")
	_, elsewhere, _ := net.ParseCIDR("10.0.0.0/8")
	fields := []string{"X-Forwarded-For: 6.6.6.6", "X-Forwarded-Proto: https", "X-Forwarded-Host: shop.example", "Forwarded: for=6.6.6.6;proto=https"}
	for _, tc := range []struct {
		name    string
		mode    string
		trusted []*net.IPNet
		want    map[string]string
	}{
		{"xff, untrusted", ForwardedXFF, []*net.IPNet{elsewhere}, map[string]string{
			"X-Forwarded-For": "127.0.0.1", "X-Forwarded-Proto": "http", "X-Forwarded-Host": "svc", "Forwarded": ""}},
		{"xff, trusted", ForwardedXFF, []*net.IPNet{loopback}, map[string]string{
			"X-Forwarded-For": "6.6.6.6, 127.0.0.1", "X-Forwarded-Proto": "https", "X-Forwarded-Host": "shop.example", "Forwarded": "for=6.6.6.6;proto=https"}},
		{"rfc7239, untrusted", ForwardedRFC7239, nil, map[string]string{
			"Forwarded": `for=127.0.0.1;proto=http;host="svc"`, "X-Forwarded-For": "", "X-Forwarded-Proto": "", "X-Forwarded-Host": ""}},
		{"rfc7239, trusted", ForwardedRFC7239, []*net.IPNet{loopback}, map[string]string{
			"Forwarded": `for=6.6.6.6;proto=https, for=127.0.0.1;proto=http;host="svc"`, "X-Forwarded-For": "6.6.6.6"}},
		{"none", ForwardedNone, nil, map[string]string{
			"X-Forwarded-For": "6.6.6.6", "X-Forwarded-Host": "shop.example", "Forwarded": "for=6.6.6.6;proto=https"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			base := startSidecar(t, SidecarConfig{Config: testConfig(t), Upstream: up.URL, ForwardedHeaders: tc.mode, TrustedProxies: tc.trusted})
			if resp := get(t, base, "/orders/1", append(fields, bearer(validToken()))...); resp.status != 200 {
				t.Fatal(resp.status)
			}
			r, _ := up.lastRequest()
			for name, v := range tc.want {
				if got := strings.Join(r.Header.Values(name), ","); got != v {
					t.Errorf("%s: %q, want %q", name, got, v)
				}
			}
		})
	}
	if _, err := NewSidecar(SidecarConfig{Config: testConfig(t), Upstream: up.URL, ForwardedHeaders: "x-real-ip"}); err == nil {
		t.Error("an unknown mode was accepted")
	}
}

// TestSidecarDrainAndShutdown: while draining, requests are served and
// each answer closes its connection; Shutdown then waits for a WebSocket
// tunnel until its context ends, closes it, and every goroutine returns.
func TestSidecarDrainAndShutdown(t *testing.T) {
	up, _ := newEchoUpstream(t)
	baseline := runtime.NumGoroutine()
	s, base, served := runSidecar(t, SidecarConfig{Config: testConfig(t), Upstream: up.URL})

	conn, br, resp := dialUpgrade(t, base, bearer(validToken()))
	if resp.StatusCode != 101 {
		t.Fatalf("upgrade: %d", resp.StatusCode)
	}
	s.Drain()
	// A keep-alive request is served, and told it was the last.
	c, err := net.Dial("tcp", strings.TrimPrefix(base, "http://"))
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	io.WriteString(c, "GET /orders/1 HTTP/1.1\r\nHost: svc\r\n"+bearer(validToken())+"\r\n\r\n")
	r, err := http.ReadResponse(bufio.NewReader(c), nil)
	// (The echo upstream answers 426 to all but upgrades.)
	if err != nil || r.StatusCode != 426 || !r.Close {
		t.Fatalf("while draining: %v %v", r, err)
	}
	// The tunnel still works.
	io.WriteString(conn, "ping")
	got := make([]byte, 4)
	if _, err := io.ReadFull(br, got); err != nil || string(got) != "ping" {
		t.Fatalf("tunnel while draining: %q %v", got, err)
	}

	ctx, cancel := context.WithTimeout(context.Background(), 300*time.Millisecond)
	defer cancel()
	if err := s.Shutdown(ctx); !errors.Is(err, context.DeadlineExceeded) {
		t.Errorf("Shutdown with a tunnel open: %v, want the deadline", err)
	}
	if err := <-served; err != nil {
		t.Errorf("Serve: %v", err)
	}
	if _, err := io.ReadAll(br); err != nil {
		t.Errorf("the tunnel was not closed cleanly: %v", err)
	}
	conn.Close()
	c.Close()
	goroutinesBack(t, baseline)
}
