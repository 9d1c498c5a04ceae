package proxy

import (
	"bytes"
	"regexp"
	"strings"
	"testing"
)

// The grammar of bearerToken, written independently as regular
// expressions: credentials = auth-scheme [ 1*SP token68 ] (RFC 9110 §11.4,
// RFC 6750 §2.1), with optional whitespace around the field value.
var (
	schemeRE = regexp.MustCompile("^[ \t]*([!#$%&'*+\\-.^_`|~0-9A-Za-z]+)(?: |[ \t]*$)")
	bearerRE = regexp.MustCompile("^[ \t]*(?i:bearer) +([A-Za-z0-9\\-._~+/]+=*)[ \t]*$")
)

func FuzzBearer(f *testing.F) {
	for _, s := range []string{
		"Bearer " + validToken(),
		"bearer abc", "BEARER  abc==", " Bearer abc\t", "Bearer", "Bearer ", "Bearer a b",
		"Bearer a,Bearer b", "Bearer\tabc", "Basic YWxhZGRpbjpvcGVuc2VzYW1l", "Basic", "Digest a=b, c=d",
		"", " ", "Bearer =abc", "Bearer abc=d", "Bear er abc", "Bearer\x00abc", "Bearer abc\r\n",
		"Bearer ~+/-._", "Bearer é",
	} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, v []byte) {
		in := bytes.Clone(v)
		tok, cd := bearerToken(v)
		if !bytes.Equal(in, v) {
			t.Fatal("input modified")
		}
		wantCode, wantTok := codeMalformed, []byte(nil)
		if m := bearerRE.FindSubmatch(v); m != nil {
			wantCode, wantTok = codeAllowed, m[1]
		} else if m := schemeRE.FindSubmatch(v); m != nil && !strings.EqualFold(string(m[1]), "bearer") {
			wantCode = codeUnsupportedScheme
		}
		if cd != wantCode || !bytes.Equal(tok, wantTok) {
			t.Fatalf("bearerToken(%q) = %q, %d; want %q, %d", v, tok, cd, wantTok, wantCode)
		}
		if cd == codeAllowed {
			// The token is a slice of the input, not a copy.
			if end := len(bytes.TrimRight(v, " \t")); len(tok) == 0 || &tok[len(tok)-1] != &v[end-1] {
				t.Fatalf("token %q is not the end of the input %q", tok, v)
			}
			if again, cd := bearerToken(append([]byte("Bearer "), tok...)); cd != codeAllowed || !bytes.Equal(again, tok) {
				t.Fatalf("token %q does not round-trip", tok)
			}
		}
	})
}
