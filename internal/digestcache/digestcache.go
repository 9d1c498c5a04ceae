// Package digestcache is the one cache of what meshauth derives from a
// token: the verified token's claims, the edge's dereferenced JWTs, the
// egress's exchanged tokens. Each is keyed by the SHA-256 digest of a
// token (or of a request naming one), so that no cache holds a usable
// bearer token it was given (RFC 6750 §5.3), and each must drop what a
// revocation names: every cache that holds a token answers to revocation.
//
// A Cache holds encoded entries, each user with its own encoding (see
// Reader), in bigcache: bounded in bytes, out of the garbage collector's
// scanning. Every entry carries the time until which it may be used,
// checked on every Get. Because bigcache's Get copies the entry (an
// allocation that would double the cost of a hit), the entries used most
// recently also have a copy in a direct-mapped table on the heap, the
// front, read without a lock or an allocation. A generation counter fences
// the front and Put against DeleteFunc and Delete, so that an entry read or
// made before a deletion cannot come back after it.
package digestcache

import (
	"context"
	"crypto/sha256"
	"encoding/binary"
	"fmt"
	"sync/atomic"
	"time"

	"github.com/allegro/bigcache/v3"
)

// Config configures a Cache.
type Config struct {
	// MaxBytes bounds the memory that holds entries. It is rounded down
	// to whole MiB, the unit of bigcache, and must be at least 1 MiB.
	// When a shard is full its oldest entries go first; the index of each
	// shard adds some 20 bytes per entry.
	MaxBytes int
	// Shards is the number of independently locked parts, a power of
	// two; each holds MaxBytes/Shards bytes.
	Shards int
	// FrontSlots is the number of entries, a power of two, kept on the Go
	// heap in front of bigcache; 0 or negative: no front. An entry enters
	// the front on its first Get from bigcache, as a copy: the front adds
	// up to FrontSlots entries of memory beyond MaxBytes.
	FrontSlots int
	// LifeWindow is when bigcache may reclaim an entry's space, and
	// should be the longest an entry is used: its deadline is what
	// decides whether it is used.
	LifeWindow time.Duration
	// EntrySize is a typical entry's size, to size the shards initially.
	EntrySize int
}

// Cache is a cache of encoded entries keyed by SHA-256 digests. It is safe
// for concurrent use.
type Cache struct {
	bc *bigcache.BigCache
	// front is a direct-mapped table of entries from bc, indexed by
	// digest bits that bigcache's shard choice does not use. A slot's
	// entry never changes: it is replaced or cleared whole, so that a hit
	// reads it without a lock and lends the caller its memory.
	front     []atomic.Pointer[frontEntry]
	frontMask uint64
	// generation changes at the start and at the end of every deletion:
	// see Put, promote and DeleteFunc.
	generation atomic.Uint64
}

// frontEntry is an entry of bc, as Put wrote it, for the digest sum.
type frontEntry struct {
	sum      [sha256.Size]byte
	deadline int64 // Unix ns
	value    []byte
}

// New returns an empty Cache. Its errors name the Config field; callers
// say which cache.
func New(cfg Config) (*Cache, error) {
	switch {
	case cfg.MaxBytes < 1<<20:
		return nil, fmt.Errorf("MaxBytes %d below 1 MiB", cfg.MaxBytes)
	case cfg.Shards <= 0 || cfg.Shards&(cfg.Shards-1) != 0:
		return nil, fmt.Errorf("Shards %d not a power of two", cfg.Shards)
	case cfg.FrontSlots > 0 && cfg.FrontSlots&(cfg.FrontSlots-1) != 0:
		return nil, fmt.Errorf("FrontSlots %d not a power of two", cfg.FrontSlots)
	}
	bc, err := bigcache.New(context.Background(), bigcache.Config{
		Shards: cfg.Shards,
		// No CleanWindow: no goroutine to stop, and the space of entries
		// past the life window is reclaimed as new entries arrive.
		LifeWindow:       cfg.LifeWindow,
		MaxEntrySize:     cfg.EntrySize,
		HardMaxCacheSize: cfg.MaxBytes >> 20,
		Hasher:           hasher{},
	})
	if err != nil {
		return nil, err
	}
	c := &Cache{bc: bc}
	if cfg.FrontSlots > 0 {
		c.front = make([]atomic.Pointer[frontEntry], cfg.FrontSlots)
		c.frontMask = uint64(cfg.FrontSlots - 1)
	}
	return c, nil
}

// Len returns the number of entries held (those of the front are copies).
func (c *Cache) Len() int { return c.bc.Len() }

// Capacity returns the memory allocated to hold entries, at most MaxBytes.
func (c *Cache) Capacity() int { return c.bc.Capacity() }

// slot returns the front slot of the digest sum. Its bits are not the
// first eight bytes, which choose bigcache's shard: digests of one shard
// spread over the front as well.
func (c *Cache) slot(sum *[sha256.Size]byte) *atomic.Pointer[frontEntry] {
	return &c.front[binary.LittleEndian.Uint64(sum[8:16])&c.frontMask]
}

