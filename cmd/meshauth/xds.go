package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"sync"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials"
	"gopkg.in/yaml.v3"

	"github.com/meshauth/meshauth/internal/flagconf"
	"github.com/meshauth/meshauth/internal/grpcserve"
	"github.com/meshauth/meshauth/internal/natsconn"
	"github.com/meshauth/meshauth/internal/tlsfiles"
	"github.com/meshauth/meshauth/jwks"
	"github.com/meshauth/meshauth/proxy"
	"github.com/meshauth/meshauth/xds"
)

type xdsFlags struct {
	listen, adminListen     string
	tlsCertFile, tlsKeyFile string
	tlsClientCAFile         string
	configPoll              time.Duration
	grpc                    grpcserve.Limits
	nats                    natsconn.Flags
	log                     logFlags
}

func (f *xdsFlags) register(fs *flag.FlagSet) {
	fs.StringVar(&f.listen, "listen", ":18000", "address the xDS gRPC server (ADS, state of the world and delta) serves Envoy on")
	fs.StringVar(&f.adminListen, "admin-listen", "127.0.0.1:9902", "address of the admin listener: /metrics, /healthz, /readyz (empty disables)")
	fs.StringVar(&f.tlsCertFile, "tls-cert-file", "", "serve xDS over TLS with this certificate (PEM), read again when it is replaced; with --tls-key-file")
	fs.StringVar(&f.tlsKeyFile, "tls-key-file", "", "private key (PEM) of --tls-cert-file")
	fs.StringVar(&f.tlsClientCAFile, "tls-client-ca-file", "", "require client certificates signed by these CAs (PEM): each node then gets only an entry whose identities list its certificate's SPIFFE ID or CN")
	fs.DurationVar(&f.configPoll, "config-poll", time.Second, "how often the config file is checked for changes")
	f.grpc = grpcserve.XDSLimits()
	f.grpc.Register(fs, "xDS server")
	f.nats.Register(fs, "follow the issuers' key sets pushed over JetStream, so a rotation reaches Envoy's jwt_authn at once (HTTPS polling goes on as the fallback)")
	f.log.register(fs)
}

func runXDS(ctx context.Context, args []string, _ io.Writer) error {
	fs := flag.NewFlagSet("xds", flag.ContinueOnError)
	var f xdsFlags
	f.register(fs)
	// The issuers and nodes sections are the xds package's, which reads
	// the file itself (and again when it changes) with line numbers.
	var sections map[string]yaml.Node
	if err := flagconf.ParseWith(fs, args, nil, &sections); err != nil {
		return err
	}
	log, err := newLogger(f.log.level, f.log.format)
	if err != nil {
		return err
	}
	configFile := fs.Lookup("config").Value.String()
	if configFile == "" {
		return errors.New("--config is required: the file with the issuers and nodes sections")
	}
	return serveXDS(ctx, &f, configFile, func(key string) bool { return key != "config" && fs.Lookup(key) != nil }, log, nil)
}

