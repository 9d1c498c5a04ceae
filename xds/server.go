// Package xds is meshauth's Envoy control plane: a go-control-plane xDS
// server (ADS, state of the world and delta) that gives each configured
// Envoy node a listener whose HTTP filters ask the meshauth sidecar about
// every request (ext_authz), optionally after Envoy's own jwt_authn has
// verified the token with the issuers' current keys, inlined.
//
// Keys come from a [jwks.KeySetCache] per issuer: a rotation (pushed, or
// found by a refresh) or a change of the config file becomes a new snapshot
// for every node it concerns at once. A key set that cannot be refreshed
// keeps its last good keys, so the snapshot served does not change.
//
// A node claims its id and cluster; with [Options].ClientCertificates, the
// identity in its client certificate decides what it gets: the entry of
// its node, if that entry lists the identity, and nothing else. A stream
// that may not have its node's entry is refused. What clients can cause in
// the log (NACKs, refusals) is bounded per node, and a NACKed version is
// not sent again until the snapshot changes.
package xds

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"maps"
	"os"
	"slices"
	"strconv"
	"sync"
	"time"

	core "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	clusterservice "github.com/envoyproxy/go-control-plane/envoy/service/cluster/v3"
	discoverygrpc "github.com/envoyproxy/go-control-plane/envoy/service/discovery/v3"
	listenerservice "github.com/envoyproxy/go-control-plane/envoy/service/listener/v3"
	routeservice "github.com/envoyproxy/go-control-plane/envoy/service/route/v3"
	cachev3 "github.com/envoyproxy/go-control-plane/pkg/cache/v3"
	serverv3 "github.com/envoyproxy/go-control-plane/pkg/server/v3"
	"google.golang.org/grpc"

	"github.com/meshauth/meshauth/internal/ratelog"
	"github.com/meshauth/meshauth/jwks"
)

// Options configures a [Server].
type Options struct {
	// ConfigFile is the YAML config (see [ParseConfig]); it is read again
	// whenever it changes.
	ConfigFile string
	// IgnoreKey reports top-level keys of ConfigFile that are not the
	// server's (the command's flags); may be nil.
	IgnoreKey func(key string) bool
	// PollInterval is how often ConfigFile is checked for changes; default
	// 1s.
	PollInterval time.Duration
	// KeySet returns the key-set cache of an issuer; the server starts it.
	// Default: a [jwks.KeySetCache] reading the issuer's metadata, or its
	// JWKSURL or JWKSFile.
	KeySet func(Issuer) (*jwks.KeySetCache, error)
	// Follow, if set, runs beside each issuer's started cache until the
	// cache is stopped (the issuer leaves the config, or the server stops):
	// a push source (NATS) that calls the cache's Set.
	Follow func(ctx context.Context, iss Issuer, keys *jwks.KeySetCache)
	// ClientCertificates says that every stream comes over TLS with a
	// verified client certificate (the gRPC server requires them): a node
	// then gets the resources of an entry only if the entry lists the
	// certificate's identity (its SPIFFE ID, or else its subject common
	// name), and every entry must list at least one. Without it, any
	// client gets the resources of the node it claims to be.
	ClientCertificates bool
	// Logger receives config refusals, unknown nodes and NACKs; default
	// slog.Default(). What a client can cause (NACKs, refused and unknown
	// nodes) is logged at a bounded rate per node, with long values cut.
	Logger *slog.Logger
}

// A Server serves xDS to Envoy nodes. Create it with [New], register it on
// a gRPC server with Register, and call Run.
type Server struct {
	opts   Options
	log    *slog.Logger
	remote *slog.Logger     // for what clients cause: bounded by limited
	limit  *ratelog.Handler // remote's
	cache  cachev3.SnapshotCache
	xds    serverv3.Server
	ctx    context.Context // ends when Run returns
	done   context.CancelFunc
	counts counts
	sent   sentResponses

	rebuild chan struct{} // a key set or the config changed; buffered

	mu      sync.Mutex
	cfg     *Config
	stamp   os.FileInfo              // of the config file last read
	keySets map[string]*issuerKeys   // by issuer
	built   map[string]*resources    // by Node.key(), of entries whose keys are loaded
	served  map[string]servedNode    // by snapshotKey, the open nodes that have a snapshot
	nodes   map[string]*openNode     // by snapshotKey, the nodes with open streams
	streams map[streamID]*openStream // every open stream
	refused string                   // the last config refusal logged
}

