package exchange

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strings"
)

// DiscoverTokenEndpoint reads the token_endpoint of issuer from its RFC 8414
// metadata (/.well-known/oauth-authorization-server, inserted before the
// issuer's path, §3.1), checking that the document names issuer itself
// (§3.3), so that a sidecar needs only the issuer URL it already trusts.
func DiscoverTokenEndpoint(ctx context.Context, hc *http.Client, issuer string) (string, error) {
	u, err := url.Parse(issuer)
	if err != nil || u.Host == "" {
		return "", fmt.Errorf("issuer %q is not an absolute URL", issuer)
	}
	wellKnown := u.Scheme + "://" + u.Host + "/.well-known/oauth-authorization-server" + strings.TrimSuffix(u.Path, "/")
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, wellKnown, nil)
	if err != nil {
		return "", err
	}
	resp, err := hc.Do(req)
	if err != nil {
		return "", fmt.Errorf("fetch metadata of %s: %w", issuer, err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return "", fmt.Errorf("fetch metadata from %s: status %d", wellKnown, resp.StatusCode)
	}
	var md struct {
		Issuer        string `json:"issuer"`
		TokenEndpoint string `json:"token_endpoint"`
	}
	if err := json.NewDecoder(io.LimitReader(resp.Body, 1<<20)).Decode(&md); err != nil {
		return "", fmt.Errorf("decode metadata from %s: %w", wellKnown, err)
	}
	if md.Issuer != issuer {
		return "", fmt.Errorf("metadata at %s names issuer %q, not %q", wellKnown, md.Issuer, issuer)
	}
	te, err := url.Parse(md.TokenEndpoint)
	if err != nil || te.Host == "" || (te.Scheme != "https" && te.Scheme != u.Scheme) {
		return "", fmt.Errorf("metadata of %s has no usable token_endpoint", issuer)
	}
	return md.TokenEndpoint, nil
}
