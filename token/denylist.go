package token

import (
	"container/heap"
	"sync"
	"sync/atomic"
	"time"
)

// DefaultMaxRevocations is the default of AuthenticatorOptions.MaxRevocations.
// A revocation held takes some 300 bytes.
const DefaultMaxRevocations = 1 << 18

// RevocationStats are an Authenticator's revocation counters, for metrics.
type RevocationStats struct {
	Entries   int    // revocations held
	Refused   uint64 // verifications refused with Revoked
	Forgotten uint64 // revocations dropped beyond MaxRevocations (see Revoke)
}

// Revoke makes the Authenticator refuse, with Revoked, every token that r
// matches (Revocation.Matches: a token of r.Issuer whose claim named r.Kind
// equals r.Value and whose "iat" is at or before r.RevokedAt, or absent),
// until r.ExpiresAt, when every token r can match has expired, and drops
// those tokens from the Cache. It is a RevocationSink.
//
// A revocation that can match no token (no Issuer or Value, another kind)
// is ignored, as is an expired one. Revoking what is revoked already
// changes nothing, unless r was made or expires later: the entry then
// covers both.
//
// Each call first forgets the revocations that have expired; memory is
// therefore bounded by the revocations live at the last call, and by
// MaxRevocations. Beyond MaxRevocations the revocation that expires first
// is forgotten, but not its effect: every token issued at or before it, of
// any issuer, is refused until it would have expired. Revocations are kept
// until the end of their tokens' lifetime, so the one forgotten is the
// oldest, and the tokens issued before it have mostly expired already:
// forgetting costs some precision, never a revoked token accepted.
func (a *Authenticator) Revoke(r Revocation) {
	k, ok := denyKindOf(r.Kind)
	now := a.now()
	if !ok || r.Value == "" || r.Issuer == "" || !now.Before(r.ExpiresAt) {
		return
	}
	merged, grew := a.denied.add(k, &r, now)
	if grew && a.cache != nil {
		a.cache.DeleteFunc(func(c *Claims) bool {
			return merged.Matches(c.Identity(), c.IssuedAt) && a.now().Before(merged.ExpiresAt)
		})
	}
}

// RevocationStats returns the Authenticator's revocation counters.
func (a *Authenticator) RevocationStats() RevocationStats {
	return RevocationStats{
		Entries:   int(a.denied.size.Load()),
		Refused:   a.denied.refused.Load(),
		Forgotten: a.denied.forgotten.Load(),
	}
}

// The kinds of revocation, indexing denyList.kinds.
const (
	denyTokenID = iota
	denyClientID
	denySubject
	denySession
	numDenyKinds
)

func denyKindOf(kind string) (int, bool) {
	switch kind {
	case RevokeTokenID:
		return denyTokenID, true
	case RevokeClientID:
		return denyClientID, true
	case RevokeSubject:
		return denySubject, true
	case RevokeSession:
		return denySession, true
	}
	return 0, false
}

// revocable returns the claim that revocations of kind k match.
func (c *Claims) revocable(k int) string {
	switch k {
	case denyTokenID:
		return c.ID
	case denyClientID:
		return c.ClientID
	case denySubject:
		return c.Subject
	default:
		return c.SessionID
	}
}

// denyList holds an Authenticator's revocations. Verifying reads it
// without a lock or an allocation: with no revocation, at the cost of two
// atomic loads; with some, of a map lookup for each kind that has any,
// since sync.Map's Load of a string key does not allocate. Revoking, which
// is rare, is serialized by mu and keeps the entries in a heap by expiry,
// so that forgetting costs a heap operation rather than a scan.
type denyList struct {
	kinds [numDenyKinds]denyKind
	size  atomic.Int64 // entries of every kind
	// floor, if not nil, is what forgotten revocations refused: every
	// token issued at or before its revokedAt, until its expiresAt.
	floor     atomic.Pointer[denial]
	refused   atomic.Uint64
	forgotten atomic.Uint64
	limit     int // entries held at most

	mu       sync.Mutex // held by writers
	byExpiry expiryHeap
}

type denyKind struct {
	n atomic.Int64 // entries; with none, m is not read
	// m maps a revoked value to its entries, one per issuer that revoked
	// it, chained: all but always one.
	m sync.Map // Value → *denyEntry
}

// denial is the effect of forgotten revocations: tokens issued at or
// before revokedAt are refused until expiresAt. It never changes.
type denial struct{ revokedAt, expiresAt time.Time }

// covers reports whether d refuses the token of c: one without "iat" or
// issued at or before d.revokedAt, while d has not expired.
func (d *denial) covers(c *Claims, now func() time.Time) bool {
	return (!c.has(claimIat) || !c.IssuedAt.After(d.revokedAt)) && now().Before(d.expiresAt)
}

// merge returns a denial covering both d and o.
func (d *denial) merge(o *denial) *denial {
	m := *d
	if o.revokedAt.After(m.revokedAt) {
		m.revokedAt = o.revokedAt
	}
	if o.expiresAt.After(m.expiresAt) {
		m.expiresAt = o.expiresAt
	}
	return &m
}

