package main

import (
	"context"
	"crypto/rand"
	"encoding/base64"
	"errors"
	"flag"
	"fmt"
	"io"
	"io/fs"
	"log/slog"
	"net"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/nats-io/nats-server/v2/server"

	"github.com/meshauth/meshauth/internal/demo"
	"github.com/meshauth/meshauth/internal/flagconf"
	"github.com/meshauth/meshauth/internal/natsconn"
	"github.com/meshauth/meshauth/issuer"
	"github.com/meshauth/meshauth/issuer/exchangepolicy"
	"github.com/meshauth/meshauth/issuer/store"
	"github.com/meshauth/meshauth/issuer/store/storeurl"
	"github.com/meshauth/meshauth/proxy"
	"github.com/meshauth/meshauth/rp"
)

func runDev(ctx context.Context, args []string, stdout io.Writer) error {
	fset := flag.NewFlagSet("dev", flag.ContinueOnError)
	var f issuerFlags
	f.register(fset, "127.0.0.1:8080")
	dir := fset.String("dir", ".meshauth", "directory for the development state: store, key-encryption key, admin token")
	natsListen := fset.String("nats-listen", "127.0.0.1:4223", "address of the embedded NATS server")
	sidecarListen := fset.String("sidecar-listen", "127.0.0.1:8000", "address of the sidecar of the demo service payments (empty disables the demo)")
	ordersListen := fset.String("orders-listen", "127.0.0.1:8001", "address of the sidecar of the demo service orders, which calls payments through its egress with an exchanged token")
	edgeListen := fset.String("edge-listen", "127.0.0.1:8002", "address of the edge in front of orders' sidecar, where Internet clients' reference tokens become internal JWTs (empty disables it)")
	rpListen := fset.String("rp-listen", "127.0.0.1:8003", "address of a demo web application that signs people in through the issuer with OpenID Connect (empty disables it)")
	upstreamListen := fset.String("upstream-listen", "127.0.0.1:8081", "address of a second issuer that the login page offers as an upstream identity provider (empty disables it; the config file's upstream_providers name others)")
	var file issuerFile
	if err := flagconf.ParseWith(fset, args, nil, &file); err != nil {
		return err
	}
	var err error
	if f.foreign, err = file.foreignIssuers(); err != nil {
		return err
	}
	if f.upstreams, err = file.upstreamProviders(); err != nil {
		return err
	}
	log, err := newLogger(f.log.level, f.log.format)
	if err != nil {
		return err
	}
	if err := os.MkdirAll(*dir, 0o700); err != nil {
		return fmt.Errorf("create %s: %w", *dir, err)
	}
	if f.storeURL == "" {
		f.storeURL = "file:" + filepath.Join(*dir, "store")
	}
	if f.issuerURL == "" {
		f.issuerURL = "http://" + f.listen
	}
	adminToken, err := secretFromEnvOrFile(envAdminToken, f.adminTokenFile, "admin token")
	if err != nil {
		return err
	}
	if adminToken == "" {
		path := filepath.Join(*dir, "admin-token")
		created, token, err := devSecret(path)
		if err != nil {
			return err
		}
		if created {
			log.Info("generated an admin token for development", "file", path)
		}
		adminToken = token
	}
	kek, err := secretFromEnvOrFile(envKEK, f.kekFile, "key-encryption key")
	if err != nil {
		return err
	}
	if kek == "" {
		path := filepath.Join(*dir, "key-encryption-key")
		created, key, err := devSecret(path)
		if err != nil {
			return err
		}
		if created {
			log.Warn("generated a key-encryption key for development and stored it beside the data it protects; production issuers must get theirs from a secret store", "file", path)
		}
		kek = key
	}

	if err := setUpBrowserDemo(ctx, f.storeURL, *dir, log); err != nil {
		return err
	}
	var rpSecret string
	if *rpListen != "" {
		if rpSecret, err = setUpRelyingPartyDemo(ctx, f.storeURL, *dir, "http://"+*rpListen); err != nil {
			return err
		}
	}
	// The upstream issuer: a copy of this one's settings, on its own
	// address and store, without NATS.
	up := f
	if *upstreamListen != "" {
		up.listen, up.issuerURL, up.storeURL = *upstreamListen, "http://"+*upstreamListen, "file:"+filepath.Join(*dir, "upstream", "store")
		up.federate, up.foreign, up.upstreams, up.nats, up.tlsCertFile, up.tlsKeyFile = nil, nil, nil, natsconn.Flags{}, "", ""
		p, err := setUpUpstreamDemo(ctx, &up, f.issuerURL, *dir, log)
		if err != nil {
			return err
		}
		f.upstreams = append(f.upstreams, *p)
	}

	ns, err := startNATS(*natsListen)
	if err != nil {
		return err
	}
	defer ns.Shutdown()
	log.Info("embedded NATS running", "url", ns.ClientURL())
	if !f.nats.Enabled() {
		f.nats.URLs = ns.ClientURL()
	}

	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	paymentsDone := make(chan error, 1)
	ordersDone := make(chan error, 1)
	edgeDone := make(chan error, 1)
	upstreamDone := make(chan error, 1)
	rpDone := make(chan error, 1)
	if *upstreamListen == "" {
		close(upstreamDone)
	} else {
		go func() {
			upstreamDone <- serveIssuer(ctx, &up, adminToken, kek, log.With("part", "upstream-issuer"), nil)
		}()
	}
	err = serveIssuer(ctx, &f, adminToken, kek, log, func(addr string) {
		// The web app's part of the quick start is printed once it
		// serves, and not if it cannot.
		rpReady, rpExited := make(chan struct{}), make(chan struct{})
		if *rpListen == "" {
			close(rpDone)
			close(rpExited)
		} else {
			go func() {
				defer close(rpExited)
				rpDone <- runRelyingPartyDemo(ctx, *rpListen, f.issuerURL, rpSecret, log, func(string) { close(rpReady) })
			}()
		}
		defer func() {
			select {
			case <-rpReady:
				printSignInDemo(stdout, *dir, *rpListen, up.issuerURL, *upstreamListen != "")
			case <-rpExited:
			}
		}()
		if *sidecarListen == "" || *edgeListen == "" {
			close(edgeDone)
		} else {
			go func() {
				edgeDone <- runEdgeDemo(ctx, *edgeListen, *ordersListen, f.issuerURL, adminToken, *dir, f.nats, log)
			}()
		}
		if *sidecarListen == "" {
			close(paymentsDone)
			close(ordersDone)
		} else {
			// The demo starts once the issuer serves: its sidecars fetch the
			// issuer's keys, and orders registers its client.
			go func() { paymentsDone <- runPaymentsDemo(ctx, *sidecarListen, f.issuerURL, f.nats, log) }()
			go func() {
				ordersDone <- runOrdersDemo(ctx, *ordersListen, *sidecarListen, f.issuerURL, adminToken, *dir, f.nats, log)
			}()
		}
		printQuickStart(stdout, f.issuerURL, ns.ClientURL(), *dir, *sidecarListen, *ordersListen, *edgeListen)
	})
	cancel()
	return errors.Join(err, <-paymentsDone, <-ordersDone, <-edgeDone, <-upstreamDone, <-rpDone)
}

