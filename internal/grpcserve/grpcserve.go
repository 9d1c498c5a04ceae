// Package grpcserve builds meshauth's gRPC servers (ext_authz in the
// sidecar, xDS) so that they hold under abuse: a bounded number of
// connections and of streams in flight, bounded messages and HTTP/2
// header lists, keepalive pings enforced, handshakes that must finish in
// time. What a flood costs is bounded by the limits, about max-streams ×
// max-recv-bytes of buffers, and what is refused is counted.
package grpcserve

import (
	"context"
	"flag"
	"fmt"
	"net"
	"sync"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/keepalive"
	"google.golang.org/grpc/peer"
	"google.golang.org/grpc/stats"
	"google.golang.org/grpc/status"
	"google.golang.org/grpc/tap"
)

// Limits bound a gRPC server.
type Limits struct {
	// MaxConnections is the number of connections open at once; a
	// connection beyond it is closed as soon as it is accepted. At most
	// half of MaxStreams.
	MaxConnections int
	// MaxStreams is the number of RPCs (streams) in flight at once over
	// all connections; a stream beyond it is refused with
	// RESOURCE_EXHAUSTED before anything of it is read. A connection's
	// first stream in flight always has room: the others share
	// MaxStreams − MaxConnections, so that a flood over many connections
	// cannot lock out a client that makes one call at a time.
	MaxStreams int
	// MaxConcurrentStreams is the HTTP/2 limit announced to each
	// connection (SETTINGS_MAX_CONCURRENT_STREAMS); a client that goes
	// beyond it has its streams reset.
	MaxConcurrentStreams int
	// MaxRecvBytes and MaxSendBytes bound a message; a larger one ends its
	// RPC with RESOURCE_EXHAUSTED.
	MaxRecvBytes, MaxSendBytes int
	// KeepaliveMinTime is the shortest interval between a client's
	// keepalive pings; a client that pings more often is disconnected.
	KeepaliveMinTime time.Duration
}

// ExtAuthzLimits are the default limits of the sidecar's ext_authz
// server: the Envoy beside it, a connection per worker thread, Checks of
// headers (Envoy bounds a request's header to 60 KiB by default). A flood
// costs at most some 256 × 256 KiB of buffers.
func ExtAuthzLimits() Limits {
	return Limits{
		MaxConnections: 64, MaxStreams: 256, MaxConcurrentStreams: 128,
		MaxRecvBytes: 256 << 10, MaxSendBytes: 1 << 20, KeepaliveMinTime: 10 * time.Second,
	}
}

// XDSLimits are the default limits of the xDS server: a connection and
// an ADS stream per Envoy, up to 1,024 Envoys per replica; large
// snapshots sent, small requests read. A flood costs at most some 2048 ×
// 128 KiB of buffers, and takes a client certificate in the authenticated
// mode.
func XDSLimits() Limits {
	return Limits{
		MaxConnections: 1024, MaxStreams: 2048, MaxConcurrentStreams: 16,
		MaxRecvBytes: 128 << 10, MaxSendBytes: 16 << 20, KeepaliveMinTime: 10 * time.Second,
	}
}

// Fixed settings, the same for every server.
const (
	// HandshakeTimeout bounds a connection's TLS handshake and HTTP/2
	// preface: a connection that sends nothing gives its slot back.
	HandshakeTimeout = 10 * time.Second
	// MaxHeaderListBytes bounds the HTTP/2 header list of a request
	// (gRPC metadata), which Envoy keeps small.
	MaxHeaderListBytes = 64 << 10
	// PingIdleAfter and PingTimeout: the server pings a connection idle
	// for PingIdleAfter and closes it if no answer comes within
	// PingTimeout, so a peer that vanished frees its streams.
	PingIdleAfter = time.Minute
	PingTimeout   = 20 * time.Second
	// Per-stream and per-connection HTTP/2 receive windows. Setting them
	// turns off gRPC's window growth (up to 16 MiB per connection by
	// default), so that a client cannot make a stream buffer more than
	// its window unless the server is reading a message that large.
	streamWindow = 64 << 10
	connWindow   = 256 << 10
)

