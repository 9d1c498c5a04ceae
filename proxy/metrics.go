package proxy

import (
	"fmt"

	"github.com/prometheus/client_golang/prometheus"
)

// entry names an entry point in the metrics.
type entry uint8

const (
	entryProxy entry = iota
	entryForwardAuth
	entryExtAuthzGRPC
	entryExtAuthzHTTP
	numEntries
)

var entryNames = [numEntries]string{"proxy", "forward_auth", "ext_authz_grpc", "ext_authz_http"}

// Metrics are the decision metrics of the entry points:
//
//   - meshauth_requests_total{entry, outcome, reason}: entry is proxy,
//     forward_auth, ext_authz_grpc or ext_authz_http; outcome is allowed,
//     public, denied or error; reason is "none", a token.Reason, or one of
//     a fixed set (no_token, insufficient_scope, issuer_refused,
//     condition_false, condition_error, path_* for paths that cannot be
//     made safe, upstream, ...).
//
//   - meshauth_verify_duration_seconds: the time taken by the verifier.
//
//   - meshauth_proxy_tunnels: WebSocket connections relayed now, and
//     meshauth_proxy_tunnels_total: since start.
//
//   - meshauth_proxy_streams_broken_total: streamed answers that ended
//     before their end (an upstream that reset, a caller that left).
//
//   - meshauth_http2_errors_total{type}: HTTP/2 protocol errors of
//     callers (malformed frames and the like), by net/http's type.
//
// Every series is created up front, so the hot path only increments.
type Metrics struct {
	requests     [numEntries][numCodes]prometheus.Counter
	verify       prometheus.Histogram
	tunnels      prometheus.Gauge
	tunnelsTotal prometheus.Counter
	broken       prometheus.Counter
	h2errors     *prometheus.CounterVec
}

// NewMetrics registers the metrics with reg. Use one Metrics for all the
// entry points of a process: registering twice with reg fails.
func NewMetrics(reg prometheus.Registerer) (*Metrics, error) {
	requests := prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "meshauth_requests_total",
		Help: "Requests decided, by entry point, outcome and reason.",
	}, []string{"entry", "outcome", "reason"})
	verify := prometheus.NewHistogram(prometheus.HistogramOpts{
		Name: "meshauth_verify_duration_seconds",
		Help: "Time taken to verify an access token.",
		// From 10µs: a local ES256 check takes some 50µs.
		Buckets: prometheus.ExponentialBuckets(10e-6, 2.5, 10),
	})
	m := &Metrics{
		verify:       verify,
		tunnels:      prometheus.NewGauge(prometheus.GaugeOpts{Name: "meshauth_proxy_tunnels", Help: "WebSocket connections relayed now."}),
		tunnelsTotal: prometheus.NewCounter(prometheus.CounterOpts{Name: "meshauth_proxy_tunnels_total", Help: "WebSocket connections relayed since start."}),
		broken: prometheus.NewCounter(prometheus.CounterOpts{Name: "meshauth_proxy_streams_broken_total",
			Help: "Streamed answers that ended before their end: an upstream that reset, a caller that left."}),
		h2errors: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "meshauth_http2_errors_total",
			Help: "HTTP/2 protocol errors of callers, by type."}, []string{"type"}),
	}
	for _, c := range []prometheus.Collector{requests, verify, m.tunnels, m.tunnelsTotal, m.broken, m.h2errors} {
		if err := reg.Register(c); err != nil {
			return nil, fmt.Errorf("proxy: registering metrics: %w", err)
		}
	}
	for e := range numEntries {
		for c := range numCodes {
			a := &answers[c]
			m.requests[e][c] = requests.WithLabelValues(entryNames[e], a.outcome, a.reason)
		}
	}
	return m, nil
}

func (m *Metrics) tunnelOpened() {
	if m != nil {
		m.tunnels.Inc()
		m.tunnelsTotal.Inc()
	}
}

func (m *Metrics) tunnelClosed() {
	if m != nil {
		m.tunnels.Dec()
	}
}

func (m *Metrics) streamBroken() {
	if m != nil {
		m.broken.Inc()
	}
}

func (m *Metrics) http2Error(errType string) {
	if m != nil {
		m.h2errors.WithLabelValues(errType).Inc()
	}
}
