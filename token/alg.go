package token

import (
	"crypto"
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/elliptic"
	"crypto/rsa"
	"crypto/sha256"
	"crypto/sha512"
)

// algorithm is one of the JWS algorithms of RFC 7518 §3 and RFC 8037 §3.1
// that this package accepts: asymmetric signatures only.
type algorithm uint8

const (
	algNone algorithm = iota // not an algorithm: "none", HMAC and unknown names map here
	algES256
	algES384
	algES512
	algEdDSA
	algRS256
	algRS384
	algRS512
	algPS256
	algPS384
	algPS512
	numAlgorithms
)

// algSet is a set of algorithms, one bit each.
type algSet uint16

const allAlgorithms = algSet(1<<numAlgorithms-1) &^ 1 // every algorithm but algNone

func (s algSet) has(a algorithm) bool { return a != algNone && s&(1<<a) != 0 }

var algNames = [numAlgorithms]string{
	algES256: "ES256", algES384: "ES384", algES512: "ES512",
	algEdDSA: "EdDSA",
	algRS256: "RS256", algRS384: "RS384", algRS512: "RS512",
	algPS256: "PS256", algPS384: "PS384", algPS512: "PS512",
}

func (a algorithm) String() string { return algNames[a] }

func (a algorithm) isRSA() bool { return a >= algRS256 && a <= algPS512 }

// parseAlgorithm maps an "alg" value to an algorithm. Names are
// case-sensitive (RFC 7515 §4.1.1). It does not allocate: the compiler turns
// the conversion in a switch into a comparison.
func parseAlgorithm(name []byte) algorithm {
	switch string(name) {
	case "ES256":
		return algES256
	case "ES384":
		return algES384
	case "ES512":
		return algES512
	case "EdDSA":
		return algEdDSA
	case "RS256":
		return algRS256
	case "RS384":
		return algRS384
	case "RS512":
		return algRS512
	case "PS256":
		return algPS256
	case "PS384":
		return algPS384
	case "PS512":
		return algPS512
	}
	return algNone
}

// RSA moduli outside these bounds are refused: RFC 7518 §3.3 and §3.5
// require 2048 bits, and an upper bound keeps a verification's cost bounded.
const (
	minRSABits = 2048
	maxRSABits = 8192
)

// curve returns the curve an ES algorithm requires (RFC 7518 §3.4), or nil.
func (a algorithm) curve() elliptic.Curve {
	switch a {
	case algES256:
		return elliptic.P256()
	case algES384:
		return elliptic.P384()
	case algES512:
		return elliptic.P521()
	}
	return nil
}

func (a algorithm) hash() crypto.Hash {
	switch a {
	case algES256, algRS256, algPS256:
		return crypto.SHA256
	case algES384, algRS384, algPS384:
		return crypto.SHA384
	}
	return crypto.SHA512
}

// checkKey reports whether pub is a key that a can use: the right type, and
// for ECDSA the right curve, for RSA an acceptable size. Binding the
// algorithm to the key this way is what defeats algorithm confusion
// (RFC 8725 §2.1, §3.1).
func (a algorithm) checkKey(pub crypto.PublicKey) bool {
	switch a {
	case algES256, algES384, algES512:
		k, ok := pub.(*ecdsa.PublicKey)
		return ok && k.Curve == a.curve() && k.X != nil && k.Y != nil
	case algEdDSA:
		k, ok := pub.(ed25519.PublicKey)
		return ok && len(k) == ed25519.PublicKeySize
	case algRS256, algRS384, algRS512, algPS256, algPS384, algPS512:
		k, ok := pub.(*rsa.PublicKey)
		if !ok || k.N == nil || k.E < 3 || k.E%2 == 0 {
			return false // an exponent of 1 would make forgery trivial
		}
		n := k.N.BitLen()
		return n >= minRSABits && n <= maxRSABits
	}
	return false
}

// signatureSize returns the exact length of a's signatures with key pub,
// which checkKey accepted.
func (a algorithm) signatureSize(pub crypto.PublicKey) int {
	switch a {
	case algES256, algES384, algES512:
		// RFC 7518 §3.4: R and S as fixed-size octet strings, concatenated.
		return 2 * ((a.curve().Params().BitSize + 7) / 8)
	case algEdDSA:
		return ed25519.SignatureSize
	}
	return pub.(*rsa.PublicKey).Size()
}

var pssOptions = rsa.PSSOptions{SaltLength: rsa.PSSSaltLengthEqualsHash} // RFC 7518 §3.5

// verify reports whether sig is a's signature of msg by pub, which checkKey
// accepted, and sig has signatureSize bytes.
func (a algorithm) verify(pub crypto.PublicKey, msg, sig []byte) bool {
	if a == algEdDSA {
		return ed25519.Verify(pub.(ed25519.PublicKey), msg, sig)
	}
	// crypto/ecdsa and crypto/rsa let the digest and signature escape, so
	// share one buffer between the digest and the DER signature: one
	// allocation instead of two.
	buf := new([sha512.Size + maxECDSADER]byte)
	var digest []byte
	switch a.hash() {
	case crypto.SHA256:
		sum := sha256.Sum256(msg)
		digest = append(buf[:0:sha512.Size], sum[:]...)
	case crypto.SHA384:
		sum := sha512.Sum384(msg)
		digest = append(buf[:0:sha512.Size], sum[:]...)
	default:
		sum := sha512.Sum512(msg)
		digest = append(buf[:0:sha512.Size], sum[:]...)
	}
	switch a {
	case algES256, algES384, algES512:
		der := appendECDSADER(buf[sha512.Size:sha512.Size], sig)
		return ecdsa.VerifyASN1(pub.(*ecdsa.PublicKey), digest, der)
	case algRS256, algRS384, algRS512:
		return rsa.VerifyPKCS1v15(pub.(*rsa.PublicKey), a.hash(), digest, sig) == nil
	default:
		return rsa.VerifyPSS(pub.(*rsa.PublicKey), a.hash(), digest, sig, &pssOptions) == nil
	}
}

// maxECDSADER is the size of the DER encoding of a P-521 signature: a
// SEQUENCE (3-byte header) of two INTEGERs (2-byte header, a zero byte, 66
// bytes).
const maxECDSADER = 3 + 2*(2+1+66)

// appendECDSADER converts a JWS ECDSA signature, R||S, to the ASN.1 DER
// SEQUENCE of two INTEGERs that crypto/ecdsa verifies.
func appendECDSADER(b, sig []byte) []byte {
	r, s := sig[:len(sig)/2], sig[len(sig)/2:]
	n := derIntegerSize(r) + derIntegerSize(s)
	b = append(b, 0x30)
	if n >= 0x80 {
		b = append(b, 0x81)
	}
	b = append(b, byte(n))
	return appendDERInteger(appendDERInteger(b, r), s)
}

func trimZeros(x []byte) []byte {
	for len(x) > 0 && x[0] == 0 {
		x = x[1:]
	}
	return x
}

func derIntegerSize(x []byte) int {
	x = trimZeros(x)
	if len(x) == 0 || x[0] >= 0x80 {
		return 2 + len(x) + 1
	}
	return 2 + len(x)
}

// appendDERInteger appends the non-negative big-endian x as a DER INTEGER.
// Zero encodes as one zero byte; crypto/ecdsa then refuses it.
func appendDERInteger(b, x []byte) []byte {
	x = trimZeros(x)
	if len(x) == 0 || x[0] >= 0x80 {
		b = append(b, 0x02, byte(len(x)+1), 0)
	} else {
		b = append(b, 0x02, byte(len(x)))
	}
	return append(b, x...)
}