// Register adds the flags that set l to fs, with l's values as their
// defaults; server names the server in their usage.
func (l *Limits) Register(fs *flag.FlagSet, server string) {
	fs.IntVar(&l.MaxConnections, "grpc-max-connections", l.MaxConnections, "connections the "+server+" keeps open at once; more are closed at once (counted)")
	fs.IntVar(&l.MaxStreams, "grpc-max-streams", l.MaxStreams, "RPCs in flight at once over all connections of the "+server+"; more are refused with RESOURCE_EXHAUSTED (counted)")
	fs.IntVar(&l.MaxConcurrentStreams, "grpc-max-concurrent-streams", l.MaxConcurrentStreams, "HTTP/2 streams a client may open at once on one connection of the "+server)
	fs.IntVar(&l.MaxRecvBytes, "grpc-max-recv-bytes", l.MaxRecvBytes, "largest message the "+server+" reads; a larger one ends its RPC with RESOURCE_EXHAUSTED (counted)")
	fs.IntVar(&l.MaxSendBytes, "grpc-max-send-bytes", l.MaxSendBytes, "largest message the "+server+" sends")
	fs.DurationVar(&l.KeepaliveMinTime, "grpc-keepalive-min-time", l.KeepaliveMinTime, "shortest interval between a client's keepalive pings to the "+server+"; a client pinging more often is disconnected")
}

// check reports the first limit that is not positive, by its flag.
func (l *Limits) check() error {
	for _, v := range []struct {
		flag string
		ok   bool
	}{
		{"grpc-max-connections", l.MaxConnections > 0},
		{"grpc-max-streams", l.MaxStreams > 0},
		{"grpc-max-concurrent-streams", l.MaxConcurrentStreams > 0},
		{"grpc-max-recv-bytes", l.MaxRecvBytes > 0},
		{"grpc-max-send-bytes", l.MaxSendBytes > 0},
		{"grpc-keepalive-min-time", l.KeepaliveMinTime > 0},
	} {
		if !v.ok {
			return fmt.Errorf("--%s must be positive", v.flag)
		}
	}
	// Every connection keeps room for one stream; the rest share at
	// least half.
	if l.MaxConnections > l.MaxStreams/2 {
		return fmt.Errorf("--grpc-max-connections (%d) must be at most half of --grpc-max-streams (%d)", l.MaxConnections, l.MaxStreams)
	}
	return nil
}

// Server is a gRPC server held to Limits. Register services on its
// embedded grpc.Server, then call Serve.
type Server struct {
	*grpc.Server
	limits Limits
	counts counts
}

type counts struct {
	conns, streams                                  atomic.Int64
	refusedConns, refusedStreams, oversizedMessages atomic.Uint64
}

// Stats are a Server's counts.
type Stats struct {
	Connections       int64  // open
	Streams           int64  // in flight
	RefusedConns      uint64 // closed beyond MaxConnections
	RefusedStreams    uint64 // refused beyond MaxStreams
	OversizedMessages uint64 // RPCs ended by a message over MaxRecvBytes or MaxSendBytes
}

