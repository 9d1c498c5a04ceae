// Package rp is an OpenID Connect relying party for the authorization code
// flow (OpenID Connect Core 1.0 §3.1): it sends a person to an OpenID
// provider and accepts them back only with an ID Token that the provider
// signed for this client and this sign-in.
//
// A careful one: the provider is found by discovery; every sign-in has its
// own state, nonce and PKCE verifier (RFC 7636), which the caller keeps
// until the browser returns; the authorization response must carry that
// state and, where the provider says it sends one, its issuer (RFC 9207);
// the ID Token is verified by package token, the one verification core,
// with the provider's keys, "typ" JWT or none (never an access token's
// at+jwt), "aud" this client, "azp" this client where there are several
// audiences, and "nonce" this sign-in's. Every request to the provider is
// bounded by a timeout.
package rp

import (
	"context"
	"crypto/rand"
	"crypto/sha256"
	"crypto/subtle"
	"encoding/base64"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"net/url"
	"slices"
	"strings"
	"sync"
	"time"

	"golang.org/x/sync/singleflight"

	"github.com/meshauth/meshauth/exchange"
	"github.com/meshauth/meshauth/internal/discovery"
	"github.com/meshauth/meshauth/internal/strictjson"
	"github.com/meshauth/meshauth/jwks"
	"github.com/meshauth/meshauth/token"
)

// Defaults and bounds.
const (
	// DefaultTimeout bounds each request to the provider: discovery, the
	// token request, a key set fetch.
	DefaultTimeout = 5 * time.Second
	// metadataMaxAge is how long discovered metadata, and the keys found
	// through it, are used before they are read again; a key the provider
	// withdrew is trusted at most this long.
	metadataMaxAge = time.Hour
	// metadataRetry is how long after a failed discovery the last good
	// metadata is used without trying again.
	metadataRetry = time.Minute
)

// Errors of Exchange, for errors.Is. A provider's own refusal is a
// *ProviderError.
var (
	// ErrUnavailable: the provider could not be reached, or answered with
	// a server error, in time. Trying again later may work.
	ErrUnavailable = errors.New("identity provider unavailable")
	// ErrState: the response has no state or another sign-in's, so it does
	// not answer the sign-in it is presented to (a forgery, or a response
	// replayed in another browser).
	ErrState = errors.New("the response does not belong to this sign-in (state)")
	// ErrIssuer: the response names another issuer, or none although the
	// provider promises one (RFC 9207 §2.4): a mix-up attack.
	ErrIssuer = errors.New("the response comes from another issuer (iss)")
	// ErrIDToken: the ID Token is missing, forged, expired, for another
	// client or another sign-in.
	ErrIDToken = errors.New("the ID Token is not valid for this sign-in")
)

// ProviderError is an error the provider answered, at the authorization
// endpoint (the person refused, say) or the token endpoint.
type ProviderError struct {
	// Code is the OAuth error code: printable ASCII, at most 64 bytes.
	Code string
}

func (e *ProviderError) Error() string { return "the identity provider answered " + e.Code }

// Config configures a Provider.
type Config struct {
	// Issuer is the provider's issuer identifier: https, or http on a
	// loopback host for development.
	Issuer string
	// ClientID and ClientSecret are this relying party's credentials at
	// the provider. Without a secret the client is public and sends its
	// client_id alone (PKCE protects the code).
	ClientID, ClientSecret string
	// RedirectURL is this relying party's redirect URI, registered at the
	// provider.
	RedirectURL string
	// Scopes are requested besides openid, which is always requested.
	Scopes []string
	// Timeout bounds each request to the provider; default DefaultTimeout.
	Timeout time.Duration
	// HTTPClient sends the requests; default a new client. Its redirects
	// are never followed to the token endpoint.
	HTTPClient *http.Client
	Logger     *slog.Logger
	// Now returns the current time; default time.Now.
	Now func() time.Time
}

// Provider is one OpenID provider. It is safe for concurrent use; it starts
// no goroutine that outlives a call but for a key set fetch, which its
// timeout bounds.
type Provider struct {
	cfg    Config
	scope  string
	client *http.Client // redirects not followed
	// fetcher reads the provider's metadata.
	fetcher *discovery.Fetcher
	basic   string // client_secret_basic Authorization value; holds the secret

	flight singleflight.Group
	mu     sync.Mutex
	cur    *discovered
	failed time.Time // when discovery last failed while cur was kept
}

