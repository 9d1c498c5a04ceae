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
	// SubjectPrefix is the identity namespace of the issuer that vouched
	// for the token (Policy.SubjectPrefix): what qualifies its "sub" and
	// "client_id", and those of its actors, before anyone acts on them
	// (AppendQualified). Empty for an issuer whose names are local ones.
	SubjectPrefix string

	seen claimSet
}

// AppendQualified appends id, a "sub" or "client_id" of the token or of an
// actor in its "act" chain, qualified by c.SubjectPrefix: the form in
// which a service and a policy must see it, so that a federated
// provider's "web" never passes for the local "web". An empty id stays
// empty.
func (c *Claims) AppendQualified(dst []byte, id string) []byte {
	if id == "" {
		return dst
	}
	return append(append(dst, c.SubjectPrefix...), id...)
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

// AppendClaimText appends the text of the top-level claim name for a
// header field: a string as it is, a number as its JSON text, true or
// false, and an array of those with its elements joined by ",". It
// reports false, appending nothing, for a claim that is absent, null, an
// object, or an array holding any of those or another array. It reads
// c.Raw without allocating.
func (c *Claims) AppendClaimText(dst []byte, name string) ([]byte, bool) {
	var ns names
	p := newParser(c.Raw, &ns)
	if !p.findMember(name) {
		return dst, false
	}
	n := len(dst)
	if p.peek() != '[' {
		dst, ok := p.appendScalar(dst)
		return dst, ok
	}
	if p.openArray() != nil {
		return dst[:n], false
	}
	for i := 0; ; i++ {
		more, err := p.nextElement(i)
		if err != nil {
			return dst[:n], false
		}
		if !more {
			return dst, true
		}
		if i > 0 {
			dst = append(dst, ',')
		}
		var ok bool
		if dst, ok = p.appendScalar(dst); !ok {
			return dst[:n], false
		}
	}
}

// findMember reads the object at the start of p's data up to the value of
// its member name, and reports whether there is one. The data was
// validated when the claims were decoded: duplicates need no check.
func (p *parser) findMember(name string) bool {
	mark, err := p.openObject()
	if err != nil {
		return false
	}
	for {
		n, ok, err := p.nextName(mark)
		if err != nil || !ok {
			return false
		}
		var buf [64]byte
		if string(p.text(n, buf[:0])) == name {
			return true
		}
		if p.skipValue() != nil {
			return false
		}
	}
}

// appendScalar appends the text of a string, number or boolean value.
func (p *parser) appendScalar(dst []byte) ([]byte, bool) {
	switch c := p.peek(); {
	case c == '"':
		s, err := p.readString()
		if err != nil {
			return dst, false
		}
		if s.esc {
			return unescape(dst, p.raw(s)), true
		}
		return append(dst, p.raw(s)...), true
	case c == 't' || c == 'f':
		b, err := p.readBool()
		if err != nil {
			return dst, false
		}
		return strconv.AppendBool(dst, b), true
	case c == '-' || '0' <= c && c <= '9':
		num, err := p.readNumber()
		if err != nil {
			return dst, false
		}
		return append(dst, num...), true
	}
	return dst, false
}

// Value returns the top-level claim name decoded as Values decodes it, and
// whether it is present. Only that claim is decoded.
func (c *Claims) Value(name string) (any, bool, error) {
	var ns names
	p := newParser(c.Raw, &ns)
	switch {
	case name == "act" || name == "may_act":
		// Found already: the slices of Raw that Act and MayAct are.
		v := c.Act
		if name == "may_act" {
			v = c.MayAct
		}
		if v == nil {
			return nil, false, nil
		}
		p = newParser(v, &ns)
	case !p.findMember(name):
		return nil, false, nil
	}
	v, err := p.value()
	if err != nil {
		return nil, false, errClaimsJSON
	}
	return v, true, nil
}

// AppendActors appends the "sub" of each actor of the "act" chain (RFC 8693
// §4.1), the current actor first, then the prior ones it nests: "" for an
// actor without a string "sub".
func (c *Claims) AppendActors(dst []string) ([]string, error) {
	for act := c.Act; act != nil; {
		var ns names
		p := newParser(act, &ns)
		mark, err := p.openObject()
		if err != nil {
			return dst, errClaimsJSON
		}
		sub, next := "", []byte(nil)
		for {
			name, ok, err := p.nextName(mark)
			if err != nil {
				return dst, errClaimsJSON
			}
			if !ok {
				break
			}
			var buf [8]byte
			switch string(p.text(name, buf[:0])) {
			case "sub":
				if p.peek() == '"' {
					s, err := p.readString()
					if err != nil {
						return dst, errClaimsJSON
					}
					sub = string(text(act, s, nil))
					continue
				}
			case "act":
				if p.peek() == '{' {
					start := p.i
					if p.skipValue() != nil {
						return dst, errClaimsJSON
					}
					next = act[start:p.i]
					continue
				}
			}
			if p.skipValue() != nil {
				return dst, errClaimsJSON
			}
		}
		dst, act = append(dst, sub), next
	}
	return dst, nil
}

// Values returns every claim decoded as encoding/json decodes into an
// any: objects as map[string]any, arrays as []any, numbers as float64.
// Each call decodes c.Raw anew, into new memory.
func (c *Claims) Values() (map[string]any, error) {
	var ns names
	p := newParser(c.Raw, &ns)
	v, err := p.value()
	if err != nil {
		return nil, errClaimsJSON
	}
	m, ok := v.(map[string]any)
	if !ok {
		return nil, errClaimsJSON
	}
	return m, nil
}

// value reads any value into the types encoding/json would use.
func (p *parser) value() (any, error) {
	switch c := p.peek(); c {
	case '{':
		mark, err := p.openObject()
		if err != nil {
			return nil, err
		}
		m := map[string]any{}
		for {
			name, ok, err := p.nextName(mark)
			if err != nil {
				return nil, err
			}
			if !ok {
				return m, nil
			}
			v, err := p.value()
			if err != nil {
				return nil, err
			}
			m[string(p.text(name, nil))] = v
		}
	case '[':
		if err := p.openArray(); err != nil {
			return nil, err
		}
		a := []any{}
		for n := 0; ; n++ {
			ok, err := p.nextElement(n)
			if err != nil {
				return nil, err
			}
			if !ok {
				return a, nil
			}
			v, err := p.value()
			if err != nil {
				return nil, err
			}
			a = append(a, v)
		}
	case '"':
		s, err := p.readString()
		if err != nil {
			return nil, err
		}
		return string(p.text(s, nil)), nil
	case 't', 'f':
		return p.readBool()
	case 'n':
		if p.literal("null") {
			return nil, nil
		}
		return nil, errSyntax
	default:
		b, err := p.readNumber()
		if err != nil {
			return nil, err
		}
		return strconv.ParseFloat(string(b), 64)
	}
}
