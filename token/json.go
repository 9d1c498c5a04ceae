package token

import (
	"bytes"
	"errors"
	"unicode/utf8"
)

// This file holds a small strict JSON reader (RFC 8259) for JOSE headers,
// claims sets and JWK Sets. It exists, rather than encoding/json, for three
// reasons: it refuses duplicate member names at every depth (encoding/json
// keeps the last, other parsers keep the first: a classic parser
// differential), it matches member names exactly (encoding/json matches struct
// fields case-insensitively), and it reads the few members we need without
// reflection or allocation on the hot path. It also refuses what RFC 8259
// allows parsers to be lenient about: invalid UTF-8, unpaired surrogate
// escapes, a byte-order mark, trailing data.

// maxDepth bounds nesting so that hostile input cannot recurse deeply. An
// access token's deepest legitimate structure is a chain of "act" claims.
const maxDepth = 64

// smallObject is the member count up to which duplicate names are found by
// comparing every pair; larger objects use a map so that an attacker cannot
// make duplicate detection quadratic (the header is read before the
// signature is checked).
const smallObject = 32

var errSyntax = errors.New("invalid JSON")

// span is the raw text of a JSON string between its quotes, as offsets into
// the parser's data. It holds no pointers, so that slices of spans never
// force the data they refer to onto the heap.
type span struct {
	off, end int
	esc      bool // the raw text contains escapes and differs from its value
}

// parser reads one JSON value from data. The caller walks objects with
// openObject and nextName, arrays with openArray and nextElement, and reads
// or skips member values.
type parser struct {
	data  []byte
	i     int
	depth int
	names *names // member names of the objects being read
}

// names is a stack of member names, innermost object last. The first ones
// are stored inline so that the usual small header or claims set needs no
// allocation; the parser refers to it through a pointer so that growing the
// overflow slice does not make the compiler move the parsed data (often a
// stack buffer) to the heap.
type names struct {
	inline [16]span
	more   []span
	n      int
}

func (ns *names) push(s span) {
	if ns.n < len(ns.inline) {
		ns.inline[ns.n] = s
	} else {
		ns.more = append(ns.more[:ns.n-len(ns.inline)], s)
	}
	ns.n++
}

func (ns *names) at(i int) span {
	if i < len(ns.inline) {
		return ns.inline[i]
	}
	return ns.more[i-len(ns.inline)]
}

func newParser(data []byte, ns *names) parser {
	return parser{data: data, names: ns}
}

func (p *parser) skipSpace() {
	for p.i < len(p.data) {
		switch p.data[p.i] {
		case ' ', '\t', '\n', '\r':
			p.i++
		default:
			return
		}
	}
}

// peek skips white space and returns the next byte, or 0 at the end.
func (p *parser) peek() byte {
	p.skipSpace()
	if p.i < len(p.data) {
		return p.data[p.i]
	}
	return 0
}

// end reports an error unless only white space remains.
func (p *parser) end() error {
	if p.peek() != 0 || p.i != len(p.data) {
		return errSyntax
	}
	return nil
}

func (p *parser) consume(c byte) bool {
	if p.peek() == c {
		p.i++
		return true
	}
	return false
}

// openObject consumes '{' and returns a mark that identifies the object in
// later calls to nextName.
func (p *parser) openObject() (mark int, err error) {
	if !p.consume('{') {
		return 0, errSyntax
	}
	if p.depth++; p.depth > maxDepth {
		return 0, errSyntax
	}
	return p.names.n, nil
}

// nextName reads the name of the next member of the object opened at mark,
// and the ':' after it, leaving the value to be read. At the closing '}' it
// checks that no name was repeated and returns ok == false.
func (p *parser) nextName(mark int) (name span, ok bool, err error) {
	if p.names.n > mark {
		if p.consume('}') {
			return span{}, false, p.closeObject(mark)
		}
		if !p.consume(',') {
			return span{}, false, errSyntax
		}
	} else if p.consume('}') {
		return span{}, false, p.closeObject(mark)
	}
	if name, err = p.readString(); err != nil {
		return span{}, false, err
	}
	if !p.consume(':') {
		return span{}, false, errSyntax
	}
	p.names.push(name)
	return name, true, nil
}

