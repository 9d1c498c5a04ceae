package proxy

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"sync"
	"sync/atomic"
	"time"

	"github.com/valyala/fasthttp"
)

// bodyPrefetch is how much of a request body the server reads before the
// handler runs; the rest streams.
const bodyPrefetch = 16 << 10

// proxyServer serves a proxy's listener: HTTP/1.x through fasthttp and,
// when h2 is set, the connections that open with the HTTP/2 preface (h2c
// with prior knowledge, RFC 9113 §3.3) through net/http's HTTP/2 server.
// fasthttp parses the preface as a request "PRI * HTTP/2.0", which is
// taken over before any policy runs: HTTP/1.1 pays one comparison.
//
// It owns what fasthttp lets go of, the connections handed to HTTP/2 and
// those hijacked for tunnels, so that Shutdown finishes them too.
type proxyServer struct {
	fast     *fasthttp.Server
	handler  fasthttp.RequestHandler
	h2       *http.Server // nil without HTTP/2
	h2conns  *connQueue
	conns    *connTracker
	draining atomic.Bool
	log      *slog.Logger
}

// newProxyServer returns the server of a proxy entry point h; h2, if not
// nil, serves its HTTP/2 requests. conns is its forwarders'.
func newProxyServer(h fasthttp.RequestHandler, h2 http.Handler, conns *connTracker, log *slog.Logger) *proxyServer {
	s := &proxyServer{handler: h, conns: conns, log: log}
	s.fast = newServer(s.serve, log)
	// Bodies are streamed: what is read before the handler runs is a
	// prefetch, not a limit (the forwarder enforces the maximum).
	s.fast.StreamRequestBody = true
	s.fast.MaxRequestBodySize = bodyPrefetch
	// A streamed answer renews the caller's write deadline as it goes
	// (deadlineConn): a fixed one would cut long streams.
	s.fast.WriteTimeout = 0
	// Hijacked connections are this server's to close, and fasthttp
	// recycles none of their buffers while they are in use.
	s.fast.KeepHijackedConns = true
	if h2 != nil {
		s.h2conns = newConnQueue()
		s.h2 = &http.Server{
			Handler:           h2,
			ReadHeaderTimeout: s.fast.ReadTimeout,
			IdleTimeout:       s.fast.IdleTimeout,
			ErrorLog:          slog.NewLogLogger(log.Handler(), slog.LevelDebug),
			HTTP2:             &http.HTTP2Config{},
		}
		s.h2.Protocols = new(http.Protocols)
		s.h2.Protocols.SetUnencryptedHTTP2(true)
	}
	return s
}

// Serve accepts connections on ln until Shutdown.
func (s *proxyServer) Serve(ln net.Listener) error {
	if s.h2 != nil {
		go s.h2.Serve(s.h2conns)
	}
	return s.fast.Serve(lingerListener{ln})
}

// Drain makes every answer the last of its connection (Connection: close,
// and for HTTP/2 a GOAWAY), while new connections are still accepted and
// served: callers move to other replicas before the listener closes.
func (s *proxyServer) Drain() { s.draining.Store(true) }

// Shutdown stops accepting connections, lets the requests in flight, the
// HTTP/2 streams and the tunnels finish until ctx is done, and then closes
// what remains.
func (s *proxyServer) Shutdown(ctx context.Context) error {
	s.conns.stopping.Store(true)
	errs := []error{s.fast.ShutdownWithContext(ctx)}
	if s.h2 != nil {
		// GOAWAY, then wait for the streams.
		if err := s.h2.Shutdown(ctx); err != nil {
			s.h2.Close()
			errs = append(errs, err)
		}
	}
	errs = append(errs, s.conns.wait(ctx))
	if err := errors.Join(errs...); err != nil {
		return fmt.Errorf("proxy: shutdown: %w", err)
	}
	return nil
}

var prefaceURI = []byte("*")

