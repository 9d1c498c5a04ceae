package filestore

import (
	"testing"
	"time"

	"github.com/meshauth/meshauth/issuer/store/storetest"
)

func TestSweepLoginFailures(t *testing.T) {
	s := open(t, t.TempDir())
	storetest.SweepLoginFailures(t, s,
		func() error { return s.sweep(time.Now()) },
		s.trimLoginFailures,
		func() []string { return keys(t, s, "login_failures") })
}