func (p *parser) closeObject(mark int) error {
	p.depth--
	n := p.names.n
	p.names.n = mark
	switch {
	case n <= len(p.names.inline):
		names := p.names.inline[mark:n]
		for i := 1; i < len(names); i++ {
			for j := 0; j < i; j++ {
				if p.sameName(names[i], names[j]) {
					return errSyntax
				}
			}
		}
	case n-mark <= smallObject:
		for i := mark + 1; i < n; i++ {
			for j := mark; j < i; j++ {
				if p.sameName(p.names.at(i), p.names.at(j)) {
					return errSyntax
				}
			}
		}
	default:
		seen := make(map[string]struct{}, n-mark)
		for i := mark; i < n; i++ {
			k := string(p.text(p.names.at(i), nil))
			if _, dup := seen[k]; dup {
				return errSyntax
			}
			seen[k] = struct{}{}
		}
	}
	return nil
}

func (p *parser) sameName(a, b span) bool {
	if !a.esc && !b.esc {
		// Most pairs differ in length or first byte: decide those inline.
		return a.end-a.off == b.end-b.off &&
			(a.end == a.off || p.data[a.off] == p.data[b.off] && bytes.Equal(p.raw(a), p.raw(b)))
	}
	var ab, bb [64]byte
	return bytes.Equal(p.text(a, ab[:0]), p.text(b, bb[:0]))
}

// openArray consumes '['.
func (p *parser) openArray() error {
	if !p.consume('[') {
		return errSyntax
	}
	if p.depth++; p.depth > maxDepth {
		return errSyntax
	}
	return nil
}

// nextElement prepares to read the next element of an array of which n
// elements were read, and returns ok == false after consuming ']'.
func (p *parser) nextElement(n int) (ok bool, err error) {
	if p.consume(']') {
		p.depth--
		return false, nil
	}
	if n > 0 && !p.consume(',') {
		return false, errSyntax
	}
	return true, nil
}

// raw returns the undecoded text of s.
func (p *parser) raw(s span) []byte {
	return p.data[s.off:s.end]
}

// text returns the value of the string s: its raw text when it has no
// escapes, else its decoded value appended to buf.
func (p *parser) text(s span, buf []byte) []byte {
	return text(p.data, s, buf)
}

// text returns the value of the string s of data. Callers whose result
// outlives the parser use it rather than the method: escape analysis does
// not tell the parser's fields apart, and would move the names stack to the
// heap along with the result.
func text(data []byte, s span, buf []byte) []byte {
	if !s.esc {
		return data[s.off:s.end]
	}
	return unescape(buf, data[s.off:s.end])
}

// readString reads a string value and returns its span. The text is fully
// validated here, so that unescape never meets an error.
func (p *parser) readString() (span, error) {
	if !p.consume('"') {
		return span{}, errSyntax
	}
	s := span{off: p.i}
	d := p.data
	for i := p.i; i < len(d); {
		if plain[d[i]] {
			i++
			continue
		}
		c := d[i]
		switch {
		case c == '"':
			s.end = i
			p.i = i + 1
			return s, nil
		case c < 0x20:
			return span{}, errSyntax
		case c == '\\':
			s.esc = true
			if i+1 >= len(d) {
				return span{}, errSyntax
			}
			switch d[i+1] {
			case '"', '\\', '/', 'b', 'f', 'n', 'r', 't':
				i += 2
			case 'u':
				r, ok := hex4(d[i+2:])
				if !ok {
					return span{}, errSyntax
				}
				i += 6
				if r >= 0xDC00 && r <= 0xDFFF {
					return span{}, errSyntax // low surrogate without a high one
				}
				if r >= 0xD800 && r <= 0xDBFF {
					if i+1 >= len(d) || d[i] != '\\' || d[i+1] != 'u' {
						return span{}, errSyntax
					}
					r2, ok := hex4(d[i+2:])
					if !ok || r2 < 0xDC00 || r2 > 0xDFFF {
						return span{}, errSyntax
					}
					i += 6
				}
			default:
				return span{}, errSyntax
			}
		case c < utf8.RuneSelf:
			i++
		default:
			r, n := utf8.DecodeRune(d[i:])
			if r == utf8.RuneError && n == 1 {
				return span{}, errSyntax
			}
			i += n
		}
	}
	return span{}, errSyntax
}

