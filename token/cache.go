package token

import (
	"cmp"
	"crypto/sha256"
	"encoding/binary"
	"fmt"
	"sync/atomic"
	"time"
	"unsafe"

	"github.com/meshauth/meshauth/internal/digestcache"
)

// Cache defaults and bounds.
const (
	defaultCacheMaxBytes = 64 << 20
	defaultCacheShards   = 256
	defaultCacheMaxAge   = 10 * time.Minute
	defaultFrontSlots    = 4096
	// minShardBytes lets every shard hold two tokens of DefaultMaxSize,
	// so that a small MaxBytes spread over many shards cannot silently
	// leave nothing cacheable.
	minShardBytes = 2 * DefaultMaxSize
)

// CacheConfig configures a Cache. The zero value is usable.
type CacheConfig struct {
	// MaxBytes bounds the memory that holds entries. It is rounded down
	// to whole MiB, the unit of bigcache, and must be at least 1 MiB.
	// When a shard is full its oldest entries go first. The index of
	// each shard adds some 20 bytes per entry. Default: 64 MiB.
	MaxBytes int
	// Shards is the number of independently locked parts, a power of
	// two; each holds MaxBytes/Shards bytes, at least 16 KiB.
	// Default: 256.
	Shards int
	// MaxAge bounds how long an entry is used after the verification
	// that made it, even if the token expires later. Default: 10 minutes.
	MaxAge time.Duration
	// Now returns the current time, against which entries expire; the
	// same clock as the issuers' Policy.Now. Default: time.Now.
	Now func() time.Time
	// FrontSlots is the number of entries, a power of two, kept on the
	// Go heap in front of the main store so that the tokens seen most
	// often are answered without copying an entry out of it. An entry
	// enters the front on its first use from the main store, and holds
	// a copy of it: the front adds up to FrontSlots entries of memory
	// beyond MaxBytes. Default: 4096; negative: no front.
	FrontSlots int
}

// Cache holds tokens that an Authenticator verified, so that a token seen
// again costs a SHA-256 digest and a lookup instead of a signature check.
// It is safe for concurrent use.
//
// Entries are in the digest cache that every cache of meshauth shares
// (internal/digestcache), keyed by the SHA-256 digest of the token: the
// cache never holds a usable bearer token (RFC 6750 §5.3), only the claims
// it carried. An entry is used only before the token's "exp", a check made
// on every use rather than left to eviction (as RFC 7662 §4 asks of cached
// introspection answers), only within MaxAge of its verification, and only
// while the issuer's Keys still hold the key that signed it, so that
// removing a compromised key stops its tokens at once. Only tokens whose
// signature and claims were accepted are cached; the Authenticator checks
// its revocations on every use of an entry, and drops the entries a
// revocation names.
//
// The tokens used most recently also have a copy of their entry in a small
// table on the Go heap (CacheConfig.FrontSlots), checked the same way on
// every use: a hit there allocates nothing. DeleteToken and DeleteFunc drop
// these copies too.
type Cache struct {
	entries *digestcache.Cache
	maxAge  time.Duration
	now     func() time.Time
	owned   atomic.Bool // serves an Authenticator
	// counts are per shard of entries (the first bytes of the digest),
	// so that concurrent hits on different tokens do not contend for one
	// counter's cache line.
	counts []shardCounts
	mask   uint64
}

type shardCounts struct {
	hits, misses atomic.Uint64
	_            [48]byte // pad to a 64-byte cache line
}

// CacheStats are a Cache's counters, for metrics.
type CacheStats struct {
	Hits    uint64 // verifications answered from the cache
	Misses  uint64 // verifications not answered from the cache
	Entries int    // tokens held
	Bytes   int    // memory allocated to hold them, at most MaxBytes
}

