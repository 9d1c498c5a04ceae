package jwks

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"os"
	"strconv"
	"strings"
	"time"

	"github.com/meshauth/meshauth/internal/loopback"
	"github.com/meshauth/meshauth/token"
)

// maxRedirects is the number of same-origin redirects a fetch follows, as
// many as net/http's default policy.
const maxRedirects = 10

// load reads the keys from the configured source and returns them with the
// time until the next refresh. It returns no keys and no error for a file
// that has not changed since it was last loaded.
func (c *KeySetCache) load(ctx context.Context) ([]token.Key, time.Duration, error) {
	switch c.source {
	case sourceFile:
		// A stat is cheap, and a file has no Cache-Control: check often.
		keys, err := c.loadFile()
		return keys, c.cfg.MinRefresh, err
	case sourceMetadata:
		// The jwks_uri rarely moves; read the metadata again after
		// MaxRefresh, or after a JWKS fetch failed.
		if now := c.cfg.Now(); c.jwksURI == nil || now.Sub(c.discoveredAt) >= c.cfg.MaxRefresh {
			md, err := c.fetcher.discover(ctx, c.target, c.cfg.Issuer)
			if err != nil {
				return nil, 0, err
			}
			c.jwksURI, c.discoveredAt = md.jwksURI, now
		}
		keys, interval, err := c.fetchJWKS(ctx, c.jwksURI)
		if err != nil {
			c.jwksURI = nil
		}
		return keys, interval, err
	default:
		return c.fetchJWKS(ctx, c.target)
	}
}

// fetchJWKS fetches and parses the JWK Set at u.
func (c *KeySetCache) fetchJWKS(ctx context.Context, u *url.URL) ([]token.Key, time.Duration, error) {
	body, h, err := c.fetcher.get(ctx, "JWKS", u, "application/jwk-set+json, application/json", "")
	if err != nil {
		return nil, 0, err
	}
	keys, err := parseKeySet(body)
	if err != nil {
		return nil, 0, fmt.Errorf("JWKS from %s: %w", u, err)
	}
	c.loadedDoc = body
	return keys, refreshInterval(h, c.cfg.MinRefresh, c.cfg.MaxRefresh), nil
}

// parseKeySet parses a JWK Set that must hold at least one usable key.
func parseKeySet(data []byte) ([]token.Key, error) {
	keys, err := token.ParseJWKS(data)
	if err != nil {
		return nil, err
	}
	if len(keys) == 0 {
		return nil, errors.New("no usable signing key")
	}
	return keys, nil
}

// loadFile reads the JWK Set file if it changed since it was last loaded.
func (c *KeySetCache) loadFile() ([]token.Key, error) {
	f, err := os.Open(c.cfg.JWKSFile)
	if err != nil {
		return nil, fmt.Errorf("read JWKS file: %w", err)
	}
	defer f.Close()
	// The information of the open file, not of the path, so that it
	// describes the content read even if the file is replaced meanwhile.
	fi, err := f.Stat()
	if err != nil {
		return nil, fmt.Errorf("read JWKS file: %w", err)
	}
	if prev := c.file; prev != nil && os.SameFile(prev, fi) && prev.ModTime().Equal(fi.ModTime()) && prev.Size() == fi.Size() {
		return nil, nil
	}
	data, err := readLimited(f, c.fetcher.maxBytes)
	if err != nil {
		return nil, fmt.Errorf("read JWKS file %s: %w", c.cfg.JWKSFile, err)
	}
	keys, err := parseKeySet(data)
	if err != nil {
		return nil, fmt.Errorf("JWKS file %s: %w", c.cfg.JWKSFile, err)
	}
	c.file, c.loadedDoc = fi, data
	return keys, nil
}

// SnapshotMember is the member of an issuer's metadata (RFC 8414 §2 allows
// extensions) that gives the URL of its distribution snapshot.
const SnapshotMember = "meshauth_snapshot_uri"

// issuerMetadata is what meshauth reads of an issuer's metadata.
type issuerMetadata struct {
	jwksURI *url.URL
	// snapshotURI is nil if the issuer publishes none; snapshotErr says
	// why one it publishes cannot be used, which does not keep the keys
	// from loading.
	snapshotURI *url.URL
	snapshotErr error
}

// httpFetcher fetches the documents of a trusted issuer: only redirects
// within the origin are followed, and bodies are bounded.
type httpFetcher struct {
	client   *http.Client
	maxBytes int64
}

