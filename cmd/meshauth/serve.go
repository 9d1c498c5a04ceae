package main

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"time"
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