// NewCache returns an empty Cache.
func NewCache(cfg CacheConfig) (*Cache, error) {
	maxBytes := cmp.Or(cfg.MaxBytes, defaultCacheMaxBytes)
	shards := cmp.Or(cfg.Shards, defaultCacheShards)
	maxAge := cmp.Or(cfg.MaxAge, defaultCacheMaxAge)
	if maxAge < 0 {
		return nil, fmt.Errorf("token: negative cache MaxAge %v", cfg.MaxAge)
	}
	entries, err := digestcache.New(digestcache.Config{
		MaxBytes:   maxBytes,
		Shards:     shards,
		FrontSlots: cmp.Or(cfg.FrontSlots, defaultFrontSlots),
		// Entries are checked against the token's expiry on every use;
		// the life window only lets the space of those that can no longer
		// be used be reclaimed.
		LifeWindow: maxAge,
		EntrySize:  1 << 10,
	})
	if err != nil {
		return nil, fmt.Errorf("token: cache: %w", err)
	}
	if shardBytes := maxBytes >> 20 << 20 / shards; shardBytes < minShardBytes {
		return nil, fmt.Errorf("token: cache shards of %d bytes, below %d", shardBytes, minShardBytes)
	}
	c := &Cache{
		entries: entries,
		maxAge:  maxAge,
		now:     cfg.Now,
		counts:  make([]shardCounts, shards),
		mask:    uint64(shards - 1),
	}
	if c.now == nil {
		c.now = time.Now
	}
	return c, nil
}

// Stats returns the cache's counters.
func (c *Cache) Stats() CacheStats {
	s := CacheStats{Entries: c.entries.Len(), Bytes: c.entries.Capacity()}
	for i := range c.counts {
		s.Hits += c.counts[i].hits.Load()
		s.Misses += c.counts[i].misses.Load()
	}
	return s
}

// DeleteToken drops the token whose SHA-256 digest is sum, and reports
// whether it was cached.
func (c *Cache) DeleteToken(sum [sha256.Size]byte) bool {
	return c.entries.Delete(&sum)
}

// DeleteFunc drops every token whose claims match, and returns how many it
// dropped: the tokens a revocation names, say. It visits every entry, so
// it suits rare events. match must not keep its argument. A token being
// verified while DeleteFunc runs may still be cached after it returns;
// revocation must also be enforced where tokens are verified.
func (c *Cache) DeleteFunc(match func(*Claims) bool) int {
	return c.entries.DeleteFunc(func(value []byte) bool {
		var cl Claims
		r := entryReader{digestcache.NewReader(value)}
		r.header()
		r.claims(&cl)
		return r.OK() && match(&cl)
	})
}

// load fills cl from the entry for the token whose digest is sum, and
// reports whether it could be used.
func (c *Cache) load(sum *[sha256.Size]byte, verifiers []*Verifier, cl *Claims) bool {
	n := &c.counts[binary.LittleEndian.Uint64(sum[:8])&c.mask]
	// The entry never changes: cl may share its memory.
	if value, ok := c.entries.Get(sum, c.now().UnixNano()); ok {
		r := entryReader{digestcache.NewReader(value)}
		if c.usable(&r, verifiers) {
			r.claims(cl)
			if r.OK() {
				n.hits.Add(1)
				return true
			}
		}
	}
	n.misses.Add(1)
	return false
}

// usable reads the header of the entry r and reports whether the entry
// may answer: the key that signed its token is still its issuer's.
func (c *Cache) usable(r *entryReader, verifiers []*Verifier) bool {
	issuer, alg, kid := r.header()
	// A slot is empty once its issuer was replaced, and absent from the
	// issuers of a verification that began before it was added.
	if !r.OK() || int(issuer) >= len(verifiers) || verifiers[issuer] == nil {
		return false
	}
	k, ok := verifiers[issuer].keys.Lookup(kid)
	return ok && k.Algorithm == alg.String()
}

