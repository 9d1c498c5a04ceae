package token

import (
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/elliptic"
	"crypto/rsa"
	"errors"
	"fmt"
	"math/big"
	"slices"
	"strings"
)

// ParseJWKS parses a JWK Set (RFC 7517 §5) and returns its public signing
// keys, each bound to one algorithm, in document order.
//
// It keeps EC keys on P-256, P-384 and P-521, OKP keys on Ed25519 and RSA
// keys of 2048 to 8192 bits whose "use" is absent or "sig" and whose
// "key_ops", if present, include "verify". It skips, without failing, keys of
// another type, curve, use or algorithm (an encryption key, ES256K, Ed448),
// so that one exotic key cannot take a whole set down. It fails on what
// signals a broken or dangerous set: private or symmetric key material, an
// "alg" that contradicts the key (ES384 on a P-256 key, RS256 on an EC key),
// a smaller or larger RSA modulus, invalid key values, and two kept keys
// with the same "kid".
//
// Without "alg", EC keys take the algorithm of their curve, Ed25519 keys
// EdDSA, and RSA keys RS256, the algorithm RFC 9068 §2.1 requires every
// implementation to support.
func ParseJWKS(data []byte) ([]Key, error) {
	p := newParser(data, new(names))
	mark, err := p.openObject()
	if err != nil {
		return nil, errors.New("token: JWK set is not a JSON object")
	}
	var keys []Key
	sawKeys := false
	for {
		name, ok, err := p.nextName(mark)
		if err != nil {
			return nil, errJWKSSyntax
		}
		if !ok {
			break
		}
		if string(p.text(name, nil)) != "keys" {
			if p.skipValue() != nil {
				return nil, errJWKSSyntax
			}
			continue
		}
		sawKeys = true
		if p.openArray() != nil {
			return nil, errors.New(`token: JWK set "keys" is not an array`)
		}
		for n := 0; ; n++ {
			ok, err := p.nextElement(n)
			if err != nil {
				return nil, errJWKSSyntax
			}
			if !ok {
				break
			}
			k, keep, err := p.readJWK()
			if err != nil {
				return nil, fmt.Errorf("token: JWK %d: %w", n, err)
			}
			if keep {
				keys = append(keys, k)
			}
		}
	}
	if p.end() != nil {
		return nil, errJWKSSyntax
	}
	if !sawKeys {
		return nil, errors.New(`token: JWK set has no "keys"`)
	}
	ids := make(map[string]bool, len(keys))
	for _, k := range keys {
		if k.ID != "" && ids[k.ID] {
			return nil, fmt.Errorf("token: duplicate kid %q in JWK set", k.ID)
		}
		ids[k.ID] = true
	}
	return keys, nil
}

var errJWKSSyntax = errors.New("token: JWK set is not valid JSON")

// jwk holds the members of a JWK (RFC 7517 §4, RFC 7518 §6, RFC 8037 §2)
// that ParseJWKS looks at.
type jwk struct {
	kty, use, alg, kid, crv string
	x, y, n, e              string // base64url
	keyOps                  []string
	hasKeyOps               bool
	private                 string // name of a private or symmetric member, if any
}

// readJWK reads one JWK and returns the key, or keep == false if the key is
// not one this package uses.
func (p *parser) readJWK() (k Key, keep bool, err error) {
	mark, err := p.openObject()
	if err != nil {
		return Key{}, false, errors.New("not a JSON object")
	}
	var j jwk
	for {
		name, ok, err := p.nextName(mark)
		if err != nil {
			return Key{}, false, errors.New("invalid JSON")
		}
		if !ok {
			break
		}
		member := string(p.text(name, nil))
		var dst *string
		switch member {
		case "kty":
			dst = &j.kty
		case "use":
			dst = &j.use
		case "alg":
			dst = &j.alg
		case "kid":
			dst = &j.kid
		case "crv":
			dst = &j.crv
		case "x":
			dst = &j.x
		case "y":
			dst = &j.y
		case "n":
			dst = &j.n
		case "e":
			dst = &j.e
		case "key_ops":
			j.hasKeyOps = true
			if j.keyOps, err = p.stringArray(); err != nil {
				return Key{}, false, err
			}
			continue
		case "d", "p", "q", "dp", "dq", "qi", "oth", "k":
			// RFC 7518 §6.2.2, §6.3.2, §6.4; RFC 8037 §2.
			j.private = member
		}
		if dst != nil {
			if *dst, err = p.stringMember(member); err != nil {
				return Key{}, false, err
			}
		} else if p.skipValue() != nil {
			return Key{}, false, errors.New("invalid JSON")
		}
	}
	return j.key()
}

func (p *parser) stringMember(name string) (string, error) {
	if p.peek() != '"' {
		return "", fmt.Errorf("%q is not a string", name)
	}
	s, err := p.readString()
	if err != nil {
		return "", errors.New("invalid JSON")
	}
	return string(p.text(s, nil)), nil
}

