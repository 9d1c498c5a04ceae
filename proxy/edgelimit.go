package proxy

import (
	"sync"
	"time"
)

// rateLimiter bounds the dereferences each client address may cause: a
// token bucket per address (rate per second, burst at most), in a map of
// at most max addresses. When the map is full, addresses whose bucket is
// full again (idle ones) go first, else an arbitrary one: an attacker
// with many addresses can only reset buckets, never grow the map.
//
// It is consulted on cache misses only, which reach the issuer: a cached
// token costs nothing and is never limited.
type rateLimiter struct {
	rate, burst float64
	max         int
	mu          sync.Mutex
	buckets     map[string]*bucket
}

type bucket struct {
	tokens float64
	last   time.Time
}

func newRateLimiter(rate float64, burst, max int) *rateLimiter {
	return &rateLimiter{rate: rate, burst: float64(burst), max: max, buckets: make(map[string]*bucket)}
}

// allow takes a token from addr's bucket, reporting whether there was one.
func (l *rateLimiter) allow(addr []byte, now time.Time) bool {
	l.mu.Lock()
	defer l.mu.Unlock()
	b, ok := l.buckets[string(addr)]
	if !ok {
		if len(l.buckets) >= l.max {
			l.shrink(now)
		}
		b = &bucket{tokens: l.burst, last: now}
		l.buckets[string(addr)] = b
	}
	b.tokens = min(l.burst, b.tokens+now.Sub(b.last).Seconds()*l.rate)
	b.last = now
	if b.tokens < 1 {
		return false
	}
	b.tokens--
	return true
}

// shrink frees at least one place in a full map.
func (l *rateLimiter) shrink(now time.Time) {
	for k, b := range l.buckets {
		if b.tokens+now.Sub(b.last).Seconds()*l.rate >= l.burst {
			delete(l.buckets, k)
		}
	}
	for k := range l.buckets {
		if len(l.buckets) < l.max {
			break
		}
		delete(l.buckets, k)
	}
}
