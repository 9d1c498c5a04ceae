package proxy

import (
	"github.com/valyala/fasthttp"

	"strings"
	"testing"
)

func TestCanonicalPath(t *testing.T) {
	long := "/" + strings.Repeat("a", maxPathLength-1)
	tests := []struct {
		raw, canon, key string
		fault           pathFault
	}{
		{"/", "/", "/", pathOK},
		{"", "/", "/", pathOK}, // absolute-form without a path
		{"/a/b", "/a/b", "/a/b", pathOK},
		{"/a/b/", "/a/b/", "/a/b/", pathOK},
		{"//a///b//", "/a/b/", "/a/b/", pathOK},
		// RFC 3986 §5.2.4 and its examples.
		{"/a/b/c/./../../g", "/a/g", "/a/g", pathOK},
		{"/mid/content=5/../6", "/mid/6", "/mid/6", pathOK},
		{"/a/.", "/a/", "/a/", pathOK},
		{"/a/b/..", "/a/", "/a/", pathOK},
		{"/..", "/", "/", pathOK},
		{"/../../a", "/a", "/a", pathOK},
		{"/.", "/", "/", pathOK},
		{"/a/..b/.c/b..", "/a/..b/.c/b..", "/a/..b/.c/b..", pathOK},
		{"/%2e/a/%2E%2e/b", "/b", "/b", pathOK},
		// Percent-encodings: unreserved decoded, the rest in upper case
		// (and decoded in the key).
		{"/%41%7e%2D%5f%30", "/A~-_0", "/A~-_0", pathOK},
		{"/a%20b%2a%c3%a9", "/a%20b%2A%C3%A9", "/a b*é", pathOK},
		{"/a%25b", "/a%25b", "/a%b", pathOK},
		{"/100%25", "/100%25", "/100%", pathOK},
		{"/%3F%23", "/%3F%23", "/?#", pathOK},
		// Bytes a path cannot hold are encoded.
		{"/a b\"<>^`{|}[]é", "/a%20b%22%3C%3E%5E%60%7B%7C%7D%5B%5D%C3%A9", "/a b\"<>^`{|}[]é", pathOK},
		{"/!$&'()*+,=:@", "/!$&'()*+,=:@", "/!$&'()*+,=:@", pathOK},
		// Parameters: kept, not matched.
		{"/a;x/b", "/a;x/b", "/a/b", pathOK},
		{"/a;x=1;y/b;z", "/a;x=1;y/b;z", "/a/b", pathOK},
		{"/a/b;", "/a/b;", "/a/b", pathOK},
		{"/a;x/../b", "/b", "/b", pathOK},
		{"/a;%41", "/a;A", "/a", pathOK},
		// Refused.
		{"a/b", "", "", pathNotAbsolute},
		{"*", "", "", pathNotAbsolute},
		{"/a%", "", "", pathMalformedPercent},
		{"/a%4", "", "", pathMalformedPercent},
		{"/a%4g", "", "", pathMalformedPercent},
		{"/a%%41", "", "", pathMalformedPercent},
		{"/%252e", "", "", pathDoubleEncoded},
		{"/%25%32%65", "", "", pathDoubleEncoded},
		{"/%2541", "", "", pathDoubleEncoded},
		{"/a%2fb", "", "", pathEncodedSlash},
		{"/a%5Cb", "", "", pathEncodedSlash},
		{"/a\\b", "", "", pathBackslash},
		{"/a%3bb", "", "", pathEncodedSemicolon},
		{"/a\x00", "", "", pathControl},
		{"/a\tb", "", "", pathControl},
		{"/a%00", "", "", pathControl},
		{"/a%1F", "", "", pathControl},
		{"/a%7f", "", "", pathControl},
		{"/a\x7f", "", "", pathControl},
		{"/..;/a", "", "", pathDotParams},
		{"/a/.;x/b", "", "", pathDotParams},
		{"/a/%2e%2e;/b", "", "", pathDotParams},
		{"/a/;x/b", "", "", pathDotParams},
		{"/;", "", "", pathDotParams},
		{"/a//../b", "", "", pathAmbiguousDots},
		{"/a/b//..", "", "", pathAmbiguousDots},
		{"//..", "", "", pathAmbiguousDots},
		{"/a//./../b", "", "", pathAmbiguousDots},
		{"//a/../b", "/b", "/b", pathOK}, // ".." removes "a", not the empty segment
		{long, long, long, pathOK},
		{long + "a", "", "", pathTooLong},
	}
	for _, tt := range tests {
		canon, key, fault := canonicalPath(nil, nil, []byte(tt.raw), false)
		if fault != tt.fault {
			t.Errorf("%q: fault %d, want %d", tt.raw, fault, tt.fault)
			continue
		}
		if fault == pathOK && (string(canon) != tt.canon || string(key) != tt.key) {
			t.Errorf("%q: %q, key %q; want %q, key %q", tt.raw, canon, key, tt.canon, tt.key)
		}
	}

	// Allowed, encoded slashes stay data.
	for _, tt := range []struct{ raw, canon, key string }{
		{"/a%2fb/..%5C/c", "/a%2Fb/..%5C/c", "/a%2Fb/..%5C/c"},
		{"/a/..%2f", "/a/..%2F", "/a/..%2F"},
	} {
		canon, key, fault := canonicalPath(nil, nil, []byte(tt.raw), true)
		if fault != pathOK || string(canon) != tt.canon || string(key) != tt.key {
			t.Errorf("%q, encoded slashes allowed: %q, key %q, fault %d; want %q, key %q", tt.raw, canon, key, fault, tt.canon, tt.key)
		}
	}
}

func TestCanonicalPathAllocs(t *testing.T) {
	raw := []byte("/a/./b/../c;x/%41%20d//e")
	canon, key := make([]byte, 0, 64), make([]byte, 0, 64)
	if n := testing.AllocsPerRun(100, func() {
		canon, key, _ = canonicalPath(canon, key, raw, false)
	}); n != 0 {
		t.Errorf("%v allocations with buffers that fit", n)
	}
}

// BenchmarkCanonicalPath measures what judging on the canonical path adds
// to a request, against fasthttp's own normalization of the same path,
// which every request pays when its URI is parsed.
func BenchmarkCanonicalPath(b *testing.B) {
	raw := []byte("/orders/42/items/%41bc;v=1/../7")
	b.Run("canonical", func(b *testing.B) {
		var canon, key []byte
		b.ReportAllocs()
		for b.Loop() {
			canon, key, _ = canonicalPath(canon, key, raw, false)
		}
	})
	b.Run("fasthttp", func(b *testing.B) {
		var uri fasthttp.URI
		b.ReportAllocs()
		for b.Loop() {
			uri.SetPathBytes(raw)
		}
	})
}
