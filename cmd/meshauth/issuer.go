package main

import (
	"context"
	"crypto/hkdf"
	"crypto/sha256"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"os"
	"strings"
	"time"

	"github.com/meshauth/meshauth/internal/flagconf"
	"github.com/meshauth/meshauth/internal/natsconn"
	"github.com/meshauth/meshauth/issuer"
	"github.com/meshauth/meshauth/issuer/keys"
	"github.com/meshauth/meshauth/issuer/store"
	"github.com/meshauth/meshauth/issuer/store/storeurl"
	"github.com/meshauth/meshauth/jwks"
)

// Secrets are read from the environment or a file, never from a flag value,
// which any local user could read in the process list.
const (
	envAdminToken = "MESHAUTH_ADMIN_TOKEN"
	envKEK        = "MESHAUTH_KEY_ENCRYPTION_KEY"
)

type issuerFlags struct {
	listen          string
	issuerURL       string
	storeURL        string
	adminTokenFile  string
	kekFile         string
	algorithm       string
	tokenLifetime   time.Duration
	refreshLifetime time.Duration
	keyRotation     time.Duration
	keyPrePublish   time.Duration
	jwksMaxAge      time.Duration
	defaultAudience string
	tlsCertFile     string
	tlsKeyFile      string
	nats            natsconn.Flags
	federate        flagconf.StringList
	federateStale   time.Duration
	log             logFlags
	sessionLifetime time.Duration
	sessionIdle     time.Duration
	passwordLogin   *bool // nil (a struct literal) means the default, true
	// foreign and upstreams come from the config file's foreign_issuers
	// and upstream_providers sections.
	foreign   []issuer.ForeignIssuer
	upstreams []issuer.UpstreamProvider
}

func (f *issuerFlags) register(fs *flag.FlagSet, listen string) {
	fs.StringVar(&f.listen, "listen", listen, "address to serve HTTP on")
	fs.StringVar(&f.issuerURL, "issuer-url", "", "issuer identifier: the https URL clients reach this issuer at (http only for loopback)")
	fs.StringVar(&f.storeURL, "store", "", "where clients and keys live: file:DIR (embedded, single node) or postgres://... (replicated)")
	fs.StringVar(&f.adminTokenFile, "admin-token-file", "", "file holding the admin token for registration and key rotation (or set "+envAdminToken+")")
	fs.StringVar(&f.kekFile, "key-encryption-key-file", "", "file holding the base64 32-byte key that encrypts signing keys at rest (or set "+envKEK+")")
	fs.StringVar(&f.algorithm, "signing-alg", "ES256", "algorithm of new signing keys: ES256, EdDSA or RS256")
	fs.DurationVar(&f.tokenLifetime, "token-lifetime", 5*time.Minute, "access token lifetime")
	fs.DurationVar(&f.refreshLifetime, "refresh-token-lifetime", 24*time.Hour, "absolute lifetime of a user's authorization: its refresh tokens, however often rotated, stop working this long after the login")
	fs.DurationVar(&f.keyRotation, "key-rotation", 24*time.Hour, "age at which the signing key is replaced")
	fs.DurationVar(&f.keyPrePublish, "key-prepublish", 10*time.Minute, "how long a new key is published in the JWKS before it signs")
	fs.DurationVar(&f.jwksMaxAge, "jwks-max-age", 5*time.Minute, "Cache-Control max-age of the JWKS; must be shorter than --key-prepublish")
	fs.StringVar(&f.defaultAudience, "default-audience", "", "aud of tokens requested without resource or audience (default: the issuer URL, accepted by no service)")
	fs.StringVar(&f.tlsCertFile, "tls-cert-file", "", "serve HTTPS with this certificate (PEM); plain HTTP when unset, e.g. behind a TLS-terminating proxy")
	fs.StringVar(&f.tlsKeyFile, "tls-key-file", "", "private key (PEM) for --tls-cert-file")
	f.nats.Register(fs, "publish each change of keys and revocations to sidecars as it happens (core NATS, any nats-server 2.x; the snapshot at /meshauth/snapshot stays the source of truth)")
	fs.Var(&f.federate, "federate", "issuer URL of a trusted provider whose keys (found through its metadata) are relayed to this issuer's sidecars, in its snapshot and over NATS (repeatable)")
	fs.DurationVar(&f.federateStale, "federate-max-stale", providerMaxStale, "how long a federated provider's last good keys are relayed while it is down, serves garbage or names another issuer in its metadata; then they are dropped, here and at the sidecars")
	fs.DurationVar(&f.sessionLifetime, "session-lifetime", issuer.DefaultSessionLifetime, "a sign-in session at the login page ends this long after the person signed in")
	fs.DurationVar(&f.sessionIdle, "session-idle-timeout", issuer.DefaultSessionIdleTimeout, "a sign-in session unused this long ends")
	f.passwordLogin = fs.Bool("password-login", true, "offer the password form on the login page; false leaves only the upstream providers of the config file's upstream_providers")
	f.log.register(fs)
}

