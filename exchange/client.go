package exchange

import (
	"cmp"
	"context"
	"crypto/sha256"
	"encoding/base64"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"mime"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"time"

	"golang.org/x/sync/singleflight"

	"github.com/meshauth/meshauth/internal/digestcache"
	"github.com/meshauth/meshauth/internal/discovery"
	"github.com/meshauth/meshauth/internal/strictjson"
	"github.com/meshauth/meshauth/token"
)

// Defaults of ClientConfig.
const (
	DefaultClientCacheBytes = 32 << 20
	DefaultRefreshBefore    = 30 * time.Second
	DefaultClientTimeout    = 5 * time.Second
)

// Parameter values of the requests a Client sends (RFC 8693 §2.1, §3;
// RFC 6749 §4.4.2).
const (
	GrantTypeTokenExchange = "urn:ietf:params:oauth:grant-type:token-exchange"
	TokenTypeAccessToken   = "urn:ietf:params:oauth:token-type:access_token"
	// SubjectIssuerParam names, in a dereference, the foreign authorization
	// server whose reference token the subject token is (a meshauth
	// extension of RFC 8693 §2.1).
	SubjectIssuerParam     = "subject_issuer"
	clientGrantCredentials = "client_credentials"
)

const (
	// maxAnswerBytes bounds a token endpoint answer that the Client reads;
	// an answer with a token is a few KiB.
	maxAnswerBytes = 64 << 10
	// maxRefusalCode and maxRefusalDescription bound what a refusal
	// carries to the caller, who may pass it on.
	maxRefusalCode        = 64
	maxRefusalDescription = 256
	// clientCacheShards is the number of shards of the cache: 1 MiB, the
	// smallest cache, gives each 16 KiB, room for a few tokens.
	clientCacheShards = 64
	// clientFrontSlots is the size of the heap table in front of the
	// cache (digestcache.Config.FrontSlots).
	clientFrontSlots = 1024
	// clientCacheLifeWindow is when the cache may reclaim an entry's
	// space. Entries are checked against their token's expiry on every
	// use; a token that lives longer than this is at worst exchanged
	// again once it is reclaimed.
	clientCacheLifeWindow = 10 * time.Minute
)

// ErrUnavailable is wrapped by the errors of a request that the token
// endpoint did not answer: unreachable, too slow, or answering 5xx, 408 or
// 429. Trying again later may work; a caller serving a request answers
// 503.
var ErrUnavailable = errors.New("exchange: token endpoint unavailable")

// RefusedError is the token endpoint's refusal, an error answer of RFC 6749
// §5.2 (for token exchange, RFC 8693 §2.2.2): the same request will be
// refused again.
type RefusedError struct {
	// Code is the "error" member: invalid_grant (this issuer's answer for
	// a subject token that is invalid, expired or not exchangeable by this
	// client), invalid_target, invalid_scope, invalid_client, ...
	Code string
	// Description is the "error_description" member, possibly empty:
	// printable ASCII, any other byte replaced by '?', at most 256 bytes.
	Description string
	// Status is the HTTP status of the answer, 400 or 401 usually.
	Status int
}

func (e *RefusedError) Error() string {
	s := "exchange: token endpoint refused the request (" + strconv.Itoa(e.Status) + "): " + e.Code
	if e.Description != "" {
		s += ": " + e.Description
	}
	return s
}

// Token is an access token obtained from the token endpoint.
type Token struct {
	AccessToken string
	// ExpiresAt is the answer's expires_in counted from when the request
	// was sent, a little before the issuer counted it.
	ExpiresAt time.Time
}

// String leaves the access token out, so that printing a Token does not
// leak it.
func (t Token) String() string {
	return "exchange.Token{expires " + t.ExpiresAt.Format(time.RFC3339) + "}"
}

// LogValue leaves the access token out of slog records.
func (t Token) LogValue() slog.Value {
	return slog.GroupValue(slog.Time("expires_at", t.ExpiresAt))
}

