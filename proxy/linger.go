package proxy

import (
	"crypto/tls"
	"io"
	"net"
	"sync"
	"sync/atomic"
	"time"

	"github.com/valyala/fasthttp"
)

// A request refused before its body was read leaves the body on the
// connection. Closing a connection with unread data makes the kernel send
// a reset, which can reach the caller before it has read the refusal: a
// client uploading with an expired token would see "connection reset"
// instead of 401. So, as RFC 9112 §9.6 asks of a server closing a
// connection, what is left of a small body is read and dropped, keeping
// the connection; beyond that the connection is closed in two steps: its
// sending half first, then, after the caller had time to read the answer,
// the rest (Go's net/http does the same).
const (
	// discardLimit is how much of a body left unread is read and
	// dropped to keep the connection.
	discardLimit = 256 << 10
	// lingerTime bounds how long a connection closing with a body still
	// arriving reads and drops it before it is closed.
	lingerTime = 500 * time.Millisecond
)

// finishBody settles the body of a request the handler has answered:
// the rest of it, if any, is dropped when small, or else the connection
// closes after the answer, lingering.
func finishBody(ctx *fasthttp.RequestCtx) {
	req := &ctx.Request
	if !req.IsBodyStream() || ctx.Hijacked() {
		return
	}
	body := req.BodyStream()
	var buf [4 << 10]byte
	for read := 0; read <= discardLimit; {
		n, err := body.Read(buf[:])
		read += n
		if err == io.EOF {
			return
		}
		if err != nil {
			break
		}
	}
	ctx.SetConnectionClose()
	if lc := lingerOf(ctx.Conn()); lc != nil {
		lc.linger.Store(true)
	}
}

// lingerListener makes the connections it accepts lingerConns.
type lingerListener struct{ net.Listener }

func (l lingerListener) Accept() (net.Conn, error) {
	c, err := l.Listener.Accept()
	if err != nil {
		return nil, err
	}
	return &lingerConn{Conn: c}, nil
}

// lingerConn is an accepted connection whose Close, once linger is set,
// closes its sending half, reads and drops what still arrives for a
// while, and only then closes.
type lingerConn struct {
	net.Conn
	linger atomic.Bool
}

// lingerOf returns the lingerConn under c, a TLS connection's included.
func lingerOf(c net.Conn) *lingerConn {
	if tc, ok := c.(*tls.Conn); ok {
		c = tc.NetConn()
	}
	lc, _ := c.(*lingerConn)
	return lc
}

var lingerBufs = sync.Pool{New: func() any { return new([32 << 10]byte) }}

func (c *lingerConn) Close() error {
	if c.linger.Load() {
		if cw, ok := c.Conn.(interface{ CloseWrite() error }); ok {
			cw.CloseWrite()
		}
		c.Conn.SetReadDeadline(time.Now().Add(lingerTime))
		buf := lingerBufs.Get().(*[32 << 10]byte)
		for {
			if _, err := c.Conn.Read(buf[:]); err != nil {
				break // the caller's end, or lingerTime
			}
		}
		lingerBufs.Put(buf)
	}
	return c.Conn.Close()
}