// runPaymentsDemo serves the demo service "payments" on a loopback port and
// a sidecar in front of it on listen, trusting the dev issuer and following
// its keys and revocations on NATS, until ctx ends.
func runPaymentsDemo(ctx context.Context, listen, issuerURL string, nats natsconn.Flags, log *slog.Logger) error {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return fmt.Errorf("demo service: %w", err)
	}
	service := &http.Server{Handler: demo.Handler("payments"), ReadHeaderTimeout: 5 * time.Second}
	go service.Serve(ln)
	defer service.Close()
	f := sidecarFlags{listen: listen, upstream: "http://" + ln.Addr().String(), audience: "payments", adminListen: "", nats: nats, federation: true,
		forwardAuthPath: proxy.DefaultForwardAuthPath, cacheMiB: 16, cacheMaxAge: 10 * time.Minute, upstreamTimeout: proxy.DefaultUpstreamTimeout}
	trusted := []trustedIssuer{{Issuer: issuerURL, Audiences: []string{"payments"}}}
	policy := proxy.Policy{Routes: []proxy.Route{{PathPrefix: "/refunds", Scopes: []string{"payments.refund"}}}}
	return serveSidecar(ctx, &f, trusted, policy, "", log.With("part", "payments-demo"), nil)
}

// runOrdersDemo runs the demo service orders behind a sidecar on listen,
// whose egress exchanges the inbound token for one to payments (behind
// paymentsSidecar). The client orders is registered on first use, its
// secret kept in dir. It returns when ctx ends.
func runOrdersDemo(ctx context.Context, listen, paymentsSidecar, issuerURL, adminToken, dir string, nats natsconn.Flags, log *slog.Logger) error {
	log = log.With("part", "orders-demo")
	secret, err := demoClientSecret(ctx, issuerURL, adminToken, dir, issuer.ClientMetadata{
		ClientID: "orders", Scope: "payments.charge payments.read", AllowedAudiences: []string{"payments"},
		GrantTypes: []string{"client_credentials", issuer.GrantTypeTokenExchange},
	}, log)
	if secret == "" || err != nil {
		return err
	}
	egress, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return err
	}
	egressAddr := egress.Addr().String()
	egress.Close()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return err
	}
	service := &http.Server{Handler: demo.Caller("orders", "http://"+egressAddr, "payments"), ReadHeaderTimeout: 5 * time.Second}
	go service.Serve(ln)
	defer service.Close()
	f := sidecarFlags{listen: listen, upstream: "http://" + ln.Addr().String(), audience: "orders", egress: egressAddr, nats: nats, federation: true,
		egressRoutes: flagconf.StringList{"payments=http://" + paymentsSidecar}, routeScopes: flagconf.StringList{"payments=payments.charge"},
		forwardAuthPath: proxy.DefaultForwardAuthPath, cacheMiB: 16, cacheMaxAge: 10 * time.Minute, upstreamTimeout: proxy.DefaultUpstreamTimeout}
	trusted := []trustedIssuer{{Issuer: issuerURL, Audiences: []string{"orders"}}}
	return serveSidecar(ctx, &f, trusted, proxy.Policy{}, secret, log, nil)
}

