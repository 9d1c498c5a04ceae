package exchange

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strings"

	"github.com/meshauth/meshauth/internal/strictjson"
)

// Metadata is what meshauth reads of an authorization server's metadata
// (RFC 8414 §2, OpenID Connect Discovery 1.0 §3). Endpoints the document
// does not name are "".
type Metadata struct {
	Issuer                string
	AuthorizationEndpoint string
	TokenEndpoint         string
	JWKSURI               string
	UserinfoEndpoint      string
	// CodeChallengeMethods, TokenEndpointAuthMethods and
	// IDTokenSigningAlgs are the *_supported lists of those names.
	CodeChallengeMethods     []string
	TokenEndpointAuthMethods []string
	IDTokenSigningAlgs       []string
	// IssParameterSupported is authorization_response_iss_parameter_supported:
	// every authorization response carries iss (RFC 9207 §3).
	IssParameterSupported bool
}

// maxMetadataBytes bounds a metadata document.
const maxMetadataBytes = 1 << 20

// DiscoverTokenEndpoint reads the token_endpoint of issuer from its
// metadata (see DiscoverMetadata), so that a sidecar needs only the issuer
// URL it already trusts.
func DiscoverTokenEndpoint(ctx context.Context, hc *http.Client, issuer string) (string, error) {
	md, err := DiscoverMetadata(ctx, hc, issuer)
	if err != nil {
		return "", err
	}
	return md.TokenEndpoint, nil
}

// DiscoverMetadata reads the metadata of issuer: the RFC 8414 document
// (/.well-known/oauth-authorization-server inserted before the issuer's
// path, §3.1), or, where that is not found, the OpenID Connect Discovery
// document ({issuer}/.well-known/openid-configuration, §4). The document
// must name issuer itself (RFC 8414 §3.3, OpenID Connect Discovery §4.3),
// have a token_endpoint, and every endpoint it names must be https, or use
// the issuer's own scheme (http for a loopback issuer in development).
func DiscoverMetadata(ctx context.Context, hc *http.Client, issuer string) (*Metadata, error) {
	u, err := url.Parse(issuer)
	if err != nil || u.Host == "" {
		return nil, fmt.Errorf("issuer %q is not an absolute URL", issuer)
	}
	origin, path := u.Scheme+"://"+u.Host, strings.TrimSuffix(u.Path, "/")
	body, err := fetchMetadata(ctx, hc, origin+"/.well-known/oauth-authorization-server"+path)
	var se *metadataStatusError
	if errors.As(err, &se) && se.code >= 400 && se.code < 500 {
		// Not served there; OpenID providers publish theirs after the
		// issuer's path. A server error or a bad document is no reason
		// to look elsewhere: the issuer answered.
		body2, err2 := fetchMetadata(ctx, hc, origin+path+"/.well-known/openid-configuration")
		if err2 != nil {
			return nil, fmt.Errorf("%w; %w", err, err2)
		}
		body, err = body2, nil
	}
	if err != nil {
		return nil, err
	}
	md, err := parseMetadata(body, issuer, u.Scheme)
	if err != nil {
		return nil, fmt.Errorf("metadata of %s: %w", issuer, err)
	}
	return md, nil
}

// metadataStatusError reports an answer other than 200 OK.
type metadataStatusError struct {
	url  string
	code int
}

func (e *metadataStatusError) Error() string {
	return fmt.Sprintf("fetch metadata from %s: status %d", e.url, e.code)
}

func fetchMetadata(ctx context.Context, hc *http.Client, wellKnown string) ([]byte, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, wellKnown, nil)
	if err != nil {
		return nil, err
	}
	req.Header.Set("Accept", "application/json")
	resp, err := hc.Do(req)
	if err != nil {
		return nil, fmt.Errorf("fetch metadata: %w", err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return nil, &metadataStatusError{url: wellKnown, code: resp.StatusCode}
	}
	body, err := io.ReadAll(io.LimitReader(resp.Body, maxMetadataBytes+1))
	if err != nil {
		return nil, fmt.Errorf("read metadata from %s: %w", wellKnown, err)
	}
	if len(body) > maxMetadataBytes {
		return nil, fmt.Errorf("metadata from %s is larger than %d bytes", wellKnown, maxMetadataBytes)
	}
	return body, nil
}

// parseMetadata reads the members meshauth uses, by their exact names,
// refusing a member given twice.
func parseMetadata(body []byte, issuer, scheme string) (*Metadata, error) {
	names := []string{"issuer", "authorization_endpoint", "token_endpoint", "jwks_uri", "userinfo_endpoint",
		"code_challenge_methods_supported", "token_endpoint_auth_methods_supported", "id_token_signing_alg_values_supported",
		"authorization_response_iss_parameter_supported"}
	v, err := strictjson.Members(body, names...)
	if err != nil {
		return nil, fmt.Errorf("not a metadata document: %w", err)
	}
	md := &Metadata{}
	endpoints := []*string{&md.Issuer, &md.AuthorizationEndpoint, &md.TokenEndpoint, &md.JWKSURI, &md.UserinfoEndpoint}
	for i, p := range endpoints {
		if v[i] == nil {
			continue
		}
		s, ok := strictjson.String(v[i])
		if !ok {
			return nil, fmt.Errorf("%s is not a string", names[i])
		}
		*p = s
	}
	for i, p := range []*[]string{&md.CodeChallengeMethods, &md.TokenEndpointAuthMethods, &md.IDTokenSigningAlgs} {
		if raw := v[len(endpoints)+i]; raw != nil && json.Unmarshal(raw, p) != nil {
			return nil, fmt.Errorf("%s is not a list of strings", names[len(endpoints)+i])
		}
	}
	if raw := v[len(names)-1]; raw != nil && json.Unmarshal(raw, &md.IssParameterSupported) != nil {
		return nil, fmt.Errorf("%s is not a boolean", names[len(names)-1])
	}
	if md.Issuer != issuer {
		return nil, fmt.Errorf("the document names issuer %q, not %q", md.Issuer, issuer)
	}
	if md.TokenEndpoint == "" {
		return nil, errors.New("no usable token_endpoint")
	}
	for i, p := range endpoints[1:] {
		if *p == "" {
			continue
		}
		e, err := url.Parse(*p)
		if err != nil || e.Host == "" || e.User != nil || strings.Contains(*p, "#") || (e.Scheme != "https" && e.Scheme != scheme) {
			return nil, fmt.Errorf("no usable %s: %q must be an https URL (or use the issuer's scheme) without user information or fragment", names[i+1], *p)
		}
	}
	return md, nil
}
