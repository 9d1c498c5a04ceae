package main

import (
	"github.com/prometheus/client_golang/prometheus"

	"github.com/meshauth/meshauth/internal/tlsfiles"
)

// registerTLSMetrics registers the state of a listener's TLS files.
func registerTLSMetrics(reg prometheus.Registerer, listener string, files *tlsfiles.Files) {
	labels := prometheus.Labels{"listener": listener}
	reg.MustRegister(
		prometheus.NewGaugeFunc(prometheus.GaugeOpts{Name: "meshauth_tls_certificate_expiry_timestamp_seconds", Help: "When the certificate served expires (Unix time).", ConstLabels: labels},
			func() float64 { return float64(files.Status().NotAfter.Unix()) }),
		prometheus.NewCounterFunc(prometheus.CounterOpts{Name: "meshauth_tls_reloads_total", Help: "Replaced TLS files loaded.", ConstLabels: labels},
			func() float64 { return float64(files.Status().Reloads) }),
		prometheus.NewCounterFunc(prometheus.CounterOpts{Name: "meshauth_tls_reload_failures_total", Help: "Replaced TLS files refused (the previous ones stay in use).", ConstLabels: labels},
			func() float64 { return float64(files.Status().Failures) }),
	)
}
