package token

import (
	"bytes"
	"encoding/base64"
	"errors"
	"fmt"
	"time"
)

// Policy defaults and bounds.
const (
	DefaultLeeway  = 30 * time.Second
	MaxLeeway      = 5 * time.Minute
	DefaultMaxSize = 8 << 10
)

// Policy says which tokens a Verifier accepts. Only Issuer and Audiences are
// required; every other field has a strict default.
type Policy struct {
	// Issuer must equal the "iss" claim exactly.
	Issuer string
	// Audiences: the "aud" claim must contain at least one of them.
	Audiences []string
	// AnyAudience accepts a token whatever its audience, as long as it has
	// one, and then Audiences must be empty. It is for an authorization
	// server verifying its own tokens presented back to it (RFC 8693 token
	// exchange, RFC 7662 introspection, RFC 7009 revocation), which judges
	// the verified audience itself; never for a resource server.
	AnyAudience bool
	// Types lists the accepted "typ" header values, compared
	// case-insensitively and with or without the "application/" prefix
	// (RFC 7515 §4.1.9). The empty string allows tokens without "typ".
	// Default: at+jwt only (RFC 9068 §2.1, RFC 8725 §3.11). For RFC 7523
	// client assertions, which rarely carry a typ, use {"", "JWT"}.
	Types []string
	// Leeway is the clock skew allowed when checking "exp", "nbf" and
	// "iat". Zero means DefaultLeeway; at most MaxLeeway.
	Leeway time.Duration
	// Algorithms restricts the accepted "alg" values. Default: all of ES256,
	// ES384, ES512, EdDSA, RS256, RS384, RS512, PS256, PS384, PS512. Any
	// other name, none and HMAC included, is a configuration error.
	Algorithms []string
	// MaxSize is the largest accepted token, in bytes. Zero means
	// DefaultMaxSize.
	MaxSize int
	// SubjectPrefix is the issuer's identity namespace, which its tokens'
	// Claims carry (Claims.SubjectPrefix): put before "sub" and
	// "client_id" wherever they are shown or judged, so that an issuer
	// whose names are not this deployment's own (a federated provider,
	// with its own "web" or "root") cannot pass for a local identity.
	// Empty: the issuer's names are local names. The edge's foreign
	// issuers use the issuer's URL followed by "#".
	SubjectPrefix string
	// Now returns the current time. Default: time.Now.
	Now func() time.Time
}

// Verifier checks tokens against a Policy and a source of keys. It is
// immutable and safe for concurrent use.
type Verifier struct {
	keys       Keys
	issuer     string
	audiences  []string
	anyAud     bool
	types      [][]byte // without "application/"
	typeAbsent bool     // tokens without "typ" are accepted
	leeway     time.Duration
	algs       algSet
	maxSize    int
	prefix     string // Policy.SubjectPrefix
	now        func() time.Time
}

// NewVerifier returns a Verifier for p that takes its keys from keys.
func NewVerifier(p Policy, keys Keys) (*Verifier, error) {
	if keys == nil {
		return nil, errors.New("token: no keys")
	}
	if p.Issuer == "" {
		return nil, errors.New("token: policy has no issuer")
	}
	switch {
	case p.AnyAudience && len(p.Audiences) > 0:
		return nil, errors.New("token: policy has audiences and accepts any audience")
	case !p.AnyAudience && len(p.Audiences) == 0:
		return nil, errors.New("token: policy has no audience")
	}
	for _, a := range p.Audiences {
		if a == "" {
			return nil, errors.New("token: policy has an empty audience")
		}
	}
	v := &Verifier{
		keys:      keys,
		issuer:    p.Issuer,
		audiences: append([]string(nil), p.Audiences...),
		anyAud:    p.AnyAudience,
		leeway:    p.Leeway,
		maxSize:   p.MaxSize,
		prefix:    p.SubjectPrefix,
		now:       p.Now,
	}
	for i := 0; i < len(v.prefix); i++ {
		if c := v.prefix[i]; c < ' ' || c == 0x7f {
			return nil, errors.New("token: subject prefix holds a control character")
		}
	}
	if v.leeway == 0 {
		v.leeway = DefaultLeeway
	}
	if v.leeway < 0 || v.leeway > MaxLeeway {
		return nil, fmt.Errorf("token: leeway %v outside (0, %v]", p.Leeway, MaxLeeway)
	}
	if v.maxSize == 0 {
		v.maxSize = DefaultMaxSize
	}
	if v.maxSize < 0 {
		return nil, fmt.Errorf("token: negative MaxSize %d", p.MaxSize)
	}
	if v.now == nil {
		v.now = time.Now
	}
	types := p.Types
	if len(types) == 0 {
		types = []string{"at+jwt"}
	}
	for _, t := range types {
		if t == "" {
			v.typeAbsent = true
			continue
		}
		v.types = append(v.types, mediaType([]byte(t)))
	}
	if len(p.Algorithms) == 0 {
		v.algs = allAlgorithms
	}
	for _, name := range p.Algorithms {
		a := parseAlgorithm([]byte(name))
		if a == algNone {
			return nil, fmt.Errorf("token: unsupported algorithm %q", name)
		}
		v.algs |= 1 << a
	}
	return v, nil
}

