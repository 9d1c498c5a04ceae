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
	"time"

	"github.com/nats-io/nats.go"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/keepalive"
	"gopkg.in/yaml.v3"

	"github.com/meshauth/meshauth/internal/flagconf"
	"github.com/meshauth/meshauth/internal/natsconn"
	"github.com/meshauth/meshauth/jwks"
	"github.com/meshauth/meshauth/proxy"
	"github.com/meshauth/meshauth/xds"
)

type xdsFlags struct {
	listen, adminListen     string
	tlsCertFile, tlsKeyFile string
	configPoll              time.Duration
	nats                    natsconn.Flags
	log                     logFlags
}

func (f *xdsFlags) register(fs *flag.FlagSet) {
	fs.StringVar(&f.listen, "listen", ":18000", "address the xDS gRPC server (ADS, state of the world and delta) serves Envoy on")
	fs.StringVar(&f.adminListen, "admin-listen", "127.0.0.1:9902", "address of the admin listener: /metrics, /healthz, /readyz (empty disables)")
	fs.StringVar(&f.tlsCertFile, "tls-cert-file", "", "serve xDS over TLS with this certificate (PEM); with --tls-key-file")
	fs.StringVar(&f.tlsKeyFile, "tls-key-file", "", "private key (PEM) of --tls-cert-file")
	fs.DurationVar(&f.configPoll, "config-poll", time.Second, "how often the config file is checked for changes")
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
	if (f.tlsCertFile == "") != (f.tlsKeyFile == "") {
		return errors.New("give both --tls-cert-file and --tls-key-file, or neither")
	}
	runCtx, stopRun := context.WithCancel(ctx)
	defer stopRun()
	xo := xds.Options{
		ConfigFile:   configFile,
		IgnoreKey:    func(key string) bool { return key != "config" && fs.Lookup(key) != nil },
		PollInterval: f.configPoll,
		Logger:       log,
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

	opts := []grpc.ServerOption{
		// Envoy keeps its xDS stream alive with pings; allow them.
		grpc.KeepaliveEnforcementPolicy(keepalive.EnforcementPolicy{MinTime: 10 * time.Second, PermitWithoutStream: true}),
	}
	if f.tlsCertFile != "" {
		creds, err := credentials.NewServerTLSFromFile(f.tlsCertFile, f.tlsKeyFile)
		if err != nil {
			return fmt.Errorf("xDS TLS: %w", err)
		}
		opts = append(opts, grpc.Creds(creds))
	}
	gs := grpc.NewServer(opts...)
	srv.Register(gs)
	ln, err := net.Listen("tcp", f.listen)
	if err != nil {
		return fmt.Errorf("listen on %s: %w", f.listen, err)
	}
	servers := []func() error{func() error { return gs.Serve(ln) }}
	ran := make(chan struct{})
	stops := []func(context.Context) error{func(context.Context) error {
		stopRun()
		<-ran
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
		reg := prometheus.NewRegistry()
		reg.MustRegister(collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
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

	go func() { srv.Run(runCtx); close(ran) }()
	return serveUntilDone(ctx, servers, stops, log, func() {
		log.Info("xds serving", "listen", ln.Addr().String(), "config", configFile, "admin", f.adminListen, "tls", f.tlsCertFile != "")
	})
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
