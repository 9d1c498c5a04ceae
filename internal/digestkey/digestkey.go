// Package digestkey serves bigcache caches whose keys are SHA-256 digests
// (of tokens): a Hasher that does not hash them again, and a lookup that
// lends bigcache its string key without an allocation.
package digestkey

import (
	"crypto/sha256"
	"encoding/binary"
	"sync"
	"unsafe"

	"github.com/allegro/bigcache/v3"
)

// Hasher is bigcache's Hasher for keys that are SHA-256 digests, whose
// first bytes are already uniform: hashing all 32 with bigcache's default
// FNV would cost a tenth of a cache hit.
type Hasher struct{}

// Sum64 implements bigcache.Hasher.
func (Hasher) Sum64(key string) uint64 {
	// bigcache marks deleted entries with hash 0; the top bit keeps real
	// ones apart without touching the low bits that choose the shard.
	return binary.LittleEndian.Uint64([]byte(key[:8])) | 1<<63
}

// bufs hold the arrays that lend bigcache its string keys: a string over an
// array on the stack would escape through bigcache's Hasher interface and
// cost an allocation on every lookup.
var bufs = sync.Pool{New: func() any { return new([sha256.Size]byte) }}

// Get returns bc's entry under the digest sum: a copy, as bigcache's Get
// returns, which keeps no reference to the key.
func Get(bc *bigcache.BigCache, sum *[sha256.Size]byte) ([]byte, error) {
	k := bufs.Get().(*[sha256.Size]byte)
	*k = *sum
	b, err := bc.Get(unsafe.String(&k[0], len(k)))
	bufs.Put(k)
	return b, err
}
