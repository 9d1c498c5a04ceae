package xds

import (
	"context"
	"fmt"
	"log/slog"

	core "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	discovery "github.com/envoyproxy/go-control-plane/envoy/service/discovery/v3"
	serverv3 "github.com/envoyproxy/go-control-plane/pkg/server/v3"
)

// callbacks follow the streams: which node each belongs to (a node of a
// configured cluster gets its snapshot when it first asks), unknown nodes
// (logged once per stream, served nothing) and NACKs (logged; the stream
// goes on, and the node keeps the configuration it had).
func (s *Server) callbacks() serverv3.Callbacks {
	return serverv3.CallbackFuncs{
		StreamRequestFunc: func(id int64, req *discovery.DiscoveryRequest) error {
			s.request(streamID{id: id}, req.GetNode(), req.GetTypeUrl(), req.GetResponseNonce(), req.GetErrorDetail().GetMessage(), req.GetErrorDetail() != nil)
			return nil
		},
		StreamDeltaRequestFunc: func(id int64, req *discovery.DeltaDiscoveryRequest) error {
			s.request(streamID{delta: true, id: id}, req.GetNode(), req.GetTypeUrl(), req.GetResponseNonce(), req.GetErrorDetail().GetMessage(), req.GetErrorDetail() != nil)
			return nil
		},
		StreamClosedFunc:      func(id int64, _ *core.Node) { s.closed(streamID{id: id}) },
		DeltaStreamClosedFunc: func(id int64, _ *core.Node) { s.closed(streamID{delta: true, id: id}) },
	}
}

// request notes a request on stream sid. The node is only certain to be in
// a stream's first request (Envoy's set_node_on_first_message_only).
func (s *Server) request(sid streamID, node *core.Node, typeURL, nonce, nackMsg string, nack bool) {
	s.mu.Lock()
	id, known := s.streams[sid]
	if !known && node != nil {
		id = node.GetId()
		s.streams[sid] = id
		o, ok := s.nodes[id]
		if !ok {
			o = &openNode{node: node}
			s.nodes[id] = o
		}
		o.streams++
		if n := s.entryFor(id); n == nil {
			s.log.Warn("xds request from a node that is not configured; it gets no resources",
				"node", id, "cluster", node.GetCluster(), "stream", sid.id, "delta", sid.delta)
		} else if n.ID == "" {
			s.serve(id, n)
		}
	}
	s.mu.Unlock()
	if nack {
		s.log.Warn("envoy rejected a configuration (NACK); it keeps the one it had",
			"node", id, "type", typeURL, "nonce", nonce, "err", nackMsg)
	}
}

// closed forgets stream sid. When a node's last stream closes, the cache's
// record of a node that has no entry of its own id is dropped: nodes of a
// cluster come and go with their pods.
func (s *Server) closed(sid streamID) {
	s.mu.Lock()
	defer s.mu.Unlock()
	id, ok := s.streams[sid]
	if !ok {
		return
	}
	delete(s.streams, sid)
	o := s.nodes[id]
	if o.streams--; o.streams > 0 {
		return
	}
	delete(s.nodes, id)
	if n := s.entryFor(id); n == nil || n.ID == "" {
		delete(s.served, id)
		s.cache.ClearSnapshot(id)
	}
}

// cacheLogger hands go-control-plane's log lines to slog; its Info lines
// are per watch, so they go to Debug.
type cacheLogger struct{ log *slog.Logger }

func (l cacheLogger) Debugf(format string, args ...any) { l.logf(slog.LevelDebug, format, args) }
func (l cacheLogger) Infof(format string, args ...any)  { l.logf(slog.LevelDebug, format, args) }
func (l cacheLogger) Warnf(format string, args ...any)  { l.logf(slog.LevelWarn, format, args) }
func (l cacheLogger) Errorf(format string, args ...any) { l.logf(slog.LevelError, format, args) }

func (l cacheLogger) logf(level slog.Level, format string, args []any) {
	ctx := context.Background()
	if l.log.Enabled(ctx, level) {
		l.log.Log(ctx, level, "xds cache: "+fmt.Sprintf(format, args...))
	}
}