// New returns a Server held to l. Its metrics, labelled server=name, go
// to reg: meshauth_grpc_connections, meshauth_grpc_streams (gauges),
// meshauth_grpc_connections_refused_total,
// meshauth_grpc_streams_refused_total and
// meshauth_grpc_oversized_messages_total. opts go after the limits
// (credentials, say).
func New(name string, l Limits, reg prometheus.Registerer, opts ...grpc.ServerOption) (*Server, error) {
	if err := l.check(); err != nil {
		return nil, err
	}
	s := &Server{limits: l}
	if err := s.register(name, reg); err != nil {
		return nil, err
	}
	s.Server = grpc.NewServer(append([]grpc.ServerOption{
		grpc.InTapHandle(s.admitStream),
		grpc.StatsHandler(oversized{&s.counts.oversizedMessages}),
		grpc.StreamInterceptor(reportRecvExhausted),
		grpc.MaxConcurrentStreams(uint32(l.MaxConcurrentStreams)),
		grpc.MaxRecvMsgSize(l.MaxRecvBytes),
		grpc.MaxSendMsgSize(l.MaxSendBytes),
		grpc.MaxHeaderListSize(MaxHeaderListBytes),
		grpc.InitialWindowSize(streamWindow),
		grpc.InitialConnWindowSize(connWindow),
		grpc.ConnectionTimeout(HandshakeTimeout),
		grpc.KeepaliveEnforcementPolicy(keepalive.EnforcementPolicy{MinTime: l.KeepaliveMinTime, PermitWithoutStream: true}),
		grpc.KeepaliveParams(keepalive.ServerParameters{Time: PingIdleAfter, Timeout: PingTimeout}),
	}, opts...)...)
	return s, nil
}

// Serve accepts connections on ln, at most MaxConnections open at once,
// until Stop or GracefulStop.
func (s *Server) Serve(ln net.Listener) error {
	return s.Server.Serve(&limitListener{Listener: ln, max: int64(s.limits.MaxConnections), counts: &s.counts})
}

// Stats returns s's counts.
func (s *Server) Stats() Stats {
	c := &s.counts
	return Stats{
		Connections: c.conns.Load(), Streams: c.streams.Load(),
		RefusedConns: c.refusedConns.Load(), RefusedStreams: c.refusedStreams.Load(), OversizedMessages: c.oversizedMessages.Load(),
	}
}

func (s *Server) register(name string, reg prometheus.Registerer) error {
	labels := prometheus.Labels{"server": name}
	c := &s.counts
	for _, m := range []prometheus.Collector{
		prometheus.NewGaugeFunc(prometheus.GaugeOpts{Name: "meshauth_grpc_connections", Help: "Open connections of the gRPC server.", ConstLabels: labels},
			func() float64 { return float64(c.conns.Load()) }),
		prometheus.NewGaugeFunc(prometheus.GaugeOpts{Name: "meshauth_grpc_streams", Help: "RPCs in flight on the gRPC server.", ConstLabels: labels},
			func() float64 { return float64(c.streams.Load()) }),
		prometheus.NewCounterFunc(prometheus.CounterOpts{Name: "meshauth_grpc_connections_refused_total", Help: "Connections closed because --grpc-max-connections were open.", ConstLabels: labels},
			func() float64 { return float64(c.refusedConns.Load()) }),
		prometheus.NewCounterFunc(prometheus.CounterOpts{Name: "meshauth_grpc_streams_refused_total", Help: "RPCs refused because --grpc-max-streams were in flight.", ConstLabels: labels},
			func() float64 { return float64(c.refusedStreams.Load()) }),
		prometheus.NewCounterFunc(prometheus.CounterOpts{Name: "meshauth_grpc_oversized_messages_total", Help: "RPCs ended by a message larger than --grpc-max-recv-bytes or --grpc-max-send-bytes.", ConstLabels: labels},
			func() float64 { return float64(c.oversizedMessages.Load()) }),
	} {
		if err := reg.Register(m); err != nil {
			return fmt.Errorf("grpc server %s: registering metrics: %w", name, err)
		}
	}
	return nil
}

// errTooManyStreams refuses a stream beyond MaxStreams.
var errTooManyStreams = status.Error(codes.ResourceExhausted, "too many RPCs in flight on this server (--grpc-max-streams)")

