package xds

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"sync/atomic"

	core "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	discovery "github.com/envoyproxy/go-control-plane/envoy/service/discovery/v3"
	serverv3 "github.com/envoyproxy/go-control-plane/pkg/server/v3"
	rpcstatus "google.golang.org/genproto/googleapis/rpc/status"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/peer"
	"google.golang.org/grpc/status"

	"github.com/meshauth/meshauth/internal/ratelog"
	"github.com/meshauth/meshauth/internal/tlsfiles"
)

// openStream is what the server knows of a stream.
type openStream struct {
	identity string // of its client certificate; "" without ClientCertificates
	node     string // snapshotKey of the node its first request named; "" before
}

// sentResponses are, by state-of-the-world stream and type URL, the last
// responses sent: what a NACK rejects. They have a lock of their own, so
// that a response never waits for the server's lock, which a rebuild
// holds while it gives every node its snapshot.
type sentResponses struct {
	mu   sync.Mutex
	last map[streamID]map[string]sentResponse
}

type sentResponse struct{ nonce, version string }

func (r *sentResponses) note(sid streamID, resp *discovery.DiscoveryResponse) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.last[sid] == nil {
		r.last[sid] = map[string]sentResponse{}
	}
	r.last[sid][resp.GetTypeUrl()] = sentResponse{nonce: resp.GetNonce(), version: resp.GetVersionInfo()}
}

// rejected returns the version of the response a NACK of typeURL with
// nonce rejects, if it is the last one sent.
func (r *sentResponses) rejected(sid streamID, typeURL, nonce string) string {
	r.mu.Lock()
	defer r.mu.Unlock()
	if last, ok := r.last[sid][typeURL]; ok && last.nonce == nonce {
		return last.version
	}
	return ""
}

func (r *sentResponses) forget(sid streamID) {
	r.mu.Lock()
	defer r.mu.Unlock()
	delete(r.last, sid)
}

type streamID struct {
	delta bool // sotw and delta streams are numbered apart
	id    int64
}

// refusal is why a stream was refused.
type refusal uint8

const (
	refusedUnauthenticated refusal = iota // no client certificate naming an identity
	refusedNoNodeID                       // its first request names no node id
	refusedNotConfigured                  // no entry configures its node
	refusedNotAllowed                     // its node's entry does not list its certificate
	refusedNodeChanged                    // a later request names another node
	numRefusals
)

var refusalNames = [numRefusals]string{"unauthenticated", "no_node_id", "not_configured", "not_allowed", "node_changed"}

// counts are the server's counters, read by its metrics.
type counts struct {
	nacks   atomic.Uint64
	refused [numRefusals]atomic.Uint64
}

// callbacks follow the streams: who opened each (its certificate), which
// node it is for, and whether that node's entry may be given to it
// (refused streams end with an error; a node of a configured cluster gets
// its snapshot when it first asks), and NACKs (logged, and the rejected
// version is not sent again).
func (s *Server) callbacks() serverv3.Callbacks {
	return serverv3.CallbackFuncs{
		StreamOpenFunc:      func(ctx context.Context, id int64, _ string) error { return s.open(ctx, streamID{id: id}) },
		DeltaStreamOpenFunc: func(ctx context.Context, id int64, _ string) error { return s.open(ctx, streamID{delta: true, id: id}) },
		StreamRequestFunc: func(id int64, req *discovery.DiscoveryRequest) error {
			rejected, err := s.request(streamID{id: id}, req.GetNode(), req.GetTypeUrl(), req.GetResponseNonce(), req.GetErrorDetail())
			if rejected != "" {
				// A NACK names the version Envoy still runs. Asked for
				// that, the cache would send the rejected version again at
				// once, and again at each NACK; asked for the rejected
				// one, it waits for the next snapshot.
				req.VersionInfo = rejected
			}
			return err
		},
		StreamDeltaRequestFunc: func(id int64, req *discovery.DeltaDiscoveryRequest) error {
			// A delta stream tracks the versions it sent: a NACK does
			// not bring them again.
			_, err := s.request(streamID{delta: true, id: id}, req.GetNode(), req.GetTypeUrl(), req.GetResponseNonce(), req.GetErrorDetail())
			return err
		},
		StreamResponseFunc: func(_ context.Context, id int64, _ *discovery.DiscoveryRequest, resp *discovery.DiscoveryResponse) {
			s.sent.note(streamID{id: id}, resp)
		},
		StreamClosedFunc:      func(id int64, _ *core.Node) { s.closed(streamID{id: id}) },
		DeltaStreamClosedFunc: func(id int64, _ *core.Node) { s.closed(streamID{delta: true, id: id}) },
	}
}