// openNode is a node, an Envoy node id in an Envoy cluster, with streams
// open.
type openNode struct {
	node       *core.Node     // as its first stream announced it
	identities map[string]int // of its streams' certificates ("" without), with their number of streams
	streams    int
}

type issuerKeys struct {
	iss   Issuer
	cache *jwks.KeySetCache
	stop  context.CancelFunc
}

// servedNode is what a node was last given.
type servedNode struct {
	key      string            // Node.key() of its entry
	versions map[string]string // by type URL
}

// New reads and checks the config file. A malformed file is an error that
// names the line and the field.
func New(opts Options) (*Server, error) {
	if opts.ConfigFile == "" {
		return nil, errors.New("xds: no config file")
	}
	if opts.PollInterval <= 0 {
		opts.PollInterval = time.Second
	}
	if opts.Logger == nil {
		opts.Logger = slog.Default()
	}
	if opts.KeySet == nil {
		opts.KeySet = func(iss Issuer) (*jwks.KeySetCache, error) {
			return jwks.NewKeySetCache(jwks.KeySetConfig{
				Issuer:   iss.metadataIssuer(),
				JWKSURL:  iss.JWKSURL,
				JWKSFile: iss.JWKSFile,
				Logger:   opts.Logger.With("issuer", iss.Issuer),
			})
		}
	}
	s := &Server{
		opts:    opts,
		log:     opts.Logger,
		limit:   ratelog.NewHandler(opts.Logger.Handler(), ratelog.Config{Burst: 1}),
		rebuild: make(chan struct{}, 1),
		keySets: map[string]*issuerKeys{},
		built:   map[string]*resources{},
		served:  map[string]servedNode{},
		nodes:   map[string]*openNode{},
		streams: map[streamID]*openStream{},
		sent:    sentResponses{last: map[streamID]map[string]sentResponse{}},
	}
	s.remote = slog.New(s.limit)
	cfg, stamp, err := s.readConfig()
	if err != nil {
		return nil, err
	}
	keySets, err := s.keySetsFor(cfg)
	if err != nil {
		return nil, fmt.Errorf("config file %s: %w", opts.ConfigFile, err)
	}
	s.cfg, s.stamp, s.keySets = cfg, stamp, keySets
	s.ctx, s.done = context.WithCancel(context.Background())
	s.cache = cachev3.NewSnapshotCache(true, nodeHash{}, cacheLogger{debug: opts.Logger, remote: s.remote})
	s.xds = serverv3.NewServer(s.ctx, s.cache, s.callbacks())
	return s, nil
}

// metadataIssuer is the Issuer of the key set's config: the issuer URL,
// unless the keys come from elsewhere.
func (iss Issuer) metadataIssuer() string {
	if iss.JWKSURL != "" || iss.JWKSFile != "" {
		return ""
	}
	return iss.Issuer
}

// Register registers the aggregated discovery service (state of the world
// and delta) and the listener, route and cluster services on g.
func (s *Server) Register(g *grpc.Server) {
	discoverygrpc.RegisterAggregatedDiscoveryServiceServer(g, s.xds)
	listenerservice.RegisterListenerDiscoveryServiceServer(g, s.xds)
	routeservice.RegisterRouteDiscoveryServiceServer(g, s.xds)
	clusterservice.RegisterClusterDiscoveryServiceServer(g, s.xds)
}

// Run loads the keys, serves snapshots and follows key and config changes
// until ctx is done. Streams still open end with it.
func (s *Server) Run(ctx context.Context) {
	defer s.done()
	keysCtx, stopKeys := context.WithCancel(ctx)
	defer stopKeys()
	s.mu.Lock()
	for _, k := range s.keySets {
		s.startKeySet(keysCtx, k)
	}
	s.mu.Unlock()
	s.update()

	tick := time.NewTicker(s.opts.PollInterval)
	defer tick.Stop()
	for {
		select {
		case <-ctx.Done():
			return // and with it every key set, started under keysCtx
		case <-s.rebuild:
			s.update()
		case <-tick.C:
			s.reload(keysCtx)
		}
	}
}

// Ready reports whether every configured entry has its resources, that is,
// the keys of every issuer its jwt_authn names are loaded.
func (s *Server) Ready() bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	return len(s.built) == len(s.cfg.Nodes)
}

