// Package issuer is meshauth's authorization server: RFC 8414 metadata, the
// JWKS, RFC 7591 dynamic client registration and the token endpoint
// (RFC 6749) with client_credentials, issuing RFC 9068 JWT access tokens or
// reference tokens, and RFC 8693 token exchange, issuing JWTs for the next
// hop of a request with an act chain; for people, the authorization
// endpoint with its login and consent pages, the authorization_code grant
// with PKCE and rotating refresh tokens; OpenID Connect, as a provider (ID
// Tokens, userinfo, sign-in sessions, RP-initiated logout) and as the
// relying party of upstream identity providers people sign in through.
// State lives in a store.Store, so replicas over one PostgreSQL database are
// interchangeable.
package issuer

import (
	"cmp"
	"context"
	"crypto/cipher"
	"crypto/rand"
	"crypto/sha256"
	"crypto/subtle"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"net/url"
	"strings"
	"sync/atomic"
	"time"

	"golang.org/x/crypto/chacha20poly1305"

	"github.com/meshauth/meshauth/internal/loopback"
	"github.com/meshauth/meshauth/internal/ratelog"
	"github.com/meshauth/meshauth/issuer/store"
	"github.com/meshauth/meshauth/token"
)

// Endpoint paths, relative to the issuer URL's path.
const (
	pathAuthorize = "/authorize"
	pathLogin     = "/authorize/login"
	pathConsent   = "/authorize/consent"
	pathToken     = "/token"
	pathRegister  = "/register"
	pathJWKS      = "/jwks.json"
	pathSnapshot  = "/meshauth/snapshot"
	pathRotate    = "/admin/keys/rotate"
	// RFC 7662 introspection and RFC 7009 revocation.
	pathIntrospect = "/introspect"
	pathRevoke     = "/revoke"
)

// Keys is what the issuer needs of its signing keys (package issuer/keys's Keyring).
type Keys interface {
	// Sign returns a compact JWS of payload, signed with the active key, with
	// the given typ header.
	Sign(typ string, payload []byte) (string, error)
	// JWKS returns the current public key set document.
	JWKS() []byte
	// Ready reports whether a signing key is loaded and active.
	Ready() bool
	// Rotate adds a new key, active at once if immediate, else after the
	// pre-publication delay.
	Rotate(ctx context.Context, immediate bool) (*store.SigningKey, error)
	// ServeHTTP serves the JWKS document with its caching headers.
	http.Handler
	// Lookup finds the published keys, which verify the issuer's own
	// tokens presented back to it (exchange, introspection, revocation).
	token.Keys
}

// Config configures a Server.
type Config struct {
	// IssuerURL is the issuer identifier (RFC 8414 §2): an https URL (http
	// only for loopback development) without query or fragment. Endpoints are
	// served under its path.
	IssuerURL string
	Store     store.Store
	Keys      Keys
	// AdminToken authorizes registration and key administration. Empty
	// disables those endpoints.
	AdminToken string
	// AccessTokenLifetime is the lifetime of access tokens; default 5m.
	AccessTokenLifetime time.Duration
	// DefaultAudience is the aud of tokens requested without resource or
	// audience; default the issuer URL, which no service accepts, so a token
	// is only useful for the audience it names.
	DefaultAudience string
	// RefreshTokenLifetime is the absolute lifetime of a user's
	// authorization (a grant): its refresh tokens stop working this long
	// after the user allowed it, however often they are rotated; default
	// 24h.
	RefreshTokenLifetime time.Duration
	// FormKey (32 bytes) seals the pending authorization that the login
	// and consent forms carry. Replicas must share it, so that a form
	// shown by one can be answered at another; empty means a random key,
	// for a single issuer process.
	FormKey []byte
	// Revocations, if set, is told of every stored revocation.
	Revocations RevocationNotifier
	// Snapshot, if set, serves the signed snapshot of the keys and
	// revocations that verifiers follow (package issuer/keys's Distributor), at
	// /meshauth/snapshot, named by the metadata's meshauth_snapshot_uri.
	Snapshot http.Handler
	// Status, if set, adds lines to the /readyz answer: what readiness
	// does not depend on but an operator wants to see, such as the state
	// of federated providers.
	Status func() []string
	// ForeignIssuers are the other authorization servers whose tokens an
	// edge may dereference through this issuer (see ForeignIssuer).
	ForeignIssuers []ForeignIssuer
	// SessionLifetime bounds a sign-in session, SessionIdleTimeout ends
	// one unused that long; defaults DefaultSessionLifetime and
	// DefaultSessionIdleTimeout.
	SessionLifetime    time.Duration
	SessionIdleTimeout time.Duration
	// UpstreamProviders are the OpenID providers people may sign in with
	// (see UpstreamProvider), offered on the login page in this order.
	UpstreamProviders []UpstreamProvider
	// DisablePasswordLogin leaves only the upstream providers on the
	// login page.
	DisablePasswordLogin bool
	Logger               *slog.Logger
	Now                  func() time.Time
}

