package audit

import (
	"crypto/sha256"
	"encoding/hex"
	"strings"
	"time"
	"unicode/utf8"
)

// Caps on the bytes of a written value; a longer one is cut at a UTF-8
// boundary and its record marked "truncated":true. They bound a record's
// line, and keep a caller's mistake from writing a whole request.
const (
	maxName      = 256  // grant, actor, subject, audience, operation
	maxText      = 1024 // scope, reason
	maxRequestID = 128
)

// appendBody appends the members of ev's record, without the braces and
// without the chain's members, to dst. The order is fixed, so the bytes of
// an event are always the same.
func appendBody(dst []byte, ev *Event) []byte {
	truncated := false
	dst = append(dst, `"time":"`...)
	dst = ev.Time.UTC().AppendFormat(dst, time.RFC3339Nano)
	dst = append(dst, `","type":"`...)
	dst = append(dst, ev.Type.String()...)
	dst = append(dst, `","outcome":"`...)
	dst = append(dst, ev.Outcome.String()...)
	dst = append(dst, '"')
	dst = appendMember(dst, "grant", ev.Grant, maxName, &truncated)
	if k := ev.Actor.Kind; k != NoActor && int(k) < len(actorKindNames) {
		dst = append(dst, `,"actor_kind":"`...)
		dst = append(dst, actorKindNames[k]...)
		dst = append(dst, '"')
	}
	dst = appendMember(dst, "actor", ev.Actor.ID, maxName, &truncated)
	dst = appendMember(dst, "subject", ev.Subject, maxName, &truncated)
	dst = appendMember(dst, "audience", ev.Audience, maxName, &truncated)
	dst = appendMember(dst, "scope", ev.Scope, maxText, &truncated)
	dst = appendMember(dst, "operation", ev.Operation, maxName, &truncated)
	dst = appendMember(dst, "reason", ev.Reason, maxText, &truncated)
	if ev.JTI != "" {
		sum := sha256.Sum256([]byte(ev.JTI))
		dst = append(dst, `,"jti_hash":"`...)
		dst = hex.AppendEncode(dst, sum[:])
		dst = append(dst, '"')
	}
	if ev.RemoteAddr.IsValid() {
		dst = append(dst, `,"remote_addr":"`...)
		dst = ev.RemoteAddr.AppendTo(dst)
		dst = append(dst, '"')
	}
	if validRequestID(ev.RequestID) {
		dst = appendMember(dst, "request_id", ev.RequestID, maxRequestID, &truncated)
	}
	if ev.TraceID != (TraceID{}) {
		dst = append(dst, `,"trace_id":"`...)
		dst = hex.AppendEncode(dst, ev.TraceID[:])
		dst = append(dst, '"')
	}
	if truncated {
		dst = append(dst, `,"truncated":true`...)
	}
	return dst
}

// appendMember appends ,"name":"v" unless v is empty. A value shaped like
// a JWT is written as "[redacted]": no field of an Event holds a token, so
// one there is a caller's mistake that must not reach the trail.
func appendMember(dst []byte, name, v string, limit int, truncated *bool) []byte {
	if v == "" {
		return dst
	}
	dst = append(dst, ',', '"')
	dst = append(dst, name...)
	dst = append(dst, '"', ':')
	if looksLikeJWT(v) {
		return append(dst, `"[redacted]"`...)
	}
	if len(v) > limit {
		for limit > 0 && !utf8.RuneStart(v[limit]) {
			limit--
		}
		v = v[:limit]
		*truncated = true
	}
	return appendString(dst, v)
}

// looksLikeJWT reports whether s contains a JWS or JWE compact
// serialization: base64url segments separated by at least two dots, the
// first starting with the encoding of `{"` (RFC 7515 §7.1, RFC 7516 §7.1).
func looksLikeJWT(s string) bool {
	for {
		i := strings.Index(s, "eyJ")
		if i < 0 {
			return false
		}
		s = s[i:]
		n, dots := 0, 0
		for ; n < len(s) && (isBase64URL(s[n]) || s[n] == '.'); n++ {
			if s[n] == '.' {
				dots++
			}
		}
		if dots >= 2 {
			return true
		}
		s = s[n:]
	}
}

func isBase64URL(c byte) bool {
	return 'A' <= c && c <= 'Z' || 'a' <= c && c <= 'z' || '0' <= c && c <= '9' || c == '-' || c == '_'
}

// validRequestID reports whether id is one to write: 1 to 128 visible
// ASCII characters.
func validRequestID(id string) bool {
	if id == "" || len(id) > maxRequestID {
		return false
	}
	for i := range len(id) {
		if id[i] <= ' ' || id[i] > '~' {
			return false
		}
	}
	return true
}

// appendString appends s as a JSON string (RFC 8259 §7). Control
// characters, U+2028 and U+2029 are escaped, invalid UTF-8 becomes U+FFFD,
// so that a record is always one valid line.
func appendString(dst []byte, s string) []byte {
	const hexDigits = "0123456789abcdef"
	dst = append(dst, '"')
	start := 0
	for i := 0; i < len(s); {
		c := s[i]
		if c < utf8.RuneSelf {
			if c >= ' ' && c != '"' && c != '\\' {
				i++
				continue
			}
			dst = append(dst, s[start:i]...)
			switch c {
			case '"', '\\':
				dst = append(dst, '\\', c)
			case '\n':
				dst = append(dst, '\\', 'n')
			case '\r':
				dst = append(dst, '\\', 'r')
			case '\t':
				dst = append(dst, '\\', 't')
			default:
				dst = append(dst, '\\', 'u', '0', '0', hexDigits[c>>4], hexDigits[c&0xf])
			}
			i++
			start = i
			continue
		}
		r, size := utf8.DecodeRuneInString(s[i:])
		switch {
		case r == utf8.RuneError && size == 1:
			dst = append(dst, s[start:i]...)
			dst = append(dst, `\ufffd`...)
		case r == '\u2028' || r == '\u2029':
			dst = append(dst, s[start:i]...)
			dst = append(dst, '\\', 'u', '2', '0', '2', hexDigits[r&0xf])
		default:
			i += size
			continue
		}
		i += size
		start = i
	}
	dst = append(dst, s[start:]...)
	return append(dst, '"')
}