// serveXDS serves xDS from configFile, whose top-level keys for which
// flagKey is true are flags, until ctx is done. ready, if not nil, gets
// the bound address of the xDS listener.
func serveXDS(ctx context.Context, f *xdsFlags, configFile string, flagKey func(string) bool, log *slog.Logger, ready func(addr string)) error {
	if (f.tlsCertFile == "") != (f.tlsKeyFile == "") {
		return errors.New("give both --tls-cert-file and --tls-key-file, or neither")
	}
	if f.tlsClientCAFile != "" && f.tlsCertFile == "" {
		return errors.New("--tls-client-ca-file needs TLS: give --tls-cert-file and --tls-key-file too")
	}
	runCtx, stopRun := context.WithCancel(ctx)
	defer stopRun()
	xo := xds.Options{
		ConfigFile:         configFile,
		IgnoreKey:          flagKey,
		PollInterval:       f.configPoll,
		ClientCertificates: f.tlsClientCAFile != "",
		Logger:             log,
	}
	if f.nats.Enabled() {
		nc, err := natsconn.Connect(&f.nats, "meshauth xds", log.With("part", "nats"))
		if err != nil {
			return err
		}
		defer nc.Close()
		xo.Follow = followPushedKeys(nc, log)
	}
	srv, err := xds.New(xo)
	if err != nil {
		return err
	}

	reg := prometheus.NewRegistry()
	reg.MustRegister(collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	registerXDSMetrics(reg, srv)
	var (
		opts  []grpc.ServerOption
		files *tlsfiles.Files
	)
	if f.tlsCertFile != "" {
		files, err = tlsfiles.Load(tlsfiles.Config{CertFile: f.tlsCertFile, KeyFile: f.tlsKeyFile, ClientCAFile: f.tlsClientCAFile, Logger: log})
		if err != nil {
			return fmt.Errorf("xDS TLS: %w", err)
		}
		registerTLSMetrics(reg, "xds", files)
		opts = append(opts, grpc.Creds(credentials.NewTLS(files.ServerConfig())))
	}
	gs, err := grpcserve.New("xds", f.grpc, reg, opts...)
	if err != nil {
		return err
	}
	srv.Register(gs.Server)
	ln, err := net.Listen("tcp", f.listen)
	if err != nil {
		return fmt.Errorf("listen on %s: %w", f.listen, err)
	}
	servers := []func() error{func() error { return gs.Serve(ln) }}
	var running sync.WaitGroup
	stops := []func(context.Context) error{func(context.Context) error {
		stopRun()
		running.Wait()
		// Envoy streams never end by themselves: stop them rather than wait.
		gs.Stop()
		return nil
	}}
	if f.adminListen != "" {
		aln, err := net.Listen("tcp", f.adminListen)
		if err != nil {
			ln.Close()
			return fmt.Errorf("listen on %s: %w", f.adminListen, err)
		}
		ready := func(context.Context) error {
			if !srv.Ready() {
				return errors.New("waiting for the keys of an issuer named by a node's jwt_authn")
			}
			return nil
		}
		admin := &http.Server{Handler: proxy.NewAdminHandler(reg, ready), ReadHeaderTimeout: 5 * time.Second}
		servers = append(servers, func() error { return admin.Serve(aln) })
		stops = append(stops, admin.Shutdown)
	}

	running.Go(func() { srv.Run(runCtx) })
	if files != nil {
		running.Go(func() { files.Run(runCtx) })
	}
	return serveUntilDone(ctx, servers, stops, log, func() {
		switch {
		case files == nil:
			log.Warn("xDS IS SERVED WITHOUT TLS AND WITHOUT CLIENT AUTHENTICATION: any client that reaches --listen gets the configuration of any node it names. " +
				"For a laptop only; give --tls-cert-file, --tls-key-file and --tls-client-ca-file")
		case f.tlsClientCAFile == "":
			log.Warn("xDS clients are not authenticated (no --tls-client-ca-file): any client that reaches --listen gets the configuration of any node it names")
		}
		log.Info("xds serving", "listen", ln.Addr().String(), "config", configFile, "admin", f.adminListen,
			"tls", files != nil, "client_certificates", f.tlsClientCAFile != "")
		if ready != nil {
			ready(ln.Addr().String())
		}
	})
}

// registerXDSMetrics registers the counts of what the xDS clients did.
func registerXDSMetrics(reg prometheus.Registerer, srv *xds.Server) {
	reg.MustRegister(
		prometheus.NewGaugeFunc(prometheus.GaugeOpts{Name: "meshauth_xds_nodes", Help: "Envoy nodes with an xDS stream open."},
			func() float64 { return float64(srv.Stats().Nodes) }),
		prometheus.NewCounterFunc(prometheus.CounterOpts{Name: "meshauth_xds_nacks_total", Help: "Configurations Envoy nodes rejected (NACK)."},
			func() float64 { return float64(srv.Stats().NACKs) }),
		prometheus.NewCounterFunc(prometheus.CounterOpts{Name: "meshauth_xds_log_lines_dropped_total", Help: "Log lines about xDS clients (NACKs, refusals) dropped by the bound on their rate."},
			func() float64 { return float64(srv.Stats().LogLinesDropped) }),
	)
	for reason := range srv.Stats().Refused {
		reg.MustRegister(prometheus.NewCounterFunc(prometheus.CounterOpts{
			Name: "meshauth_xds_streams_refused_total", Help: "xDS streams refused, by reason: unauthenticated, no_node_id, not_configured, not_allowed, node_changed.",
			ConstLabels: prometheus.Labels{"reason": reason},
		}, func() float64 { return float64(srv.Stats().Refused[reason]) }))
	}
}

// followPushedKeys makes each issuer's key-set cache follow the key sets
// the issuer pushes over NATS (package jwks's Subscriber; revocations
// concern sidecars, not Envoy's jwt_authn, which checks signatures only),
// for as long as the xds server keeps the cache.
func followPushedKeys(nc *nats.Conn, log *slog.Logger) func(context.Context, xds.Issuer, *jwks.KeySetCache) {
	return func(ctx context.Context, iss xds.Issuer, keys *jwks.KeySetCache) {
		sub, err := jwks.NewSubscriber(jwks.SubscriberConfig{Conn: nc, Issuer: iss.Issuer, Keys: keys, Logger: log.With("issuer", iss.Issuer)})
		if err != nil {
			log.Error("key sets over NATS: cannot follow; keys are still polled over HTTPS", "issuer", iss.Issuer, "err", err)
			return
		}
		sub.Run(ctx)
	}
}