// Server serves the issuer's HTTP endpoints.
type Server struct {
	issuerURL       string
	prefix          string
	store           store.Store
	keys            Keys
	adminTokenHash  [sha256.Size]byte
	adminEnabled    bool
	tokenLifetime   time.Duration
	defaultAudience string
	metadata        []byte
	grantLifetime   time.Duration
	formAEAD        cipher.AEAD // seals login and consent form state
	secureCookies   bool
	issuerHost      string
	throttle        loginThrottle
	notifier        RevocationNotifier
	snapshot        http.Handler
	status          func() []string
	own             *token.Authenticator      // verifies this issuer's tokens presented back to it
	foreign         map[string]*foreignIssuer // by id
	log             *slog.Logger
	// OpenID Connect.
	issuerPort      string              // of the issuer URL, in http cookie names
	sessionLifetime time.Duration       // absolute
	sessionIdle     time.Duration       // idle timeout
	hints           *token.Verifier     // this issuer's ID Tokens presented back as hints
	idTokenAlg      atomic.Value        // string: the algorithm ID Tokens were last signed with
	upstreams       []*upstreamProvider // in the login page's order
	upstreamByID    map[string]*upstreamProvider
	passwordLogin   bool
	remote          *slog.Logger // log, for what callers cause: bounded (ratelog)
	now             func() time.Time
	mux             *http.ServeMux
}

// New checks cfg and builds a Server.
func New(cfg Config) (*Server, error) {
	u, err := url.Parse(cfg.IssuerURL)
	if err != nil || u.Host == "" || u.RawQuery != "" || u.Fragment != "" || (u.Scheme != "https" && u.Scheme != "http") {
		return nil, fmt.Errorf("issuer URL %q must be an absolute http(s) URL without query or fragment", cfg.IssuerURL)
	}
	if u.Scheme == "http" && !loopback.Host(u.Hostname()) {
		return nil, fmt.Errorf("issuer URL %q must use https (http is allowed only for loopback development; RFC 8414 §2)", cfg.IssuerURL)
	}
	if cfg.Store == nil || cfg.Keys == nil {
		return nil, errors.New("issuer needs a store and signing keys")
	}
	s := &Server{
		issuerURL:       strings.TrimSuffix(cfg.IssuerURL, "/"),
		prefix:          strings.TrimSuffix(u.Path, "/"),
		store:           cfg.Store,
		keys:            cfg.Keys,
		tokenLifetime:   cfg.AccessTokenLifetime,
		defaultAudience: cfg.DefaultAudience,
		grantLifetime:   cmp.Or(cfg.RefreshTokenLifetime, 24*time.Hour),
		secureCookies:   u.Scheme == "https",
		issuerHost:      u.Host,
		throttle:        loginThrottle{cfg.Store},
		notifier:        cfg.Revocations,
		snapshot:        cfg.Snapshot,
		status:          cfg.Status,
		log:             cfg.Logger,
		now:             cfg.Now,
		issuerPort:      cmp.Or(u.Port(), "80"), // named in http cookies only
		sessionLifetime: cmp.Or(cfg.SessionLifetime, DefaultSessionLifetime),
		sessionIdle:     cmp.Or(cfg.SessionIdleTimeout, DefaultSessionIdleTimeout),
		passwordLogin:   !cfg.DisablePasswordLogin,
	}
	formKey := cfg.FormKey
	if len(formKey) == 0 {
		formKey = make([]byte, formKeySize)
		_, _ = rand.Read(formKey)
	}
	if s.formAEAD, err = chacha20poly1305.NewX(formKey); err != nil {
		return nil, fmt.Errorf("form key must be %d bytes", formKeySize)
	}
	if s.foreign, err = newForeignIssuers(cfg.ForeignIssuers, s.issuerURL); err != nil {
		return nil, err
	}
	if cfg.AdminToken != "" {
		s.adminTokenHash = sha256.Sum256([]byte(cfg.AdminToken))
		s.adminEnabled = true
	}
	if s.tokenLifetime == 0 {
		s.tokenLifetime = 5 * time.Minute
	}
	if s.tokenLifetime < 0 {
		return nil, errors.New("access token lifetime must be positive")
	}
	if s.grantLifetime < s.tokenLifetime {
		return nil, errors.New("refresh token lifetime must be at least the access token lifetime")
	}
	if s.defaultAudience == "" {
		s.defaultAudience = s.issuerURL
	}
	if s.log == nil {
		s.log = slog.Default()
	}
	s.remote = ratelog.New(s.log)
	if s.now == nil {
		s.now = time.Now
	}
	// The issuer's own tokens presented back to it; the Authenticator reads
	// "iss" first, so another issuer's token is refused as such (BadIssuer)
	// rather than for its unknown key.
	if s.own, err = token.NewAuthenticator([]token.Issuer{{
		Policy: token.Policy{Issuer: s.issuerURL, AnyAudience: true, Now: s.now},
		Keys:   cfg.Keys,
	}}, token.AuthenticatorOptions{}); err != nil {
		return nil, fmt.Errorf("own-token verifier: %w", err)
	}
	if s.sessionLifetime < 0 || s.sessionIdle < 0 {
		return nil, errors.New("session lifetime and idle timeout must be positive")
	}
	// ID Tokens of this issuer presented back as hints, whatever client
	// they were for.
	if s.hints, err = token.NewVerifier(token.Policy{Issuer: s.issuerURL, AnyAudience: true, Types: []string{idTokenType}, Now: s.now}, cfg.Keys); err != nil {
		return nil, fmt.Errorf("ID Token hint verifier: %w", err)
	}
	if err := s.addUpstreams(cfg.UpstreamProviders); err != nil {
		return nil, err
	}
	if !s.passwordLogin && len(s.upstreams) == 0 {
		return nil, errors.New("password login is disabled and no upstream provider is configured: nobody could sign in")
	}
	if s.metadata, err = s.buildMetadata(); err != nil {
		return nil, err
	}
	s.routes()
	return s, nil
}

