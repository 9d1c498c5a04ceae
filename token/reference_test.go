package token

import "testing"

func TestIsReference(t *testing.T) {
	for _, tc := range []struct {
		tok  string
		want bool
	}{
		{"dGhpcyBpcyBub3QgYSBKV1Q", true},
		{"", true},
		{"a.b.c", false},
		{"a.b.c.d.e", false}, // a JWE is no reference token either
		{"trailing.", false},
	} {
		if got := IsReference(tc.tok); got != tc.want {
			t.Errorf("IsReference(%q) = %v, want %v", tc.tok, got, tc.want)
		}
		if got := IsReference([]byte(tc.tok)); got != tc.want {
			t.Errorf("IsReference([]byte(%q)) = %v, want %v", tc.tok, got, tc.want)
		}
	}
}