func (p *parser) stringArray() ([]string, error) {
	if p.peek() != '[' || p.openArray() != nil {
		return nil, errors.New(`"key_ops" is not an array`)
	}
	var a []string
	for n := 0; ; n++ {
		ok, err := p.nextElement(n)
		if err != nil {
			return nil, errors.New("invalid JSON")
		}
		if !ok {
			return a, nil
		}
		s, err := p.stringMember("key_ops")
		if err != nil {
			return nil, err
		}
		a = append(a, s)
	}
}

func (j *jwk) key() (Key, bool, error) {
	switch {
	case j.kty == "":
		return Key{}, false, errors.New(`"kty" missing`)
	case j.kty == "oct":
		return Key{}, false, errors.New("symmetric key in a verification key set")
	case j.private != "":
		return Key{}, false, fmt.Errorf("private key member %q present", j.private)
	case j.use != "" && j.use != "sig":
		return Key{}, false, nil
	case j.hasKeyOps && !slices.Contains(j.keyOps, "verify"):
		return Key{}, false, nil
	}
	var (
		alg algorithm // the algorithm the key type implies
		pub any
		err error
	)
	switch j.kty {
	case "EC":
		switch j.crv {
		case "P-256":
			alg = algES256
		case "P-384":
			alg = algES384
		case "P-521":
			alg = algES512
		default:
			return Key{}, false, nil
		}
		pub, err = j.ecdsaKey(alg.curve())
	case "OKP":
		if j.crv != "Ed25519" {
			return Key{}, false, nil
		}
		alg = algEdDSA
		pub, err = j.ed25519Key()
	case "RSA":
		alg = algRS256
		pub, err = j.rsaKey()
	default:
		return Key{}, false, nil
	}
	if j.alg != "" {
		named := parseAlgorithm([]byte(j.alg))
		switch {
		case named == alg || named.isRSA() && alg.isRSA():
			alg = named
		case named != algNone || j.alg == "none" || strings.HasPrefix(j.alg, "HS"):
			return Key{}, false, fmt.Errorf("alg %q does not fit a %s key", j.alg, j.kty)
		default:
			return Key{}, false, nil // an algorithm this package does not implement
		}
	}
	if err != nil {
		return Key{}, false, err
	}
	k := Key{ID: j.kid, Algorithm: alg.String(), Public: pub}
	return k, true, k.check()
}

// decodeMember decodes a base64url key value (RFC 7518 §2: no padding, no
// line breaks).
func decodeMember(name, s string) ([]byte, error) {
	if s == "" {
		return nil, fmt.Errorf("%q missing", name)
	}
	if strings.ContainsAny(s, "\r\n") {
		return nil, fmt.Errorf("%q is not base64url", name)
	}
	b, err := b64.DecodeString(s)
	if err != nil {
		return nil, fmt.Errorf("%q is not base64url", name)
	}
	return b, nil
}

func (j *jwk) ecdsaKey(curve elliptic.Curve) (*ecdsa.PublicKey, error) {
	size := (curve.Params().BitSize + 7) / 8
	x, err := decodeMember("x", j.x)
	if err != nil {
		return nil, err
	}
	y, err := decodeMember("y", j.y)
	if err != nil {
		return nil, err
	}
	// RFC 7518 §6.2.1.2 wants full-size coordinates, but some producers
	// drop leading zero bytes; the point is the same, so pad them back.
	if len(x) > size || len(y) > size {
		return nil, errors.New("EC coordinate too long")
	}
	point := make([]byte, 1+2*size)
	point[0] = 4 // uncompressed (SEC 1 §2.3.3)
	copy(point[1+size-len(x):], x)
	copy(point[1+2*size-len(y):], y)
	pub, err := ecdsa.ParseUncompressedPublicKey(curve, point)
	if err != nil {
		return nil, errors.New("EC point not on the curve")
	}
	return pub, nil
}

func (j *jwk) ed25519Key() (ed25519.PublicKey, error) {
	x, err := decodeMember("x", j.x)
	if err != nil {
		return nil, err
	}
	if len(x) != ed25519.PublicKeySize {
		return nil, errors.New("Ed25519 key of the wrong size")
	}
	return ed25519.PublicKey(x), nil
}

func (j *jwk) rsaKey() (*rsa.PublicKey, error) {
	nb, err := decodeMember("n", j.n)
	if err != nil {
		return nil, err
	}
	eb, err := decodeMember("e", j.e)
	if err != nil {
		return nil, err
	}
	n := new(big.Int).SetBytes(nb)
	if bits := n.BitLen(); bits < minRSABits || bits > maxRSABits {
		return nil, fmt.Errorf("RSA modulus of %d bits, want %d to %d", bits, minRSABits, maxRSABits)
	}
	if n.Bit(0) == 0 {
		return nil, errors.New("even RSA modulus")
	}
	// crypto/rsa takes exponents up to 2^31-1; anything even or below 3
	// is not an RSA public exponent.
	eb = trimZeros(eb)
	if len(eb) > 4 {
		return nil, errors.New("RSA exponent too large")
	}
	var e int64
	for _, b := range eb {
		e = e<<8 | int64(b)
	}
	if e < 3 || e > 1<<31-1 || e%2 == 0 {
		return nil, errors.New("invalid RSA exponent")
	}
	return &rsa.PublicKey{N: n, E: int(e)}, nil
}
