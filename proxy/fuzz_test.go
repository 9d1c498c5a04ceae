package proxy

import (
	"github.com/valyala/fasthttp"

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

// FuzzCanonicalPath checks the property the matcher rests on: whatever an
// upstream makes of a path the matcher accepted, by the normalizations
// upstreams apply to what they are sent, the same route applies. The
// upstreams modelled take the canonical path (the Sidecar's default) and
// normalize it again, decode it whole and remove dot segments (fasthttp,
// Go's path.Clean after decoding), or strip its parameters first (Tomcat,
// Jetty). A path the canonicalizer accepts is also never changed by
// canonicalizing it again.
func FuzzCanonicalPath(f *testing.F) {
	for _, s := range []string{
		"/", "/admin/reports", "/refunds;x/1", "/health/..;/refunds/1", "/Refunds/1", "/health/%252e%252e/refunds",
		"/health%2f..%2frefunds", "/a/./b/../c", "//admin//reports/", "/%41dmin", "/a b/%c3%a9", "/refunds/;/x",
		"/a;x=1/../b;y", "/x/%2e%2E/refunds", "/h/%25zz", "/exact/", "/EXACT", "/x\\y", "/..", "/a//../b",
	} {
		f.Add([]byte(s), byte(0))
	}
	rs, err := compile(Policy{Routes: []Route{
		{PathPrefix: "/admin", Scopes: []string{"admin"}},
		{PathPrefix: "/admin/reports", Methods: []string{"GET"}, Scopes: []string{"read"}},
		{PathPrefix: "/refunds", Scopes: []string{"refund"}, CaseInsensitive: true},
		{PathPrefix: "/a b/é", Scopes: []string{"space"}},
		{Path: "/exact", Scopes: []string{"exact"}},
		{PathPrefix: "/health", Public: true},
		{PathPrefix: "/x!", Scopes: []string{"bang"}},
	}}, 1)
	if err != nil {
		f.Fatal(err)
	}
	methods := []string{"GET", "POST", "DELETE"}
	f.Fuzz(func(t *testing.T, raw []byte, m byte) {
		method := []byte(methods[int(m)%len(methods)])
		canon, key, fault := canonicalPath(nil, nil, raw, false)
		if fault != pathOK {
			return
		}
		judged := rs.match(method, key)
		again, againKey, fault := canonicalPath(nil, nil, canon, false)
		if fault != pathOK || string(again) != string(canon) || string(againKey) != string(key) {
			t.Fatalf("%q: canonical %q (key %q) becomes %q (key %q, fault %d)", raw, canon, key, again, againKey, fault)
		}
		var uri fasthttp.URI
		uri.SetPathBytes(canon)
		decoded := uri.Path()
		for _, upstream := range []struct {
			name string
			path []byte
		}{
			{"decoded whole", decoded},
			{"parameters stripped", stripParams(canon)},
		} {
			_, k, fault := canonicalPath(nil, nil, upstream.path, false)
			if fault != pathOK {
				continue // the upstream's form is not a request the matcher would accept
			}
			if r := rs.match(method, k); r != judged {
				t.Fatalf("%s %q: judged by %q, but %s upstream serves %q, which %q judges",
					method, raw, judged.label, upstream.name, upstream.path, r.label)
			}
		}
	})
}

// stripParams removes the parameters of every segment of p, as Tomcat and
// Jetty do before they decode.
func stripParams(p []byte) []byte {
	var out []byte
	in := false
	for _, c := range p {
		switch {
		case c == '/':
			in = false
		case c == ';':
			in = true
		}
		if !in {
			out = append(out, c)
		}
	}
	return out
}
