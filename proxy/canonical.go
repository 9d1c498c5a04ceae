package proxy

import "bytes"

// This file holds the one canonicalizer of request paths. Every entry point
// judges a request on the path it returns, and the Sidecar forwards that
// same path (Policy.ForwardPath), so that a path cannot be judged as one
// resource and served as another: the class of "/health/..;/admin" (Tomcat,
// Jetty and Spring read "..;" as "..") and of "%2e%2e", "%2f" and
// double-encoded paths that an upstream decodes differently.

// maxPathLength bounds the paths judged, as sent and in canonical form:
// longer ones are refused with 414 (RFC 9110 §15.5.15). The Sidecar's read buffer admits longer request
// lines, and ext_authz's gRPC messages far longer ones.
const maxPathLength = 8 << 10

// pathFault says why a path cannot be made safe; pathOK if it can.
type pathFault uint8

const (
	pathOK pathFault = iota
	pathNotAbsolute
	pathMalformedPercent
	pathDoubleEncoded
	pathEncodedSlash
	pathBackslash
	pathEncodedSemicolon
	pathControl
	pathDotParams
	pathAmbiguousDots
	pathTooLong
	numPathFaults
)

// canonicalPath turns raw, the path of a request target (RFC 9112 §3.2,
// without the query), into two forms:
//
//   - canon, the canonical path, which the Sidecar forwards: percent-encoded
//     unreserved characters decoded and other percent-encodings in upper
//     case (RFC 3986 §6.2.2.1-2), bytes that RFC 3986 does not allow in a
//     path percent-encoded, dot segments removed (§5.2.4), repeated slashes
//     merged; path parameters (";...") kept.
//   - key, the path as routes match it: canon with every percent-encoding
//     decoded but those of '/' and '\' (which stay three bytes, so that they
//     never separate segments), and the parameters of each segment
//     removed.
//
// It refuses what the canonical form cannot make safe, because upstreams
// disagree about what it means: a malformed percent-encoding; a
// double-encoded one ("%252e"); an encoded '/' or '\' unless encodedSlashes;
// a '\'; an encoded ';' ("%3B", a parameter delimiter to some decoders and
// data to others); a control character, raw or encoded; a dot or empty
// segment with parameters ("..;", ".;x", "/;x/"); a ".." that would remove
// an empty segment ("/a//../b" is "/a/b" by RFC 3986 and "/b" to servers
// that merge slashes first); and a path longer than maxPathLength.
//
// Both forms are appended to the given buffers, which are reused: it
// allocates only when they must grow.
func canonicalPath(canonBuf, keyBuf, raw []byte, encodedSlashes bool) (canon, key []byte, fault pathFault) {
	canon, key = canonBuf[:0], keyBuf[:0]
	if len(raw) == 0 {
		raw = slash // an absolute-form target without a path
	}
	if raw[0] != '/' {
		return canon, key, pathNotAbsolute
	}
	if len(raw) > maxPathLength {
		return canon, key, pathTooLong
	}
	// Each segment is appended as "/" and its text, an empty segment as
	// "/" alone, so that ".." can tell whether it removes one; repeated
	// slashes are merged at the end.
	last, empties := false, false
	for rest := raw[1:]; !last; {
		seg := rest
		if i := bytes.IndexByte(rest, '/'); i >= 0 {
			seg, rest = rest[:i], rest[i+1:]
		} else {
			last = true
		}
		segStart, keyStart := len(canon), len(key)
		canon, key = append(canon, '/'), append(key, '/')
		var params bool
		canon, key, params, fault = appendSegment(canon, key, seg, encodedSlashes)
		if fault != pathOK {
			return canon, key, fault
		}
		name := key[keyStart+1:]
		dots := dotSegment(name)
		switch {
		case params && (dots > 0 || len(name) == 0):
			return canon, key, pathDotParams
		case dots == 0:
			empties = empties || len(name) == 0 && !last
			continue
		}
		// A dot segment: drop it, and for "..", the segment before.
		canon, key = canon[:segStart], key[:keyStart]
		if dots == 2 && len(canon) > 0 {
			i := bytes.LastIndexByte(canon, '/')
			j := bytes.LastIndexByte(key, '/')
			if i == len(canon)-1 {
				return canon, key, pathAmbiguousDots // it would remove an empty segment
			}
			canon, key = canon[:i], key[:j]
		}
		if last {
			// RFC 3986 §5.2.4 2.B-C: "/a/." and "/a/b/.." end in "/".
			canon, key = append(canon, '/'), append(key, '/')
		}
	}
	if empties {
		canon, key = mergeSlashes(canon), mergeSlashes(key)
	}
	if len(canon) == 0 {
		canon, key = append(canon, '/'), append(key, '/')
	}
	if bytes.Contains(canon, pct25) && doubleEncoded(canon) {
		return canon, key, pathDoubleEncoded
	}
	if len(canon) > maxPathLength {
		return canon, key, pathTooLong // grown by percent-encoding
	}
	return canon, key, pathOK
}

