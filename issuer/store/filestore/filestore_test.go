package filestore

import (
	"bytes"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/meshauth/meshauth/issuer/store"
	"github.com/meshauth/meshauth/issuer/store/storetest"
	bolt "go.etcd.io/bbolt"
)

func open(t *testing.T, dir string) *Store {
	t.Helper()
	s, err := Open(dir)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if err := s.Close(); err != nil {
			t.Error(err)
		}
	})
	return s
}

func TestStore(t *testing.T) {
	storetest.Run(t, storetest.Harness{
		Open: func(t *testing.T) store.Store { return open(t, t.TempDir()) },
		Reopen: func(t *testing.T, old store.Store) store.Store {
			// The directory is the parent of the database file.
			dir := filepath.Dir(old.(*Store).db.Path())
			if err := old.Close(); err != nil {
				t.Fatal(err)
			}
			return open(t, dir)
		},
	})
}

func TestOpenCreatesPrivateFiles(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "a", "b")
	open(t, dir)
	for path, want := range map[string]os.FileMode{dir: 0o700, filepath.Join(dir, FileName): 0o600} {
		fi, err := os.Stat(path)
		if err != nil {
			t.Fatal(err)
		}
		// The umask may clear bits, never set them.
		if fi.Mode().Perm()&^want != 0 {
			t.Errorf("%s: mode %v, want at most %v", path, fi.Mode().Perm(), want)
		}
	}
}

func TestOpenLocked(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	open(t, dir)
	// bbolt's flock is per open file, so a second Open in this process
	// stands in for a second process.
	start := time.Now()
	s, err := Open(dir)
	if err == nil {
		s.Close()
		t.Fatal("second Open of the same directory succeeded")
	}
	if want := "store file:" + dir + " is locked by another process"; !strings.Contains(err.Error(), want) {
		t.Errorf("error %q, want it to say %q", err, want)
	}
	if d := time.Since(start); d > lockTimeout+time.Second {
		t.Errorf("second Open took %v", d)
	}
}

func TestOpenNotADirectory(t *testing.T) {
	file := filepath.Join(t.TempDir(), "f")
	if err := os.WriteFile(file, nil, 0o600); err != nil {
		t.Fatal(err)
	}
	if _, err := Open(file); err == nil || !strings.Contains(err.Error(), "store file:"+file) {
		t.Errorf("Open on a file: error %v, want one naming it", err)
	}
}

// TestSweep checks that the sweep deletes expired records of every kind with
// their index entries, and nothing live.
func TestSweep(t *testing.T) {
	s := open(t, t.TempDir())
	ctx := t.Context()
	now := time.Now()
	for name, exp := range map[string]time.Time{"expired": now.Add(-time.Minute), "now": now, "live": now.Add(time.Hour)} {
		steps := []error{
			s.UseOnce(ctx, name, exp),
			s.PutAccessToken(ctx, &store.AccessToken{Hash: name, GrantID: "g-" + name, ExpiresAt: exp}),
			s.PutAuthorizationCode(ctx, &store.AuthorizationCode{Hash: name, ExpiresAt: exp}),
			s.PutRefreshToken(ctx, &store.RefreshToken{Hash: name, GrantID: "g-" + name, ExpiresAt: exp}),
			s.CreateGrant(ctx, &store.Grant{ID: name, ExpiresAt: exp}),
			s.AddRevocation(ctx, &store.Revocation{ID: name, Kind: store.RevokeSubject, Value: name, ExpiresAt: exp}),
		}
		if err := errors.Join(steps...); err != nil {
			t.Fatal(err)
		}
	}
	var liveSeq []byte
	err := s.db.View(func(tx *bolt.Tx) error {
		liveSeq = bytes.Clone(tx.Bucket(bucketRevocationIDs).Get([]byte("live")))
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}

	if err := s.sweep(now); err != nil {
		t.Fatal(err)
	}
	for bucket, want := range map[string][]string{
		"once":                {"live"},
		"access_tokens":       {"live"},
		"authorization_codes": {"live"},
		"refresh_tokens":      {"live"},
		"grants":              {"live"},
		"grant_tokens":        {string(grantIndexKey("g-live", kindAccess, []byte("live"))), string(grantIndexKey("g-live", kindRefresh, []byte("live")))},
		"revocations":         {string(liveSeq)},
		"revocation_ids":      {"live"},
		"revocation_index":    {string(append(revocationIndexPrefix(store.RevokeSubject, "live"), liveSeq...))},
	} {
		if got := keys(t, s, bucket); !slices.Equal(got, want) {
			t.Errorf("bucket %s after sweep: %q, want %q", bucket, got, want)
		}
	}
}

func TestSweepBatches(t *testing.T) {
	s := open(t, t.TempDir())
	past := time.Now().Add(-time.Minute)
	// Written in one transaction: a transaction per value would fsync each.
	err := s.db.Update(func(tx *bolt.Tx) error {
		for i := range 2*sweepBatch + 1 {
			if err := put(tx.Bucket(bucketOnce), fmt.Sprintf("v%05d", i), onceRecord{ExpiresAt: past}); err != nil {
				return err
			}
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	if err := s.sweep(time.Now()); err != nil {
		t.Fatal(err)
	}
	if got := keys(t, s, "once"); len(got) != 0 {
		t.Errorf("%d records left after sweep", len(got))
	}
}

func keys(t *testing.T, s *Store, bucket string) []string {
	t.Helper()
	var ks []string
	err := s.db.View(func(tx *bolt.Tx) error {
		return tx.Bucket([]byte(bucket)).ForEach(func(k, _ []byte) error {
			ks = append(ks, string(k))
			return nil
		})
	})
	if err != nil {
		t.Fatal(err)
	}
	return ks
}