// demoClientSecret returns the secret of the demo client md, registering
// it on first use and keeping its secret in dir. It returns "" and no
// error, with a warning, if the client cannot be registered: someone
// registered that id by hand.
func demoClientSecret(ctx context.Context, issuerURL, adminToken, dir string, md issuer.ClientMetadata, log *slog.Logger) (string, error) {
	secretPath := filepath.Join(dir, "demo-"+md.ClientID+"-secret")
	secret, err := os.ReadFile(secretPath)
	if err == nil {
		return strings.TrimSpace(string(secret)), nil
	}
	if !errors.Is(err, fs.ErrNotExist) {
		return "", fmt.Errorf("read %s: %w", secretPath, err)
	}
	admin, err := newAdminClient(issuerURL, adminToken)
	if err != nil {
		return "", err
	}
	var reg issuer.Registration
	if err := admin.do(ctx, http.MethodPost, "/register", md, &reg); err != nil {
		log.Warn("demo "+md.ClientID+" disabled: could not register its client (if you registered "+md.ClientID+" yourself, delete the state directory to start over)", "error", err)
		return "", nil
	}
	if err := os.WriteFile(secretPath, []byte(reg.ClientSecret), 0o600); err != nil {
		return "", fmt.Errorf("write %s: %w", secretPath, err)
	}
	return reg.ClientSecret, nil
}