// ClientConfig configures a Client.
type ClientConfig struct {
	// TokenURL is the issuer's token endpoint (RFC 6749 §3.2): https, or
	// http on a loopback host only, since every request carries the client
	// secret.
	TokenURL string
	// ClientID and ClientSecret are the sidecar's own client credentials,
	// sent with HTTP Basic (client_secret_basic, RFC 6749 §2.3.1). For a
	// token exchange this client is the exchanging client: the service's
	// own client id, which is in the "aud" of the tokens it receives.
	ClientID, ClientSecret string
	// HTTPClient sends the requests; nil means a client of the Client's
	// own. Redirects are never followed: the token endpoint has no reason
	// to redirect, and following one would carry the client secret along.
	HTTPClient *http.Client
	// CacheBytes bounds the memory of the token cache. It is rounded down
	// to whole MiB and must be at least 1 MiB. When a part of the cache is
	// full its oldest tokens go first. The tokens used most recently also
	// have a copy on the Go heap, up to 1024. Default:
	// DefaultClientCacheBytes.
	CacheBytes int
	// RefreshBefore is how long before its expiry a cached token stops
	// being used, so that a token handed out is still valid when the next
	// hop checks it. A token living less than this is handed out but not
	// cached. Default: DefaultRefreshBefore.
	RefreshBefore time.Duration
	// Timeout bounds each request to the token endpoint. Default:
	// DefaultClientTimeout.
	Timeout time.Duration
	// Now returns the current time, against which tokens expire. Default:
	// time.Now.
	Now func() time.Time
	// SubjectIssuer, if set, is sent as subject_issuer with every
	// Dereference: the reference tokens are another authorization
	// server's, configured at the issuer as a foreign issuer, which the
	// issuer introspects there itself.
	SubjectIssuer string
	// Logger receives a record of each request to the token endpoint, at
	// debug level; nil discards them. Neither tokens nor the secret are
	// logged.
	Logger *slog.Logger
}

// Client obtains access tokens from the token endpoint for a sidecar: an
// exchanged token for the next hop of a request that came with a token
// (RFC 8693), or the service's own token for a call it makes by itself
// (RFC 6749 §4.4). It is safe for concurrent use.
//
// Tokens are cached in the digest cache that every cache of meshauth
// shares (internal/digestcache), bounded in bytes, until RefreshBefore
// before their expiry. An exchanged token is keyed by the SHA-256 digest of
// the subject token, never the subject token itself, with the audience and
// the scope. While a token is being obtained, identical requests wait for
// it (singleflight): a burst of calls with one inbound token to one service
// costs one exchange.
//
// Every cached token answers to revocation (Evict): it is kept with what a
// revocation can name (token.Identity) of the subject token it was
// exchanged for, read from the subject token's claims once the issuer has
// accepted it, and of itself. A subject token whose claims cannot be read
// is exchanged, but its token is not cached, since no revocation could
// reach it.
//
// Refusals are not cached: a refusal costs the issuer one request, and
// caching it would keep refusing after the client's registration or the
// policy changed. Identical requests in flight together still share one.
type Client struct {
	tokenURL string
	basic    string // the Authorization field value: holds the secret, never logged
	http     *http.Client
	cache    *digestcache.Cache
	refresh  time.Duration
	timeout  time.Duration
	now      func() time.Time
	log      *slog.Logger
	flights  singleflight.Group
	// subjectIssuer is ClientConfig.SubjectIssuer.
	subjectIssuer string
}

// NewClient returns a Client with an empty cache.
func NewClient(cfg ClientConfig) (*Client, error) {
	// The secret goes with every request (RFC 6749 §3.2).
	if _, err := discovery.ParseURL("TokenURL", cfg.TokenURL); err != nil {
		return nil, fmt.Errorf("exchange: %w", err)
	}
	if cfg.ClientID == "" || cfg.ClientSecret == "" {
		return nil, errors.New("exchange: client id and client secret are required")
	}
	cacheBytes := cmp.Or(cfg.CacheBytes, DefaultClientCacheBytes)
	switch {
	case cacheBytes < 1<<20:
		return nil, fmt.Errorf("exchange: CacheBytes %d below 1 MiB", cfg.CacheBytes)
	case cfg.RefreshBefore < 0:
		return nil, fmt.Errorf("exchange: negative RefreshBefore %v", cfg.RefreshBefore)
	case cfg.Timeout < 0:
		return nil, fmt.Errorf("exchange: negative Timeout %v", cfg.Timeout)
	}
	cache, err := digestcache.New(digestcache.Config{
		MaxBytes:   cacheBytes,
		Shards:     clientCacheShards,
		FrontSlots: clientFrontSlots,
		LifeWindow: clientCacheLifeWindow,
		EntrySize:  2 << 10,
	})
	if err != nil {
		return nil, fmt.Errorf("exchange: cache: %w", err)
	}
	c := &Client{
		tokenURL: cfg.TokenURL,
		// RFC 6749 §2.3.1: the id and secret are form-encoded, then joined.
		basic:   "Basic " + base64.StdEncoding.EncodeToString([]byte(url.QueryEscape(cfg.ClientID)+":"+url.QueryEscape(cfg.ClientSecret))),
		cache:   cache,
		refresh: cmp.Or(cfg.RefreshBefore, DefaultRefreshBefore),
		timeout: cmp.Or(cfg.Timeout, DefaultClientTimeout),
		now:     cfg.Now,
		log:     cfg.Logger,

		subjectIssuer: cfg.SubjectIssuer,
	}
	if c.now == nil {
		c.now = time.Now
	}
	if c.log == nil {
		c.log = slog.New(slog.DiscardHandler)
	}
	hc := cfg.HTTPClient
	if hc == nil {
		t := http.DefaultTransport.(*http.Transport).Clone()
		// Bursts of distinct exchanges reuse connections rather than
		// opening ones that the default of 2 idle per host would drop.
		t.MaxIdleConnsPerHost = 32
		hc = &http.Client{Transport: t}
	}
	own := *hc
	own.CheckRedirect = func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }
	c.http = &own
	return c, nil
}