// discovered is the provider as one discovery found it.
type discovered struct {
	md       *discovery.Metadata
	verifier *token.Verifier
	at       time.Time
	post     bool // client_secret_post instead of basic
}

// New checks cfg. It contacts nobody: the provider is discovered on first
// use, so that a provider down at start-up delays nothing.
func New(cfg Config) (*Provider, error) {
	if _, err := discovery.ParseIssuer("provider issuer", cfg.Issuer); err != nil {
		return nil, err
	}
	if cfg.ClientID == "" {
		return nil, fmt.Errorf("provider %s: a client id is required", cfg.Issuer)
	}
	if r, err := url.Parse(cfg.RedirectURL); err != nil || !r.IsAbs() || r.Host == "" || r.Fragment != "" {
		return nil, fmt.Errorf("provider %s: redirect URL %q must be an absolute URL without fragment", cfg.Issuer, cfg.RedirectURL)
	}
	if cfg.Timeout <= 0 {
		cfg.Timeout = DefaultTimeout
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.Default()
	}
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	base := cfg.HTTPClient
	if base == nil {
		base = &http.Client{}
	}
	client := *base
	client.CheckRedirect = func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }
	scopes := []string{"openid"}
	for _, sc := range cfg.Scopes {
		if !slices.Contains(scopes, sc) {
			scopes = append(scopes, sc)
		}
	}
	p := &Provider{cfg: cfg, client: &client, fetcher: discovery.NewFetcher(cfg.HTTPClient, 0), scope: strings.Join(scopes, " ")}
	if cfg.ClientSecret != "" {
		// RFC 6749 §2.3.1: both are form-encoded before Basic encoding.
		p.basic = "Basic " + base64.StdEncoding.EncodeToString([]byte(url.QueryEscape(cfg.ClientID)+":"+url.QueryEscape(cfg.ClientSecret)))
	}
	return p, nil
}

// Issuer returns the provider's issuer identifier.
func (p *Provider) Issuer() string { return p.cfg.Issuer }

// discover returns the provider's metadata and verifier, reading the
// metadata again once it is metadataMaxAge old. A failure keeps the last
// good metadata, if any, for metadataRetry.
func (p *Provider) discover(ctx context.Context) (*discovered, error) {
	now := p.cfg.Now()
	p.mu.Lock()
	cur, failed := p.cur, p.failed
	p.mu.Unlock()
	if cur != nil && (now.Sub(cur.at) < metadataMaxAge || now.Sub(failed) < metadataRetry) {
		return cur, nil
	}
	// One discovery for all who wait, not bounded by the first one's
	// cancellation: the others still want it.
	v, err, _ := p.flight.Do("", func() (any, error) {
		ctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), p.cfg.Timeout)
		defer cancel()
		return p.load(ctx)
	})
	if err != nil {
		if cur != nil {
			p.mu.Lock()
			p.failed = now
			p.mu.Unlock()
			p.cfg.Logger.Warn("identity provider discovery failed; keeping its last metadata", "issuer", p.cfg.Issuer, "error", err)
			return cur, nil
		}
		return nil, fmt.Errorf("%w: discovery: %w", ErrUnavailable, err)
	}
	d := v.(*discovered)
	p.mu.Lock()
	p.cur = d
	p.mu.Unlock()
	return d, nil
}