// runEdgeDemo runs an edge on listen in front of orders' sidecar
// (ordersSidecar): Internet clients' reference tokens become JWTs for
// orders. Its client, edge, is registered on first use with the
// dereference scope. It returns when ctx ends.
func runEdgeDemo(ctx context.Context, listen, ordersSidecar, issuerURL, adminToken, dir string, nats natsconn.Flags, log *slog.Logger) error {
	log = log.With("part", "edge-demo")
	secret, err := demoClientSecret(ctx, issuerURL, adminToken, dir, issuer.ClientMetadata{
		ClientID: "edge", Scope: exchangepolicy.DereferenceScope, AllowedAudiences: []string{"orders"},
		GrantTypes: []string{issuer.GrantTypeTokenExchange},
	}, log)
	if secret == "" || err != nil {
		return err
	}
	f := edgeFlags{listen: listen, upstream: "http://" + ordersSidecar, issuer: issuerURL, audience: "orders", clientID: "edge", nats: nats,
		cacheMiB: 16, maxCacheLifetime: proxy.DefaultMaxCacheLifetime, negativeLifetime: proxy.DefaultNegativeLifetime, negativeEntries: proxy.DefaultNegativeSlots,
		dereferenceRate: proxy.DefaultDereferenceRate, dereferenceBurst: proxy.DefaultDereferenceBurst, rateLimitedAddresses: proxy.DefaultRateLimitedAddresses,
		dereferenceTimeout: proxy.DefaultDereferenceWait, upstreamTimeout: proxy.DefaultUpstreamTimeout}
	return serveEdge(ctx, &f, secret, log, nil)
}

// The browser demo: a person, and a public client to sign in to.
const (
	demoUser        = "demo"
	demoClientID    = "demo-app"
	demoRedirectURI = "http://127.0.0.1:8765/callback"
)

// setUpBrowserDemo gives meshauth dev someone to sign in as and an app to
// sign in to: the user demo, with a generated password kept in dir, and
// the public client demo-app, whose redirect URI is on loopback as a
// native app's would be. Both are made on first use only. It runs before
// the issuer opens the store, which an embedded store allows only once.
func setUpBrowserDemo(ctx context.Context, storeURL, dir string, log *slog.Logger) error {
	st, err := storeurl.Open(ctx, storeURL)
	if err != nil {
		return fmt.Errorf("open store: %w", err)
	}
	defer st.Close()
	_, err = demoClient(ctx, st, issuer.ClientMetadata{
		ClientID: demoClientID, ClientName: "meshauth demo app", TokenEndpointAuthMethod: "none",
		GrantTypes:   []string{issuer.GrantTypeAuthorizationCode, issuer.GrantTypeRefreshToken},
		RedirectURIs: []string{demoRedirectURI}, Scope: "payments.charge payments.read",
		AllowedAudiences: []string{"orders", "payments"},
	}, "")
	if err != nil {
		return err
	}
	return demoPerson(ctx, st, demoUser, issuer.Profile{}, filepath.Join(dir, "demo-user-password"), log)
}

// demoClient registers the client md in st unless it exists, and returns
// its secret, which it keeps in secretPath ("" for a public client).
func demoClient(ctx context.Context, st store.Store, md issuer.ClientMetadata, secretPath string) (string, error) {
	_, err := st.GetClient(ctx, md.ClientID)
	switch {
	case err == nil && secretPath == "":
		return "", nil
	case err == nil:
		b, err := os.ReadFile(secretPath)
		if err != nil {
			return "", fmt.Errorf("demo client %s exists but its secret is gone (%w); delete the state directory to start over", md.ClientID, err)
		}
		return strings.TrimSpace(string(b)), nil
	case !errors.Is(err, store.ErrNotFound):
		return "", fmt.Errorf("demo client %s: %w", md.ClientID, err)
	}
	reg, err := issuer.RegisterClient(ctx, st, md, time.Now())
	if err != nil {
		return "", fmt.Errorf("demo client %s: %w", md.ClientID, err)
	}
	if secretPath != "" {
		if err := os.WriteFile(secretPath, []byte(reg.ClientSecret+"\n"), 0o600); err != nil {
			return "", fmt.Errorf("write %s: %w", secretPath, err)
		}
	}
	return reg.ClientSecret, nil
}

