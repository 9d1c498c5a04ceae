package proxy

import (
	"bufio"
	"errors"
	"io"
	"net"
	"sync"
	"time"

	"github.com/valyala/fasthttp"
)

// This file holds the forwarders' HTTP/1.1 exchange with an upstream, in
// place of fasthttp.HostClient.Do, so that:
//
//   - a request is sent once: retries are the forwarder's, and only after
//     a connection failure, when nothing was sent (connectError);
//   - a response body is read into memory when small and of known length,
//     without allocating, and streamed to the caller otherwise, the
//     connection held until the caller has it all;
//   - a 101 answer to an upgrade hands the connection over for a tunnel;
//   - the timeout is an idle timeout, renewed by each read and write: it
//     bounds waiting for the upstream (a 504), not the length of a stream.
//     Each step of the upstream also renews the caller's connection, whose
//     body or answer is streaming meanwhile.
//
// It uses the HostClient's pool, dialer and buffers through the methods
// fasthttp exports for transports.

// smallBody is the largest response body read into memory before it is
// relayed; larger ones, and those of unknown length, are streamed.
const smallBody = 64 << 10

// connectError is a failure to obtain a connection to the upstream:
// nothing of the request was sent.
type connectError struct{ err error }

func (e *connectError) Error() string { return "connecting to the upstream: " + e.err.Error() }
func (e *connectError) Unwrap() error { return e.err }

// errUpgradeRefused is an upgrade the upstream answered 101 without being
// asked, or with another protocol than asked.
var errUpgradeRefused = errors.New("the upstream switched protocols unasked")

// upstreamConn is what fasthttp's pool hands out (its clientConn).
type upstreamConn interface{ Conn() net.Conn }

// roundTrip sends ctx's request to the upstream of hc and reads the answer
// into ctx's response. With upgrade, a 101 answer returns the tunnel to
// the upstream, which the caller must close.
//
// acquire, release and discard are the HostClient's methods for
// transports, as method expressions, which do not allocate.
func roundTrip[C upstreamConn](hc *fasthttp.HostClient, idle time.Duration, m *Metrics, ctx *fasthttp.RequestCtx, out *fasthttp.Request, upgrade bool,
	acquire func(*fasthttp.HostClient, time.Duration, bool) (C, error), release, discard func(*fasthttp.HostClient, C),
) (*tunnel, error) {
	resp := &ctx.Response
	cc, err := acquire(hc, 0, out.ConnectionClose())
	if err != nil {
		return nil, &connectError{err}
	}
	dc := acquireDeadlineConn(cc.Conn(), ctx.Conn(), idle)
	// More than the server read before the handler ran (its prefetch).
	dc.uploading = out.IsBodyStream() && (out.Header.ContentLength() < 0 || out.Header.ContentLength() > bodyPrefetch)
	bw := hc.AcquireWriter(dc)
	dc.renewWrite(time.Now())
	out.URI().DisablePathNormalizing = hc.DisablePathNormalizing
	err = out.Write(bw)
	if err == nil {
		err = bw.Flush()
	}
	hc.ReleaseWriter(bw)
	if err != nil {
		discard(hc, cc)
		releaseDeadlineConn(dc)
		return nil, err
	}

	br := hc.AcquireReader(dc)
	dc.renewRead(time.Now())
	resp.Reset()
	resp.Header.SetNoDefaultContentType(true) // the answer goes out as it came
	for {
		if err = resp.Header.Read(br); err != nil {
			break
		}
		// Interim answers (103 Early Hints) are not relayed: the final
		// one follows (RFC 9110 §15.2).
		if s := resp.StatusCode(); s >= 200 || s == fasthttp.StatusSwitchingProtocols {
			break
		}
	}
	status := resp.StatusCode()
	switch {
	case err != nil:
	case status == fasthttp.StatusSwitchingProtocols && !upgrade:
		err = errUpgradeRefused
	case status == fasthttp.StatusSwitchingProtocols:
		dc.clearDeadlines()
		return &tunnel{conn: dc, r: br, done: func() { hc.ReleaseReader(br); discard(hc, cc); releaseDeadlineConn(dc) }}, nil
	}
	if err != nil {
		hc.ReleaseReader(br)
		discard(hc, cc)
		releaseDeadlineConn(dc)
		return nil, err
	}
	size := resp.Header.ContentLength()
	if out.Header.IsHead() || status == fasthttp.StatusNoContent || status == fasthttp.StatusNotModified {
		resp.SkipBody = true
		size = 0
	}
	if size >= 0 && size <= smallBody {
		if !resp.SkipBody {
			err = resp.ReadBody(br, 0)
		}
		hc.ReleaseReader(br)
		if err != nil || resp.ConnectionClose() || out.ConnectionClose() {
			discard(hc, cc)
		} else {
			release(hc, cc)
		}
		releaseDeadlineConn(dc)
		return nil, err
	}

	// Streamed: the caller reads the body through a second Response that
	// decodes the framing, and closing it gives the connection back.
	framed := fasthttp.AcquireResponse()
	resp.Header.CopyTo(&framed.Header)
	framed.StreamBody = true
	if err := framed.ReadBody(br, 0); err != nil {
		fasthttp.ReleaseResponse(framed)
		hc.ReleaseReader(br)
		discard(hc, cc)
		releaseDeadlineConn(dc)
		return nil, err
	}
	// An answer that ends with its connection (-2) leaves none to reuse.
	reuse := !resp.ConnectionClose() && !out.ConnectionClose() && size != -2
	dc.streaming = true
	body := &streamedBody{metrics: m, framed: framed, left: int64(size), done: func(complete bool) {
		// The caller's connection serves its next request without the
		// stream's deadline.
		dc.peer.SetWriteDeadline(time.Time{})
		hc.ReleaseReader(br)
		if complete && reuse {
			release(hc, cc)
		} else {
			discard(hc, cc)
		}
		releaseDeadlineConn(dc)
	}}
	if size < 0 {
		size = -1 // chunked to the caller, whatever the upstream's framing
	}
	resp.SetBodyStream(body, size)
	return nil, nil
}

