package issuer

import (
	"crypto/sha256"
	"crypto/subtle"
	"encoding/base64"
)

// pkceS256 is the only code_challenge_method accepted: "plain" sends the
// verifier itself through the browser, which is what PKCE protects it from
// (RFC 9700 §2.1.1).
const pkceS256 = "S256"

// codeChallengeLen is the length of an S256 challenge: a SHA-256 digest in
// unpadded base64url (RFC 7636 §4.2).
const codeChallengeLen = 43

// checkCodeChallenge validates the PKCE parameters of an authorization
// request (RFC 7636 §4.3). Public clients must send an S256 challenge; a
// confidential client may omit PKCE, but what it sends must be S256.
func checkCodeChallenge(challenge, method string, public bool) *oauthError {
	switch {
	case challenge == "" && method != "":
		return errInvalidRequest("code_challenge_method without code_challenge")
	case challenge == "" && public:
		return errInvalidRequest("PKCE is required for public clients: send code_challenge with code_challenge_method=S256 (RFC 7636)")
	case challenge == "":
		return nil
	case method == "":
		// RFC 7636 §4.3 defaults an absent method to plain, which is refused.
		return errInvalidRequest("code_challenge_method is required and must be S256")
	case method != pkceS256:
		return errInvalidRequest("code_challenge_method must be S256; plain is not accepted")
	case len(challenge) != codeChallengeLen || !isBase64URL(challenge):
		return errInvalidRequest("code_challenge must be the unpadded base64url SHA-256 of the code_verifier (43 characters)")
	}
	return nil
}

// validCodeVerifier reports whether v has RFC 7636 §4.1's form: 43 to 128
// unreserved characters.
func validCodeVerifier(v string) bool {
	if len(v) < 43 || len(v) > 128 {
		return false
	}
	for i := 0; i < len(v); i++ {
		if c := v[i]; !isAlnum(c) && c != '-' && c != '.' && c != '_' && c != '~' {
			return false
		}
	}
	return true
}

// verifierMatches reports whether verifier is the S256 preimage of
// challenge (RFC 7636 §4.6), comparing in constant time.
func verifierMatches(verifier, challenge string) bool {
	sum := sha256.Sum256([]byte(verifier))
	want := base64.RawURLEncoding.EncodeToString(sum[:])
	return subtle.ConstantTimeCompare([]byte(want), []byte(challenge)) == 1
}

func isBase64URL(s string) bool {
	for i := 0; i < len(s); i++ {
		if c := s[i]; !isAlnum(c) && c != '-' && c != '_' {
			return false
		}
	}
	return true
}

func isAlnum(c byte) bool {
	return 'a' <= c && c <= 'z' || 'A' <= c && c <= 'Z' || '0' <= c && c <= '9'
}