// denyEntry is the revocation of one value of one kind by one issuer.
type denyEntry struct {
	// rev is the revocation, replaced under mu by a merge with a later
	// one of the same issuer, kind and value; it never changes.
	rev atomic.Pointer[Revocation]
	// next is the entry of another issuer for the same value.
	next  atomic.Pointer[denyEntry]
	kind  int
	index int // in byExpiry
}

// check returns errRevoked if a revocation matches the token of c.
func (l *denyList) check(c *Claims, now func() time.Time) error {
	if l.size.Load() == 0 && l.floor.Load() == nil {
		return nil
	}
	if l.matches(c, now) {
		l.refused.Add(1)
		return errRevoked
	}
	return nil
}

func (l *denyList) matches(c *Claims, now func() time.Time) bool {
	if f := l.floor.Load(); f != nil && f.covers(c, now) {
		return true
	}
	for k := range l.kinds {
		dk := &l.kinds[k]
		v := c.revocable(k)
		if v == "" || dk.n.Load() == 0 {
			continue
		}
		head, ok := dk.m.Load(v)
		if !ok {
			continue
		}
		for e := head.(*denyEntry); e != nil; e = e.next.Load() {
			r := e.rev.Load()
			if r.Matches(c.Identity(), c.IssuedAt) && now().Before(r.ExpiresAt) {
				return true
			}
		}
	}
	return false
}

// add records r, of kind k, after forgetting the revocations expired at
// now. It returns the revocation its entry now holds, and whether that
// refuses tokens issued later than before.
func (l *denyList) add(k int, r *Revocation, now time.Time) (merged *Revocation, grew bool) {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.sweep(now)
	dk := &l.kinds[k]
	var head *denyEntry
	if v, ok := dk.m.Load(r.Value); ok {
		head = v.(*denyEntry)
	}
	for e := head; e != nil; e = e.next.Load() {
		old := e.rev.Load()
		if old.Issuer != r.Issuer {
			continue
		}
		later, longer := r.RevokedAt.After(old.RevokedAt), r.ExpiresAt.After(old.ExpiresAt)
		if !later && !longer {
			return old, false
		}
		m := *old
		if later {
			m.RevokedAt = r.RevokedAt
		}
		if longer {
			m.ExpiresAt = r.ExpiresAt
		}
		e.rev.Store(&m)
		heap.Fix(&l.byExpiry, e.index)
		return &m, later
	}
	rc := *r
	e := &denyEntry{kind: k}
	e.rev.Store(&rc)
	e.next.Store(head)
	dk.m.Store(r.Value, e)
	// Counted after it is in the map: a verification that sees the count
	// finds the entry.
	dk.n.Add(1)
	l.size.Add(1)
	heap.Push(&l.byExpiry, e)
	for len(l.byExpiry) > l.limit {
		l.forget(heap.Pop(&l.byExpiry).(*denyEntry))
	}
	return &rc, true
}

// sweep drops the entries expired at now, and the floor if it has.
func (l *denyList) sweep(now time.Time) {
	for len(l.byExpiry) > 0 && !now.Before(l.byExpiry[0].rev.Load().ExpiresAt) {
		l.remove(heap.Pop(&l.byExpiry).(*denyEntry))
	}
	if f := l.floor.Load(); f != nil && !now.Before(f.expiresAt) {
		l.floor.Store(nil)
	}
}

// forget drops e, an entry beyond the limit, raising the floor to refuse
// what it refused.
func (l *denyList) forget(e *denyEntry) {
	r := e.rev.Load()
	d := &denial{revokedAt: r.RevokedAt, expiresAt: r.ExpiresAt}
	if f := l.floor.Load(); f != nil {
		d = f.merge(d)
	}
	// The floor covers e before e goes.
	l.floor.Store(d)
	l.remove(e)
	l.forgotten.Add(1)
}

// remove unlinks e, already out of byExpiry, from its chain. A
// verification walking the chain meanwhile still finds e's successors.
func (l *denyList) remove(e *denyEntry) {
	dk := &l.kinds[e.kind]
	value := e.rev.Load().Value
	if v, ok := dk.m.Load(value); ok {
		if head := v.(*denyEntry); head == e {
			if next := e.next.Load(); next != nil {
				dk.m.Store(value, next)
			} else {
				dk.m.Delete(value)
			}
		} else {
			for p := head; p != nil; p = p.next.Load() {
				if p.next.Load() == e {
					p.next.Store(e.next.Load())
					break
				}
			}
		}
	}
	dk.n.Add(-1)
	l.size.Add(-1)
}

// expiryHeap orders entries by expiry, soonest first (container/heap).
type expiryHeap []*denyEntry

func (h expiryHeap) Len() int { return len(h) }

func (h expiryHeap) Less(i, j int) bool {
	return h[i].rev.Load().ExpiresAt.Before(h[j].rev.Load().ExpiresAt)
}

func (h expiryHeap) Swap(i, j int) {
	h[i], h[j] = h[j], h[i]
	h[i].index = i
	h[j].index = j
}

func (h *expiryHeap) Push(x any) {
	e := x.(*denyEntry)
	e.index = len(*h)
	*h = append(*h, e)
}

func (h *expiryHeap) Pop() any {
	old := *h
	e := old[len(old)-1]
	old[len(old)-1] = nil
	*h = old[:len(old)-1]
	return e
}
