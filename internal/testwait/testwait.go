// Package testwait is the one polling helper of the tests that wait for
// something real to happen elsewhere: a server on loopback, NATS, a
// PostgreSQL notification. What runs on timers alone is tested in a
// testing/synctest bubble instead, without polling.
package testwait

import (
	"errors"
	"testing"
	"time"
)

// maxInterval bounds the wait between two checks.
const maxInterval = 25 * time.Millisecond

// For calls check until it returns nil, waiting a little longer after each
// failure (from a millisecond, doubling up to 25 ms). If total passes
// first, it fails t with check's last error, which should say what was
// seen instead of what was awaited.
func For(t testing.TB, total time.Duration, check func() error) {
	t.Helper()
	deadline := time.Now().Add(total)
	wait := time.Millisecond
	for {
		err := check()
		if err == nil {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("after %v: %v", total, err)
			return
		}
		time.Sleep(wait)
		wait = min(2*wait, maxInterval)
	}
}

// Holds returns a check for For that fails, saying it waits for what,
// until cond holds: for conditions that have nothing more to report.
func Holds(what string, cond func() bool) func() error {
	return func() error {
		if cond() {
			return nil
		}
		return errors.New("still waiting for " + what)
	}
}