// admitStream runs for each new stream before it is set up. It admits a
// connection's first stream in flight while MaxStreams are not in flight,
// and its others while MaxStreams − MaxConnections are not: since at most
// MaxConnections streams are firsts, a connection can always have one.
// It gives the slots back when the stream ends (the transport cancels
// every stream's context then).
func (s *Server) admitStream(ctx context.Context, _ *tap.Info) (context.Context, error) {
	c := &s.counts
	var own *atomic.Int64 // the streams of the stream's connection
	if p, ok := peer.FromContext(ctx); ok {
		if a, ok := p.Addr.(*connAddr); ok {
			own = &a.streams
		}
	}
	limit := int64(s.limits.MaxStreams)
	if own == nil || own.Add(1) > 1 {
		limit -= int64(s.limits.MaxConnections)
	}
	release := func() {
		c.streams.Add(-1)
		if own != nil {
			own.Add(-1)
		}
	}
	if c.streams.Add(1) > limit {
		release()
		c.refusedStreams.Add(1)
		return nil, errTooManyStreams
	}
	context.AfterFunc(ctx, release)
	return ctx, nil
}

// oversized is a stats.Handler that counts the RPCs that ended with
// RESOURCE_EXHAUSTED: gRPC refuses an oversized message before any
// handler or interceptor sees it.
type oversized struct{ n *atomic.Uint64 }

func (oversized) TagRPC(ctx context.Context, _ *stats.RPCTagInfo) context.Context   { return ctx }
func (oversized) TagConn(ctx context.Context, _ *stats.ConnTagInfo) context.Context { return ctx }
func (oversized) HandleConn(context.Context, stats.ConnStats)                       {}

func (h oversized) HandleRPC(_ context.Context, s stats.RPCStats) {
	if end, ok := s.(*stats.End); ok && end.Error != nil && status.Code(end.Error) == codes.ResourceExhausted {
		h.n.Add(1)
	}
}

// reportRecvExhausted ends a streaming RPC with the RESOURCE_EXHAUSTED
// error of a message it could not receive, when its handler took that
// error for the client going away and returned nil (go-control-plane's
// xDS handlers do): the client learns why, and the RPC is counted.
func reportRecvExhausted(srv any, ss grpc.ServerStream, _ *grpc.StreamServerInfo, handler grpc.StreamHandler) error {
	w := &recvErrors{ServerStream: ss}
	if err := handler(srv, w); err != nil {
		return err
	}
	if err := w.exhausted.Load(); err != nil {
		return *err
	}
	return nil
}

// recvErrors remembers a RESOURCE_EXHAUSTED error of RecvMsg, which a
// handler may call from another goroutine.
type recvErrors struct {
	grpc.ServerStream
	exhausted atomic.Pointer[error]
}

func (s *recvErrors) RecvMsg(m any) error {
	err := s.ServerStream.RecvMsg(m)
	if err != nil && status.Code(err) == codes.ResourceExhausted {
		s.exhausted.Store(&err)
	}
	return err
}

// limitListener admits at most max connections at once. One beyond is
// accepted and closed at once rather than left in the kernel's backlog:
// the client learns at once, and it is counted.
type limitListener struct {
	net.Listener
	max    int64
	counts *counts
}

func (l *limitListener) Accept() (net.Conn, error) {
	for {
		c, err := l.Listener.Accept()
		if err != nil {
			return nil, err
		}
		if l.counts.conns.Add(1) <= l.max {
			return &limitedConn{Conn: c, counts: l.counts, addr: connAddr{Addr: c.RemoteAddr()}}, nil
		}
		l.counts.conns.Add(-1)
		l.counts.refusedConns.Add(1)
		c.Close()
	}
}

// limitedConn gives its slot back when it is first closed. Its remote
// address carries the count of its streams: gRPC hands that address to
// admitStream in the stream's peer.
type limitedConn struct {
	net.Conn
	counts *counts
	once   sync.Once
	addr   connAddr
}

type connAddr struct {
	net.Addr
	streams atomic.Int64
}

func (c *limitedConn) RemoteAddr() net.Addr { return &c.addr }

func (c *limitedConn) Close() error {
	err := c.Conn.Close()
	c.once.Do(func() { c.counts.conns.Add(-1) })
	return err
}