// load discovers the provider and makes its verifier, with a new key set
// cache: keys are fetched on first use and again for an unknown kid, and
// the next discovery drops keys the provider no longer publishes.
func (p *Provider) load(ctx context.Context) (*discovered, error) {
	md, err := p.fetcher.Metadata(ctx, p.cfg.Issuer, discovery.MemberAuthorizationEndpoint, discovery.MemberTokenEndpoint, discovery.MemberJWKSURI)
	if err != nil {
		return nil, err
	}
	keys, err := jwks.NewKeySetCache(jwks.KeySetConfig{
		JWKSURL: md.JWKSURI, FetchTimeout: p.cfg.Timeout, HTTPClient: p.cfg.HTTPClient, Now: p.cfg.Now,
		Logger: p.cfg.Logger.With("provider", p.cfg.Issuer),
	})
	if err != nil {
		return nil, fmt.Errorf("keys of %s: %w", p.cfg.Issuer, err)
	}
	// ID Tokens carry "typ" JWT or none (OpenID Connect Core §2 sets no
	// rule); "at+jwt" is an access token's and is refused, so that a
	// provider's access token never passes for an ID Token.
	v, err := token.NewVerifier(token.Policy{
		Issuer: p.cfg.Issuer, Audiences: []string{p.cfg.ClientID}, Types: []string{"", "JWT"}, Now: p.cfg.Now,
	}, keys)
	if err != nil {
		return nil, err
	}
	// OpenID Connect Core §9: client_secret_basic unless the provider
	// lists only client_secret_post.
	methods := md.TokenEndpointAuthMethods
	post := len(methods) > 0 && !slices.Contains(methods, "client_secret_basic") && slices.Contains(methods, "client_secret_post")
	return &discovered{md: md, verifier: v, at: p.cfg.Now(), post: post}, nil
}

// Login is one sign-in in progress: the values the caller keeps, bound to
// the browser and secret from everyone else, until the browser returns.
type Login struct {
	State        string `json:"state"`
	Nonce        string `json:"nonce"`
	CodeVerifier string `json:"code_verifier"`
}

// NewLogin returns a new sign-in with fresh random values: 256 bits each.
func NewLogin() Login {
	return Login{State: randomValue(), Nonce: randomValue(), CodeVerifier: randomValue()}
}

func randomValue() string {
	b := make([]byte, 32)
	_, _ = rand.Read(b)
	return base64.RawURLEncoding.EncodeToString(b)
}

// AuthCodeURL returns where to send the browser for l: the provider's
// authorization endpoint with an authentication request (OpenID Connect
// Core §3.1.2.1) with PKCE S256, and extra parameters (prompt, login_hint)
// if any.
func (p *Provider) AuthCodeURL(ctx context.Context, l Login, extra url.Values) (string, error) {
	d, err := p.discover(ctx)
	if err != nil {
		return "", err
	}
	sum := sha256.Sum256([]byte(l.CodeVerifier))
	q := url.Values{
		"response_type": {"code"}, "client_id": {p.cfg.ClientID}, "redirect_uri": {p.cfg.RedirectURL},
		"scope": {p.scope}, "state": {l.State}, "nonce": {l.Nonce},
		"code_challenge": {base64.RawURLEncoding.EncodeToString(sum[:])}, "code_challenge_method": {"S256"},
	}
	for k, vs := range extra {
		if _, ours := q[k]; !ours {
			q[k] = vs
		}
	}
	sep := "?"
	if strings.Contains(d.md.AuthorizationEndpoint, "?") {
		sep = "&"
	}
	return d.md.AuthorizationEndpoint + sep + q.Encode(), nil
}

