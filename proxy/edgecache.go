package proxy

import (
	"context"
	"crypto/sha256"
	"encoding/binary"
	"errors"
	"fmt"
	"sync/atomic"
	"time"

	"github.com/allegro/bigcache/v3"

	"github.com/meshauth/meshauth/internal/digestkey"
	"github.com/meshauth/meshauth/token"
)

// Bounds of the edge's caches.
const (
	edgeCacheShards = 64
	// edgeFrontSlots is the size of the heap table in front of bigcache;
	// see derefCache.
	edgeFrontSlots = 4096
	// edgeCacheLifeWindow only lets bigcache reclaim space: every entry
	// holds its own end, checked on every use.
	edgeCacheLifeWindow = 10 * time.Minute
)

// derefEntry is one dereferenced reference token: the Authorization field
// value that replaces it ("Bearer " and the internal JWT), until when it
// may be used, and the claims a revocation matches (token.Revocation).
type derefEntry struct {
	sum   [sha256.Size]byte
	until int64 // Unix ns
	authz []byte
	// jti is the reference token's: the issuer gives its JWT form the
	// same (exchange.Dereference).
	jti, clientID, subject, session string
}

// matches reports whether revocation r reaches the entry. An entry is
// evicted whatever its iat: the dereference is simply made again, and the
// issuer decides.
func (e *derefEntry) matches(r token.Revocation) bool {
	if r.Value == "" { // matches no token, as for token.Authenticator.Revoke
		return false
	}
	switch r.Kind {
	case token.RevokeTokenID:
		return e.jti == r.Value
	case token.RevokeClientID:
		return e.clientID == r.Value
	case token.RevokeSubject:
		return e.subject == r.Value
	case token.RevokeSession:
		return e.session == r.Value
	}
	return false
}

// derefCache holds dereferenced reference tokens, keyed by the SHA-256
// digest of the reference token: it never holds a token an Internet
// client presents (RFC 6750 §5.3), only the internal JWT that replaces it.
//
// Entries live in bigcache, bounded in bytes and out of the garbage
// collector's scanning. Because bigcache's Get copies the key and the
// entry, the tokens used most recently also have a decoded copy in a
// direct-mapped table on the heap (the front), read without a lock or an
// allocation: a warm hit costs a digest and a comparison. An entry of the
// front never changes; it is replaced or cleared whole.
type derefCache struct {
	bc        *bigcache.BigCache
	front     [edgeFrontSlots]atomic.Pointer[derefEntry]
	evictions atomic.Uint64 // bumped before every eviction: see put
}

func newDerefCache(maxBytes int) (*derefCache, error) {
	if maxBytes < 1<<20 {
		return nil, fmt.Errorf("proxy: edge cache of %d bytes: at least 1 MiB", maxBytes)
	}
	bc, err := bigcache.New(context.Background(), bigcache.Config{
		Shards:     edgeCacheShards,
		LifeWindow: edgeCacheLifeWindow,
		// No CleanWindow: no goroutine to stop; space is reclaimed as new
		// entries arrive.
		MaxEntrySize:     1 << 10,
		HardMaxCacheSize: maxBytes >> 20,
		Hasher:           digestkey.Hasher{},
	})
	if err != nil {
		return nil, fmt.Errorf("proxy: edge cache: %w", err)
	}
	return &derefCache{bc: bc}, nil
}

func (c *derefCache) slot(sum *[sha256.Size]byte) *atomic.Pointer[derefEntry] {
	// Not the bits that pick bigcache's shard.
	return &c.front[binary.LittleEndian.Uint64(sum[8:16])%edgeFrontSlots]
}

// get returns the Authorization value for the reference token whose digest
// is sum, if cached and usable at now. The value is shared: the caller
// copies it (fasthttp's setters do).
func (c *derefCache) get(sum *[sha256.Size]byte, now time.Time) ([]byte, bool) {
	slot := c.slot(sum)
	if e := slot.Load(); e != nil && e.sum == *sum {
		if now.UnixNano() < e.until {
			return e.authz, true
		}
		slot.CompareAndSwap(e, nil)
		return nil, false
	}
	evictions := c.evictions.Load()
	b, err := digestkey.Get(c.bc, sum)
	if err != nil {
		return nil, false
	}
	e, err := decodeDerefEntry(b)
	if err != nil || now.UnixNano() >= e.until {
		return nil, false
	}
	e.sum = *sum
	c.promote(slot, e, evictions)
	return e.authz, true
}