// serve runs the entry point, but for the HTTP/2 preface.
func (s *proxyServer) serve(ctx *fasthttp.RequestCtx) {
	h := &ctx.Request.Header
	if s.h2 != nil && string(h.Method()) == "PRI" && bytes.Equal(h.RequestURI(), prefaceURI) && string(h.Protocol()) == "HTTP/2.0" {
		s.handOverHTTP2(ctx)
		return
	}
	s.handler(ctx)
	finishBody(ctx)
	if s.draining.Load() {
		ctx.SetConnectionClose()
	}
}

// clientPreface is what fasthttp read of the HTTP/2 client preface (RFC
// 9113 §3.4) as a request, and prefaceRest what follows it.
const (
	clientPreface = "PRI * HTTP/2.0\r\n\r\n"
	prefaceRest   = "SM\r\n\r\n"
)

// handOverHTTP2 gives the connection of an HTTP/2 preface to the HTTP/2
// server, replaying what fasthttp read.
func (s *proxyServer) handOverHTTP2(ctx *fasthttp.RequestCtx) {
	ctx.HijackSetNoResponse(true)
	ctx.Hijack(func(c net.Conn) {
		// The HTTP/2 server owns c from here (KeepHijackedConns) and
		// tracks it for its Shutdown.
		hc := &handedConn{Conn: c, r: io.MultiReader(bytes.NewReader([]byte(clientPreface)), c)}
		if !s.h2conns.push(hc) {
			c.Close()
		}
	})
}

// handedConn is a connection handed to the HTTP/2 server, which reads the
// preface again.
type handedConn struct {
	net.Conn
	r io.Reader
}

func (c *handedConn) Read(p []byte) (int, error) { return c.r.Read(p) }

// connQueue is the listener of the HTTP/2 server: the connections handed
// over.
type connQueue struct {
	conns chan net.Conn
	done  chan struct{}
	once  sync.Once
}

func newConnQueue() *connQueue {
	return &connQueue{conns: make(chan net.Conn), done: make(chan struct{})}
}

func (q *connQueue) push(c net.Conn) bool {
	select {
	case q.conns <- c:
		return true
	case <-q.done:
		return false
	}
}

func (q *connQueue) Accept() (net.Conn, error) {
	select {
	case c := <-q.conns:
		return c, nil
	case <-q.done:
		return nil, net.ErrClosed
	}
}

func (q *connQueue) Close() error {
	q.once.Do(func() { close(q.done) })
	return nil
}

func (q *connQueue) Addr() net.Addr { return &net.TCPAddr{} }

// connTracker holds the connections a server's fasthttp no longer tracks,
// and says whether the server stops.
type connTracker struct {
	stopping atomic.Bool
	mu       sync.Mutex
	conns    map[io.Closer]struct{}
	wg       sync.WaitGroup
}

func newConnTracker() *connTracker {
	return &connTracker{conns: make(map[io.Closer]struct{})}
}

// add tracks c, unless the server stops.
func (t *connTracker) add(c io.Closer) bool {
	t.mu.Lock()
	defer t.mu.Unlock()
	if t.stopping.Load() {
		return false
	}
	t.conns[c] = struct{}{}
	t.wg.Add(1)
	return true
}

func (t *connTracker) done(c io.Closer) {
	t.mu.Lock()
	delete(t.conns, c)
	t.mu.Unlock()
	t.wg.Done()
}

// wait waits for the tracked connections to end, and closes them once ctx
// is done.
func (t *connTracker) wait(ctx context.Context) error {
	t.mu.Lock()
	t.stopping.Store(true)
	t.mu.Unlock()
	finished := make(chan struct{})
	go func() { t.wg.Wait(); close(finished) }()
	select {
	case <-finished:
		return nil
	case <-ctx.Done():
	}
	t.mu.Lock()
	for c := range t.conns {
		c.Close()
	}
	t.mu.Unlock()
	// Closed connections end their relays at once.
	select {
	case <-finished:
	case <-time.After(time.Second):
	}
	return ctx.Err()
}