// demoPerson creates the user name in st, once, with a generated password
// kept in passwordPath.
func demoPerson(ctx context.Context, st store.Store, name string, p issuer.Profile, passwordPath string, log *slog.Logger) error {
	if _, err := os.Stat(passwordPath); err == nil {
		return nil // made on an earlier run
	} else if !errors.Is(err, fs.ErrNotExist) {
		return err
	}
	password := rand.Text()
	if _, err := issuer.CreateUserWithProfile(ctx, st, name, password, p, time.Now()); errors.Is(err, store.ErrExists) {
		log.Warn("the demo user exists but its password file is gone; set a new password with meshauth users passwd", "user", name, "file", passwordPath)
		return nil
	} else if err != nil {
		return fmt.Errorf("demo user %s: %w", name, err)
	}
	if err := os.WriteFile(passwordPath, []byte(password+"\n"), 0o600); err != nil {
		return fmt.Errorf("write %s: %w", passwordPath, err)
	}
	log.Info("created a demo user", "user", name, "password_file", passwordPath)
	return nil
}

// The OpenID Connect demo: a web application signing people in through
// the issuer, and a second issuer they may sign in through instead.
const (
	rpClientID         = "demo-rp"
	upstreamDemoID     = "dev-upstream"
	upstreamDemoUser   = "upstream-demo"
	upstreamDemoClient = "meshauth-dev"
)

// setUpRelyingPartyDemo registers the demo web application at rpURL as a
// confidential OpenID Connect client, once, and returns its secret.
func setUpRelyingPartyDemo(ctx context.Context, storeURL, dir, rpURL string) (string, error) {
	st, err := storeurl.Open(ctx, storeURL)
	if err != nil {
		return "", fmt.Errorf("open store: %w", err)
	}
	defer st.Close()
	return demoClient(ctx, st, issuer.ClientMetadata{
		ClientID: rpClientID, ClientName: "meshauth demo web app", GrantTypes: []string{issuer.GrantTypeAuthorizationCode},
		RedirectURIs: []string{rpURL + "/callback"}, PostLogoutRedirectURIs: []string{rpURL + "/"}, Scope: "openid profile email",
	}, filepath.Join(dir, "demo-rp-secret"))
}

// setUpUpstreamDemo prepares the upstream issuer up, once: its person
// upstream-demo, with a generated password kept in dir, and its client for
// the issuer at issuerURL. It returns that issuer's provider configuration.
func setUpUpstreamDemo(ctx context.Context, up *issuerFlags, issuerURL, dir string, log *slog.Logger) (*issuer.UpstreamProvider, error) {
	st, err := storeurl.Open(ctx, up.storeURL)
	if err != nil {
		return nil, fmt.Errorf("open the upstream issuer's store: %w", err)
	}
	defer st.Close()
	secret, err := demoClient(ctx, st, issuer.ClientMetadata{
		ClientID: upstreamDemoClient, ClientName: "meshauth dev", GrantTypes: []string{issuer.GrantTypeAuthorizationCode},
		RedirectURIs: []string{issuerURL + "/upstream/" + upstreamDemoID + "/callback"}, Scope: "openid profile email",
	}, filepath.Join(dir, "upstream-client-secret"))
	if err != nil {
		return nil, err
	}
	p := issuer.Profile{DisplayName: "Upstream Demo", Email: "upstream-demo@example.com", EmailVerified: true}
	if err := demoPerson(ctx, st, upstreamDemoUser, p, filepath.Join(dir, "upstream-user-password"), log); err != nil {
		return nil, err
	}
	return &issuer.UpstreamProvider{ID: upstreamDemoID, Name: "the dev upstream issuer", Issuer: up.issuerURL,
		ClientID: upstreamDemoClient, ClientSecret: secret, CreateUsers: true}, nil
}

// runRelyingPartyDemo serves the demo web application on listen until ctx
// ends; ready is called once it listens.
func runRelyingPartyDemo(ctx context.Context, listen, issuerURL, secret string, log *slog.Logger, ready func(addr string)) error {
	self := "http://" + listen
	p, err := rp.New(rp.Config{Issuer: issuerURL, ClientID: rpClientID, ClientSecret: secret, RedirectURL: self + "/callback",
		Scopes: []string{"profile", "email"}, Logger: log.With("part", "demo-rp")})
	if err != nil {
		return fmt.Errorf("demo web app: %w", err)
	}
	return serveHTTP(ctx, listen, demo.NewRelyingParty(p, issuerURL, self), "", "", log.With("part", "demo-rp"), ready)
}

