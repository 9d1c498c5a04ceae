package token

import (
	"cmp"
	"crypto/sha256"
	"errors"
	"fmt"
	"maps"
	"slices"
	"sync"
	"sync/atomic"
	"time"
)

// Issuer is one trusted issuer: the policy its tokens must meet and the
// only keys that may have signed them.
type Issuer struct {
	Policy Policy
	Keys   Keys
}

// AuthenticatorOptions configure an Authenticator.
type AuthenticatorOptions struct {
	// Cache, if not nil, keeps verified tokens so that a token seen again
	// skips the signature check. A Cache serves exactly one Authenticator.
	Cache *Cache
	// MaxRevocations bounds the revocations held (see Revoke). Default:
	// DefaultMaxRevocations.
	MaxRevocations int
	// Now returns the current time, against which revocations expire;
	// the same clock as the issuers' Policy.Now. Default: time.Now.
	Now func() time.Time
}

// Authenticator verifies tokens from several trusted issuers, each with its
// own Policy and Keys, and refuses those revoked (see Revoke). It is safe
// for concurrent use: verifying takes no lock, while AddIssuer and Revoke,
// which are rare, replace what verifying reads.
type Authenticator struct {
	trust  atomic.Pointer[trustSet]
	mu     sync.Mutex // serializes AddIssuer
	cache  *Cache
	denied denyList
	now    func() time.Time
}

// trustSet is the Authenticator's issuers at one time; it never changes.
type trustSet struct {
	// verifiers are indexed by the position cache entries record; the
	// slot of a replaced issuer is nil, so that entries its Verifier
	// accepted are never answered again.
	verifiers []*Verifier
	byIssuer  map[string]int // index into verifiers
	maxSize   int            // the largest Policy.MaxSize
	prefixed  bool           // some issuer has a Policy.SubjectPrefix
}

// NewAuthenticator returns an Authenticator that accepts the tokens that
// one of issuers, chosen by its Policy.Issuer, accepts.
func NewAuthenticator(issuers []Issuer, opts AuthenticatorOptions) (*Authenticator, error) {
	if len(issuers) == 0 {
		return nil, errors.New("token: no trusted issuer")
	}
	if opts.MaxRevocations < 0 {
		return nil, fmt.Errorf("token: negative MaxRevocations %d", opts.MaxRevocations)
	}
	t := &trustSet{byIssuer: make(map[string]int, len(issuers))}
	for i, is := range issuers {
		v, err := NewVerifier(is.Policy, is.Keys)
		if err != nil {
			return nil, fmt.Errorf("token: issuer %d: %w", i, err)
		}
		if _, dup := t.byIssuer[v.issuer]; dup {
			return nil, fmt.Errorf("token: issuer %q trusted twice", v.issuer)
		}
		t.byIssuer[v.issuer] = i
		t.verifiers = append(t.verifiers, v)
		t.maxSize = max(t.maxSize, v.maxSize)
		t.prefixed = t.prefixed || v.prefix != ""
	}
	a := &Authenticator{cache: opts.Cache, now: opts.Now}
	if a.now == nil {
		a.now = time.Now
	}
	a.trust.Store(t)
	a.denied.limit = cmp.Or(opts.MaxRevocations, DefaultMaxRevocations)
	if opts.Cache != nil {
		// An entry records only which of this Authenticator's issuers
		// accepted the token; another Authenticator's policies would read
		// it wrongly.
		if !opts.Cache.owned.CompareAndSwap(false, true) {
			return nil, errors.New("token: cache already serves another Authenticator")
		}
	}
	return a, nil
}

