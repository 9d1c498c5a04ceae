package proxy

import (
	"context"
	"net/http"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promhttp"
)

// NewAdminHandler returns the handler of the admin listener, kept apart
// from the traffic listeners so that it is never exposed with them:
//
//   - GET /metrics: the metrics gathered by g (Prometheus text format).
//   - GET /healthz: 200 while the process serves (liveness).
//   - GET /readyz: 200 if ready returns nil, else 503 with its error
//     (readiness: keys loaded, upstream reachable). A nil ready is always
//     ready.
func NewAdminHandler(g prometheus.Gatherer, ready func(context.Context) error) http.Handler {
	return NewAdminHandlerWithStatus(g, ready, nil)
}

// NewAdminHandlerWithStatus is NewAdminHandler whose /readyz also shows
// status(), ready or not: where each trusted issuer's keys came from and
// how old they are, for one. A nil status shows nothing more.
func NewAdminHandlerWithStatus(g prometheus.Gatherer, ready func(context.Context) error, status func() string) http.Handler {
	mux := http.NewServeMux()
	mux.Handle("GET /metrics", promhttp.HandlerFor(g, promhttp.HandlerOpts{}))
	mux.HandleFunc("GET /healthz", func(w http.ResponseWriter, _ *http.Request) {
		w.Header().Set("Content-Type", "text/plain; charset=utf-8")
		w.Write([]byte("ok\n"))
	})
	mux.HandleFunc("GET /readyz", func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "text/plain; charset=utf-8")
		w.Header().Set("Cache-Control", "no-store")
		if ready != nil {
			if err := ready(r.Context()); err != nil {
				w.WriteHeader(http.StatusServiceUnavailable)
				w.Write([]byte("not ready: " + err.Error() + "\n"))
				if status != nil {
					w.Write([]byte(status()))
				}
				return
			}
		}
		w.Write([]byte("ok\n"))
		if status != nil {
			w.Write([]byte(status()))
		}
	})
	return mux
}
