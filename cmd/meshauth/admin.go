package main

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strings"
	"time"
)

// adminClient calls an issuer's administrative endpoints with the admin
// token, for the operator subcommands.
type adminClient struct {
	issuerURL string
	token     string
	http      *http.Client
}

func newAdminClient(issuerURL, token string) (*adminClient, error) {
	if token == "" {
		return nil, fmt.Errorf("%s is not set: the issuer's admin endpoints need it", envAdminToken)
	}
	u, err := url.Parse(issuerURL)
	if err != nil || u.Host == "" {
		return nil, fmt.Errorf("--issuer %q is not an absolute URL", issuerURL)
	}
	return &adminClient{issuerURL: strings.TrimSuffix(issuerURL, "/"), token: token, http: &http.Client{Timeout: 30 * time.Second}}, nil
}

// do sends body (JSON, or nothing when nil) to path with method and decodes
// a 2xx answer into out. An error answer becomes an error with the issuer's
// description.
func (c *adminClient) do(ctx context.Context, method, path string, body, out any) error {
	var rd io.Reader
	if body != nil {
		b, err := json.Marshal(body)
		if err != nil {
			return err
		}
		rd = bytes.NewReader(b)
	}
	req, err := http.NewRequestWithContext(ctx, method, c.issuerURL+path, rd)
	if err != nil {
		return err
	}
	req.Header.Set("Authorization", "Bearer "+c.token)
	if body != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	resp, err := c.http.Do(req)
	if err != nil {
		return fmt.Errorf("call issuer: %w", err)
	}
	defer resp.Body.Close()
	data, err := io.ReadAll(io.LimitReader(resp.Body, 1<<20))
	if err != nil {
		return fmt.Errorf("read issuer answer: %w", err)
	}
	if resp.StatusCode/100 != 2 {
		var e struct {
			Error       string `json:"error"`
			Description string `json:"error_description"`
		}
		if json.Unmarshal(data, &e) == nil && e.Error != "" {
			return fmt.Errorf("issuer answered %d %s: %s", resp.StatusCode, e.Error, e.Description)
		}
		return fmt.Errorf("issuer answered %s", resp.Status)
	}
	if err := json.Unmarshal(data, out); err != nil {
		return fmt.Errorf("decode issuer answer: %w", err)
	}
	return nil
}