func newHTTPFetcher(client *http.Client, maxBytes int64) httpFetcher {
	c := &http.Client{CheckRedirect: sameOriginRedirect}
	if client != nil {
		cc := *client
		cc.CheckRedirect = sameOriginRedirect
		c = &cc
	}
	return httpFetcher{client: c, maxBytes: maxBytes}
}

// discover reads the metadata of the issuer iss, whose identifier is id.
func (f httpFetcher) discover(ctx context.Context, iss *url.URL, id string) (*issuerMetadata, error) {
	origin := iss.Scheme + "://" + iss.Host
	// RFC 8414 §3.1: a terminating "/" of the issuer's path is removed
	// before the well-known segment is inserted between host and path.
	path := strings.TrimSuffix(iss.EscapedPath(), "/")
	md, err := f.fetchMetadata(ctx, origin+"/.well-known/oauth-authorization-server"+path, iss, id)
	var se *fetchStatusError
	if errors.As(err, &se) && se.code >= 400 && se.code < 500 {
		// Not served there; OpenID providers publish their metadata
		// after the issuer's path instead (OpenID Connect Discovery 1.0
		// §4). A server error or a bad document is no reason to look
		// elsewhere: the issuer answered.
		md2, err2 := f.fetchMetadata(ctx, origin+path+"/.well-known/openid-configuration", iss, id)
		if err2 != nil {
			return nil, fmt.Errorf("%w; %w", err, err2)
		}
		return md2, nil
	}
	return md, err
}

// fetchMetadata fetches the authorization server metadata at rawURL and
// checks it.
func (f httpFetcher) fetchMetadata(ctx context.Context, rawURL string, iss *url.URL, id string) (*issuerMetadata, error) {
	u, err := url.Parse(rawURL)
	if err != nil {
		return nil, fmt.Errorf("metadata URL: %w", err)
	}
	body, _, err := f.get(ctx, "metadata", u, "application/json", "")
	if err != nil {
		return nil, err
	}
	var doc struct {
		Issuer      string `json:"issuer"`
		JWKSURI     string `json:"jwks_uri"`
		SnapshotURI string `json:"meshauth_snapshot_uri"`
	}
	if err := json.Unmarshal(body, &doc); err != nil {
		return nil, fmt.Errorf("metadata from %s: %w", u, err)
	}
	// RFC 8414 §3.3: a document naming another issuer must not be used,
	// or one issuer could impersonate another.
	if doc.Issuer != id {
		return nil, fmt.Errorf("metadata from %s names issuer %q, want %q (RFC 8414 §3.3)", u, doc.Issuer, id)
	}
	if doc.JWKSURI == "" {
		return nil, fmt.Errorf("metadata from %s has no jwks_uri", u)
	}
	md := &issuerMetadata{}
	if md.jwksURI, err = issuerDocumentURL(iss, "jwks_uri", doc.JWKSURI); err != nil {
		return nil, fmt.Errorf("metadata from %s: %w", u, err)
	}
	if doc.SnapshotURI != "" {
		if md.snapshotURI, err = issuerDocumentURL(iss, SnapshotMember, doc.SnapshotURI); err != nil {
			md.snapshotErr = fmt.Errorf("metadata from %s: %w", u, err)
		}
	}
	return md, nil
}

// issuerDocumentURL checks raw, the URL of a document that the metadata of
// the issuer iss names in member: absolute, without user information, and
// https. Keys fetched in the clear could be replaced on the way; plain
// http is only for development, with the issuer and its documents on this
// host.
func issuerDocumentURL(iss *url.URL, member, raw string) (*url.URL, error) {
	u, err := url.Parse(raw)
	if err != nil || !u.IsAbs() || u.Host == "" || u.User != nil {
		return nil, fmt.Errorf("%s %q is not an absolute URL without user information", member, raw)
	}
	if u.Scheme != "https" && !(plainLoopback(iss) && plainLoopback(u)) {
		return nil, fmt.Errorf("%s %q must use https", member, raw)
	}
	return u, nil
}

// fetchStatusError reports a response other than 200 OK.
type fetchStatusError struct {
	what string
	url  *url.URL
	code int
}

func (e *fetchStatusError) Error() string {
	return fmt.Sprintf("fetch %s from %s: status %d", e.what, e.url, e.code)
}

// errNotModified is get's answer to a conditional request whose document
// has not changed.
var errNotModified = errors.New("not modified")