// streamedBody is a response body relayed as it arrives.
type streamedBody struct {
	metrics  *Metrics
	framed   *fasthttp.Response
	done     func(complete bool)
	left     int64 // bytes to come, if the length is known; else -1
	complete bool
	closed   bool
}

func (b *streamedBody) Read(p []byte) (int, error) {
	n, err := b.framed.BodyStream().Read(p)
	if b.left >= 0 {
		// The caller reads a body of known length to its end, and may
		// not read further to see io.EOF.
		b.left -= int64(n)
		b.complete = b.left == 0
	}
	if err == io.EOF {
		b.complete = true
	}
	return n, err
}

// Close gives the connection back, to the pool if the body was read to
// its end.
func (b *streamedBody) Close() error {
	if b.closed {
		return nil
	}
	b.closed = true
	b.framed.CloseBodyStream()
	fasthttp.ReleaseResponse(b.framed)
	b.done(b.complete)
	if !b.complete {
		b.metrics.streamBroken()
	}
	return nil
}

// deadlineConn is an upstream connection whose reads and writes renew its
// deadline and that of the caller's connection (peer), every idle/16 at
// most: waiting is bounded by idle, a stream that moves is not.
type deadlineConn struct {
	net.Conn
	peer      net.Conn
	uploading bool // the request's body is streaming from peer
	streaming bool // the answer's body is streaming to peer
	idle      time.Duration
	lastRead  time.Time
	lastWrite time.Time
}

var deadlineConns = sync.Pool{New: func() any { return new(deadlineConn) }}

func acquireDeadlineConn(c, peer net.Conn, idle time.Duration) *deadlineConn {
	dc := deadlineConns.Get().(*deadlineConn)
	dc.Conn, dc.peer, dc.idle = c, peer, idle
	return dc
}

func releaseDeadlineConn(dc *deadlineConn) {
	*dc = deadlineConn{}
	deadlineConns.Put(dc)
}

func (dc *deadlineConn) Read(p []byte) (int, error) {
	if now := time.Now(); now.Sub(dc.lastRead) > dc.idle/16 {
		dc.renewRead(now)
	}
	return dc.Conn.Read(p)
}

func (dc *deadlineConn) Write(p []byte) (int, error) {
	if now := time.Now(); now.Sub(dc.lastWrite) > dc.idle/16 {
		dc.renewWrite(now)
	}
	return dc.Conn.Write(p)
}

// renewRead renews the deadline of reading the upstream's answer and,
// once its body streams, of writing it to the caller.
func (dc *deadlineConn) renewRead(now time.Time) {
	dc.lastRead = now
	if dc.idle > 0 {
		dc.Conn.SetReadDeadline(now.Add(dc.idle))
		if dc.streaming && dc.peer != nil {
			dc.peer.SetWriteDeadline(now.Add(dc.idle))
		}
	}
}

// renewWrite renews the deadline of writing the request to the upstream
// and, while its body streams, of reading it from the caller.
func (dc *deadlineConn) renewWrite(now time.Time) {
	dc.lastWrite = now
	if dc.idle > 0 {
		dc.Conn.SetWriteDeadline(now.Add(dc.idle))
		if dc.uploading && dc.peer != nil {
			dc.peer.SetReadDeadline(now.Add(dc.idle))
		}
	}
}

// clearDeadlines leaves a tunnel without deadlines: it lasts as long as
// both sides keep it.
func (dc *deadlineConn) clearDeadlines() {
	dc.Conn.SetDeadline(time.Time{})
	dc.idle = 0
}

// tunnel is the upstream side of an upgraded connection.
type tunnel struct {
	conn *deadlineConn
	r    *bufio.Reader // what the upstream sent after its 101, buffered
	done func()
}
