package issuer

import (
	"context"
	"fmt"
	"net"
	"net/http"
	"net/netip"
	"strings"
	"time"

	"github.com/meshauth/meshauth/issuer/store"
)

// Login backoff. After a few free failures, each further failed login for
// the same account name, or from the same address, blocks the next attempt
// for twice as long as the last, up to maxLoginBackoff. Addresses get more
// free failures than accounts because many people can share one (NAT).
// Failures are forgotten loginFailureMemory after the last one.
//
// The counters live in the store (store.LoginFailures), so that every
// replica counts the failures made at the others: N replicas allow no
// more attempts than one. The store bounds how many it keeps
// (store.MaxLoginFailures).
const (
	accountFreeFailures = 5
	addressFreeFailures = 20
	firstLoginBackoff   = time.Second
	maxLoginBackoff     = 15 * time.Minute
	loginFailureMemory  = time.Hour
)

// loginThrottle counts failed logins per account name and per client
// address.
type loginThrottle struct {
	st store.LoginFailures
}

// wait returns how long a login for keys must wait; zero means it may go
// ahead.
func (t loginThrottle) wait(ctx context.Context, now time.Time, keys ...string) (time.Duration, error) {
	failures, err := t.st.GetLoginFailures(ctx, keys, now)
	if err != nil {
		return 0, fmt.Errorf("read failed logins: %w", err)
	}
	var d time.Duration
	for _, f := range failures {
		d = max(d, blockedUntil(f).Sub(now))
	}
	return d, nil
}

// blockedUntil is when the next login for f's key may go ahead: once the
// key has used its free failures, the backoff doubles with each further
// one, from the last.
func blockedUntil(f *store.LoginFailure) time.Time {
	free := accountFreeFailures
	if strings.HasPrefix(f.Key, addressKeyPrefix) {
		free = addressFreeFailures
	}
	over := f.Count - free
	if over <= 0 {
		return time.Time{}
	}
	d := maxLoginBackoff
	if over <= 20 {
		d = min(maxLoginBackoff, firstLoginBackoff<<(over-1))
	}
	return f.Last.Add(d)
}

// fail records a failed login for each of keys.
func (t loginThrottle) fail(ctx context.Context, at time.Time, keys ...string) error {
	for _, k := range keys {
		if _, err := t.st.AddLoginFailure(ctx, k, at, at.Add(loginFailureMemory)); err != nil {
			return fmt.Errorf("count failed login: %w", err)
		}
	}
	return nil
}

// succeed forgets the failures of key.
func (t loginThrottle) succeed(ctx context.Context, key string) error {
	if err := t.st.DeleteLoginFailures(ctx, key); err != nil {
		return fmt.Errorf("forget failed logins: %w", err)
	}
	return nil
}

// The throttle's keys name what they count, an account or an address.
const (
	accountKeyPrefix = "account:"
	addressKeyPrefix = "address:"
)

// accountKey is the name as typed, folded like stored names, so that
// guessing does not get fresh counters from spelling variants; it need not
// name a user.
func accountKey(normalizedName string) string { return accountKeyPrefix + normalizedName }

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
		return addressKeyPrefix + host
	}
	addr = addr.Unmap()
	if addr.Is6() {
		p, _ := addr.Prefix(64)
		return addressKeyPrefix + p.String()
	}
	return addressKeyPrefix + addr.String()
}