// get fetches the document what at u and returns its body and header. With
// an etag, the request is conditional (RFC 9110 §13.1.2), and an unchanged
// document is errNotModified.
func (f httpFetcher) get(ctx context.Context, what string, u *url.URL, accept, etag string) ([]byte, http.Header, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, u.String(), nil)
	if err != nil {
		return nil, nil, fmt.Errorf("fetch %s from %s: %w", what, u, err)
	}
	req.Header.Set("Accept", accept)
	if etag != "" {
		req.Header.Set("If-None-Match", etag)
	}
	resp, err := f.client.Do(req)
	if err != nil {
		// A *url.Error: it names the URL, without its password.
		return nil, nil, fmt.Errorf("fetch %s: %w", what, err)
	}
	defer resp.Body.Close()
	if resp.StatusCode == http.StatusNotModified && etag != "" {
		return nil, resp.Header, errNotModified
	}
	if resp.StatusCode != http.StatusOK {
		return nil, nil, &fetchStatusError{what: what, url: u, code: resp.StatusCode}
	}
	body, err := readLimited(resp.Body, f.maxBytes)
	if err != nil {
		return nil, nil, fmt.Errorf("fetch %s from %s: %w", what, u, err)
	}
	return body, resp.Header, nil
}

// readLimited reads r to the end, failing if it holds more than limit bytes.
func readLimited(r io.Reader, limit int64) ([]byte, error) {
	data, err := io.ReadAll(io.LimitReader(r, limit+1))
	if err != nil {
		return nil, err
	}
	if int64(len(data)) > limit {
		return nil, fmt.Errorf("larger than %d bytes", limit)
	}
	return data, nil
}

// sameOriginRedirect is the CheckRedirect of every fetch: it follows a
// redirect only within the origin (RFC 6454 §4: scheme, host and port) of
// the first request. The configured URL is what is trusted; a redirect
// elsewhere, or from https to http, would hand that trust to another server.
func sameOriginRedirect(req *http.Request, via []*http.Request) error {
	if len(via) >= maxRedirects {
		return fmt.Errorf("stopped after %d redirects", maxRedirects)
	}
	first := via[0].URL
	if req.URL.Scheme != first.Scheme || !strings.EqualFold(req.URL.Host, first.Host) {
		return fmt.Errorf("redirect to another origin %s://%s refused", req.URL.Scheme, req.URL.Host)
	}
	return nil
}

// refreshInterval returns how long a response with header h stays fresh
// (RFC 9111 §4.2.1: max-age less the Age the response already has), within
// [lo, hi]: lo for "no-cache" or "no-store", hi without a max-age.
func refreshInterval(h http.Header, lo, hi time.Duration) time.Duration {
	var (
		maxAge time.Duration
		found  bool
	)
	for _, v := range h.Values("Cache-Control") {
		for d := range strings.SplitSeq(v, ",") {
			name, arg, _ := strings.Cut(strings.TrimSpace(d), "=")
			switch strings.ToLower(strings.TrimSpace(name)) {
			case "no-cache", "no-store":
				return lo
			case "max-age":
				// RFC 9111 §4.2.1: of several, use the first.
				if s, ok := deltaSeconds(strings.Trim(strings.TrimSpace(arg), `"`)); ok && !found {
					maxAge, found = s, true
				}
			}
		}
	}
	if !found {
		return hi
	}
	if age, ok := deltaSeconds(h.Get("Age")); ok {
		maxAge -= age
	}
	return min(max(maxAge, lo), hi)
}

// deltaSeconds parses delta-seconds (RFC 9111 §1.2.2), capping values
// beyond 2^31 at 2^31 as that section allows.
func deltaSeconds(s string) (time.Duration, bool) {
	if s == "" || strings.Trim(s, "0123456789") != "" {
		return 0, false
	}
	n, err := strconv.ParseUint(s, 10, 64)
	if err != nil || n > 1<<31 {
		n = 1 << 31
	}
	return time.Duration(n) * time.Second, true
}

// parseKeySetURL checks a configured URL: absolute, without user
// information (a password in a URL ends up in logs), and https, or http on
// a loopback host for development.
func parseKeySetURL(name, raw string) (*url.URL, error) {
	u, err := url.Parse(raw)
	if err != nil || !u.IsAbs() || u.Host == "" {
		return nil, fmt.Errorf("key set: %s %q is not an absolute URL", name, raw)
	}
	if u.User != nil {
		return nil, fmt.Errorf("key set: %s %q must not contain user information", name, u.Redacted())
	}
	if u.Scheme != "https" && !plainLoopback(u) {
		return nil, fmt.Errorf("key set: %s %q must use https (http only on a loopback host)", name, raw)
	}
	return u, nil
}

// plainLoopback reports whether u is an http URL on a loopback host.
func plainLoopback(u *url.URL) bool {
	return u.Scheme == "http" && loopback.Host(u.Hostname())
}