// devSecret reads a 32-byte base64 secret from path, creating it (0600) on
// first use. created reports whether it was made now.
func devSecret(path string) (created bool, secret string, err error) {
	b, err := os.ReadFile(path)
	if err == nil {
		return false, strings.TrimSpace(string(b)), nil
	}
	if !errors.Is(err, fs.ErrNotExist) {
		return false, "", fmt.Errorf("read %s: %w", path, err)
	}
	raw := make([]byte, 32)
	_, _ = rand.Read(raw)
	secret = base64.StdEncoding.EncodeToString(raw)
	if err := os.WriteFile(path, []byte(secret+"\n"), 0o600); err != nil {
		return false, "", fmt.Errorf("write %s: %w", path, err)
	}
	return true, secret, nil
}

// startNATS runs an embedded NATS server, the push channel for keys and
// revocations: core NATS, which keeps nothing.
func startNATS(listen string) (*server.Server, error) {
	host, port, err := splitHostPort(listen)
	if err != nil {
		return nil, fmt.Errorf("--nats-listen: %w", err)
	}
	ns, err := server.NewServer(&server.Options{
		ServerName: "meshauth-dev",
		Host:       host,
		Port:       port,
		NoSigs:     true,
		NoLog:      true,
	})
	if err != nil {
		return nil, fmt.Errorf("configure embedded NATS: %w", err)
	}
	go ns.Start()
	if !ns.ReadyForConnections(10 * time.Second) {
		ns.Shutdown()
		return nil, fmt.Errorf("embedded NATS did not start on %s (is the port taken? use --nats-listen)", listen)
	}
	return ns, nil
}

