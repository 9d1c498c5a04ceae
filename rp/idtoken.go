package rp

import (
	"crypto/sha256"
	"crypto/sha512"
	"crypto/subtle"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"hash"
	"math"
	"strings"
	"time"
	"unicode/utf8"

	"github.com/meshauth/meshauth/internal/strictjson"
)

// Bounds on what an ID Token may say.
const (
	// maxSubject is OpenID Connect Core §2's bound on "sub".
	maxSubject = 255
	// maxProfileClaim bounds name, preferred_username and email; a longer
	// value is dropped, as if absent.
	maxProfileClaim = 256
	// maxAMR bounds the "amr" values kept, and their length.
	maxAMR, maxAMRValue = 16, 64
)

// IDToken is a verified ID Token: who signed in, where, when and how.
type IDToken struct {
	Issuer    string
	Subject   string
	Audience  []string
	IssuedAt  time.Time
	ExpiresAt time.Time
	IDTokenClaims
	// AccessToken is the access token of the same token response, for the
	// provider's userinfo endpoint; "" if there was none.
	AccessToken string
	// Raw is the ID Token as received.
	Raw string
}

// IDTokenClaims are the claims of an ID Token beyond those every JWT has
// (OpenID Connect Core §2, §5.1).
type IDTokenClaims struct {
	Nonce           string
	AuthorizedParty string    // "azp"
	AuthTime        time.Time // "auth_time"; zero if absent
	AMR             []string  // "amr", at most maxAMR values
	AccessTokenHash string    // "at_hash"
	// Profile claims: dropped, as if absent, when not of their type or
	// too long; EmailVerified is true only for the JSON value true.
	Name              string
	PreferredUsername string
	Email             string
	EmailVerified     bool
}

// ParseIDTokenClaims reads the OpenID Connect claims of a claims set that
// package token verified (a JSON object without duplicate member names).
// Claims that decide whether the token is accepted (nonce, azp, auth_time,
// amr, at_hash) must have their type, or the token is refused; the profile
// claims are only information about the person and are dropped instead.
func ParseIDTokenClaims(raw []byte) (*IDTokenClaims, error) {
	names := []string{"nonce", "azp", "at_hash", "auth_time", "amr", "name", "preferred_username", "email", "email_verified"}
	v, err := strictjson.Members(raw, names...)
	if err != nil {
		return nil, fmt.Errorf("claims: %w", err)
	}
	c := &IDTokenClaims{}
	for i, p := range []*string{&c.Nonce, &c.AuthorizedParty, &c.AccessTokenHash} {
		if v[i] == nil {
			continue
		}
		s, ok := strictjson.String(v[i])
		if !ok {
			return nil, fmt.Errorf("%s is not a string", names[i])
		}
		*p = s
	}
	if v[3] != nil {
		var secs float64
		if json.Unmarshal(v[3], &secs) != nil || secs < 0 || secs >= 1<<53 || math.IsNaN(secs) {
			return nil, errors.New("auth_time is not a NumericDate")
		}
		c.AuthTime = time.Unix(int64(secs), 0)
	}
	if v[4] != nil {
		var amr []string
		if json.Unmarshal(v[4], &amr) != nil {
			return nil, errors.New("amr is not a list of strings")
		}
		for _, m := range amr {
			if len(c.AMR) == maxAMR {
				break
			}
			if m != "" && len(m) <= maxAMRValue && printable(m) {
				c.AMR = append(c.AMR, m)
			}
		}
	}
	for i, p := range []*string{&c.Name, &c.PreferredUsername, &c.Email} {
		if s, ok := strictjson.String(v[5+i]); ok && len(s) <= maxProfileClaim && utf8.ValidString(s) && !strings.ContainsFunc(s, isControl) {
			*p = s
		}
	}
	c.EmailVerified = string(v[8]) == "true"
	return c, nil
}

func isControl(r rune) bool { return r < 0x20 || r == 0x7f }

func printable(s string) bool {
	for i := 0; i < len(s); i++ {
		if s[i] < 0x21 || s[i] > 0x7e {
			return false
		}
	}
	return true
}

// accessTokenHashMatches reports whether atHash is the at_hash of
// accessToken for the ID Token idToken (OpenID Connect Core §3.1.3.8).
func accessTokenHashMatches(idToken, accessToken, atHash string) bool {
	want := AccessTokenHash(HeaderAlgorithm(idToken), accessToken)
	return want != "" && subtle.ConstantTimeCompare([]byte(want), []byte(atHash)) == 1
}

// AccessTokenHash returns the at_hash of accessToken in an ID Token signed
// with alg (OpenID Connect Core §3.3.2.11): the left half of the hash that
// alg names, base64url. For EdDSA (Ed25519, the only curve package token
// accepts) the hash is SHA-512, as the OpenID Connect working group
// settled for an algorithm whose name has none. It returns "" for an empty
// access token or an algorithm without a known hash.
func AccessTokenHash(alg, accessToken string) string {
	var h hash.Hash
	switch {
	case accessToken == "":
		return ""
	case alg == "EdDSA":
		h = sha512.New()
	case len(alg) == 5 && strings.HasSuffix(alg, "256"):
		h = sha256.New()
	case len(alg) == 5 && strings.HasSuffix(alg, "384"):
		h = sha512.New384()
	case len(alg) == 5 && strings.HasSuffix(alg, "512"):
		h = sha512.New()
	default:
		return ""
	}
	h.Write([]byte(accessToken))
	sum := h.Sum(nil)
	return base64.RawURLEncoding.EncodeToString(sum[:len(sum)/2])
}

// HeaderAlgorithm returns the "alg" of a JWS compact serialization whose
// signature was verified (or that the caller signed), "" if it cannot be
// read.
func HeaderAlgorithm(jws string) string {
	seg, _, _ := strings.Cut(jws, ".")
	hdr, err := base64.RawURLEncoding.DecodeString(seg)
	if err != nil {
		return ""
	}
	v, err := strictjson.Members(hdr, "alg")
	if err != nil {
		return ""
	}
	alg, _ := strictjson.String(v[0])
	return alg
}
