package digestcache

import (
	"crypto/sha256"
	"encoding/binary"
	"fmt"
	"strings"
	"sync"
	"testing"
	"time"
)

const testNow = int64(1_750_000_000) * int64(time.Second)

func testCache(t testing.TB, frontSlots int) *Cache {
	t.Helper()
	c, err := New(Config{MaxBytes: 1 << 20, Shards: 16, FrontSlots: frontSlots, LifeWindow: time.Hour, EntrySize: 256})
	if err != nil {
		t.Fatal(err)
	}
	return c
}

func digest(s string) *[sha256.Size]byte {
	sum := sha256.Sum256([]byte(s))
	return &sum
}

// entry returns an entry usable until deadline whose value is the field s.
func entry(deadline int64, s string) []byte {
	return AppendString(NewEntry(deadline, len(s)+1), s)
}

// valueOf reads the field of a value that entry wrote.
func valueOf(v []byte) string {
	r := NewReader(v)
	s := r.String()
	if !r.OK() {
		return "malformed"
	}
	return s
}

// TestGetPut checks where Get finds an entry: absent, then in bigcache,
// then in the front; and that Put replaces an entry in both.
func TestGetPut(t *testing.T) {
	for _, frontSlots := range []int{0, 4} {
		t.Run(fmt.Sprintf("front=%d", frontSlots), func(t *testing.T) {
			c := testCache(t, frontSlots)
			sum := digest("a")
			if _, ok := c.Get(sum, testNow); ok {
				t.Fatal("hit in an empty cache")
			}
			c.Put(sum, entry(testNow+10, "one"), c.Generation())
			for i := range 3 { // bigcache, then the front
				if want := i > 0 && frontSlots > 0; c.InFront(sum) != want {
					t.Errorf("get %d: in front %v, want %v", i, !want, want)
				}
				if v, ok := c.Get(sum, testNow); !ok || valueOf(v) != "one" {
					t.Fatalf("get %d: %q, %v", i, v, ok)
				}
			}
			c.Put(sum, entry(testNow+10, "two"), c.Generation())
			if c.InFront(sum) {
				t.Error("Put left the older entry in the front")
			}
			if v, ok := c.Get(sum, testNow); !ok || valueOf(v) != "two" || c.Len() != 1 {
				t.Errorf("after a second Put: %q, %v, %d entries", v, ok, c.Len())
			}
			if _, ok := c.Get(digest("b"), testNow); ok {
				t.Error("hit for another digest")
			}
		})
	}
}

// TestGetDeadline checks that an entry is used before its deadline only,
// from the front as from bigcache.
func TestGetDeadline(t *testing.T) {
	for _, frontSlots := range []int{0, 4} {
		c := testCache(t, frontSlots)
		sum := digest("a")
		c.Put(sum, entry(testNow, "v"), c.Generation())
		for range 2 { // bigcache, then the front
			if _, ok := c.Get(sum, testNow-1); !ok {
				t.Fatalf("front %d: miss before the deadline", frontSlots)
			}
		}
		if _, ok := c.Get(sum, testNow); ok || c.InFront(sum) {
			t.Errorf("front %d: hit at the deadline, or still in the front", frontSlots)
		}
		if _, ok := c.Get(sum, testNow+1); ok {
			t.Errorf("front %d: hit after the deadline", frontSlots)
		}
	}
}

// TestFrontCollision shares one front slot among all digests, and checks
// that none is answered with another's value.
func TestFrontCollision(t *testing.T) {
	c := testCache(t, 1)
	names := []string{"alice", "bob-the-second", "carol"}
	for _, n := range names {
		c.Put(digest(n), entry(testNow+10, n), c.Generation())
	}
	for _, i := range []int{0, 0, 0, 1, 1, 1, 0, 2, 1, 2, 2, 0, 1} {
		v, ok := c.Get(digest(names[i]), testNow)
		if !ok || valueOf(v) != names[i] {
			t.Fatalf("%s: %q, %v", names[i], v, ok)
		}
		// The slot takes every digest read from bigcache.
		for j, n := range names {
			if c.InFront(digest(n)) != (j == i) {
				t.Fatalf("after %s: %s in front %v", names[i], n, j != i)
			}
		}
	}
	if _, ok := c.Get(digest("dave"), testNow); ok {
		t.Error("a digest never stored was answered from the slot")
	}
}