func printQuickStart(w io.Writer, issuerURL, natsURL, dir, sidecar, orders, edge string) {
	fmt.Fprintf(w, `
meshauth dev is running (Ctrl-C stops it).

  issuer   %[1]s   (metadata: %[1]s/.well-known/oauth-authorization-server)
  NATS     %[2]s
  state    %[3]s/  (store, key-encryption key, admin token; delete it to start over)

Quick start, in another shell:

  export MESHAUTH_ADMIN_TOKEN=$(cat %[3]s/admin-token)

  # 1. register a client (a service's client id is its audience name)
  ./bin/meshauth clients create --issuer %[1]s --id web \
      --scope "payments.charge payments.read" --allowed-audience payments --allowed-audience orders

  # 2. get a token for the payments service, with the printed client_secret
  SECRET=...   # the client_secret from step 1
  curl -s -u web:$SECRET -d grant_type=client_credentials \
      -d audience=payments %[1]s/token

  # 3. decode its claims (the access_token from step 2)
  TOKEN=...
  echo "$TOKEN" | cut -d. -f2 | basenc -d --base64url 2>/dev/null; echo

Sign in as a person (authorization code with PKCE, as the public client %[4]s):

  # a. a PKCE pair, and the authorization URL to open in a browser
  VERIFIER=$(openssl rand -base64 48 | tr '+/' '-_' | tr -d '=\n')
  CHALLENGE=$(printf %%s "$VERIFIER" | openssl dgst -sha256 -binary | basenc --base64url | tr -d '=')
  echo "%[1]s/authorize?response_type=code&client_id=%[4]s&redirect_uri=%[5]s&scope=payments.charge&audience=orders&state=s1&code_challenge=$CHALLENGE&code_challenge_method=S256"

  # b. sign in as %[6]s with the password in %[3]s/demo-user-password and allow;
  #    the browser goes to %[7]s?code=...  (nothing listens there: copy the code
  #    from the address bar)
  CODE=...

  # c. the tokens: an access token for orders and a refresh token
  curl -s -d grant_type=authorization_code -d client_id=%[4]s -d code=$CODE \
      -d redirect_uri=%[7]s -d code_verifier=$VERIFIER %[1]s/token

`, issuerURL, natsURL, dir, demoClientID, url.QueryEscape(demoRedirectURI), demoUser, demoRedirectURI)
	if sidecar == "" {
		return
	}
	fmt.Fprintf(w, `  sidecar  http://%[1]s   guards the demo service "payments" (audience payments)

  # 4. call payments through its sidecar: passes, and the service sees who called
  curl -s -H "Authorization: Bearer $TOKEN" http://%[1]s/charge

  # 5. refused: no token (401), and a route needing a scope the token lacks (403)
  curl -si http://%[1]s/charge | head -n1
  curl -si -H "Authorization: Bearer $TOKEN" http://%[1]s/refunds/1 | head -n1

  sidecar  http://%[2]s   guards the demo service "orders", which calls payments
                                  through its egress (RFC 8693 token exchange at the hop)

  # 6. a token for orders; orders calls payments, which receives a token narrowed
  #    to aud=payments, scope payments.charge, with act={"sub":"orders"}
  TOKEN=$(curl -s -u web:$SECRET -d grant_type=client_credentials -d audience=orders \
      %[3]s/token | sed 's/.*"access_token":"\([^"]*\)".*/\1/')
  curl -s -H "Authorization: Bearer $TOKEN" http://%[2]s/checkout

  Keys and revocations reach both sidecars over NATS, in milliseconds:

  # 7. rotate the signing key at once (as after a leak): the sidecars have the
  #    new key before the first token it signs reaches them
  ./bin/meshauth keys rotate --issuer %[3]s --immediate
  TOKEN=$(curl -s -u web:$SECRET -d grant_type=client_credentials -d audience=payments \
      %[3]s/token | sed 's/.*"access_token":"\([^"]*\)".*/\1/')
  curl -s -H "Authorization: Bearer $TOKEN" http://%[1]s/charge

  # 8. revoke every token of client web: refused at once, long before it expires
  ./bin/meshauth revoke client web --issuer %[3]s
  curl -si -H "Authorization: Bearer $TOKEN" http://%[1]s/charge | head -n1   # 401

`, sidecar, orders, issuerURL)
	if edge == "" {
		return
	}
	fmt.Fprintf(w, `  edge     http://%[1]s   in front of orders' sidecar: Internet clients hold opaque
                                  reference tokens; the edge swaps each for a JWT for orders

  # 9. a client whose tokens are reference tokens: nothing readable in them
  ./bin/meshauth clients create --issuer %[2]s --id mobile --access-token-format reference \
      --scope payments.charge --allowed-audience orders
  MOBILE_SECRET=...   # the client_secret printed
  REF=$(curl -s -u mobile:$MOBILE_SECRET -d grant_type=client_credentials -d audience=orders \
      %[2]s/token | sed 's/.*"access_token":"\([^"]*\)".*/\1/')
  echo "$REF"   # opaque

  # 10. the opaque token goes in at the edge; orders' sidecar verifies the JWT that
  #     replaced it, and payments shows the chain: caller mobile, act={"sub":"orders"}
  curl -s -H "Authorization: Bearer $REF" http://%[1]s/checkout

  # 11. a JWT from outside is refused at the edge (internal tokens stay inside)
  curl -si -H "Authorization: Bearer $TOKEN" http://%[1]s/checkout | head -n1   # 401

  # 12. revoke the reference token (RFC 7009): the edge drops its JWT at once (NATS)
  curl -s -u mobile:$MOBILE_SECRET -d token=$REF %[2]s/revoke
  curl -si -H "Authorization: Bearer $REF" http://%[1]s/checkout | head -n1   # 401

`, edge, issuerURL)
}

// printSignInDemo tells how to sign in to the demo web application, and
// through the upstream issuer.
func printSignInDemo(w io.Writer, dir, rpListen, upstreamURL string, upstream bool) {
	fmt.Fprintf(w, `  web app  http://%[1]s   signs people in through the issuer (OpenID Connect)

  # open http://%[1]s/ in a browser and sign in as %[2]s (password in %[3]s/demo-user-password)
`, rpListen, demoUser, dir)
	if upstream {
		fmt.Fprintf(w, `  # or with "Sign in with the dev upstream issuer", a second issuer at %[1]s,
  # as %[2]s (password in %[3]s/upstream-user-password): the first sign-in
  # creates a local user linked to that identity, the next ones reuse it
`, upstreamURL, upstreamDemoUser, dir)
	}
	fmt.Fprint(w, `  # the page shows the ID Token's claims and the userinfo answer; signing in again needs
  # no password (the issuer's session), and "Sign out" ends that session too

`)
}