// mediaType removes the "application/" prefix that RFC 7515 §4.1.9 lets a
// "typ" value omit when no other '/' follows.
func mediaType(t []byte) []byte {
	const prefix = "application/"
	if len(t) > len(prefix) && bytes.EqualFold(t[:len(prefix)], []byte(prefix)) &&
		bytes.IndexByte(t[len(prefix):], '/') < 0 {
		return t[len(prefix):]
	}
	return t
}

var b64 = base64.RawURLEncoding.Strict()

// maxKIDSize bounds the "kid" values worth looking up. Real ones are
// names, UUIDs or thumbprints (RFC 7638: 43 bytes for SHA-256); a longer
// one only serves to bloat key caches keyed by kid.
const maxKIDSize = 256

// Verify checks tok, a JWS compact serialization, and returns its claims.
// Every failure is an *Error.
func (v *Verifier) Verify(tok []byte) (*Claims, error) {
	var c Claims // on the stack, so that refusals allocate nothing
	if err := v.VerifyInto(tok, &c); err != nil {
		return nil, err
	}
	accepted := c
	return &accepted, nil
}

// VerifyInto is Verify storing the claims in c, reusing the memory of c.Raw
// and c.Audience: anything kept from a previous use of c (Act and MayAct
// alias Raw) is overwritten. On error, the contents of c are unspecified.
func (v *Verifier) VerifyInto(tok []byte, c *Claims) error {
	raw, err := v.verifySignature(tok, c.Raw[:0])
	if err != nil {
		return err
	}
	// Only now is the payload authentic and worth reading.
	if err := decodeClaims(raw, c); err != nil {
		return err
	}
	c.SubjectPrefix = v.prefix
	return v.checkClaims(c)
}

// verifySignature checks the size, the JOSE header and the signature of
// tok, a JWS compact serialization, and returns its payload, decoded into
// buf's memory if it fits. It reads nothing of the payload.
func (v *Verifier) verifySignature(tok, buf []byte) ([]byte, error) {
	if len(tok) > v.maxSize {
		return nil, errTooLarge
	}
	dot1, dot2, ok := split(tok)
	if !ok {
		return nil, errSegments
	}
	signed, encSig := tok[:dot2], tok[dot2+1:]

	// The header chooses the key, so it is read first, and every check it
	// allows is made before the key lookup: a hostile header must not
	// cause a key-set refresh.
	var hbuf [256]byte
	hdr, err := decode(hbuf[:0], tok[:dot1])
	if err != nil {
		return nil, err
	}
	alg, kid, err := v.readHeader(hdr)
	if err != nil {
		return nil, err
	}

	if len(kid) > maxKIDSize {
		return nil, errUnknownKey // not worth a lookup that might refresh keys
	}
	key, ok := v.keys.Lookup(string(kid))
	if !ok {
		return nil, errUnknownKey
	}
	// The algorithm is the key's; the header must merely agree with it.
	if key.Algorithm != alg.String() || !alg.checkKey(key.Public) {
		return nil, errKeyAlg
	}
	var sbuf [maxRSABits / 8]byte
	sig, err := decode(sbuf[:0], encSig)
	if err != nil {
		return nil, err
	}
	if len(sig) != alg.signatureSize(key.Public) {
		return nil, errSignatureSize
	}
	// Decoding the payload's base64url trusts nothing in it, and settles
	// that the whole token is well-formed before the costly check.
	raw, err := decode(buf, tok[dot1+1:dot2])
	if err != nil {
		return nil, err
	}
	if !alg.verify(key.Public, signed, sig) {
		return nil, errSignature
	}
	return raw, nil
}

