package jwks

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"net/url"
	"os"
	"strconv"
	"strings"
	"time"

	"github.com/meshauth/meshauth/internal/discovery"
	"github.com/meshauth/meshauth/token"
)

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
			md, err := c.fetcher.Metadata(ctx, c.cfg.Issuer, discovery.MemberJWKSURI)
			if err != nil {
				return nil, 0, err
			}
			u, err := url.Parse(md.JWKSURI)
			if err != nil {
				return nil, 0, err // checked by Metadata
			}
			c.jwksURI, c.discoveredAt = u, now
		}
		keys, interval, err := c.fetchJWKS(ctx, c.jwksURI)
		if err != nil {
			c.jwksURI = nil
		}
		return keys, interval, err
	default:
		return c.fetchJWKS(ctx, c.jwksURL)
	}
}

// fetchJWKS fetches and parses the JWK Set at u.
func (c *KeySetCache) fetchJWKS(ctx context.Context, u *url.URL) ([]token.Key, time.Duration, error) {
	body, h, err := c.fetcher.Get(ctx, "JWKS", u, "application/jwk-set+json, application/json", "")
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
	data, err := discovery.ReadLimited(f, c.cfg.MaxBytes)
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