// open notes a new stream and, with ClientCertificates, the identity its
// certificate names; a stream without one is refused.
func (s *Server) open(ctx context.Context, sid streamID) error {
	var identity string
	if s.opts.ClientCertificates {
		var err error
		if identity, err = peerIdentity(ctx); err != nil {
			return s.refuse(refusedUnauthenticated, "unauthenticated", codes.Unauthenticated, "no client identity", "err", err)
		}
	}
	s.mu.Lock()
	s.streams[sid] = &openStream{identity: identity}
	s.mu.Unlock()
	return nil
}

// peerIdentity is the identity of the verified client certificate of the
// stream of ctx.
func peerIdentity(ctx context.Context) (string, error) {
	p, ok := peer.FromContext(ctx)
	if !ok {
		return "", errors.New("no peer")
	}
	info, ok := p.AuthInfo.(credentials.TLSInfo)
	if !ok || len(info.State.VerifiedChains) == 0 || len(info.State.VerifiedChains[0]) == 0 {
		return "", errors.New("no verified client certificate")
	}
	return tlsfiles.Identity(info.State.VerifiedChains[0][0])
}

// request checks a request of stream sid. The node is only certain to be
// in a stream's first request (Envoy's set_node_on_first_message_only):
// that one binds the stream to its node, if an entry configures the node
// and lists the stream's identity; every later one must name the same node
// or none, and the node must still be served. For a NACK of the last
// response of a state-of-the-world stream, it returns the rejected
// version.
func (s *Server) request(sid streamID, node *core.Node, typeURL, nonce string, nack *rpcstatus.Status) (rejected string, err error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	st := s.streams[sid]
	switch {
	case st.node == "":
		if err := s.bind(st, node); err != nil {
			return "", err
		}
	case node != nil && snapshotKey(node) != st.node:
		return "", s.refuse(refusedNodeChanged, "changed "+st.node, codes.InvalidArgument, "a request names another node than the stream's first",
			"node", node.GetId(), "cluster", node.GetCluster(), "identity", st.identity)
	default:
		o := s.nodes[st.node]
		if n := s.entryFor(o.node); n == nil || !s.allowed(n, st.identity) {
			return "", s.refuse(refusedNotAllowed, "withheld "+st.node, codes.PermissionDenied, "its node is no longer configured for its certificate",
				"node", o.node.GetId(), "cluster", o.node.GetCluster(), "identity", st.identity)
		}
	}
	if nack == nil {
		return "", nil
	}
	s.counts.nacks.Add(1)
	o := s.nodes[st.node]
	s.remote.Warn("envoy rejected a configuration (NACK); it keeps the one it had", ratelog.Kind("nack "+st.node+" "+typeURL),
		"node", o.node.GetId(), "cluster", o.node.GetCluster(), "type", typeURL, "nonce", nonce, "err", nack.GetMessage())
	return s.sent.rejected(sid, typeURL, nonce), nil
}

