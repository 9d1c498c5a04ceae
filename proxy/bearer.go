package proxy

// bearerToken extracts the token from an Authorization field value of the
// form "Bearer" 1*SP b64token (RFC 6750 §2.1; the scheme is
// case-insensitive, RFC 9110 §11.1). It returns codeAllowed with the token,
// codeUnsupportedScheme for a well-formed value of another scheme, or
// codeMalformed. It does not allocate.
func bearerToken(v []byte) ([]byte, code) {
	v = trimOWS(v)
	i := 0
	for i < len(v) && tchar(v[i]) {
		i++
	}
	if i == 0 || (i < len(v) && v[i] != ' ') {
		return nil, codeMalformed
	}
	if !equalFold(v[:i], "Bearer") {
		return nil, codeUnsupportedScheme
	}
	for i < len(v) && v[i] == ' ' {
		i++
	}
	tok := v[i:]
	if !token68(tok) {
		return nil, codeMalformed
	}
	return tok, codeAllowed
}

// token68 reports whether b is a token68 (RFC 9110 §11.2), the syntax of
// RFC 6750's b64token: 1*( ALPHA / DIGIT / "-" / "." / "_" / "~" / "+" /
// "/" ) *"=".
func token68(b []byte) bool {
	i := 0
	for i < len(b) && b68(b[i]) {
		i++
	}
	if i == 0 {
		return false
	}
	for i < len(b) && b[i] == '=' {
		i++
	}
	return i == len(b)
}

func b68(c byte) bool {
	return 'a' <= c && c <= 'z' || 'A' <= c && c <= 'Z' || '0' <= c && c <= '9' ||
		c == '-' || c == '.' || c == '_' || c == '~' || c == '+' || c == '/'
}

// tchar reports whether c may appear in a token (RFC 9110 §5.6.2).
func tchar(c byte) bool {
	switch c {
	case '!', '#', '$', '%', '&', '\'', '*', '+', '-', '.', '^', '_', '`', '|', '~':
		return true
	}
	return 'a' <= c && c <= 'z' || 'A' <= c && c <= 'Z' || '0' <= c && c <= '9'
}

// trimOWS removes optional whitespace around a field value (RFC 9110
// §5.5), which some intermediaries leave in place.
func trimOWS(v []byte) []byte {
	for len(v) > 0 && (v[0] == ' ' || v[0] == '\t') {
		v = v[1:]
	}
	for len(v) > 0 && (v[len(v)-1] == ' ' || v[len(v)-1] == '\t') {
		v = v[:len(v)-1]
	}
	return v
}

// equalFold compares ASCII case-insensitively without allocating.
func equalFold(b []byte, s string) bool {
	if len(b) != len(s) {
		return false
	}
	for i := range len(b) {
		if lower(b[i]) != lower(s[i]) {
			return false
		}
	}
	return true
}

func lower(c byte) byte {
	if 'A' <= c && c <= 'Z' {
		return c + 'a' - 'A'
	}
	return c
}
