// Package discovery finds what an authorization server publishes, for
// everyone in meshauth who trusts one: the key-set cache and the
// distribution's subscriber (package jwks), the relying party (package
// rp), and the sidecar and edge that look up their issuer's token
// endpoint.
//
// Metadata reads the server's metadata: the RFC 8414 document
// (/.well-known/oauth-authorization-server inserted before the issuer's
// path, §3.1) or, where that is not found, the OpenID Connect Discovery
// document ({issuer}/.well-known/openid-configuration, §4). It reads the
// members meshauth uses by their exact names, refuses a member given
// twice and a document naming another issuer (RFC 8414 §3.3), and holds
// every URL to one rule, the one meshauth's configured URLs follow too:
// https, or plain http on a loopback host for development on one machine
// (and for a URL an issuer's metadata names, only if the issuer is on one
// too). A Fetcher follows redirects only within the origin of the request
// and bounds what it reads.
package discovery

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"slices"
	"strings"

	"github.com/meshauth/meshauth/internal/loopback"
	"github.com/meshauth/meshauth/internal/strictjson"
)

// The members of the metadata that meshauth reads (RFC 8414 §2, OpenID
// Connect Discovery 1.0 §3, and meshauth's extension).
const (
	MemberIssuer                = "issuer"
	MemberAuthorizationEndpoint = "authorization_endpoint"
	MemberTokenEndpoint         = "token_endpoint"
	MemberJWKSURI               = "jwks_uri"
	MemberUserinfoEndpoint      = "userinfo_endpoint"
	// MemberSnapshotURI gives the URL of a meshauth issuer's distribution
	// snapshot (RFC 8414 §2 allows extensions).
	MemberSnapshotURI = "meshauth_snapshot_uri"
)

// DefaultMaxBytes is the largest document a Fetcher reads by default.
const DefaultMaxBytes = 1 << 20

// maxRedirects is the number of same-origin redirects a fetch follows, as
// many as net/http's default policy.
const maxRedirects = 10

// Metadata is what meshauth reads of an authorization server's metadata.
// A URL is "" when the document does not name it, or names one that is
// not usable (Unusable says why).
type Metadata struct {
	Issuer                string
	AuthorizationEndpoint string
	TokenEndpoint         string
	JWKSURI               string
	UserinfoEndpoint      string
	SnapshotURI           string
	// CodeChallengeMethods, TokenEndpointAuthMethods and
	// IDTokenSigningAlgs are the *_supported lists of those names.
	CodeChallengeMethods     []string
	TokenEndpointAuthMethods []string
	IDTokenSigningAlgs       []string
	// IssParameterSupported is authorization_response_iss_parameter_supported:
	// every authorization response carries iss (RFC 9207 §3).
	IssParameterSupported bool
	// Unusable says, by member, why a URL the document names cannot be
	// used. It does not make the rest of the document unusable: a caller
	// requires what it needs (Fetcher.Metadata's required).
	Unusable map[string]error
}

// Fetcher fetches the documents of an authorization server meshauth
// trusts: its metadata and what the metadata names. It follows a redirect
// only within the origin (RFC 6454 §4: scheme, host and port) of the
// first request, since the URL is what is trusted and a redirect
// elsewhere, or from https to http, would hand that trust to another
// server; and it reads at most MaxBytes of a body.
type Fetcher struct {
	client   *http.Client
	maxBytes int64
}

// NewFetcher returns a Fetcher that sends its requests with hc (nil: a
// new client) and reads at most maxBytes of a document (0:
// DefaultMaxBytes). hc's CheckRedirect is not used.
func NewFetcher(hc *http.Client, maxBytes int64) *Fetcher {
	c := &http.Client{CheckRedirect: sameOriginRedirect}
	if hc != nil {
		cc := *hc
		cc.CheckRedirect = sameOriginRedirect
		c = &cc
	}
	if maxBytes == 0 {
		maxBytes = DefaultMaxBytes
	}
	return &Fetcher{client: c, maxBytes: maxBytes}
}