// store caches the claims cl that v, the Verifier of issuer, accepted from
// the token whose digest is sum and whose encoded header is hdr64.
func (c *Cache) store(sum *[sha256.Size]byte, issuer int, v *Verifier, hdr64 []byte, cl *Claims) {
	// Read before the entry is made, not before the token was verified:
	// a token verified while a revocation drops its entry may be cached
	// again, which the Authenticator's check on every use makes harmless.
	generation := c.entries.Generation()
	now := c.now()
	deadline := now.Add(c.maxAge)
	if cl.ExpiresAt.Before(deadline) {
		deadline = cl.ExpiresAt
	}
	if !now.Before(deadline) {
		return // accepted within the leeway after "exp": never from the cache
	}
	// The header passed the Verifier a moment ago; read again, it names
	// the key whose presence every use of the entry checks.
	var hbuf [256]byte
	hdr, err := decode(hbuf[:0], hdr64)
	if err != nil {
		return
	}
	alg, kid, err := v.readHeader(hdr)
	if err != nil {
		return
	}
	act, ok := offsetIn(cl.Raw, cl.Act)
	mayAct, ok2 := offsetIn(cl.Raw, cl.MayAct)
	if !ok || !ok2 {
		return
	}

	b := digestcache.NewEntry(deadline.UnixNano(), 64+len(kid)+2*len(cl.Raw)+4*len(cl.Audience))
	b = binary.LittleEndian.AppendUint32(b, uint32(issuer))
	b = append(b, byte(alg))
	b = digestcache.AppendString(b, kid)
	b = append(b, byte(cl.seen))
	b = appendTime(b, cl.ExpiresAt)
	b = appendTime(b, cl.NotBefore)
	b = appendTime(b, cl.IssuedAt)
	b = digestcache.AppendStrings(b, cl.Issuer, cl.Subject, cl.ID, cl.ClientID, cl.Scope, cl.SessionID)
	b = binary.LittleEndian.AppendUint32(b, uint32(len(cl.Audience)))
	b = digestcache.AppendStrings(b, cl.Audience...)
	b = digestcache.AppendString(b, cl.Raw)
	b = binary.LittleEndian.AppendUint64(b, act)
	b = binary.LittleEndian.AppendUint64(b, mayAct)
	c.entries.Put(sum, b, generation)
}

// offsetIn returns the position of sub in raw as offset<<32 | length, 0
// for nil, and false if sub is not a slice of raw.
func offsetIn(raw, sub []byte) (uint64, bool) {
	if sub == nil {
		return 0, true
	}
	off := uintptr(unsafe.Pointer(unsafe.SliceData(sub))) - uintptr(unsafe.Pointer(unsafe.SliceData(raw)))
	if off > uintptr(len(raw)) || uintptr(len(sub)) > uintptr(len(raw))-off || len(sub) == 0 {
		return 0, false
	}
	return uint64(off)<<32 | uint64(len(sub)), true
}

func appendTime(b []byte, t time.Time) []byte {
	b = binary.LittleEndian.AppendUint64(b, uint64(t.Unix()))
	return binary.LittleEndian.AppendUint32(b, uint32(t.Nanosecond()))
}

// entryReader reads the value of an entry that store wrote:
//
//	issuer index        4
//	alg                 1
//	kid                 string
//	claimSet            1
//	exp, nbf, iat       3 × (unix s 8, ns 4)
//	iss, sub, jti, client_id, scope, sid   string each
//	aud                 count 4, string each
//	raw                 string
//	act, may_act        offset<<32 | length 8 each, into raw; 0 if absent
//
// A string is as digestcache.AppendString writes it. The strings it
// returns share the entry's memory, which therefore never changes.
type entryReader struct{ digestcache.Reader }

// time reads a time, the zero Time unless present.
func (r *entryReader) time(present bool) time.Time {
	sec, nsec := int64(r.Uint64()), int64(r.Uint32())
	if !present {
		return time.Time{}
	}
	return time.Unix(sec, nsec)
}

func (r *entryReader) header() (issuer uint32, alg algorithm, kid string) {
	issuer = r.Uint32()
	alg = algorithm(r.Byte())
	return issuer, alg, r.String()
}

// claims fills c as decodeClaims would have, reusing the memory of c.Raw
// and c.Audience.
func (r *entryReader) claims(c *Claims) {
	raw, aud := c.Raw[:0], c.Audience[:0]
	*c = Claims{seen: claimSet(r.Byte())}
	c.ExpiresAt = r.time(c.has(claimExp))
	c.NotBefore = r.time(c.has(claimNbf))
	c.IssuedAt = r.time(c.has(claimIat))
	r.Strings(&c.Issuer, &c.Subject, &c.ID, &c.ClientID, &c.Scope, &c.SessionID)
	for n := r.Uint32(); n > 0 && r.OK(); n-- {
		aud = append(aud, r.String())
	}
	if c.has(claimAud) {
		c.Audience = aud
	}
	c.Raw = append(raw, r.Bytes()...)
	c.Act = slice(c.Raw, r.Uint64())
	c.MayAct = slice(c.Raw, r.Uint64())
}

// slice undoes offsetIn.
func slice(raw []byte, pos uint64) []byte {
	if pos == 0 {
		return nil
	}
	off, n := int(pos>>32), int(pos&(1<<32-1))
	if off+n > len(raw) { // only of an entry cut short
		return nil
	}
	return raw[off : off+n : off+n]
}
