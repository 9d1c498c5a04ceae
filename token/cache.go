package token

import (
	"cmp"
	"context"
	"crypto/sha256"
	"encoding/binary"
	"fmt"
	"sync/atomic"
	"time"
	"unsafe"

	"github.com/allegro/bigcache/v3"

	"github.com/meshauth/meshauth/internal/digestkey"
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
// Entries live in bigcache's byte arrays, out of reach of the garbage
// collector's scanning, and are keyed by the SHA-256 digest of the token:
// the cache never holds a usable bearer token (RFC 6750 §5.3), only the
// claims it carried. An entry is used only before the token's "exp", a
// check made on every use rather than left to eviction (as RFC 7662 §4
// asks of cached introspection answers), only within MaxAge of its
// verification, and only while the issuer's Keys still hold the key that
// signed it, so that removing a compromised key stops its tokens at once.
// Only tokens whose signature and claims were accepted are cached; the
// Authenticator checks its revocations on every use of an entry.
//
// The tokens used most recently also have a copy of their entry in a small
// table on the Go heap (CacheConfig.FrontSlots), checked the same way on
// every use: bigcache's Get copies the key and the entry, two allocations
// that would otherwise double the cost of a hit. DeleteToken and
// DeleteFunc drop these copies too.
type Cache struct {
	bc     *bigcache.BigCache
	maxAge time.Duration
	now    func() time.Time
	owned  atomic.Bool // serves an Authenticator
	// counts are per bigcache shard, so that concurrent hits on different
	// tokens do not contend for one counter's cache line.
	counts []shardCounts
	mask   uint64
	// front is a direct-mapped table of entries from bc, indexed by
	// digest bits that bigcache's shard choice does not use. A slot's
	// entry never changes: it is replaced or cleared whole, so a hit
	// reads it without a lock and lends cl its memory.
	front     []atomic.Pointer[frontEntry]
	frontMask uint64
	// deletes counts calls of DeleteToken and DeleteFunc, so that an
	// entry promoted into the front from a read of bc that such a call
	// overtook is taken out again, rather than outliving its deletion.
	deletes atomic.Uint64
}

// frontEntry is an entry of bc, as store wrote it, for the token whose
// digest is sum.
type frontEntry struct {
	sum [sha256.Size]byte
	b   []byte
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
	frontSlots := cmp.Or(cfg.FrontSlots, defaultFrontSlots)
	switch {
	case maxBytes < 1<<20:
		return nil, fmt.Errorf("token: cache MaxBytes %d below 1 MiB", cfg.MaxBytes)
	case shards < 0 || shards&(shards-1) != 0:
		return nil, fmt.Errorf("token: cache Shards %d not a power of two", cfg.Shards)
	case maxBytes>>20<<20/shards < minShardBytes:
		return nil, fmt.Errorf("token: cache shards of %d bytes, below %d", maxBytes>>20<<20/shards, minShardBytes)
	case maxAge < 0:
		return nil, fmt.Errorf("token: negative cache MaxAge %v", cfg.MaxAge)
	case frontSlots > 0 && frontSlots&(frontSlots-1) != 0:
		return nil, fmt.Errorf("token: cache FrontSlots %d not a power of two", cfg.FrontSlots)
	}
	bc, err := bigcache.New(context.Background(), bigcache.Config{
		Shards: shards,
		// Entries are checked against the token's expiry on every use;
		// the life window only lets bigcache reclaim the space of those
		// that can no longer be used. No CleanWindow: no goroutine to
		// stop, and expired space is reclaimed as new entries arrive.
		LifeWindow:       maxAge,
		MaxEntrySize:     1 << 10, // a typical entry, to size the shards initially
		HardMaxCacheSize: maxBytes >> 20,
		Hasher:           digestkey.Hasher{},
	})
	if err != nil {
		return nil, fmt.Errorf("token: cache: %w", err)
	}
	c := &Cache{
		bc:     bc,
		maxAge: maxAge,
		now:    cfg.Now,
		counts: make([]shardCounts, shards),
		mask:   uint64(shards - 1),
	}
	if c.now == nil {
		c.now = time.Now
	}
	if frontSlots > 0 {
		c.front = make([]atomic.Pointer[frontEntry], frontSlots)
		c.frontMask = uint64(frontSlots - 1)
	}
	return c, nil
}

// Stats returns the cache's counters.
func (c *Cache) Stats() CacheStats {
	s := CacheStats{Entries: c.bc.Len(), Bytes: c.bc.Capacity()}
	for i := range c.counts {
		s.Hits += c.counts[i].hits.Load()
		s.Misses += c.counts[i].misses.Load()
	}
	return s
}

// DeleteToken drops the token whose SHA-256 digest is sum, and reports
// whether it was cached.
func (c *Cache) DeleteToken(sum [sha256.Size]byte) bool {
	c.deletes.Add(1) // before the entry goes: see promote
	deleted := c.bc.Delete(string(sum[:])) == nil
	if c.front != nil {
		slot := c.frontSlot(&sum)
		if e := slot.Load(); e != nil && e.sum == sum && slot.CompareAndSwap(e, nil) {
			deleted = true
		}
	}
	return deleted
}

// DeleteFunc drops every token whose claims match, and returns how many it
// dropped: revoking by "jti", "sub" or "client_id", say. It visits every
// entry, so it suits rare events. match must not keep its argument. A
// token being verified while DeleteFunc runs may still be cached after it
// returns; revocation must also be enforced where tokens are verified.
func (c *Cache) DeleteFunc(match func(*Claims) bool) int {
	c.deletes.Add(1) // before any entry goes: see promote
	// The front holds copies of entries of bc, which may meanwhile have
	// left bc: a token dropped from both counts once.
	var fromFront map[[sha256.Size]byte]struct{}
	for i := range c.front {
		e := c.front[i].Load()
		if e == nil {
			continue
		}
		var cl Claims
		r := entryReader(e.b)
		r.header()
		r.claims(&cl)
		if match(&cl) && c.front[i].CompareAndSwap(e, nil) {
			if fromFront == nil {
				fromFront = make(map[[sha256.Size]byte]struct{})
			}
			fromFront[e.sum] = struct{}{}
		}
	}
	n := 0
	it := c.bc.Iterator()
	for it.SetNext() {
		e, err := it.Value()
		if err != nil {
			continue
		}
		var cl Claims
		r := entryReader(e.Value())
		r.header()
		r.claims(&cl)
		if match(&cl) && c.bc.Delete(e.Key()) == nil {
			n++
			delete(fromFront, [sha256.Size]byte([]byte(e.Key())))
		}
	}
	return n + len(fromFront)
}

// frontSlot returns the front slot of the token whose digest is sum. Its
// bits are not the first eight bytes, which choose bigcache's shard and
// the counters: tokens of one shard spread over the front as well.
func (c *Cache) frontSlot(sum *[sha256.Size]byte) *atomic.Pointer[frontEntry] {
	return &c.front[binary.LittleEndian.Uint64(sum[8:16])&c.frontMask]
}

// promote puts b, a copy of the entry of bc for the token whose digest is
// sum, in the front, replacing whatever token had the slot: the one just
// used is the likelier to come again. deletes is c.deletes as it was
// before b was read from bc.
func (c *Cache) promote(sum *[sha256.Size]byte, b []byte, deletes uint64) {
	e := &frontEntry{sum: *sum, b: b}
	slot := c.frontSlot(sum)
	slot.Store(e)
	// A deletion that began after b was read may have cleared the slot
	// before the Store: it would then have left this copy of a deleted
	// entry behind. One that begins after this check finds the entry in
	// the slot and clears it itself.
	if c.deletes.Load() != deletes {
		slot.CompareAndSwap(e, nil)
	}
}

// load fills cl from the entry for the token whose digest is sum, and
// reports whether it could be used.
func (c *Cache) load(sum *[sha256.Size]byte, verifiers []*Verifier, cl *Claims) bool {
	n := &c.counts[binary.LittleEndian.Uint64(sum[:8])&c.mask]
	if c.front != nil {
		// The whole digest is compared: a slot is shared by every token
		// whose digest has its bits, and holds only the latest one used.
		slot := c.frontSlot(sum)
		if e := slot.Load(); e != nil && e.sum == *sum {
			r := entryReader(e.b)
			if c.usable(&r, verifiers) {
				r.claims(cl) // the entry never changes: cl may share it
				n.hits.Add(1)
				return true
			}
			// Expired, or its key is gone: so is the entry of bc, and
			// the slot may as well free its memory.
			slot.CompareAndSwap(e, nil)
		}
	}
	deletes := c.deletes.Load()
	// The entry is a copy, which only cl and the front come to refer to
	// and nothing writes: the strings of cl can share its memory.
	b, err := digestkey.Get(c.bc, sum)
	e := entryReader(b)
	if err != nil || !c.usable(&e, verifiers) {
		n.misses.Add(1)
		return false
	}
	e.claims(cl)
	n.hits.Add(1)
	if c.front != nil {
		c.promote(sum, b, deletes)
	}
	return true
}

// usable reads the header of the entry r and reports whether the entry
// may answer now.
func (c *Cache) usable(r *entryReader, verifiers []*Verifier) bool {
	deadline, issuer, alg, kid := r.header()
	if c.now().UnixNano() >= deadline {
		return false
	}
	// A slot is empty once its issuer was replaced, and absent from the
	// issuers of a verification that began before it was added.
	if int(issuer) >= len(verifiers) || verifiers[issuer] == nil {
		return false
	}
	k, ok := verifiers[issuer].keys.Lookup(kid)
	return ok && k.Algorithm == alg.String()
}

// store caches the claims cl that v, the Verifier of issuer, accepted from
// the token whose digest is sum and whose encoded header is hdr64.
func (c *Cache) store(sum *[sha256.Size]byte, issuer int, v *Verifier, hdr64 []byte, cl *Claims) {
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

	b := make([]byte, 0, 64+len(kid)+2*len(cl.Raw)+4*len(cl.Audience))
	b = binary.LittleEndian.AppendUint64(b, uint64(deadline.UnixNano()))
	b = binary.LittleEndian.AppendUint32(b, uint32(issuer))
	b = append(b, byte(alg))
	b = appendBytes(b, kid)
	b = append(b, byte(cl.seen))
	b = appendTime(b, cl.ExpiresAt)
	b = appendTime(b, cl.NotBefore)
	b = appendTime(b, cl.IssuedAt)
	for _, s := range [...]string{cl.Issuer, cl.Subject, cl.ID, cl.ClientID, cl.Scope, cl.SessionID} {
		b = appendBytes(b, s)
	}
	b = binary.LittleEndian.AppendUint32(b, uint32(len(cl.Audience)))
	for _, a := range cl.Audience {
		b = appendBytes(b, a)
	}
	b = appendBytes(b, cl.Raw)
	b = binary.LittleEndian.AppendUint64(b, act)
	b = binary.LittleEndian.AppendUint64(b, mayAct)
	// bigcache refuses only an entry larger than a shard: such a token
	// is simply verified each time.
	_ = c.bc.Set(string(sum[:]), b)
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

func appendBytes[T string | []byte](b []byte, s T) []byte {
	b = binary.LittleEndian.AppendUint32(b, uint32(len(s)))
	return append(b, s...)
}

func appendTime(b []byte, t time.Time) []byte {
	b = binary.LittleEndian.AppendUint64(b, uint64(t.Unix()))
	return binary.LittleEndian.AppendUint32(b, uint32(t.Nanosecond()))
}

// entryReader reads an entry that store wrote:
//
//	deadline (unix ns)  8
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
// A string is its length (4) and its bytes. The strings it returns share
// the entry's memory, which must therefore never change.
type entryReader []byte

func (r *entryReader) next(n int) []byte {
	b := (*r)[:n:n]
	*r = (*r)[n:]
	return b
}

func (r *entryReader) uint32() uint32 { return binary.LittleEndian.Uint32(r.next(4)) }
func (r *entryReader) uint64() uint64 { return binary.LittleEndian.Uint64(r.next(8)) }

func (r *entryReader) bytes() []byte { return r.next(int(r.uint32())) }

func (r *entryReader) string() string {
	b := r.bytes()
	if len(b) == 0 {
		return ""
	}
	return unsafe.String(&b[0], len(b))
}

// time reads a time, the zero Time unless present.
func (r *entryReader) time(present bool) time.Time {
	sec, nsec := int64(r.uint64()), int64(r.uint32())
	if !present {
		return time.Time{}
	}
	return time.Unix(sec, nsec)
}

func (r *entryReader) header() (deadline int64, issuer uint32, alg algorithm, kid string) {
	deadline = int64(r.uint64())
	issuer = r.uint32()
	alg = algorithm(r.next(1)[0])
	return deadline, issuer, alg, r.string()
}

// claims fills c as decodeClaims would have, reusing the memory of c.Raw
// and c.Audience.
func (r *entryReader) claims(c *Claims) {
	raw, aud := c.Raw[:0], c.Audience[:0]
	*c = Claims{seen: claimSet(r.next(1)[0])}
	c.ExpiresAt = r.time(c.has(claimExp))
	c.NotBefore = r.time(c.has(claimNbf))
	c.IssuedAt = r.time(c.has(claimIat))
	c.Issuer = r.string()
	c.Subject = r.string()
	c.ID = r.string()
	c.ClientID = r.string()
	c.Scope = r.string()
	c.SessionID = r.string()
	for n := r.uint32(); n > 0; n-- {
		aud = append(aud, r.string())
	}
	if c.has(claimAud) {
		c.Audience = aud
	}
	c.Raw = append(raw, r.bytes()...)
	c.Act = slice(c.Raw, r.uint64())
	c.MayAct = slice(c.Raw, r.uint64())
}

// slice undoes offsetIn.
func slice(raw []byte, pos uint64) []byte {
	if pos == 0 {
		return nil
	}
	off, n := int(pos>>32), int(pos&(1<<32-1))
	return raw[off : off+n : off+n]
}