// startKeySet starts k's cache and a goroutine that asks for a rebuild each
// time it installs keys. s.mu must be held.
func (s *Server) startKeySet(ctx context.Context, k *issuerKeys) {
	ctx, k.stop = context.WithCancel(ctx)
	// The next channel is taken before asking for a rebuild, so that keys
	// installed meanwhile close it and ask again.
	changed := k.cache.Changed()
	k.cache.Start(ctx)
	if s.opts.Follow != nil {
		go s.opts.Follow(ctx, k.iss, k.cache)
	}
	go func() {
		for {
			select {
			case <-ctx.Done():
				return
			case <-changed:
				changed = k.cache.Changed()
				s.kick()
			}
		}
	}()
}

func (s *Server) kick() {
	select {
	case s.rebuild <- struct{}{}:
	default: // a rebuild is pending already; it reads the newest keys
	}
}

// readConfig reads and parses the config file.
func (s *Server) readConfig() (*Config, os.FileInfo, error) {
	f, err := os.Open(s.opts.ConfigFile)
	if err != nil {
		return nil, nil, fmt.Errorf("read config file: %w", err)
	}
	defer f.Close()
	fi, err := f.Stat()
	if err != nil {
		return nil, nil, fmt.Errorf("read config file: %w", err)
	}
	// A config is small; a huge file is a mistake, not one to read whole.
	const maxConfig = 4 << 20
	data, err := io.ReadAll(io.LimitReader(f, maxConfig+1))
	if err != nil {
		return nil, nil, fmt.Errorf("read config file: %w", err)
	}
	if len(data) > maxConfig {
		return nil, nil, fmt.Errorf("config file %s: larger than %d bytes", s.opts.ConfigFile, maxConfig)
	}
	cfg, err := ParseConfig(data, s.opts.IgnoreKey)
	if err == nil && s.opts.ClientCertificates {
		err = cfg.requireIdentities()
	}
	if err != nil {
		return nil, nil, fmt.Errorf("config file %s: %w", s.opts.ConfigFile, err)
	}
	return cfg, fi, nil
}

// reload reads the config file if it changed, and applies it if it is good;
// a bad one is logged and changes nothing.
func (s *Server) reload(keysCtx context.Context) {
	fi, err := os.Stat(s.opts.ConfigFile)
	s.mu.Lock()
	prev := s.stamp
	s.mu.Unlock()
	if err == nil && os.SameFile(prev, fi) && fi.ModTime().Equal(prev.ModTime()) && fi.Size() == prev.Size() {
		return
	}
	cfg, stamp, err := s.readConfig()
	if err == nil {
		var keySets map[string]*issuerKeys
		if keySets, err = s.keySetsFor(cfg); err == nil {
			s.apply(keysCtx, cfg, stamp, keySets)
			s.log.Info("xds config reloaded", "file", s.opts.ConfigFile, "nodes", len(cfg.Nodes))
			s.update()
			return
		}
		err = fmt.Errorf("config file %s: %w", s.opts.ConfigFile, err)
	}
	// Once per problem, and not read again until the file changes.
	s.mu.Lock()
	defer s.mu.Unlock()
	if fi != nil {
		s.stamp = fi
	}
	if err.Error() != s.refused {
		s.refused = err.Error()
		s.log.Error("xds config refused; serving the last good one", "err", err)
	}
}

// keySetsFor returns the key sets cfg needs: the running ones of issuers
// whose source did not change, new ones (not started) for the others.
func (s *Server) keySetsFor(cfg *Config) (map[string]*issuerKeys, error) {
	s.mu.Lock()
	running := maps.Clone(s.keySets)
	s.mu.Unlock()
	out := make(map[string]*issuerKeys, len(cfg.Issuers))
	for _, iss := range cfg.Issuers {
		if k, ok := running[iss.Issuer]; ok && k.iss == iss {
			out[iss.Issuer] = k
			continue
		}
		c, err := s.opts.KeySet(iss)
		if err != nil {
			return nil, fmt.Errorf("keys of %s: %w", iss.Issuer, err)
		}
		out[iss.Issuer] = &issuerKeys{iss: iss, cache: c}
	}
	return out, nil
}

