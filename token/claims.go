package token

import (
	"encoding/json"
	"math"
	"strconv"
	"time"
)

// Claims are the claims of a verified token that meshauth uses (RFC 7519
// §4.1, RFC 9068 §2.2, RFC 8693 §4). Other claims are in Raw.
type Claims struct {
	Issuer    string    // "iss"
	Subject   string    // "sub"
	Audience  []string  // "aud"; a single string becomes a one-element slice
	ExpiresAt time.Time // "exp"
	NotBefore time.Time // "nbf"; zero if absent
	IssuedAt  time.Time // "iat"; zero if absent
	ID        string    // "jti"
	ClientID  string    // "client_id"
	Scope     string    // "scope": space-separated scope tokens (RFC 6749 §3.3)
	// SessionID is "sid": the user authorization (grant) a token descends
	// from, so that revoking the grant reaches its JWTs; empty if absent.
	SessionID string
	// Act is the "act" claim (RFC 8693 §4.1), the JSON object naming the
	// current actor and, nested, the prior ones; nil if absent.
	Act json.RawMessage
	// MayAct is the "may_act" claim (RFC 8693 §4.4); nil if absent.
	MayAct json.RawMessage
	// Raw is the claims set as signed: a JSON object without duplicate
	// member names. Act and MayAct are slices of it.
	Raw []byte

	seen claimSet
}

// HasScope reports whether scope is one of the space-separated tokens of
// c.Scope. It does not allocate.
func (c *Claims) HasScope(scope string) bool {
	if scope == "" {
		return false
	}
	s := c.Scope
	for len(s) > 0 {
		i := 0
		for i < len(s) && s[i] != ' ' {
			i++
		}
		if s[:i] == scope {
			return true
		}
		if i == len(s) {
			break
		}
		s = s[i+1:]
	}
	return false
}

// claimSet records which claims with presence rules were present.
type claimSet uint8

const (
	claimIss claimSet = 1 << iota
	claimAud
	claimExp
	claimNbf
	claimIat
)

func (c *Claims) has(s claimSet) bool { return c.seen&s != 0 }

var (
	errClaimType   = &Error{Malformed, "claim of the wrong type"}
	errNumericDate = &Error{Malformed, "NumericDate out of range"}
)

// decodeClaims reads the claims set raw into c, reusing c.Audience's memory.
// It checks JSON syntax and claim types but no policy.
func decodeClaims(raw []byte, c *Claims) error {
	aud := c.Audience[:0]
	*c = Claims{Raw: raw}
	// One copy of the claims as a string: the string claims are slices of
	// it unless they contain escapes.
	str := string(raw)
	var ns names
	p := newParser(raw, &ns)
	mark, err := p.openObject()
	if err != nil {
		return errClaimsJSON
	}
	for {
		name, ok, err := p.nextName(mark)
		if err != nil {
			return errClaimsJSON
		}
		if !ok {
			break
		}
		var buf [16]byte
		switch string(p.text(name, buf[:0])) {
		case "iss":
			c.Issuer, err = p.stringClaim(str)
			c.seen |= claimIss
		case "sub":
			c.Subject, err = p.stringClaim(str)
		case "aud":
			aud, err = p.audience(str, aud)
			c.Audience = aud
			c.seen |= claimAud
		case "exp":
			c.ExpiresAt, err = p.numericDate()
			c.seen |= claimExp
		case "nbf":
			c.NotBefore, err = p.numericDate()
			c.seen |= claimNbf
		case "iat":
			c.IssuedAt, err = p.numericDate()
			c.seen |= claimIat
		case "jti":
			c.ID, err = p.stringClaim(str)
		case "client_id":
			c.ClientID, err = p.stringClaim(str)
		case "scope":
			c.Scope, err = p.stringClaim(str)
		case "sid":
			c.SessionID, err = p.stringClaim(str)
		case "act":
			c.Act, err = p.objectClaim(raw)
		case "may_act":
			c.MayAct, err = p.objectClaim(raw)
		default:
			if p.skipValue() != nil {
				err = errClaimsJSON
			}
		}
		if err != nil {
			return err
		}
	}
	if p.end() != nil {
		return errClaimsJSON
	}
	return nil
}

// stringClaim reads a string value, which it returns as a slice of str,
// the parser's data as a string, unless it must decode escapes.
func (p *parser) stringClaim(str string) (string, error) {
	if p.peek() != '"' {
		return "", errClaimType
	}
	s, err := p.readString()
	if err != nil {
		return "", errClaimsJSON
	}
	if s.esc {
		return string(p.text(s, nil)), nil
	}
	return str[s.off:s.end], nil
}

// audience reads "aud": a string or an array of strings (RFC 7519 §4.1.3).
func (p *parser) audience(str string, aud []string) ([]string, error) {
	if p.peek() != '[' {
		s, err := p.stringClaim(str)
		return append(aud, s), err
	}
	if p.openArray() != nil {
		return aud, errClaimsJSON
	}
	for n := 0; ; n++ {
		ok, err := p.nextElement(n)
		if err != nil {
			return aud, errClaimsJSON
		}
		if !ok {
			return aud, nil
		}
		s, err := p.stringClaim(str)
		if err != nil {
			return aud, err
		}
		aud = append(aud, s)
	}
}

// maxNumericDate bounds NumericDate values to those a float64 holds exactly
// as whole seconds, some 285 million years either side of 1970; anything
// beyond is an issuer bug or an attack on time arithmetic.
const maxNumericDate = 1 << 53

// numericDate reads a NumericDate (RFC 7519 §2): seconds since the epoch,
// possibly fractional.
func (p *parser) numericDate() (time.Time, error) {
	if c := p.peek(); c != '-' && (c < '0' || c > '9') {
		return time.Time{}, errClaimType
	}
	b, err := p.readNumber()
	if err != nil {
		return time.Time{}, errClaimsJSON
	}
	if sec, ok := wholeSeconds(b); ok {
		return time.Unix(sec, 0), nil
	}
	f, err := strconv.ParseFloat(string(b), 64)
	if err != nil || math.Abs(f) >= maxNumericDate {
		return time.Time{}, errNumericDate
	}
	sec := math.Floor(f)
	return time.Unix(int64(sec), int64((f-sec)*1e9)), nil
}

// wholeSeconds is the fast path of numericDate, for the usual value: a
// non-negative integer below maxNumericDate.
func wholeSeconds(b []byte) (int64, bool) {
	if len(b) > 15 {
		return 0, false
	}
	var sec int64
	for _, c := range b {
		if c < '0' || c > '9' {
			return 0, false
		}
		sec = sec*10 + int64(c-'0')
	}
	return sec, true
}

// objectClaim reads a JSON object and returns its text, a slice of data,
// the parser's data.
func (p *parser) objectClaim(data []byte) (json.RawMessage, error) {
	if p.peek() != '{' {
		return nil, errClaimType
	}
	start := p.i
	if p.skipValue() != nil {
		return nil, errClaimsJSON
	}
	return data[start:p.i:p.i], nil
}