// bind binds stream st to node, the node of its first request, if the
// stream may receive that node's entry. s.mu must be held.
func (s *Server) bind(st *openStream, node *core.Node) error {
	if node.GetId() == "" {
		// Envoy always names its node; one without an id would share a
		// snapshot with every other.
		return s.refuse(refusedNoNodeID, "no id "+node.GetCluster(), codes.InvalidArgument, "its first request names no node id",
			"cluster", node.GetCluster(), "identity", st.identity)
	}
	key := snapshotKey(node)
	n := s.entryFor(node)
	switch {
	case n == nil:
		return s.refuse(refusedNotConfigured, "unknown "+key, codes.NotFound, "no entry of the config serves its node",
			"node", node.GetId(), "cluster", node.GetCluster(), "identity", st.identity)
	case !s.allowed(n, st.identity):
		return s.refuse(refusedNotAllowed, "not allowed "+key+" "+st.identity, codes.PermissionDenied, "the entry of its node does not list its certificate",
			"node", node.GetId(), "cluster", node.GetCluster(), "identity", st.identity, "entry", n.key())
	}
	st.node = key
	o, ok := s.nodes[key]
	if !ok {
		o = &openNode{node: node, identities: map[string]int{}}
		s.nodes[key] = o
	}
	o.streams++
	o.identities[st.identity]++
	s.serve(key, o)
	return nil
}

// refuse counts and logs (at a bounded rate per kind) a refused stream,
// and returns the gRPC error that ends it, which says why.
func (s *Server) refuse(why refusal, kind string, code codes.Code, reason string, args ...any) error {
	s.counts.refused[why].Add(1)
	s.remote.Warn("xds stream refused: "+reason, append([]any{ratelog.Kind("refused " + kind)}, args...)...)
	return status.Error(code, reason)
}

// closed forgets stream sid. When a node's last stream closes, its
// snapshot goes: nodes come and go with their pods.
func (s *Server) closed(sid streamID) {
	s.sent.forget(sid)
	s.mu.Lock()
	defer s.mu.Unlock()
	st, ok := s.streams[sid]
	if !ok {
		return
	}
	delete(s.streams, sid)
	if st.node == "" {
		return
	}
	o := s.nodes[st.node]
	if o.identities[st.identity]--; o.identities[st.identity] == 0 {
		delete(o.identities, st.identity)
	}
	if o.streams--; o.streams > 0 {
		s.serve(st.node, o) // withheld for the identity that left, perhaps
		return
	}
	delete(s.nodes, st.node)
	delete(s.served, st.node)
	s.cache.ClearSnapshot(st.node)
}

// Stats are the server's counts of what its clients did.
type Stats struct {
	Nodes           int    // with streams open
	NACKs           uint64 // configurations Envoy rejected
	LogLinesDropped uint64 // lines about clients dropped by the bound on their rate
	// Refused counts the streams refused, by reason: unauthenticated,
	// no_node_id, not_configured, not_allowed, node_changed.
	Refused map[string]uint64
}

// Stats returns the server's counts.
func (s *Server) Stats() Stats {
	s.mu.Lock()
	nodes := len(s.nodes)
	s.mu.Unlock()
	st := Stats{Nodes: nodes, NACKs: s.counts.nacks.Load(), LogLinesDropped: s.limit.Dropped(), Refused: map[string]uint64{}}
	for i := range s.counts.refused {
		st.Refused[refusalNames[i]] = s.counts.refused[i].Load()
	}
	return st
}

// cacheLogger hands go-control-plane's log lines to slog. Its Debug and
// Info lines (per watch) go to debug; its warnings and errors, which a
// client's requests cause, are bounded.
type cacheLogger struct{ debug, remote *slog.Logger }

func (l cacheLogger) Debugf(format string, args ...any) {
	l.logf(l.debug, slog.LevelDebug, format, args)
}
func (l cacheLogger) Infof(format string, args ...any) {
	l.logf(l.debug, slog.LevelDebug, format, args)
}
func (l cacheLogger) Warnf(format string, args ...any) {
	l.logf(l.remote, slog.LevelWarn, format, args, ratelog.Kind("cache "+format))
}
func (l cacheLogger) Errorf(format string, args ...any) {
	l.logf(l.remote, slog.LevelError, format, args, ratelog.Kind("cache "+format))
}

func (l cacheLogger) logf(log *slog.Logger, level slog.Level, format string, args []any, attrs ...any) {
	ctx := context.Background()
	if log.Enabled(ctx, level) {
		log.Log(ctx, level, "xds cache: "+fmt.Sprintf(format, args...), attrs...)
	}
}