// Kinds of cached tokens, the first byte of what their key digests.
const (
	keyExchange          = 'x'
	keyClientCredentials = 'c'
)

// Exchange returns an access token for audience, with scope if not empty,
// in exchange for subjectToken, the access token of the request being
// served (RFC 8693 §2.1). Exchange reads subjectToken during the call
// only: it may be a request's buffer. The token is from the cache while it
// has more than RefreshBefore to live. A refusal is a *RefusedError; a
// token endpoint that did not answer, an error wrapping ErrUnavailable;
// ctx being done, an error wrapping its cause.
func (c *Client) Exchange(ctx context.Context, subjectToken []byte, audience, scope string) (Token, error) {
	if len(subjectToken) == 0 || audience == "" {
		return Token{}, errors.New("exchange: a subject token and an audience are required")
	}
	subject := sha256.Sum256(subjectToken)
	key := cacheKey(keyExchange, subject[:], audience, scope)
	if t, ok := c.cached(&key); ok {
		return t, nil
	}
	// A copy: the request to the token endpoint may outlive this call,
	// for the others waiting on it.
	return c.exchange(ctx, key, string(subjectToken), audience, scope)
}

// exchange obtains the token of Exchange on a miss. Apart from Exchange,
// so that key moves to the heap on misses only.
func (c *Client) exchange(ctx context.Context, key [sha256.Size]byte, subjectToken, audience, scope string) (Token, error) {
	return c.fetch(ctx, &key, audience, subjectToken, func() url.Values {
		form := url.Values{
			"grant_type":           {GrantTypeTokenExchange},
			"subject_token":        {subjectToken},
			"subject_token_type":   {TokenTypeAccessToken},
			"requested_token_type": {TokenTypeAccessToken},
			"audience":             {audience},
		}
		if scope != "" {
			form.Set("scope", scope)
		}
		return form
	})
}

// Dereference trades referenceToken, a reference token an edge gateway
// received from the Internet, for a JWT of the same authorization for
// audience: a token exchange that the issuer answers by its dereference
// policy when this client is registered with DereferenceScope. Unlike
// Exchange it neither caches nor shares requests: the edge does both,
// keeping with each token the claims that a revocation evicts it by. Errors
// are as for Exchange.
func (c *Client) Dereference(ctx context.Context, referenceToken, audience string) (Token, error) {
	if referenceToken == "" || audience == "" {
		return Token{}, errors.New("exchange: a reference token and an audience are required")
	}
	rctx, cancel := context.WithTimeout(ctx, c.timeout)
	defer cancel()
	form := url.Values{
		"grant_type":           {GrantTypeTokenExchange},
		"subject_token":        {referenceToken},
		"subject_token_type":   {TokenTypeAccessToken},
		"requested_token_type": {TokenTypeAccessToken},
		"audience":             {audience},
	}
	if c.subjectIssuer != "" {
		form.Set(SubjectIssuerParam, c.subjectIssuer)
	}
	return c.request(rctx, form, true)
}

// ClientCredentials returns the service's own access token for audience,
// with scope if not empty (RFC 6749 §4.4), for a call made on nobody
// else's behalf. Cache and errors are as for Exchange.
func (c *Client) ClientCredentials(ctx context.Context, audience, scope string) (Token, error) {
	if audience == "" {
		return Token{}, errors.New("exchange: an audience is required")
	}
	key := cacheKey(keyClientCredentials, nil, audience, scope)
	if t, ok := c.cached(&key); ok {
		return t, nil
	}
	return c.clientCredentials(ctx, key, audience, scope)
}