// TestPutFenced checks that an entry made before a deletion began is not
// kept: the deletion may concern it.
func TestPutFenced(t *testing.T) {
	for _, deletion := range []struct {
		name string
		run  func(*Cache)
	}{
		{"Delete", func(c *Cache) { c.Delete(digest("other")) }},
		{"DeleteFunc", func(c *Cache) { c.DeleteFunc(func([]byte) bool { return false }) }},
	} {
		t.Run(deletion.name, func(t *testing.T) {
			c := testCache(t, 4)
			sum := digest("a")
			generation := c.Generation() // then the request that makes the entry
			deletion.run(c)
			c.Put(sum, entry(testNow+10, "v"), generation)
			if _, ok := c.Get(sum, testNow); ok || c.Len() != 0 {
				t.Errorf("entry made before a deletion kept: %d entries", c.Len())
			}
			c.Put(sum, entry(testNow+10, "v"), c.Generation())
			if _, ok := c.Get(sum, testNow); !ok {
				t.Error("entry made after the deletion not kept")
			}
		})
	}
}

// TestPromoteAfterDelete checks that an entry read from bigcache before a
// deletion does not stay in the front after it.
func TestPromoteAfterDelete(t *testing.T) {
	c := testCache(t, 4)
	sum := digest("a")
	c.Put(sum, entry(testNow+10, "v"), c.Generation())
	generation := c.Generation()
	b, err := get(c.bc, sum)
	if err != nil {
		t.Fatal(err)
	}
	c.Delete(sum) // overtakes the promotion
	c.promote(sum, testNow+10, b[headerSize:], generation)
	if c.InFront(sum) {
		t.Error("deleted entry promoted")
	}
	c.promote(sum, testNow+10, b[headerSize:], c.Generation())
	if !c.InFront(sum) {
		t.Error("entry not promoted")
	}
}

// TestDelete checks Delete from bigcache and from the front.
func TestDelete(t *testing.T) {
	c := testCache(t, 4)
	a, b := digest("a"), digest("b")
	c.Put(a, entry(testNow+10, "a"), c.Generation())
	c.Put(b, entry(testNow+10, "b"), c.Generation())
	c.Get(a, testNow) // a into the front
	if !c.InFront(a) || !c.Delete(a) || c.Delete(a) || c.InFront(a) {
		t.Fatal("Delete of an entry in the front")
	}
	if _, ok := c.Get(a, testNow); ok {
		t.Error("deleted entry answered")
	}
	if !c.Delete(b) || c.Len() != 0 {
		t.Errorf("Delete of an entry in bigcache: %d entries left", c.Len())
	}
}

// TestDeleteFunc checks that DeleteFunc drops the entries matched, from
// bigcache and the front, and counts each digest once: in both, in
// bigcache only, in the front only (bigcache having evicted it).
func TestDeleteFunc(t *testing.T) {
	c := testCache(t, 64)
	put := func(s string) { c.Put(digest(s), entry(testNow+10, s), c.Generation()) }
	for _, s := range []string{"both-1", "back-1", "front-1", "keep-1", "keep-2"} {
		put(s)
	}
	for _, s := range []string{"both-1", "front-1", "keep-1"} {
		c.Get(digest(s), testNow)
	}
	c.bc.Delete(string(digest("front-1")[:])) // evicted from bigcache, say
	for _, s := range []string{"both-1", "front-1", "keep-1"} {
		if !c.InFront(digest(s)) {
			t.Fatalf("%s not in the front", s)
		}
	}
	if n := c.DeleteFunc(func(v []byte) bool { return !strings.HasPrefix(valueOf(v), "keep") }); n != 3 {
		t.Errorf("DeleteFunc dropped %d digests, want 3", n)
	}
	for _, s := range []string{"both-1", "back-1", "front-1", "keep-1", "keep-2"} {
		v, ok := c.Get(digest(s), testNow)
		if ok != strings.HasPrefix(s, "keep") || ok && valueOf(v) != s {
			t.Errorf("%s: %q, %v", s, v, ok)
		}
	}
}

