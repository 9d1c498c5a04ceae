package digestcache

import (
	"context"
	"crypto/sha256"
	"testing"
	"time"

	"github.com/allegro/bigcache/v3"
)

func TestGet(t *testing.T) {
	cfg := bigcache.DefaultConfig(time.Minute)
	cfg.Hasher = hasher{}
	bc, err := bigcache.New(context.Background(), cfg)
	if err != nil {
		t.Fatal(err)
	}
	sum := sha256.Sum256([]byte("token"))
	if err := bc.Set(string(sum[:]), []byte("entry")); err != nil {
		t.Fatal(err)
	}
	if b, err := get(bc, &sum); err != nil || string(b) != "entry" {
		t.Fatalf("get = %q, %v", b, err)
	}
	other := sha256.Sum256([]byte("other"))
	if _, err := get(bc, &other); err == nil {
		t.Error("get of an absent digest succeeded")
	}
	if n := testing.AllocsPerRun(100, func() { get(bc, &other) }); n != 0 {
		t.Errorf("a miss allocates %v times", n)
	}
}

func TestHasherNeverZero(t *testing.T) {
	var zero [sha256.Size]byte
	if (hasher{}).Sum64(string(zero[:])) == 0 {
		t.Error("a digest hashed to 0, bigcache's mark of a deleted entry")
	}
}
