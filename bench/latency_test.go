package bench

import (
	"slices"
	"testing"
	"time"
)

// reportLatencies reports the p50 and p99 of lat, and with withMax its
// maximum, in µs.
func reportLatencies(b *testing.B, withMax bool, lat []time.Duration) {
	if len(lat) == 0 {
		return
	}
	slices.Sort(lat)
	b.ReportMetric(float64(lat[len(lat)/2].Microseconds()), "p50-µs")
	b.ReportMetric(float64(lat[len(lat)*99/100].Microseconds()), "p99-µs")
	if withMax {
		b.ReportMetric(float64(lat[len(lat)-1].Microseconds()), "max-µs")
	}
}
