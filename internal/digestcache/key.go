package digestcache

import (
	"crypto/sha256"
	"encoding/binary"
	"sync"
	"unsafe"

	"github.com/allegro/bigcache/v3"
)

// hasher is bigcache's Hasher for keys that are SHA-256 digests, whose
// first bytes are already uniform: hashing all 32 with bigcache's default
// FNV would cost a tenth of a cache hit.
type hasher struct{}

// Sum64 implements bigcache.Hasher.
func (hasher) Sum64(key string) uint64 {
	// bigcache marks deleted entries with hash 0; the top bit keeps real
	// ones apart without touching the low bits that choose the shard.
	return binary.LittleEndian.Uint64([]byte(key[:8])) | 1<<63
}

// keys hold the arrays that lend bigcache its string keys: a string over an
// array on the stack would escape through bigcache's Hasher interface and
// cost an allocation on every lookup.
var keys = sync.Pool{New: func() any { return new([sha256.Size]byte) }}

// withKey calls f with sum as bigcache's string key, which f must not
// keep; bigcache's Get, Set and Delete copy what they keep of a key.
func withKey(sum *[sha256.Size]byte, f func(key string)) {
	k := keys.Get().(*[sha256.Size]byte)
	*k = *sum
	f(unsafe.String(&k[0], len(k)))
	keys.Put(k)
}

// get returns bc's entry under the digest sum: a copy, as bigcache's Get
// returns.
func get(bc *bigcache.BigCache, sum *[sha256.Size]byte) (b []byte, err error) {
	withKey(sum, func(k string) { b, err = bc.Get(k) })
	return b, err
}
