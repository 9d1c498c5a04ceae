package filestore

import (
	"fmt"
	"os"
	"path/filepath"
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

func TestSweep(t *testing.T) {
	s := open(t, t.TempDir())
	ctx := t.Context()
	now := time.Now()
	for _, v := range []string{"expired1", "expired2"} {
		if err := s.UseOnce(ctx, v, now.Add(-time.Minute)); err != nil {
			t.Fatal(err)
		}
	}
	if err := s.UseOnce(ctx, "live", now.Add(time.Hour)); err != nil {
		t.Fatal(err)
	}
	tok := &store.AccessToken{Hash: "expired", ExpiresAt: now.Add(-time.Minute)}
	if err := s.PutAccessToken(ctx, tok); err != nil {
		t.Fatal(err)
	}
	tok = &store.AccessToken{Hash: "live", ExpiresAt: now.Add(time.Hour)}
	if err := s.PutAccessToken(ctx, tok); err != nil {
		t.Fatal(err)
	}

	if err := s.sweep(now); err != nil {
		t.Fatal(err)
	}
	for bucket, want := range map[string][]string{"once": {"live"}, "access_tokens": {"live"}} {
		if got := keys(t, s, bucket); strings.Join(got, ",") != strings.Join(want, ",") {
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