// Metadata reads the metadata of issuer, an issuer identifier (see
// ParseIssuer), and checks that it names every member of required with a
// usable URL.
func (f *Fetcher) Metadata(ctx context.Context, issuer string, required ...string) (*Metadata, error) {
	iss, err := ParseIssuer("issuer", issuer)
	if err != nil {
		return nil, err
	}
	origin := iss.Scheme + "://" + iss.Host
	// RFC 8414 §3.1: a terminating "/" of the issuer's path is removed
	// before the well-known segment is inserted between host and path.
	path := strings.TrimSuffix(iss.EscapedPath(), "/")
	md, err := f.metadataAt(ctx, origin+"/.well-known/oauth-authorization-server"+path, iss, issuer)
	var se *StatusError
	if errors.As(err, &se) && se.Code >= 400 && se.Code < 500 {
		// Not served there; OpenID providers publish their metadata after
		// the issuer's path instead (OpenID Connect Discovery 1.0 §4). A
		// server error or a bad document is no reason to look elsewhere:
		// the issuer answered.
		md2, err2 := f.metadataAt(ctx, origin+path+"/.well-known/openid-configuration", iss, issuer)
		if err2 != nil {
			return nil, fmt.Errorf("%w; %w", err, err2)
		}
		md, err = md2, nil
	}
	if err != nil {
		return nil, err
	}
	for _, member := range required {
		if err := md.Unusable[member]; err != nil {
			return nil, fmt.Errorf("metadata of %s: no usable %s: %w", issuer, member, err)
		}
		if md.url(member) == "" {
			return nil, fmt.Errorf("metadata of %s has no %s", issuer, member)
		}
	}
	return md, nil
}

// url returns the URL of member.
func (md *Metadata) url(member string) string {
	switch member {
	case MemberAuthorizationEndpoint:
		return md.AuthorizationEndpoint
	case MemberTokenEndpoint:
		return md.TokenEndpoint
	case MemberJWKSURI:
		return md.JWKSURI
	case MemberUserinfoEndpoint:
		return md.UserinfoEndpoint
	case MemberSnapshotURI:
		return md.SnapshotURI
	}
	return ""
}

// metadataAt fetches and parses the metadata document at rawURL.
func (f *Fetcher) metadataAt(ctx context.Context, rawURL string, iss *url.URL, issuer string) (*Metadata, error) {
	u, err := url.Parse(rawURL)
	if err != nil {
		return nil, fmt.Errorf("metadata URL: %w", err)
	}
	body, _, err := f.Get(ctx, "metadata", u, "application/json", "")
	if err != nil {
		return nil, err
	}
	md, err := parseMetadata(body, iss, issuer)
	if err != nil {
		return nil, fmt.Errorf("metadata from %s: %w", u, err)
	}
	return md, nil
}

// parseMetadata reads the members meshauth uses of body, the metadata of
// the issuer iss, whose identifier is issuer.
func parseMetadata(body []byte, iss *url.URL, issuer string) (*Metadata, error) {
	urls := []string{MemberIssuer, MemberAuthorizationEndpoint, MemberTokenEndpoint, MemberJWKSURI, MemberUserinfoEndpoint, MemberSnapshotURI}
	lists := []string{"code_challenge_methods_supported", "token_endpoint_auth_methods_supported", "id_token_signing_alg_values_supported"}
	const issParameter = "authorization_response_iss_parameter_supported"
	v, err := strictjson.Members(body, slices.Concat(urls, lists, []string{issParameter})...)
	if err != nil {
		return nil, fmt.Errorf("not a metadata document: %w", err)
	}
	md := &Metadata{}
	for i, p := range []*string{&md.Issuer, &md.AuthorizationEndpoint, &md.TokenEndpoint, &md.JWKSURI, &md.UserinfoEndpoint, &md.SnapshotURI} {
		if v[i] == nil {
			continue
		}
		s, ok := strictjson.String(v[i])
		if !ok {
			return nil, fmt.Errorf("%s is not a string", urls[i])
		}
		*p = s
	}
	for i, p := range []*[]string{&md.CodeChallengeMethods, &md.TokenEndpointAuthMethods, &md.IDTokenSigningAlgs} {
		if raw := v[len(urls)+i]; raw != nil && json.Unmarshal(raw, p) != nil {
			return nil, fmt.Errorf("%s is not a list of strings", lists[i])
		}
	}
	if raw := v[len(v)-1]; raw != nil && json.Unmarshal(raw, &md.IssParameterSupported) != nil {
		return nil, fmt.Errorf("%s is not a boolean", issParameter)
	}
	// RFC 8414 §3.3: a document naming another issuer must not be used,
	// or one issuer could impersonate another.
	if md.Issuer != issuer {
		return nil, fmt.Errorf("names issuer %q, want %q (RFC 8414 §3.3)", md.Issuer, issuer)
	}
	for i, p := range []*string{&md.AuthorizationEndpoint, &md.TokenEndpoint, &md.JWKSURI, &md.UserinfoEndpoint, &md.SnapshotURI} {
		if *p == "" {
			continue
		}
		if _, err := DocumentURL(iss, urls[i+1], *p); err != nil {
			if md.Unusable == nil {
				md.Unusable = map[string]error{}
			}
			md.Unusable[urls[i+1]] = err
			*p = ""
		}
	}
	return md, nil
}