// put caches e, unless an eviction began since evictions was read (before
// the dereference that made e): the revocation it carried may concern e,
// which the issuer minted before it.
func (c *derefCache) put(e *derefEntry, evictions uint64) {
	b := e.encode()
	// bigcache refuses only an entry larger than a shard: such a token is
	// dereferenced every time.
	_ = c.bc.Set(string(e.sum[:]), b)
	c.promote(c.slot(&e.sum), e, evictions)
	if c.evictions.Load() != evictions {
		c.bc.Delete(string(e.sum[:]))
	}
}

// promote puts e in its front slot, and takes it out again if an eviction
// began since evictions was read: that eviction may have passed the slot
// before the Store. One that begins after the check finds e there.
func (c *derefCache) promote(slot *atomic.Pointer[derefEntry], e *derefEntry, evictions uint64) {
	slot.Store(e)
	if c.evictions.Load() != evictions {
		slot.CompareAndSwap(e, nil)
	}
}

// evict drops every entry that r reaches and returns how many. It visits
// every entry: revocations are rare.
func (c *derefCache) evict(r token.Revocation) int {
	c.evictions.Add(1)
	n := 0
	for i := range c.front {
		if e := c.front[i].Load(); e != nil && e.matches(r) && c.front[i].CompareAndSwap(e, nil) {
			// Out of bc too, so that the walk below does not count it
			// again.
			c.bc.Delete(string(e.sum[:]))
			n++
		}
	}
	it := c.bc.Iterator()
	for it.SetNext() {
		info, err := it.Value()
		if err != nil {
			continue
		}
		e, err := decodeDerefEntry(info.Value())
		if err == nil && e.matches(r) && c.bc.Delete(info.Key()) == nil {
			n++
		}
	}
	return n
}

func (c *derefCache) len() int { return c.bc.Len() }

// encode returns e as bigcache holds it: until (8 bytes, little endian),
// jti, client_id, sub and sid each as a uvarint length and its bytes, then
// the Authorization value.
func (e *derefEntry) encode() []byte {
	n := 8 + 4*binary.MaxVarintLen32 + len(e.jti) + len(e.clientID) + len(e.subject) + len(e.session) + len(e.authz)
	b := binary.LittleEndian.AppendUint64(make([]byte, 0, n), uint64(e.until))
	for _, s := range [...]string{e.jti, e.clientID, e.subject, e.session} {
		b = binary.AppendUvarint(b, uint64(len(s)))
		b = append(b, s...)
	}
	return append(b, e.authz...)
}

var errBadEntry = errors.New("proxy: malformed edge cache entry")

// decodeDerefEntry reads an entry written by encode. b is a copy of
// bigcache's, which the entry may share.
func decodeDerefEntry(b []byte) (*derefEntry, error) {
	if len(b) < 8 {
		return nil, errBadEntry
	}
	e := &derefEntry{until: int64(binary.LittleEndian.Uint64(b))}
	b = b[8:]
	for _, s := range [...]*string{&e.jti, &e.clientID, &e.subject, &e.session} {
		n, k := binary.Uvarint(b)
		if k <= 0 || n > uint64(len(b)-k) {
			return nil, errBadEntry
		}
		*s = string(b[k : k+int(n)])
		b = b[k+int(n):]
	}
	e.authz = b
	return e, nil
}

// negativeCache remembers, for a short time, reference tokens that the
// issuer refused, so that a client repeating a bad token does not reach
// the issuer again. It is a direct-mapped table: bounded, and a token that
// loses its slot to another costs one more dereference at worst.
type negativeCache struct {
	ttl   time.Duration
	slots []atomic.Pointer[negativeEntry]
}

type negativeEntry struct {
	sum   [sha256.Size]byte
	until int64 // Unix ns
}

func newNegativeCache(slots int, ttl time.Duration) *negativeCache {
	return &negativeCache{ttl: ttl, slots: make([]atomic.Pointer[negativeEntry], slots)}
}

func (n *negativeCache) slot(sum *[sha256.Size]byte) *atomic.Pointer[negativeEntry] {
	return &n.slots[binary.LittleEndian.Uint64(sum[16:24])%uint64(len(n.slots))]
}

func (n *negativeCache) has(sum *[sha256.Size]byte, now time.Time) bool {
	e := n.slot(sum).Load()
	return e != nil && e.sum == *sum && now.UnixNano() < e.until
}

func (n *negativeCache) add(sum *[sha256.Size]byte, now time.Time) {
	n.slot(sum).Store(&negativeEntry{sum: *sum, until: now.Add(n.ttl).UnixNano()})
}