func runIssuer(ctx context.Context, args []string, _ io.Writer) error {
	fs := flag.NewFlagSet("issuer", flag.ContinueOnError)
	var f issuerFlags
	f.register(fs, ":8080")
	var file issuerFile
	if err := flagconf.ParseWith(fs, args, nil, &file); err != nil {
		return err
	}
	foreign, err := file.foreignIssuers()
	if err != nil {
		return err
	}
	f.foreign = foreign
	if f.upstreams, err = file.upstreamProviders(); err != nil {
		return err
	}
	log, err := newLogger(f.log.level, f.log.format)
	if err != nil {
		return err
	}
	if f.issuerURL == "" {
		return errors.New("--issuer-url is required")
	}
	adminToken, err := secretFromEnvOrFile(envAdminToken, f.adminTokenFile, "admin token")
	if err != nil {
		return err
	}
	if adminToken == "" {
		log.Warn("no admin token: registration and key rotation are disabled (set " + envAdminToken + " or --admin-token-file)")
	}
	kek, err := secretFromEnvOrFile(envKEK, f.kekFile, "key-encryption key")
	if err != nil {
		return err
	}
	if kek == "" {
		return errors.New("no key-encryption key: set " + envKEK + " or --key-encryption-key-file (32 random bytes, base64; e.g. openssl rand -base64 32)")
	}
	return serveIssuer(ctx, &f, adminToken, kek, log, nil)
}

// secretFromEnvOrFile reads a secret from the environment variable env, or
// from file; it is an error to give both.
func secretFromEnvOrFile(env, file, what string) (string, error) {
	fromEnv := os.Getenv(env)
	if file == "" {
		return fromEnv, nil
	}
	if fromEnv != "" {
		return "", fmt.Errorf("%s given both in %s and in a file; use one", what, env)
	}
	b, err := os.ReadFile(file)
	if err != nil {
		return "", fmt.Errorf("read %s: %w", what, err)
	}
	return strings.TrimSpace(string(b)), nil
}

// serveIssuer opens the store, loads the keys and serves the issuer until
// ctx is done. ready, if not nil, is called once the listener is bound.
func serveIssuer(ctx context.Context, f *issuerFlags, adminToken, kek string, log *slog.Logger, ready func(addr string)) error {
	kekBytes, err := keys.ParseKEK(kek)
	if err != nil {
		return err
	}
	sealer, err := keys.NewSealer(kekBytes)
	if err != nil {
		return err
	}
	// Replicas share the key-encryption key, so a key derived from it lets
	// any replica open the login forms another one sealed.
	formKey, err := hkdf.Key(sha256.New, kekBytes, nil, "meshauth login form key", 32)
	if err != nil {
		return fmt.Errorf("derive the login form key: %w", err)
	}
	st, err := storeurl.Open(ctx, f.storeURL)
	if err != nil {
		return fmt.Errorf("open store: %w", err)
	}
	defer st.Close()

	keyring, err := keys.NewKeyring(keys.KeyringConfig{
		Algorithm:        f.algorithm,
		RotationInterval: f.keyRotation,
		PrePublish:       f.keyPrePublish,
		MaxTokenLifetime: f.tokenLifetime,
		JWKSMaxAge:       f.jwksMaxAge,
		Sealer:           sealer,
		Store:            st,
		Logger:           log,
	})
	if err != nil {
		return err
	}
	if err := keyring.Load(ctx); err != nil {
		return fmt.Errorf("load signing keys: %w", err)
	}
	keysCtx, stopKeys := context.WithCancel(ctx)
	defer stopKeys()
	dist, err := newDistributor(keysCtx, f, keyring, st, log)
	if err != nil {
		return err
	}
	srv, err := issuer.New(issuer.Config{
		IssuerURL:            f.issuerURL,
		Store:                st,
		Keys:                 keyring,
		AdminToken:           adminToken,
		AccessTokenLifetime:  f.tokenLifetime,
		RefreshTokenLifetime: f.refreshLifetime,
		FormKey:              formKey,
		DefaultAudience:      f.defaultAudience,
		ForeignIssuers:       f.foreign,
		UpstreamProviders:    f.upstreams,
		SessionLifetime:      f.sessionLifetime,
		SessionIdleTimeout:   f.sessionIdle,
		DisablePasswordLogin: f.passwordLogin != nil && !*f.passwordLogin,
		Revocations:          dist,
		Snapshot:             dist,
		Status:               dist.Status,
		Logger:               log,
	})
	if err != nil {
		return err
	}
	go keyring.Run(keysCtx)
	go dist.Run(keysCtx)
	log.Info("issuer starting", "issuer", f.issuerURL, "listen", f.listen, "store", storeScheme(f.storeURL), "nats", f.nats.Enabled())
	return serveHTTP(ctx, f.listen, srv, f.tlsCertFile, f.tlsKeyFile, log, ready)
}

