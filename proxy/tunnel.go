package proxy

import (
	"bufio"
	"io"
	"net"
	"sync"

	"github.com/valyala/fasthttp"
)

// startTunnel answers an upgrade the upstream accepted (101) and relays
// the connection both ways for its lifetime (RFC 6455 §4; the token was
// judged once, at the upgrade).
func (u *forwarder) startTunnel(ctx *fasthttp.RequestCtx, t *tunnel) code {
	resp := &ctx.Response
	removeHopByHop(&resp.Header)
	resp.Header.Set(fasthttp.HeaderConnection, "Upgrade")
	resp.Header.Set(fasthttp.HeaderUpgrade, "websocket")
	tc := &tunnelConns{upstream: t}
	if !u.conns.add(tc) {
		t.done()
		ctx.Response.Reset()
		deny(ctx, answers[codeUpstream].verdict)
		ctx.SetConnectionClose()
		return codeUpstream
	}
	// The 101 is written here rather than by fasthttp, which would not
	// call the handler of a connection it closes.
	var head []byte
	head = resp.Header.AppendBytes(head)
	ctx.HijackSetNoResponse(true)
	ctx.Hijack(func(c net.Conn) {
		defer u.conns.done(tc)
		tc.setClient(c)
		if _, err := c.Write(head); err != nil {
			tc.Close()
			t.done()
			return
		}
		u.metrics.tunnelOpened()
		tc.relay()
		u.metrics.tunnelClosed()
	})
	return codeAllowed
}

// tunnelConns are the two connections of a tunnel.
type tunnelConns struct {
	upstream *tunnel
	mu       sync.Mutex
	client   net.Conn // fasthttp's hijacked connection: reads what it buffered
	raw      net.Conn // the client's own, to close and half-close
	closed   bool
}

func (tc *tunnelConns) setClient(c net.Conn) {
	tc.mu.Lock()
	defer tc.mu.Unlock()
	tc.client, tc.raw = c, c
	if r, ok := c.(interface{ UnsafeConn() net.Conn }); ok {
		tc.raw = r.UnsafeConn()
	}
	if tc.closed {
		tc.raw.Close()
	}
}

// relay copies both ways until both are done: a side that ends its
// sending half-closes the other's connection (TCP FIN), whose answers
// still flow back, as WebSocket's closing handshake needs.
func (tc *tunnelConns) relay() {
	up := tc.upstream
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		copyHalf(up.conn.Conn, tc.client)
	}()
	copyHalf(tc.raw, readerOnly{up.r})
	wg.Wait()
	tc.Close()
	up.done()
}

// copyHalf copies src to dst until src ends, then closes dst for writing;
// an error closes dst altogether, which ends the other direction too.
func copyHalf(dst net.Conn, src io.Reader) {
	_, err := io.Copy(dst, src)
	if cw, ok := dst.(interface{ CloseWrite() error }); ok && err == nil {
		if cw.CloseWrite() == nil {
			return
		}
	}
	dst.Close()
}

// readerOnly hides a reader's WriteTo, so that io.Copy reads into its own
// buffer and each chunk is written as it comes.
type readerOnly struct{ r *bufio.Reader }

func (r readerOnly) Read(p []byte) (int, error) { return r.r.Read(p) }

// Close ends the tunnel: both connections close, which ends the relay.
func (tc *tunnelConns) Close() error {
	tc.mu.Lock()
	defer tc.mu.Unlock()
	if tc.closed {
		return nil
	}
	tc.closed = true
	if tc.raw != nil {
		tc.raw.Close()
	}
	tc.upstream.conn.Conn.Close()
	return nil
}