// apply makes cfg current: it starts the new key sets and stops those no
// longer needed.
func (s *Server) apply(keysCtx context.Context, cfg *Config, stamp os.FileInfo, keySets map[string]*issuerKeys) {
	s.mu.Lock()
	defer s.mu.Unlock()
	for iss, k := range s.keySets {
		if keySets[iss] != k {
			k.stop()
		}
	}
	for _, k := range keySets {
		if k.stop == nil {
			s.startKeySet(keysCtx, k)
		}
	}
	s.cfg, s.stamp, s.keySets = cfg, stamp, keySets
	s.refused = ""
}

// update builds the resources of every entry from the current config and
// keys, and gives every node whose resources changed its new snapshot.
func (s *Server) update() {
	s.mu.Lock()
	defer s.mu.Unlock()
	docs := map[string][]byte{}
	for iss, k := range s.keySets {
		ks := k.cache.Keys()
		if ks == nil {
			continue
		}
		doc, err := jwks.PublicJWKS(ks.All())
		if err != nil {
			s.log.Error("keys cannot be given to Envoy", "issuer", iss, "err", err)
			continue
		}
		docs[iss] = doc
	}
	built := make(map[string]*resources, len(s.cfg.Nodes))
	for i := range s.cfg.Nodes {
		n := &s.cfg.Nodes[i]
		r, err := buildResources(n, docs)
		if err != nil {
			// Keep serving what it had (keys not loaded yet for a new
			// issuer, say) rather than nothing.
			if prev, ok := s.built[n.key()]; ok {
				built[n.key()] = prev
			}
			if errors.Is(err, errNoKeys) {
				s.log.Info("node waits for keys", "node", n.key(), "err", err)
			} else {
				s.log.Error("no new resources for node", "node", n.key(), "err", err)
			}
			continue
		}
		built[n.key()] = r
	}
	s.built = built
	for key, o := range s.nodes {
		s.serve(key, o)
	}
}

// serve gives open node o, at snapshotKey key, the resources of its entry,
// unless it has them already. A node whose entry went, or whose entry no
// longer lists the identity of one of its streams, gets nothing new: it
// keeps what it has, its streams are refused at their next request, and a
// stream it opens is refused. s.mu must be held.
func (s *Server) serve(key string, o *openNode) {
	n := s.entryFor(o.node)
	if n == nil || !s.allowedAll(n, o) {
		if _, ok := s.served[key]; ok {
			s.remote.Warn("xds node no longer configured for its certificate; it keeps what it has and gets no updates",
				ratelog.Kind("withheld "+key), "node", o.node.GetId(), "cluster", o.node.GetCluster())
		}
		return
	}
	r, ok := s.built[n.key()]
	if !ok {
		return // its keys are not loaded yet
	}
	if sn, ok := s.served[key]; ok && sn.key == n.key() && maps.Equal(sn.versions, r.versions) {
		return
	}
	if err := s.cache.SetSnapshot(s.ctx, key, r.snapshot); err != nil {
		s.log.Error("set snapshot", "node", o.node.GetId(), "cluster", o.node.GetCluster(), "err", err)
		return
	}
	s.served[key] = servedNode{key: n.key(), versions: r.versions}
}

// entryFor returns the entry that configures node, or nil: the entry of
// its id, else the entry of its cluster. s.mu must be held.
func (s *Server) entryFor(node *core.Node) *Node {
	var byCluster *Node
	for i := range s.cfg.Nodes {
		n := &s.cfg.Nodes[i]
		switch {
		case n.ID != "" && n.ID == node.GetId():
			return n
		case n.Cluster != "" && n.Cluster == node.GetCluster():
			byCluster = n
		}
	}
	return byCluster
}

// allowed reports whether a stream whose certificate names identity may
// receive entry n.
func (s *Server) allowed(n *Node, identity string) bool {
	return !s.opts.ClientCertificates || slices.Contains(n.Identities, identity)
}

// allowedAll reports whether every stream of o may receive entry n.
func (s *Server) allowedAll(n *Node, o *openNode) bool {
	for id := range o.identities {
		if !s.allowed(n, id) {
			return false
		}
	}
	return true
}

// snapshotKey is the key of a node's snapshot: its id within its cluster,
// so that nodes of one id in two clusters (served by different entries,
// to different certificates) never share one. The quoted cluster cannot
// run into the id.
func snapshotKey(node *core.Node) string {
	return strconv.Quote(node.GetCluster()) + node.GetId()
}

// nodeHash keys the snapshot cache by snapshotKey.
type nodeHash struct{}

func (nodeHash) ID(node *core.Node) string { return snapshotKey(node) }
