package issuer

import (
	"net/http"
	"strings"
	"testing"
)

// FuzzSessionCookie: whatever Cookie field a browser sends, the session
// value read from it is one this issuer could have set (43 base64url
// characters), taken from a cookie of the session cookie's name; nothing
// else is looked up in the store.
func FuzzSessionCookie(f *testing.F) {
	s := &Server{issuerPort: "8080"}
	name := s.cookieName("session")
	value := strings.Repeat("A", sessionValueLen)
	for _, c := range []string{
		name + "=" + value, name + "=" + value + "; other=1", "other=1; " + name + "=" + value, name + "=" + value[1:],
		name + "=" + value + "=", name + "=\"" + value + "\"", name + "=" + strings.Repeat("é", 22), "",
		name + "=" + value + "; " + name + "=" + strings.Repeat("B", sessionValueLen), "__Host-" + name + "=" + value,
	} {
		f.Add(c)
	}
	f.Fuzz(func(t *testing.T, header string) {
		r := &http.Request{Header: http.Header{"Cookie": {header}}}
		v, ok := s.parseSessionCookie(r)
		if !ok {
			if v != "" {
				t.Fatalf("refused, but returned %q", v)
			}
			return
		}
		if len(v) != sessionValueLen || !isBase64URL(v) {
			t.Fatalf("session value %q has not the form of one the issuer sets", v)
		}
		found := false
		for _, c := range r.Cookies() {
			found = found || (c.Name == name && c.Value == v)
		}
		if !found {
			t.Fatalf("session value %q is not a cookie named %s in %q", v, name, header)
		}
	})
}