// TestHitAllocs checks that a hit in the front allocates nothing, and one
// in bigcache only what its Get copies.
func TestHitAllocs(t *testing.T) {
	for _, tc := range []struct {
		frontSlots int
		want       float64
	}{{4, 0}, {0, 2}} {
		c := testCache(t, tc.frontSlots)
		sum := digest("a")
		c.Put(sum, entry(testNow+10, "v"), c.Generation())
		if n := testing.AllocsPerRun(100, func() { c.Get(sum, testNow) }); n != tc.want {
			t.Errorf("front %d: a hit allocates %v times, want %v", tc.frontSlots, n, tc.want)
		}
	}
}

// TestConcurrent reads, writes and deletes at once (run it with -race),
// then deletes while others read: a deleted digest must not come back
// through the front.
func TestConcurrent(t *testing.T) {
	c := testCache(t, 8)
	read := func(g int, stop chan struct{}, put bool) {
		for i := 0; ; i++ {
			select {
			case <-stop:
				return
			default:
			}
			s := fmt.Sprintf("k%d", (g+i)%16)
			if v, ok := c.Get(digest(s), testNow); ok && valueOf(v) != s {
				t.Errorf("%s answered with %q", s, valueOf(v))
				return
			}
			if put && i%3 == 0 {
				c.Put(digest(s), entry(testNow+10, s), c.Generation())
			}
		}
	}
	run := func(put bool, deletions func()) {
		var wg sync.WaitGroup
		stop := make(chan struct{})
		for g := range 4 {
			wg.Go(func() { read(g, stop, put) })
		}
		deletions()
		close(stop)
		wg.Wait()
	}
	run(true, func() {
		for range 200 {
			c.DeleteFunc(func(v []byte) bool { return valueOf(v) == "k1" })
			c.Delete(digest("k2"))
		}
	})
	for i := range 200 {
		for _, s := range []string{"k1", "k2"} {
			c.Put(digest(s), entry(testNow+10, s), c.Generation())
		}
		run(false, func() {
			c.DeleteFunc(func(v []byte) bool { return valueOf(v) == "k1" })
			c.Delete(digest("k2"))
		})
		for _, s := range []string{"k1", "k2"} {
			if _, ok := c.Get(digest(s), testNow); ok {
				t.Fatalf("round %d: %s answered after its deletion", i, s)
			}
		}
	}
}

func TestNewErrors(t *testing.T) {
	for _, cfg := range []Config{
		{MaxBytes: 1<<20 - 1, Shards: 1},
		{MaxBytes: 1 << 20, Shards: 3},
		{MaxBytes: 1 << 20, Shards: 0},
		{MaxBytes: 1 << 20, Shards: -4},
		{MaxBytes: 1 << 20, Shards: 1, FrontSlots: 3},
	} {
		if _, err := New(cfg); err == nil {
			t.Errorf("New(%+v) succeeded", cfg)
		}
	}
}

// TestReader reads what the Append functions wrote, and refuses a value
// cut anywhere short.
func TestReader(t *testing.T) {
	long := strings.Repeat("x", 300)
	v := binary.LittleEndian.AppendUint64(nil, 42)
	v = append(v, 7)
	v = binary.LittleEndian.AppendUint32(v, 1<<30)
	v = AppendStrings(v, "", long, "é")
	v = AppendString(v, []byte("raw"))
	read := func(v []byte) (Reader, []any) {
		r := NewReader(v)
		var s1, s2, s3 string
		out := []any{r.Uint64(), r.Byte(), r.Uint32()}
		r.Strings(&s1, &s2, &s3)
		return r, append(out, s1, s2, s3, string(r.Bytes()))
	}
	r, got := read(v)
	if want := fmt.Sprint([]any{uint64(42), byte(7), uint32(1 << 30), "", long, "é", "raw"}); !r.OK() || fmt.Sprint(got) != want {
		t.Errorf("read %v, ok %v", got, r.OK())
	}
	for n := range len(v) {
		if r, got := read(v[:n]); r.OK() {
			t.Errorf("value cut to %d bytes read as %v", n, got)
		}
	}
	if b := NewReader(AppendString(nil, "ab")); cap(b.Bytes()) != 2 {
		t.Error("Bytes lets appends write the value")
	}
}
