package testwait

import (
	"errors"
	"fmt"
	"strings"
	"testing"
	"time"
)

// recorder is a testing.TB that records a failure instead of ending the
// test.
type recorder struct {
	testing.TB
	failed string
}

func (r *recorder) Helper() {}

func (r *recorder) Fatalf(format string, args ...any) { r.failed = fmt.Sprintf(format, args...) }

func TestForSucceeds(t *testing.T) {
	n := 0
	r := &recorder{TB: t}
	For(r, time.Minute, func() error {
		if n++; n < 3 {
			return errors.New("not yet")
		}
		return nil
	})
	if r.failed != "" || n != 3 {
		t.Errorf("%d checks, failure %q; want 3 and none", n, r.failed)
	}
}

func TestForReportsTheLastError(t *testing.T) {
	n := 0
	r := &recorder{TB: t}
	For(r, 20*time.Millisecond, func() error {
		n++
		return fmt.Errorf("seen %d", n)
	})
	if want := fmt.Sprintf("seen %d", n); !strings.HasSuffix(r.failed, want) {
		t.Errorf("failure %q, want it to end with the last error %q", r.failed, want)
	}
}

func TestHolds(t *testing.T) {
	held := false
	check := Holds("the flag", func() bool { return held })
	if err := check(); err == nil || !strings.Contains(err.Error(), "the flag") {
		t.Errorf("before: %v", err)
	}
	held = true
	if err := check(); err != nil {
		t.Errorf("after: %v", err)
	}
}
