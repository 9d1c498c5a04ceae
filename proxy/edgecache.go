package proxy

import (
	"crypto/sha256"
	"encoding/binary"
	"fmt"
	"sync/atomic"
	"time"

	"github.com/meshauth/meshauth/internal/digestcache"
	"github.com/meshauth/meshauth/token"
)

// Bounds of the edge's caches.
const (
	edgeCacheShards = 64
	// edgeFrontSlots is the size of the heap table in front of the
	// dereference cache (digestcache.Config.FrontSlots).
	edgeFrontSlots = 4096
	// edgeCacheLifeWindow only lets space be reclaimed: every entry holds
	// its own end, checked on every use.
	edgeCacheLifeWindow = 10 * time.Minute
)

// derefCache holds dereferenced reference tokens, keyed by the SHA-256
// digest of the reference token: it never holds a token an Internet client
// presents (RFC 6750 §5.3), only the internal JWT that replaces it, in the
// digest cache that every cache of meshauth shares. A warm hit costs a
// digest and a comparison.
//
// An entry's value is the Authorization field value that replaces the
// reference token ("Bearer " and the internal JWT), then the Identity of
// the internal JWT (its iss, jti, client_id, sub and sid), by which a
// revocation evicts it: the issuer gives the JWT the reference token's
// jti, sub, client_id and sid (exchangepolicy.Dereference), so that a
// revocation of either reaches it.
type derefCache struct {
	entries *digestcache.Cache
}

func newDerefCache(maxBytes int) (*derefCache, error) {
	if maxBytes < 1<<20 {
		return nil, fmt.Errorf("proxy: edge cache of %d bytes: at least 1 MiB", maxBytes)
	}
	entries, err := digestcache.New(digestcache.Config{
		MaxBytes:   maxBytes,
		Shards:     edgeCacheShards,
		FrontSlots: edgeFrontSlots,
		LifeWindow: edgeCacheLifeWindow,
		EntrySize:  1 << 10,
	})
	if err != nil {
		return nil, fmt.Errorf("proxy: edge cache: %w", err)
	}
	return &derefCache{entries: entries}, nil
}

// get returns the Authorization value for the reference token whose digest
// is sum, if cached and usable at now. The value is shared: the caller
// copies it (fasthttp's setters do).
func (c *derefCache) get(sum *[sha256.Size]byte, now time.Time) ([]byte, bool) {
	v, ok := c.entries.Get(sum, now.UnixNano())
	if !ok {
		return nil, false
	}
	r := digestcache.NewReader(v)
	authz := r.Bytes()
	return authz, r.OK()
}

// generation is to be read before a dereference, and given to put.
func (c *derefCache) generation() uint64 { return c.entries.Generation() }

// put caches authz, the Authorization value for the reference token whose
// digest is sum, until until, with the identity id of its JWT; unless an
// eviction began since generation was read, before the dereference: the
// revocation it carried may concern this JWT, which the issuer minted
// before it.
func (c *derefCache) put(sum *[sha256.Size]byte, until time.Time, authz []byte, id token.Identity, generation uint64) {
	// Six fields, each a 4-byte length and its bytes.
	b := digestcache.NewEntry(until.UnixNano(), 6*4+len(authz)+len(id.Issuer)+len(id.TokenID)+len(id.ClientID)+len(id.Subject)+len(id.Session))
	b = digestcache.AppendString(b, authz)
	b = digestcache.AppendStrings(b, id.Issuer, id.TokenID, id.ClientID, id.Subject, id.Session)
	c.entries.Put(sum, b, generation)
}

// evict drops every entry that r names and returns how many. An entry is
// evicted whatever its iat: the dereference is simply made again, and the
// issuer decides. It visits every entry: revocations are rare.
func (c *derefCache) evict(r token.Revocation) int {
	return c.entries.DeleteFunc(func(v []byte) bool {
		rd := digestcache.NewReader(v)
		rd.Bytes() // the Authorization value
		var id token.Identity
		rd.Strings(&id.Issuer, &id.TokenID, &id.ClientID, &id.Subject, &id.Session)
		return rd.OK() && r.Matches(id, time.Time{})
	})
}

func (c *derefCache) len() int { return c.entries.Len() }

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
