package filestore

import (
	"slices"
	"testing"
	"time"

	"github.com/meshauth/meshauth/issuer/store"
)

// TestSweepSessions checks that the sweep deletes expired sessions with
// their user index entries, and no live one.
func TestSweepSessions(t *testing.T) {
	s := open(t, t.TempDir())
	now := time.Now()
	for name, exp := range map[string]time.Time{"expired": now.Add(-time.Minute), "now": now, "live": now.Add(time.Hour)} {
		if err := s.CreateSession(t.Context(), &store.Session{Hash: name, UserID: "u-" + name, ExpiresAt: exp}); err != nil {
			t.Fatal(err)
		}
	}
	if err := s.sweep(now); err != nil {
		t.Fatal(err)
	}
	for bucket, want := range map[string][]string{
		"sessions":      {"live"},
		"session_users": {string(sessionUserKey("u-live", []byte("live")))},
	} {
		if got := keys(t, s, bucket); !slices.Equal(got, want) {
			t.Errorf("bucket %s after sweep: %q, want %q", bucket, got, want)
		}
	}
}
