package token

import (
	"crypto/sha256"
	"errors"
	"fmt"
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
}

// Authenticator verifies tokens from several trusted issuers, each with its
// own Policy and Keys. It is immutable and safe for concurrent use.
type Authenticator struct {
	verifiers []*Verifier
	byIssuer  map[string]int // index into verifiers
	maxSize   int            // the largest Policy.MaxSize
	cache     *Cache
}

// NewAuthenticator returns an Authenticator that accepts the tokens that
// one of issuers, chosen by its Policy.Issuer, accepts.
func NewAuthenticator(issuers []Issuer, opts AuthenticatorOptions) (*Authenticator, error) {
	if len(issuers) == 0 {
		return nil, errors.New("token: no trusted issuer")
	}
	a := &Authenticator{byIssuer: make(map[string]int, len(issuers))}
	for i, is := range issuers {
		v, err := NewVerifier(is.Policy, is.Keys)
		if err != nil {
			return nil, fmt.Errorf("token: issuer %d: %w", i, err)
		}
		if _, dup := a.byIssuer[v.issuer]; dup {
			return nil, fmt.Errorf("token: issuer %q trusted twice", v.issuer)
		}
		a.byIssuer[v.issuer] = i
		a.verifiers = append(a.verifiers, v)
		a.maxSize = max(a.maxSize, v.maxSize)
	}
	if opts.Cache != nil {
		// An entry records only which of this Authenticator's issuers
		// accepted the token; another Authenticator's policies would read
		// it wrongly.
		if !opts.Cache.owned.CompareAndSwap(false, true) {
			return nil, errors.New("token: cache already serves another Authenticator")
		}
		a.cache = opts.Cache
	}
	return a, nil
}

var errUntrusted = &Error{BadIssuer, "issuer not trusted"}

// VerifyInto checks tok with the Verifier of the issuer its "iss" claim
// names, storing the claims in c with the contract of Verifier.VerifyInto.
// The issuer is found before anything but the size is checked: a token
// whose issuer is not trusted is refused with BadIssuer, and one whose
// claims cannot be read for "iss" as Malformed or MissingClaim. With a
// Cache, a token accepted earlier is answered from it while its "exp" has
// not passed and its key is still trusted.
func (a *Authenticator) VerifyInto(tok []byte, c *Claims) error {
	if len(tok) > a.maxSize {
		return errTooLarge // before hashing a huge token
	}
	var sum [sha256.Size]byte
	if a.cache != nil {
		sum = sha256.Sum256(tok)
		if a.cache.load(&sum, a.verifiers, c) {
			return nil
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
	i, ok := a.byIssuer[string(iss)]
	if !ok {
		return errUntrusted
	}
	v := a.verifiers[i]
	if err := v.VerifyInto(tok, c); err != nil {
		return err
	}
	if a.cache != nil {
		a.cache.store(&sum, i, v, tok[:dot1], c)
	}
	return nil
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
