package main

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"time"

	"github.com/meshauth/meshauth/internal/discovery"
)

// serveUntilDone runs servers until ctx is done or one fails, then stops
// them all, giving requests in flight 15 seconds. started runs once all
// are started.
func serveUntilDone(ctx context.Context, servers []func() error, stops []func(context.Context) error, log *slog.Logger, started func()) error {
	errc := make(chan error, len(servers))
	for _, serve := range servers {
		go func() { errc <- serve() }()
	}
	started()
	var serveErr error
	select {
	case serveErr = <-errc:
	case <-ctx.Done():
	}
	log.Info("shutting down: finishing requests in flight")
	shutdownCtx, cancel := context.WithTimeout(context.Background(), 15*time.Second)
	defer cancel()
	var errs []error
	for _, stop := range stops {
		errs = append(errs, stop(shutdownCtx))
	}
	if serveErr != nil {
		errs = append(errs, fmt.Errorf("serve: %w", serveErr))
	}
	return errors.Join(errs...)
}

// tokenEndpoint returns given, or else the token endpoint in the issuer's
// metadata (RFC 8414).
func tokenEndpoint(ctx context.Context, given, issuer string) (string, error) {
	if given != "" {
		return given, nil
	}
	ctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	md, err := discovery.NewFetcher(&http.Client{Timeout: 10 * time.Second}, 0).Metadata(ctx, issuer, discovery.MemberTokenEndpoint)
	if err != nil {
		return "", fmt.Errorf("%w (or give --token-url)", err)
	}
	return md.TokenEndpoint, nil
}