// A federated provider's keys are read again at least every
// providerMaxRefresh, and trusted for providerMaxStale (the default of
// --federate-max-stale) after the last good read.
const (
	providerMaxRefresh = 10 * time.Minute
	providerMaxStale   = time.Hour
	// providerMaxBytes bounds a provider's metadata and JWKS: they are
	// relayed in every snapshot.
	providerMaxBytes = 64 << 10
)

// newDistributor returns the distributor of the issuer's keys, its
// federated providers' keys and its revocations, connected to NATS if
// configured. The providers' key-set caches run until ctx ends.
func newDistributor(ctx context.Context, f *issuerFlags, keyring *keys.Keyring, st store.Store, log *slog.Logger) (*keys.Distributor, error) {
	providers := make(map[string]*jwks.KeySetCache, len(f.federate))
	for _, p := range f.federate {
		if p == f.issuerURL {
			return nil, fmt.Errorf("--federate %s: that is this issuer", p)
		}
		c, err := jwks.NewKeySetCache(jwks.KeySetConfig{Issuer: p, MaxRefresh: min(providerMaxRefresh, f.federateStale/2), MaxStale: f.federateStale,
			MaxBytes: providerMaxBytes, Logger: log.With("provider", p)})
		if err != nil {
			return nil, fmt.Errorf("--federate %s (or --federate-max-stale): %w", p, err)
		}
		c.Start(ctx)
		providers[p] = c
	}
	cfg := keys.DistributorConfig{Issuer: f.issuerURL, Keyring: keyring, Store: st, Providers: providers, Logger: log.With("part", "distributor")}
	if f.nats.Enabled() {
		nc, err := natsconn.Connect(&f.nats, "meshauth issuer "+f.issuerURL, log.With("part", "nats"))
		if err != nil {
			return nil, err
		}
		context.AfterFunc(ctx, nc.Close)
		cfg.Conn = nc
	}
	return keys.NewDistributor(cfg)
}

// storeScheme names the kind of store without the rest of its URL, which may
// hold a password.
func storeScheme(raw string) string {
	scheme, _, _ := strings.Cut(raw, ":")
	return scheme
}

// serveHTTP serves h on addr until ctx is done, then shuts down gracefully,
// letting requests in flight finish.
func serveHTTP(ctx context.Context, addr string, h http.Handler, certFile, keyFile string, log *slog.Logger, ready func(addr string)) error {
	if (certFile == "") != (keyFile == "") {
		return errors.New("--tls-cert-file and --tls-key-file go together")
	}
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return fmt.Errorf("listen on %s: %w", addr, err)
	}
	hs := &http.Server{
		Handler:           h,
		ReadHeaderTimeout: 5 * time.Second,
		ReadTimeout:       15 * time.Second,
		WriteTimeout:      15 * time.Second,
		IdleTimeout:       90 * time.Second,
		MaxHeaderBytes:    32 << 10,
		ErrorLog:          slog.NewLogLogger(log.Handler(), slog.LevelWarn),
	}
	serve := func() error { return hs.Serve(ln) }
	if certFile != "" {
		serve = func() error { return hs.ServeTLS(ln, certFile, keyFile) }
	}
	return serveUntilDone(ctx, []func() error{serve}, []func(context.Context) error{hs.Shutdown}, log, func() {
		log.Info("listening", "addr", ln.Addr().String())
		if ready != nil {
			ready(ln.Addr().String())
		}
	})
}