// endpoint returns the absolute URL of an endpoint path.
func (s *Server) endpoint(path string) string { return s.issuerURL + path }

func (s *Server) routes() {
	m := http.NewServeMux()
	p := s.prefix
	// RFC 8414 §3 inserts the well-known segment before the issuer's path;
	// OpenID Connect Discovery appends it. Serve both.
	m.HandleFunc("GET /.well-known/oauth-authorization-server"+p, s.handleMetadata)
	m.HandleFunc("GET "+p+"/.well-known/openid-configuration", s.handleMetadata)
	m.Handle("GET "+p+pathJWKS, s.keys)
	if s.snapshot != nil {
		m.Handle("GET "+p+pathSnapshot, s.snapshot)
	}
	m.HandleFunc("GET "+p+pathAuthorize, s.handleAuthorize)
	m.HandleFunc("POST "+p+pathAuthorize, s.handleAuthorize)
	m.HandleFunc("POST "+p+pathLogin, s.handleLogin)
	m.HandleFunc("POST "+p+pathConsent, s.handleConsent)
	m.HandleFunc("POST "+p+pathToken, s.handleToken)
	m.HandleFunc("POST "+p+pathRegister, s.handleRegister)
	m.HandleFunc("POST "+p+pathIntrospect, s.handleIntrospect)
	m.HandleFunc("POST "+p+pathRevoke, s.handleRevoke)
	m.HandleFunc("POST "+p+pathRotate, s.handleRotate)
	m.HandleFunc("POST "+p+pathAdminRevoke, s.handleAdminRevoke)
	m.HandleFunc("GET "+p+pathAdminClients, s.handleListClients)
	m.HandleFunc("GET "+p+pathAdminClients+"/{id}", s.handleGetClient)
	m.HandleFunc("DELETE "+p+pathAdminClients+"/{id}", s.handleDeleteClient)
	m.HandleFunc("GET "+p+pathAdminUsers, s.handleListUsers)
	m.HandleFunc("GET "+p+pathAdminUsers+"/{name}", s.handleGetUser)
	m.HandleFunc("DELETE "+p+pathAdminUsers+"/{name}", s.handleDeleteUser)
	m.HandleFunc("GET "+p+pathUserinfo, s.handleUserinfo)
	m.HandleFunc("POST "+p+pathUserinfo, s.handleUserinfo)
	m.HandleFunc("GET "+p+pathLogout, s.handleLogout)
	m.HandleFunc("POST "+p+pathLogout, s.handleLogout)
	m.HandleFunc("POST "+p+pathLogoutConfirm, s.handleLogoutConfirm)
	m.HandleFunc("GET "+p+pathUpstreamLogin, s.handleUpstreamLogin)
	m.HandleFunc("GET "+p+pathUpstreamCallback, s.handleUpstreamCallback)
	m.HandleFunc("GET /healthz", s.handleHealthz)
	m.HandleFunc("GET /readyz", s.handleReadyz)
	s.mux = m
}