// clientCredentials obtains the token of ClientCredentials on a miss.
func (c *Client) clientCredentials(ctx context.Context, key [sha256.Size]byte, audience, scope string) (Token, error) {
	return c.fetch(ctx, &key, audience, "", func() url.Values {
		form := url.Values{"grant_type": {clientGrantCredentials}, "audience": {audience}}
		if scope != "" {
			form.Set("scope", scope)
		}
		return form
	})
}

// Evict drops the cached tokens that revocation r names (token.Revocation's
// Names), by the identity of the subject token they were exchanged for or
// by their own, whatever their "iat", and returns how many: the next call
// is exchanged again, and the issuer decides. A token being obtained while
// Evict runs is not cached. It visits every entry: revocations are rare.
func (c *Client) Evict(r token.Revocation) int {
	return c.cache.DeleteFunc(func(v []byte) bool {
		e := readEntry(v)
		return e.ok && (r.Matches(e.subject, time.Time{}) || r.Matches(e.issued, time.Time{}))
	})
}

// cacheKey returns the digest of kind, subject (the digest of the subject
// token, or nil), the length of audience, audience and scope: no two
// requests share a key. It allocates nothing for the audiences and scopes
// of a route.
func cacheKey(kind byte, subject []byte, audience, scope string) [sha256.Size]byte {
	var buf [256]byte
	b := append(buf[:0], kind)
	b = append(b, subject...)
	b = binary.AppendUvarint(b, uint64(len(audience)))
	b = append(b, audience...)
	b = append(b, scope...)
	return sha256.Sum256(b)
}

// entry is a cached token, with the identities that a revocation evicts
// it by. Its value in the cache is expiresAt (Unix ns, 8 bytes), the
// token, then the subject's and the token's Identity, each its five
// strings (digestcache.AppendString).
type entry struct {
	expiresAt       int64
	token           string
	subject, issued token.Identity
	ok              bool // all of it was there
}

func (e *entry) appendTo(b []byte) []byte {
	b = binary.LittleEndian.AppendUint64(b, uint64(e.expiresAt))
	b = digestcache.AppendString(b, e.token)
	for _, id := range [...]*token.Identity{&e.subject, &e.issued} {
		b = digestcache.AppendStrings(b, id.Issuer, id.TokenID, id.ClientID, id.Subject, id.Session)
	}
	return b
}

// readEntry reads an entry that appendTo wrote; its strings share v.
func readEntry(v []byte) entry {
	r := digestcache.NewReader(v)
	e := entry{expiresAt: int64(r.Uint64()), token: r.String()}
	for _, id := range [...]*token.Identity{&e.subject, &e.issued} {
		r.Strings(&id.Issuer, &id.TokenID, &id.ClientID, &id.Subject, &id.Session)
	}
	e.ok = r.OK()
	return e
}

// cached returns the token under key if it has more than RefreshBefore to
// live.
func (c *Client) cached(key *[sha256.Size]byte) (Token, bool) {
	v, ok := c.cache.Get(key, c.now().Add(c.refresh).UnixNano())
	if !ok {
		return Token{}, false
	}
	// Only what a hit needs: the rest is for Evict.
	r := digestcache.NewReader(v)
	exp := int64(r.Uint64())
	tok := r.String() // shares the entry, which never changes
	if !r.OK() || tok == "" {
		return Token{}, false
	}
	return Token{AccessToken: tok, ExpiresAt: time.Unix(0, exp)}, true
}

// store caches t under key, obtained in exchange for subjectToken (empty
// for the service's own token) by a request that began at generation.
func (c *Client) store(key *[sha256.Size]byte, t Token, subjectToken string, generation uint64) {
	if !c.now().Add(c.refresh).Before(t.ExpiresAt) {
		return // it would never be used
	}
	e := entry{expiresAt: t.ExpiresAt.UnixNano(), token: t.AccessToken}
	if subjectToken != "" {
		// The issuer accepted the subject token just now: its claims are
		// the issuer's, read here only to be evicted by.
		id, err := token.ReadIdentity([]byte(subjectToken))
		if err != nil {
			return
		}
		e.subject = id
	}
	// A token that is not a JWT is kept by its subject's identity alone;
	// the next hop, which verifies it, also checks its revocations.
	e.issued, _ = token.ReadIdentity([]byte(t.AccessToken))
	b := digestcache.NewEntry(e.expiresAt, 256+len(e.token)) // identities are short
	// An entry larger than a part of the cache is not kept: such a token
	// is obtained anew each time.
	c.cache.Put(key, e.appendTo(b), generation)
}