// ParseIssuer checks an issuer identifier (RFC 8414 §2) that name (a
// field or flag) gives: a URL as ParseURL wants it, without query.
func ParseIssuer(name, raw string) (*url.URL, error) {
	u, err := url.Parse(raw)
	if err == nil && (u.RawQuery != "" || u.ForceQuery || u.Fragment != "") {
		return nil, fmt.Errorf("%s %q must not have a query or fragment (RFC 8414 §2)", name, raw)
	}
	return ParseURL(name, raw)
}

// ParseURL checks a URL that name (a field or flag) gives, one that
// meshauth fetches keys from or sends secrets to: absolute, without user
// information (a password in a URL ends up in logs) or fragment, and
// https, or http on a loopback host for development.
func ParseURL(name, raw string) (*url.URL, error) {
	u, err := url.Parse(raw)
	switch {
	case err != nil || !u.IsAbs() || u.Host == "" || u.Opaque != "":
		return nil, fmt.Errorf("%s %q is not an absolute URL", name, raw)
	case u.User != nil:
		return nil, fmt.Errorf("%s %q must not contain user information", name, u.Redacted())
	case u.Fragment != "":
		return nil, fmt.Errorf("%s %q must not have a fragment", name, raw)
	case u.Scheme != "https" && !plainLoopback(u):
		return nil, fmt.Errorf("%s %q must use https (http only on a loopback host)", name, raw)
	}
	return u, nil
}

// DocumentURL checks raw, the URL of a document or endpoint that the
// metadata of the issuer iss names in member: absolute, without user
// information or fragment, and https. Keys fetched or secrets sent in the
// clear could be read or replaced on the way; plain http is only for
// development, with the issuer and what it names on this host.
func DocumentURL(iss *url.URL, member, raw string) (*url.URL, error) {
	u, err := url.Parse(raw)
	if err != nil || !u.IsAbs() || u.Host == "" || u.Opaque != "" || u.User != nil || u.Fragment != "" {
		return nil, fmt.Errorf("%s %q is not an absolute URL without user information or fragment", member, raw)
	}
	if u.Scheme != "https" && !(plainLoopback(iss) && plainLoopback(u)) {
		return nil, fmt.Errorf("%s %q must use https", member, raw)
	}
	return u, nil
}

// plainLoopback reports whether u is an http URL on a loopback host.
func plainLoopback(u *url.URL) bool {
	return u.Scheme == "http" && loopback.Host(u.Hostname())
}

// StatusError reports an answer other than 200 OK (or 304 to a
// conditional request).
type StatusError struct {
	What string
	URL  *url.URL
	Code int
}

func (e *StatusError) Error() string {
	return fmt.Sprintf("fetch %s from %s: status %d", e.What, e.URL, e.Code)
}

// ErrNotModified is Get's answer to a conditional request whose document
// has not changed.
var ErrNotModified = errors.New("not modified")

// Get fetches the document what (for errors) at u and returns its body and
// header. With an etag, the request is conditional (RFC 9110 §13.1.2), and
// an unchanged document is ErrNotModified.
func (f *Fetcher) Get(ctx context.Context, what string, u *url.URL, accept, etag string) ([]byte, http.Header, error) {
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
		return nil, resp.Header, ErrNotModified
	}
	if resp.StatusCode != http.StatusOK {
		return nil, nil, &StatusError{What: what, URL: u, Code: resp.StatusCode}
	}
	body, err := ReadLimited(resp.Body, f.maxBytes)
	if err != nil {
		return nil, nil, fmt.Errorf("fetch %s from %s: %w", what, u, err)
	}
	return body, resp.Header, nil
}

// ReadLimited reads r to the end, failing if it holds more than limit
// bytes.
func ReadLimited(r io.Reader, limit int64) ([]byte, error) {
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
// redirect only within the origin of the first request.
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