var (
	slash = []byte("/")
	pct25 = []byte("%25")
)

// Classes of the bytes of a path, for appendSegment.
const (
	classPlain     = iota // itself in both forms: pchar but '%' and ';'
	classEncoded          // percent-encoded in the canonical form
	classPercent          // starts a percent-encoding
	classSemicolon        // starts a segment's parameters
	classControl
	classBackslash
)

var pathClass = func() (t [256]uint8) {
	for c := range 256 {
		switch {
		case c == '%':
			t[c] = classPercent
		case c == ';':
			t[c] = classSemicolon
		case c < 0x20 || c == 0x7f:
			t[c] = classControl
		case c == '\\':
			t[c] = classBackslash
		case pathChar(byte(c)):
			t[c] = classPlain
		default:
			t[c] = classEncoded
		}
	}
	return t
}()

// appendSegment appends the canonical form and the key of one segment.
// params reports whether it has parameters, which the key leaves out.
func appendSegment(canon, key, seg []byte, encodedSlashes bool) (_, _ []byte, params bool, fault pathFault) {
	for i := 0; i < len(seg); i++ {
		switch pathClass[seg[i]] {
		case classPlain:
			// A run of them, copied at once: the usual segment is one.
			j := i + 1
			for j < len(seg) && pathClass[seg[j]] == classPlain {
				j++
			}
			canon = append(canon, seg[i:j]...)
			if !params {
				key = append(key, seg[i:j]...)
			}
			i = j - 1
		case classEncoded:
			canon = appendEncoded(canon, seg[i])
			if !params {
				key = append(key, seg[i])
			}
		case classSemicolon:
			params = true
			canon = append(canon, ';')
		case classControl:
			return canon, key, params, pathControl
		case classBackslash:
			return canon, key, params, pathBackslash
		case classPercent:
			if i+2 >= len(seg) {
				return canon, key, params, pathMalformedPercent
			}
			hi, ok1 := unhex(seg[i+1])
			lo, ok2 := unhex(seg[i+2])
			if !ok1 || !ok2 {
				return canon, key, params, pathMalformedPercent
			}
			i += 2
			v := hi<<4 | lo
			switch {
			case unreserved(v):
				canon = append(canon, v)
			case v == '/' || v == '\\':
				if !encodedSlashes {
					return canon, key, params, pathEncodedSlash
				}
				// Data within a segment, never a separator: the key keeps
				// it encoded too.
				canon = appendEncoded(canon, v)
				if !params {
					key = appendEncoded(key, v)
				}
				continue
			case v == ';':
				return canon, key, params, pathEncodedSemicolon
			case v < 0x20 || v == 0x7f:
				return canon, key, params, pathControl
			default:
				canon = appendEncoded(canon, v)
			}
			if !params {
				key = append(key, v)
			}
		}
	}
	return canon, key, params, pathOK
}

// dotSegment returns 1 for ".", 2 for "..", else 0.
func dotSegment(name []byte) int {
	switch string(name) {
	case ".":
		return 1
	case "..":
		return 2
	}
	return 0
}

// mergeSlashes replaces every run of '/' in p by one, in place.
func mergeSlashes(p []byte) []byte {
	out := p[:0]
	for i, c := range p {
		if c == '/' && i > 0 && p[i-1] == '/' {
			continue
		}
		out = append(out, c)
	}
	return out
}

// doubleEncoded reports whether the canonical path p holds a
// percent-encoded '%' followed by two hexadecimal digits: a second decoding,
// which some upstreams make, would turn it into another character
// ("%252e" into "."), unseen by the routes.
func doubleEncoded(p []byte) bool {
	for i := 0; i+4 < len(p); i++ {
		if p[i] == '%' && p[i+1] == '2' && p[i+2] == '5' && isHex(p[i+3]) && isHex(p[i+4]) {
			return true
		}
	}
	return false
}

// unreserved reports whether c is an unreserved character (RFC 3986 §2.3).
func unreserved(c byte) bool {
	return 'a' <= c && c <= 'z' || 'A' <= c && c <= 'Z' || '0' <= c && c <= '9' ||
		c == '-' || c == '.' || c == '_' || c == '~'
}

// pathChar reports whether c stands for itself in a path segment: pchar
// (RFC 3986 §3.3) but percent-encodings and ';', which this file handles.
func pathChar(c byte) bool {
	switch c {
	case '!', '$', '&', '\'', '(', ')', '*', '+', ',', '=', ':', '@':
		return true
	}
	return unreserved(c)
}

const upperHex = "0123456789ABCDEF"

func appendEncoded(b []byte, c byte) []byte {
	return append(b, '%', upperHex[c>>4], upperHex[c&15])
}

func isHex(c byte) bool {
	_, ok := unhex(c)
	return ok
}

func unhex(c byte) (byte, bool) {
	switch {
	case '0' <= c && c <= '9':
		return c - '0', true
	case 'a' <= c && c <= 'f':
		return c - 'a' + 10, true
	case 'A' <= c && c <= 'F':
		return c - 'A' + 10, true
	}
	return 0, false
}