// ServeHTTP implements http.Handler.
func (s *Server) ServeHTTP(w http.ResponseWriter, r *http.Request) { s.mux.ServeHTTP(w, r) }

// checkAdmin authorizes an administrative request by the admin bearer token
// (RFC 7591 §3 initial access token). It answers the failure itself.
func (s *Server) checkAdmin(w http.ResponseWriter, r *http.Request) bool {
	presented := bearerToken(r)
	if s.adminEnabled && presented != "" {
		sum := sha256.Sum256([]byte(presented))
		if subtle.ConstantTimeCompare(sum[:], s.adminTokenHash[:]) == 1 {
			return true
		}
	}
	challenge := `Bearer realm="meshauth"`
	desc := "this endpoint needs the admin token as a bearer token"
	switch {
	case !s.adminEnabled:
		desc = "administration is disabled: the issuer was started without an admin token"
	case presented != "":
		challenge += `, error="invalid_token"`
		desc = "the admin token is not valid"
	}
	w.Header().Set("WWW-Authenticate", challenge)
	writeJSON(w, http.StatusUnauthorized, struct {
		Error       string `json:"error"`
		Description string `json:"error_description"`
	}{"invalid_token", desc})
	return false
}

// bearerToken returns the token of the request's one Authorization field
// of the Bearer scheme (RFC 6750 §2.1), or "".
func bearerToken(r *http.Request) string {
	const prefix = "Bearer "
	authz := r.Header.Values("Authorization")
	if len(authz) == 1 && len(authz[0]) > len(prefix) && strings.EqualFold(authz[0][:len(prefix)], prefix) {
		return authz[0][len(prefix):]
	}
	return ""
}

func (s *Server) handleRotate(w http.ResponseWriter, r *http.Request) {
	if !s.checkAdmin(w, r) {
		return
	}
	immediate := r.URL.Query().Get("immediate") == "true"
	k, err := s.keys.Rotate(r.Context(), immediate)
	if err != nil {
		s.writeError(w, r, fmt.Errorf("rotate signing key: %w", err))
		return
	}
	s.log.Info("signing key rotated", "kid", k.ID, "alg", k.Algorithm, "activates_at", k.ActivateAt)
	writeJSON(w, http.StatusOK, struct {
		KeyID       string    `json:"kid"`
		Algorithm   string    `json:"alg"`
		ActivatesAt time.Time `json:"activates_at"`
	}{k.ID, k.Algorithm, k.ActivateAt})
}

func (s *Server) handleHealthz(w http.ResponseWriter, _ *http.Request) {
	w.Header().Set("Content-Type", "text/plain; charset=utf-8")
	_, _ = w.Write([]byte("ok\n"))
}

// handleReadyz reports ready when a signing key is active and the store
// answers, followed by the Status lines.
func (s *Server) handleReadyz(w http.ResponseWriter, r *http.Request) {
	w.Header().Set("Content-Type", "text/plain; charset=utf-8")
	if !s.keys.Ready() {
		w.WriteHeader(http.StatusServiceUnavailable)
		_, _ = w.Write([]byte("not ready: no active signing key\n"))
		return
	}
	ctx, cancel := context.WithTimeout(r.Context(), 2*time.Second)
	defer cancel()
	if err := s.store.Ping(ctx); err != nil {
		s.remote.Warn("readiness: store unreachable", "error", err)
		w.WriteHeader(http.StatusServiceUnavailable)
		_, _ = w.Write([]byte("not ready: store unreachable\n"))
		return
	}
	_, _ = w.Write([]byte("ok\n"))
	if s.status != nil {
		for _, line := range s.status() {
			_, _ = w.Write([]byte(line + "\n"))
		}
	}
}
