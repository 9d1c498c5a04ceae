package issuer

import (
	"net"
	"net/http"
	"net/netip"
	"sync"
	"time"
)

// Login backoff. After a few free failures, each further failed login for
// the same account name, or from the same address, blocks the next attempt
// for twice as long as the last, up to maxLoginBackoff. Addresses get more
// free failures than accounts because many people can share one (NAT).
// Failures are forgotten loginFailureMemory after the last one.
//
// The counters live in this process: each issuer replica slows guessing on
// its own, so N replicas behind a load balancer allow up to N times the
// attempts. That keeps a login from writing to the store, at the cost of a
// bound that scales with the replica count.
const (
	accountFreeFailures = 5
	addressFreeFailures = 20
	firstLoginBackoff   = time.Second
	maxLoginBackoff     = 15 * time.Minute
	loginFailureMemory  = time.Hour
	// maxThrottleEntries bounds the memory an attacker cycling through
	// names or addresses can make the throttle use.
	maxThrottleEntries = 100_000
)

// loginThrottle counts failed logins per account name and per client
// address.
type loginThrottle struct {
	mu      sync.Mutex
	entries map[string]*loginFailures
}

type loginFailures struct {
	count        int
	last         time.Time
	blockedUntil time.Time
}

func newLoginThrottle() *loginThrottle {
	return &loginThrottle{entries: make(map[string]*loginFailures)}
}

// wait returns how long a login for keys must wait; zero means it may go
// ahead.
func (t *loginThrottle) wait(now time.Time, keys ...string) time.Duration {
	t.mu.Lock()
	defer t.mu.Unlock()
	var d time.Duration
	for _, k := range keys {
		if e := t.entries[k]; e != nil && e.blockedUntil.After(now) {
			d = max(d, e.blockedUntil.Sub(now))
		}
	}
	return d
}

// fail records a failed login for key, which is blocked once it has used
// its free failures.
func (t *loginThrottle) fail(now time.Time, key string, free int) {
	t.mu.Lock()
	defer t.mu.Unlock()
	e := t.entries[key]
	if e == nil || now.Sub(e.last) > loginFailureMemory {
		if len(t.entries) >= maxThrottleEntries {
			t.evict(now)
		}
		e = &loginFailures{}
		t.entries[key] = e
	}
	e.count++
	e.last = now
	if over := e.count - free; over > 0 {
		d := maxLoginBackoff
		if over <= 20 {
			d = min(maxLoginBackoff, firstLoginBackoff<<(over-1))
		}
		e.blockedUntil = now.Add(d)
	}
}

// succeed forgets the failures of key.
func (t *loginThrottle) succeed(key string) {
	t.mu.Lock()
	delete(t.entries, key)
	t.mu.Unlock()
}

// evict drops forgotten entries, and if none are, an arbitrary one: the
// map stays bounded even under a flood of fresh keys.
func (t *loginThrottle) evict(now time.Time) {
	for k, e := range t.entries {
		if now.Sub(e.last) > loginFailureMemory && !e.blockedUntil.After(now) {
			delete(t.entries, k)
		}
	}
	for k := range t.entries {
		if len(t.entries) < maxThrottleEntries {
			break
		}
		delete(t.entries, k)
	}
}

// accountKey and addressKey name the throttle's counters. The account key
// is the name as typed, folded like stored names, so that guessing does not
// get fresh counters from spelling variants; it need not name a user.
func accountKey(normalizedName string) string { return "account:" + normalizedName }

// addressKey is the client's address as the issuer sees it: an IPv6 client
// is counted by its /64, which one subscriber usually holds whole. Behind
// a reverse proxy every client has the proxy's address.
func addressKey(r *http.Request) string {
	host, _, err := net.SplitHostPort(r.RemoteAddr)
	if err != nil {
		host = r.RemoteAddr
	}
	addr, err := netip.ParseAddr(host)
	if err != nil {
		return "address:" + host
	}
	addr = addr.Unmap()
	if addr.Is6() {
		p, _ := addr.Prefix(64)
		return "address:" + p.String()
	}
	return "address:" + addr.String()
}