// fetch obtains the token under key from the token endpoint, with the form
// that form returns, in exchange for subjectToken (empty for the service's
// own token), and caches it. Callers asking for the same key meanwhile
// share the one request.
func (c *Client) fetch(ctx context.Context, key *[sha256.Size]byte, audience, subjectToken string, form func() url.Values) (Token, error) {
	exchanged := subjectToken != ""
	ch := c.flights.DoChan(string(key[:]), func() (any, error) {
		// A request that ended between the caller's cache miss and this
		// one starting has cached the token.
		if t, ok := c.cached(key); ok {
			return t, nil
		}
		// Before the request: a revocation that arrives during it may
		// name the token it obtains, which is then not cached.
		generation := c.cache.Generation()
		// Detached from the caller's context: other callers may be
		// waiting on this request, and the first one giving up must not
		// fail them. Timeout bounds it.
		rctx, cancel := context.WithTimeout(context.Background(), c.timeout)
		defer cancel()
		start := time.Now()
		t, err := c.request(rctx, form(), exchanged)
		if err == nil {
			c.store(key, t, subjectToken, generation)
		}
		if c.log.Enabled(rctx, slog.LevelDebug) {
			grant := clientGrantCredentials
			if exchanged {
				grant = "token_exchange"
			}
			c.log.LogAttrs(rctx, slog.LevelDebug, "exchange: token request",
				slog.String("grant", grant), slog.String("audience", audience),
				slog.Duration("took", time.Since(start)), slog.Any("err", err))
		}
		return t, err
	})
	select {
	case r := <-ch:
		t, _ := r.Val.(Token)
		return t, r.Err
	case <-ctx.Done():
		return Token{}, fmt.Errorf("exchange: waiting for the token endpoint: %w", context.Cause(ctx))
	}
}

// request sends form to the token endpoint and reads the answer.
func (c *Client) request(ctx context.Context, form url.Values, exchanged bool) (Token, error) {
	// The lifetime is counted from before the request, so that the
	// token is taken to expire no later than it does.
	sent := c.now()
	body, err := PostTokenRequest(ctx, c.http, c.tokenURL, c.basic, form)
	if err != nil {
		return Token{}, err
	}
	t, err := parseTokenResponse(body, exchanged, sent)
	if err != nil {
		return Token{}, fmt.Errorf("exchange: malformed token endpoint answer: %w", err)
	}
	return t, nil
}

// PostTokenRequest sends form to the token endpoint tokenURL (RFC 6749
// §3.2), with the Authorization field authz unless it is "", and returns
// the body of a 200 answer, which is application/json (§5.1). A refusal
// (§5.2) is a *RefusedError; no answer, or 5xx, 408 or 429, wraps
// ErrUnavailable. Errors never contain authz or the form.
func PostTokenRequest(ctx context.Context, hc *http.Client, tokenURL, authz string, form url.Values) ([]byte, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, tokenURL, strings.NewReader(form.Encode()))
	if err != nil {
		return nil, fmt.Errorf("exchange: %w", err)
	}
	req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	req.Header.Set("Accept", "application/json")
	if authz != "" {
		req.Header.Set("Authorization", authz)
	}
	resp, err := hc.Do(req)
	if err != nil {
		// A *url.Error names the method and URL, never the header or
		// body: neither the secret nor the subject token.
		return nil, fmt.Errorf("%w: %w", ErrUnavailable, err)
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(io.LimitReader(resp.Body, maxAnswerBytes+1))
	status := resp.StatusCode
	switch {
	case status >= 500 || status == http.StatusRequestTimeout || status == http.StatusTooManyRequests:
		return nil, fmt.Errorf("%w: status %d", ErrUnavailable, status)
	case err != nil:
		return nil, fmt.Errorf("%w: reading the answer: %w", ErrUnavailable, err)
	case len(body) > maxAnswerBytes:
		return nil, fmt.Errorf("exchange: token endpoint answer (status %d) over %d bytes", status, maxAnswerBytes)
	case !isJSON(resp.Header.Get("Content-Type")):
		// RFC 6749 §5.1, §5.2: both answers are application/json.
		return nil, fmt.Errorf("exchange: token endpoint answer (status %d) is not application/json", status)
	case status == http.StatusOK:
		return body, nil
	case status >= 400:
		re, err := parseErrorResponse(body, status)
		if err != nil {
			return nil, fmt.Errorf("exchange: malformed token endpoint error answer (status %d): %w", status, err)
		}
		return nil, re
	}
	return nil, fmt.Errorf("exchange: unexpected token endpoint status %d", status)
}