// Get returns the value of the entry for the digest sum if its deadline is
// after now (Unix ns). The value is shared and must not be written; the
// caller may keep it.
func (c *Cache) Get(sum *[sha256.Size]byte, now int64) ([]byte, bool) {
	if c.front != nil {
		// The whole digest is compared: a slot is shared by every digest
		// with its bits, and holds only the latest one used.
		slot := c.slot(sum)
		if e := slot.Load(); e != nil && e.sum == *sum {
			if now < e.deadline {
				return e.value, true
			}
			slot.CompareAndSwap(e, nil) // its memory may as well go
		}
	}
	generation := c.generation.Load()
	b, err := get(c.bc, sum)
	d, ok := deadline(b)
	if err != nil || !ok || now >= d {
		return nil, false
	}
	// b is a copy that nothing else refers to: the front and the caller
	// can share it.
	value := b[headerSize:]
	if c.front != nil {
		c.promote(sum, d, value, generation)
	}
	return value, true
}

// promote puts the entry for the digest sum in the front, replacing
// whatever digest had the slot: the one just used is the likelier to come
// again. generation is c.generation as it was before the entry was read
// from bc: if it changed, a deletion may have passed the slot before this
// Store and left behind what it deleted, so the entry goes again. A
// deletion that changes it after the check finds the entry in the slot.
func (c *Cache) promote(sum *[sha256.Size]byte, deadline int64, value []byte, generation uint64) {
	e := &frontEntry{sum: *sum, deadline: deadline, value: value}
	slot := c.slot(sum)
	slot.Store(e)
	if c.generation.Load() != generation {
		slot.CompareAndSwap(e, nil)
	}
}

// Generation returns the cache's generation, for Put: read it before
// making what an entry holds.
func (c *Cache) Generation() uint64 { return c.generation.Load() }

// Put stores entry, made by NewEntry and its value appended, for the
// digest sum, replacing any entry for sum. generation is what Generation
// returned before what the entry holds was made (before the request that
// obtained it, say): if a deletion began since, the entry may be one it
// should have dropped, and Put drops it. An entry larger than a shard is
// not stored.
func (c *Cache) Put(sum *[sha256.Size]byte, entry []byte, generation uint64) {
	withKey(sum, func(k string) { _ = c.bc.Set(k, entry) })
	// The front never answers with an older entry than bc holds.
	c.dropFront(sum)
	if c.generation.Load() != generation {
		c.Delete(sum)
	}
}

// Delete drops the entry for the digest sum and reports whether there was
// one.
func (c *Cache) Delete(sum *[sha256.Size]byte) bool {
	c.generation.Add(1) // fences a Put that began before
	var err error
	withKey(sum, func(k string) { err = c.bc.Delete(k) })
	// A Get that read the entry before it went either sees this change
	// before keeping it in the front, or kept it before dropFront looks.
	c.generation.Add(1)
	return c.dropFront(sum) || err == nil
}

// dropFront clears the front slot of sum if it holds sum's entry, and
// reports whether it did.
func (c *Cache) dropFront(sum *[sha256.Size]byte) bool {
	if c.front == nil {
		return false
	}
	slot := c.slot(sum)
	e := slot.Load()
	return e != nil && e.sum == *sum && slot.CompareAndSwap(e, nil)
}

// DeleteFunc drops every entry whose value match reports true, and returns
// how many digests it dropped. match must not keep its argument. It visits
// every entry, so it suits rare events: revocations.
func (c *Cache) DeleteFunc(match func(value []byte) bool) int {
	c.generation.Add(1) // fences a Put that began before: see Put
	n := 0
	var dropped map[[sha256.Size]byte]struct{}
	it := c.bc.Iterator()
	for it.SetNext() {
		info, err := it.Value()
		if err != nil {
			continue
		}
		b := info.Value()
		if len(b) < headerSize || !match(b[headerSize:]) || c.bc.Delete(info.Key()) != nil {
			continue
		}
		n++
		if c.front != nil {
			if dropped == nil {
				dropped = make(map[[sha256.Size]byte]struct{})
			}
			dropped[[sha256.Size]byte([]byte(info.Key()))] = struct{}{}
		}
	}
	// A Get that read a dropped entry from bc either sees this change
	// before keeping it in the front, or kept it there before the walk
	// below, which finds it.
	c.generation.Add(1)
	for i := range c.front {
		e := c.front[i].Load()
		if e == nil || !match(e.value) || !c.front[i].CompareAndSwap(e, nil) {
			continue
		}
		// The front holds copies, some of entries that have meanwhile
		// left bc: a digest dropped from both counts once.
		if _, ok := dropped[e.sum]; !ok {
			n++
		}
	}
	return n
}

// InFront reports whether the front holds the entry for the digest sum:
// for tests of the caches built on a Cache.
func (c *Cache) InFront(sum *[sha256.Size]byte) bool {
	if c.front == nil {
		return false
	}
	e := c.slot(sum).Load()
	return e != nil && e.sum == *sum
}
