package token

// IsReference reports whether tok is a reference token rather than a JWT:
// a JWS compact serialization always has two dots (RFC 7515 §7.1), and the
// issuer's reference tokens, base64url, have none. It says which way a
// token is to be checked, never that it is valid.
func IsReference[T string | []byte](tok T) bool {
	for i := 0; i < len(tok); i++ {
		if tok[i] == '.' {
			return false
		}
	}
	return true
}