func isJSON(contentType string) bool {
	mt, _, err := mime.ParseMediaType(contentType)
	return err == nil && mt == "application/json"
}

// parseTokenResponse reads a successful answer (RFC 6749 §5.1; RFC 8693
// §2.2.1 when exchanged) to a request sent at sent. More strict than the
// RFCs, which only recommend expires_in: a token without a known expiry
// could not be cached safely, and the next hop will refuse an expired one.
func parseTokenResponse(body []byte, exchanged bool, sent time.Time) (Token, error) {
	v, err := strictjson.Members(body, "access_token", "token_type", "expires_in", "issued_token_type")
	if err != nil {
		return Token{}, err
	}
	tok, ok := strictjson.String(v[0])
	if !ok || !b64token(tok) {
		// It goes into an Authorization field as is (RFC 6750 §2.1).
		return Token{}, errors.New("access_token missing or not a bearer token")
	}
	// RFC 6749 §5.1: the type is case-insensitive. RFC 8693 §2.2.1: N_A
	// would mean the token is not an access token.
	if typ, ok := strictjson.String(v[1]); !ok || !strings.EqualFold(typ, "Bearer") {
		return Token{}, errors.New("token_type missing or not Bearer")
	}
	secs, ok := positiveInt(v[2])
	if !ok {
		return Token{}, errors.New("expires_in missing or not a positive integer")
	}
	if exchanged {
		// RFC 8693 §2.2.1: required, and the type asked for.
		if itt, ok := strictjson.String(v[3]); !ok || itt != TokenTypeAccessToken {
			return Token{}, errors.New("issued_token_type missing or not " + TokenTypeAccessToken)
		}
	}
	return Token{AccessToken: tok, ExpiresAt: sent.Add(time.Duration(secs) * time.Second)}, nil
}

// parseErrorResponse reads an error answer (RFC 6749 §5.2) of status.
func parseErrorResponse(body []byte, status int) (*RefusedError, error) {
	v, err := strictjson.Members(body, "error", "error_description")
	if err != nil {
		return nil, err
	}
	code, ok := strictjson.String(v[0])
	if !ok || code == "" || len(code) > maxRefusalCode || strings.ContainsFunc(code, func(r rune) bool { return !nqschar(r) }) {
		return nil, errors.New(`"error" missing or not an error code`)
	}
	// error_description should be NQSCHAR too, but issuers (this one
	// included) quote values in it. It only ever reaches a JSON body, so
	// any printable ASCII is kept.
	desc, _ := strictjson.String(v[1])
	if len(desc) > maxRefusalDescription {
		desc = desc[:maxRefusalDescription]
	}
	desc = strings.Map(func(r rune) rune {
		if r < 0x20 || r > 0x7e {
			return '?'
		}
		return r
	}, desc)
	return &RefusedError{Code: code, Description: desc, Status: status}, nil
}

// positiveInt returns the JSON number v if it is a positive integer
// without fraction or exponent, below 2³¹ seconds.
func positiveInt(v json.RawMessage) (int64, bool) {
	n, err := strconv.ParseInt(string(v), 10, 32)
	return n, err == nil && n > 0
}

// b64token reports whether s is RFC 6750 §2.1's b64token: 1*( ALPHA /
// DIGIT / "-" / "." / "_" / "~" / "+" / "/" ) *"=".
func b64token(s string) bool {
	t := strings.TrimRight(s, "=")
	if t == "" {
		return false
	}
	for i := 0; i < len(t); i++ {
		c := t[i]
		if !('a' <= c && c <= 'z' || 'A' <= c && c <= 'Z' || '0' <= c && c <= '9' ||
			c == '-' || c == '.' || c == '_' || c == '~' || c == '+' || c == '/') {
			return false
		}
	}
	return true
}

// nqschar reports whether r is RFC 6749 Appendix A's NQSCHAR, the
// characters of an error code.
func nqschar(r rune) bool {
	return r == 0x20 || r == 0x21 || (0x23 <= r && r <= 0x5b) || (0x5d <= r && r <= 0x7e)
}