// split returns the positions of the two dots of a JWS compact
// serialization (RFC 7515 §7.1). It refuses '\r' and '\n', which
// encoding/base64 would skip, letting one signed token be spelled many ways;
// the decoders refuse every other byte outside the base64url alphabet.
func split(tok []byte) (dot1, dot2 int, ok bool) {
	dot1 = bytes.IndexByte(tok, '.')
	if dot1 < 0 {
		return 0, 0, false
	}
	dot2 = bytes.IndexByte(tok[dot1+1:], '.') + dot1 + 1
	if dot2 == dot1 || bytes.IndexByte(tok[dot2+1:], '.') >= 0 {
		return 0, 0, false // not three segments: a JWE (RFC 7516 §7.1) has five
	}
	if bytes.IndexByte(tok, '\n') >= 0 || bytes.IndexByte(tok, '\r') >= 0 {
		return 0, 0, false
	}
	return dot1, dot2, true
}

// decode decodes the base64url text src into buf's memory, or into new
// memory if buf is too small.
func decode(buf, src []byte) ([]byte, error) {
	n := b64.DecodedLen(len(src))
	if cap(buf) < n {
		buf = make([]byte, n)
	}
	n, err := b64.Decode(buf[:n], src)
	if err != nil {
		return nil, errEncoding
	}
	return buf[:n], nil
}

// readHeader checks the JOSE header (RFC 7515 §4) and returns the algorithm
// and the "kid" (nil when absent).
func (v *Verifier) readHeader(hdr []byte) (alg algorithm, kid []byte, err error) {
	var ns names
	p := newParser(hdr, &ns)
	mark, err := p.openObject()
	if err != nil {
		return algNone, nil, errHeaderJSON
	}
	var hasAlg, hasTyp bool
	for {
		name, ok, err := p.nextName(mark)
		if err != nil {
			return algNone, nil, errHeaderJSON
		}
		if !ok {
			break
		}
		var buf [8]byte
		switch string(p.text(name, buf[:0])) {
		case "alg":
			s, err := p.readString()
			if err != nil {
				return algNone, nil, errHeaderJSON
			}
			var buf [8]byte
			alg, hasAlg = parseAlgorithm(p.text(s, buf[:0])), true
		case "kid":
			s, err := p.readString()
			if err != nil {
				return algNone, nil, errHeaderJSON
			}
			kid = text(hdr, s, nil)
		case "typ":
			s, err := p.readString()
			if err != nil {
				return algNone, nil, errHeaderJSON
			}
			var buf [32]byte
			if !v.typeAllowed(p.text(s, buf[:0])) {
				return algNone, nil, errType
			}
			hasTyp = true
		case "crit":
			// RFC 7515 §4.1.11: extensions named in crit must be
			// understood, and this package understands none.
			return algNone, nil, errCrit
		case "jku", "jwk", "x5u", "x5c":
			// Keys come only from configured trust, never from the
			// token itself (RFC 8725 §3.10).
			return algNone, nil, errKeyHeader
		case "b64":
			// RFC 7797: an unencoded payload changes what is signed.
			b, err := p.readBool()
			if err != nil {
				return algNone, nil, errHeaderJSON
			}
			if !b {
				return algNone, nil, errUnencoded
			}
		default:
			if err := p.skipValue(); err != nil {
				return algNone, nil, errHeaderJSON
			}
		}
	}
	if err := p.end(); err != nil {
		return algNone, nil, errHeaderJSON
	}
	switch {
	case !hasAlg:
		return algNone, nil, errNoAlg
	case !v.algs.has(alg):
		return algNone, nil, errAlg
	case !hasTyp && !v.typeAbsent:
		return algNone, nil, errNoType
	}
	return alg, kid, nil
}

func (v *Verifier) typeAllowed(t []byte) bool {
	t = mediaType(t)
	for _, allowed := range v.types {
		if bytes.EqualFold(t, allowed) {
			return true
		}
	}
	return false
}

// checkClaims applies the policy to decoded claims (RFC 7519 §4.1,
// RFC 9068 §4).
func (v *Verifier) checkClaims(c *Claims) error {
	switch {
	case !c.has(claimIss):
		return errNoIssuer
	case c.Issuer != v.issuer:
		return errIssuer
	case !c.has(claimAud):
		return errNoAudience
	case !v.audienceAllowed(c.Audience):
		return errAudience
	case !c.has(claimExp):
		return errNoExpiry
	}
	now := v.now()
	if !now.Before(c.ExpiresAt.Add(v.leeway)) {
		return errExpired
	}
	late := now.Add(v.leeway)
	if c.has(claimNbf) && c.NotBefore.After(late) {
		return errNotYetValid
	}
	if c.has(claimIat) && c.IssuedAt.After(late) {
		return errIssuedInFuture
	}
	return nil
}

func (v *Verifier) audienceAllowed(aud []string) bool {
	for _, a := range aud {
		if v.anyAud && a != "" {
			return true
		}
		for _, ours := range v.audiences {
			if a == ours {
				return true
			}
		}
	}
	return false
}