// plain marks the bytes that stand for themselves in a JSON string: the
// printable ASCII characters but '"' and '\\'.
var plain = func() (t [256]bool) {
	for c := 0x20; c < 0x80; c++ {
		t[c] = c != '"' && c != '\\'
	}
	return t
}()

// hex4 decodes the four hexadecimal digits at the start of b.
func hex4(b []byte) (rune, bool) {
	if len(b) < 4 {
		return 0, false
	}
	var r rune
	for _, c := range b[:4] {
		switch {
		case c >= '0' && c <= '9':
			c -= '0'
		case c >= 'a' && c <= 'f':
			c -= 'a' - 10
		case c >= 'A' && c <= 'F':
			c -= 'A' - 10
		default:
			return 0, false
		}
		r = r<<4 | rune(c)
	}
	return r, true
}

// unescape appends the value of the validated raw string text b to buf.
func unescape(buf, b []byte) []byte {
	for i := 0; i < len(b); {
		c := b[i]
		if c != '\\' {
			buf = append(buf, c)
			i++
			continue
		}
		switch b[i+1] {
		case 'b':
			buf = append(buf, '\b')
		case 'f':
			buf = append(buf, '\f')
		case 'n':
			buf = append(buf, '\n')
		case 'r':
			buf = append(buf, '\r')
		case 't':
			buf = append(buf, '\t')
		case 'u':
			r, _ := hex4(b[i+2:])
			if r >= 0xD800 && r <= 0xDBFF {
				r2, _ := hex4(b[i+8:])
				r = 0x10000 + (r-0xD800)<<10 + (r2 - 0xDC00)
				i += 6
			}
			buf = utf8.AppendRune(buf, r)
			i += 6
			continue
		default: // '"', '\\', '/'
			buf = append(buf, b[i+1])
		}
		i += 2
	}
	return buf
}

// readNumber reads a number and returns its text, which has the JSON number
// grammar: -?(0|[1-9][0-9]*)(\.[0-9]+)?([eE][+-]?[0-9]+)?
func (p *parser) readNumber() ([]byte, error) {
	p.skipSpace()
	d, start := p.data, p.i
	i := start
	if i < len(d) && d[i] == '-' {
		i++
	}
	switch {
	case i < len(d) && d[i] == '0':
		i++
	case i < len(d) && d[i] >= '1' && d[i] <= '9':
		i = digits(d, i)
	default:
		return nil, errSyntax
	}
	if i < len(d) && d[i] == '.' {
		j := digits(d, i+1)
		if j == i+1 {
			return nil, errSyntax
		}
		i = j
	}
	if i < len(d) && (d[i] == 'e' || d[i] == 'E') {
		i++
		if i < len(d) && (d[i] == '+' || d[i] == '-') {
			i++
		}
		j := digits(d, i)
		if j == i {
			return nil, errSyntax
		}
		i = j
	}
	p.i = i
	return d[start:i], nil
}

func digits(d []byte, i int) int {
	for i < len(d) && d[i] >= '0' && d[i] <= '9' {
		i++
	}
	return i
}

// readBool reads true or false.
func (p *parser) readBool() (bool, error) {
	switch {
	case p.literal("true"):
		return true, nil
	case p.literal("false"):
		return false, nil
	}
	return false, errSyntax
}

func (p *parser) literal(lit string) bool {
	p.skipSpace()
	if bytes.HasPrefix(p.data[p.i:], []byte(lit)) {
		p.i += len(lit)
		return true
	}
	return false
}

// skipValue reads and validates any value.
func (p *parser) skipValue() error {
	switch p.peek() {
	case '{':
		mark, err := p.openObject()
		if err != nil {
			return err
		}
		for {
			_, ok, err := p.nextName(mark)
			if err != nil || !ok {
				return err
			}
			if err := p.skipValue(); err != nil {
				return err
			}
		}
	case '[':
		if err := p.openArray(); err != nil {
			return err
		}
		for n := 0; ; n++ {
			ok, err := p.nextElement(n)
			if err != nil || !ok {
				return err
			}
			if err := p.skipValue(); err != nil {
				return err
			}
		}
	case '"':
		_, err := p.readString()
		return err
	case 't', 'f':
		_, err := p.readBool()
		return err
	case 'n':
		if p.literal("null") {
			return nil
		}
		return errSyntax
	default:
		_, err := p.readNumber()
		return err
	}
}