// AddIssuer trusts iss from now on, replacing the issuer of the same
// Policy.Issuer if there is one: a federated provider registered at run
// time, say. Tokens that a replaced issuer's Verifier accepted are
// verified again, against the new Policy and Keys, when next seen. Each
// call keeps a pointer's worth of memory for the Authenticator's life:
// replace an issuer when its Policy changes, not to update its keys, which
// its Keys do.
func (a *Authenticator) AddIssuer(iss Issuer) error {
	v, err := NewVerifier(iss.Policy, iss.Keys)
	if err != nil {
		return fmt.Errorf("token: issuer %q: %w", iss.Policy.Issuer, err)
	}
	a.mu.Lock()
	old := a.trust.Load()
	t := &trustSet{
		// The replaced Verifier keeps its slot, empty: cache entries
		// name slots, and one that its Verifier wrote while this runs
		// must not be taken for the new Verifier's.
		verifiers: append(slices.Clip(old.verifiers), v),
		byIssuer:  maps.Clone(old.byIssuer),
		maxSize:   v.maxSize,
	}
	i, replaced := t.byIssuer[v.issuer]
	if replaced {
		t.verifiers[i] = nil
	}
	t.byIssuer[v.issuer] = len(t.verifiers) - 1
	for _, w := range t.verifiers {
		if w != nil {
			t.maxSize = max(t.maxSize, w.maxSize)
			t.prefixed = t.prefixed || w.prefix != ""
		}
	}
	a.trust.Store(t)
	a.mu.Unlock()
	if replaced && a.cache != nil {
		a.cache.DeleteFunc(func(c *Claims) bool { return c.Issuer == v.issuer }) // frees their memory
	}
	return nil
}

var errUntrusted = &Error{BadIssuer, "issuer not trusted"}

// VerifyInto checks tok with the Verifier of the issuer its "iss" claim
// names, storing the claims in c with the contract of Verifier.VerifyInto.
// The issuer is found before anything but the size is checked: a token
// whose issuer is not trusted is refused with BadIssuer, and one whose
// claims cannot be read for "iss" as Malformed or MissingClaim. With a
// Cache, a token accepted earlier is answered from it while its "exp" has
// not passed and its key is still trusted. Whether from the Cache or not,
// a token that a revocation matches is refused with Revoked.
func (a *Authenticator) VerifyInto(tok []byte, c *Claims) error {
	t := a.trust.Load()
	if len(tok) > t.maxSize {
		return errTooLarge // before hashing a huge token
	}
	var sum [sha256.Size]byte
	if a.cache != nil {
		sum = sha256.Sum256(tok)
		if a.cache.load(&sum, t.verifiers, c) {
			if t.prefixed {
				// The entry holds the claims as signed; the namespace is
				// the trust entry's. The issuer's one live slot is the
				// one the entry named, since the Cache used it.
				c.SubjectPrefix = t.verifiers[t.byIssuer[c.Issuer]].prefix
			}
			return a.denied.check(c, a.now)
		}
	}
	dot1, dot2, ok := split(tok)
	if !ok {
		return errSegments
	}
	// The payload is decoded into c.Raw, where the Verifier decodes it
	// again: peeking costs no allocation beyond what verifying costs.
	raw, err := decode(c.Raw[:0], tok[dot1+1:dot2])
	if err != nil {
		return err
	}
	c.Raw = raw
	var buf [128]byte
	iss, err := issuerOf(raw, buf[:0])
	if err != nil {
		return err
	}
	// The unverified "iss" only chooses the Verifier. That Verifier finds
	// the key among its issuer's keys alone and then requires "iss" to
	// equal its issuer, so a token signed by one issuer and naming another
	// fails (RFC 8725 §3.8, §3.10).
	i, ok := t.byIssuer[string(iss)]
	if !ok {
		return errUntrusted
	}
	v := t.verifiers[i]
	if err := v.VerifyInto(tok, c); err != nil {
		return err
	}
	if a.cache != nil {
		// Cached even if revoked: each use checks revocations again, and
		// a revoked token replayed costs a hit, not a signature check.
		a.cache.store(&sum, i, v, tok[:dot1], c)
	}
	return a.denied.check(c, a.now)
}

// issuerOf returns the "iss" claim of the claims set raw, which is not yet
// authenticated, decoding escapes into buf. It reads only up to "iss": the
// Verifier reads the whole claims set, duplicate names included, later.
func issuerOf(raw, buf []byte) ([]byte, error) {
	var ns names
	p := newParser(raw, &ns)
	mark, err := p.openObject()
	if err != nil {
		return nil, errClaimsJSON
	}
	for {
		name, ok, err := p.nextName(mark)
		if err != nil {
			return nil, errClaimsJSON
		}
		if !ok {
			return nil, errNoIssuer
		}
		var nbuf [8]byte
		if string(p.text(name, nbuf[:0])) != "iss" {
			if p.skipValue() != nil {
				return nil, errClaimsJSON
			}
			continue
		}
		if p.peek() != '"' {
			return nil, errClaimType
		}
		s, err := p.readString()
		if err != nil {
			return nil, errClaimsJSON
		}
		return text(raw, s, buf), nil
	}
}