// Exchange completes sign-in l with the authorization response the browser
// brought back (the redirect's query): it checks state and iss, redeems the
// code at the token endpoint and verifies the ID Token. claim, if not nil,
// is called once the response is known to answer l and before its code is
// redeemed, and an error from it ends the exchange: it is where the caller
// records l as used, so that a replayed response is refused (l's nonce
// makes a replayed ID Token useless too).
func (p *Provider) Exchange(ctx context.Context, l Login, response url.Values, claim func() error) (*IDToken, error) {
	d, err := p.discover(ctx)
	if err != nil {
		return nil, err
	}
	if s := response.Get("state"); s == "" || subtle.ConstantTimeCompare([]byte(s), []byte(l.State)) != 1 {
		return nil, ErrState
	}
	// RFC 9207 §2.4: iss is compared whenever present, and required when
	// the provider says it sends it; before anything else of the
	// response, errors included, is believed.
	iss, hasIss := response["iss"]
	switch {
	case hasIss && (len(iss) != 1 || iss[0] != p.cfg.Issuer):
		return nil, ErrIssuer
	case !hasIss && d.md.IssParameterSupported:
		return nil, ErrIssuer
	}
	if code := response.Get("error"); code != "" {
		return nil, &ProviderError{Code: errorCode(code)}
	}
	code := response.Get("code")
	if code == "" {
		return nil, errors.New("the response has neither a code nor an error")
	}
	if claim != nil {
		if err := claim(); err != nil {
			return nil, err
		}
	}
	form := url.Values{"grant_type": {"authorization_code"}, "code": {code}, "redirect_uri": {p.cfg.RedirectURL}, "code_verifier": {l.CodeVerifier}}
	authz := p.basic
	switch {
	case p.basic == "":
		form.Set("client_id", p.cfg.ClientID)
	case d.post:
		form.Set("client_id", p.cfg.ClientID)
		form.Set("client_secret", p.cfg.ClientSecret)
		authz = ""
	}
	tctx, cancel := context.WithTimeout(ctx, p.cfg.Timeout)
	defer cancel()
	body, err := exchange.PostTokenRequest(tctx, p.client, d.md.TokenEndpoint, authz, form)
	var refused *exchange.RefusedError
	switch {
	case errors.As(err, &refused):
		return nil, &ProviderError{Code: errorCode(refused.Code)}
	case errors.Is(err, exchange.ErrUnavailable):
		return nil, fmt.Errorf("%w: token request: %w", ErrUnavailable, err)
	case err != nil:
		return nil, fmt.Errorf("token request: %w", err)
	}
	v, err := strictjson.Members(body, "id_token", "access_token")
	if err != nil {
		return nil, fmt.Errorf("token response: %w", err)
	}
	raw, ok := strictjson.String(v[0])
	if !ok || raw == "" {
		return nil, fmt.Errorf("%w: the token response has none", ErrIDToken)
	}
	accessToken, _ := strictjson.String(v[1])
	return p.verify(d, l, raw, accessToken)
}

// verify checks the ID Token raw of sign-in l (OpenID Connect Core
// §3.1.3.7) and returns it.
func (p *Provider) verify(d *discovered, l Login, raw, accessToken string) (*IDToken, error) {
	claims, err := d.verifier.Verify([]byte(raw))
	if err != nil {
		return nil, fmt.Errorf("%w: %w", ErrIDToken, err)
	}
	oc, err := ParseIDTokenClaims(claims.Raw)
	if err != nil {
		return nil, fmt.Errorf("%w: %w", ErrIDToken, err)
	}
	switch {
	case claims.Subject == "" || len(claims.Subject) > maxSubject:
		return nil, fmt.Errorf("%w: sub missing or longer than %d bytes", ErrIDToken, maxSubject)
	case claims.IssuedAt.IsZero():
		return nil, fmt.Errorf("%w: iat missing", ErrIDToken)
	case subtle.ConstantTimeCompare([]byte(oc.Nonce), []byte(l.Nonce)) != 1:
		return nil, fmt.Errorf("%w: nonce is not this sign-in's", ErrIDToken)
	case len(claims.Audience) > 1 && oc.AuthorizedParty == "":
		return nil, fmt.Errorf("%w: several audiences and no azp", ErrIDToken)
	case oc.AuthorizedParty != "" && oc.AuthorizedParty != p.cfg.ClientID:
		return nil, fmt.Errorf("%w: azp names another client", ErrIDToken)
	case oc.AccessTokenHash != "" && accessToken != "" && !accessTokenHashMatches(raw, accessToken, oc.AccessTokenHash):
		return nil, fmt.Errorf("%w: at_hash does not match the access token", ErrIDToken)
	}
	return &IDToken{
		Issuer: claims.Issuer, Subject: claims.Subject, Audience: claims.Audience, IssuedAt: claims.IssuedAt, ExpiresAt: claims.ExpiresAt,
		IDTokenClaims: *oc, AccessToken: accessToken, Raw: raw,
	}, nil
}

// errorCode keeps an error code from the provider safe to log and show:
// printable ASCII without quotes, at most 64 bytes.
func errorCode(s string) string {
	if len(s) > 64 {
		s = s[:64]
	}
	return strings.Map(func(r rune) rune {
		if r < 0x21 || r > 0x7e || r == '"' || r == '\\' || r == '<' || r == '>' || r == '&' {
			return '?'
		}
		return r
	}, s)
}
