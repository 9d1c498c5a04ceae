package issuer

import (
	"encoding/base64"
	"errors"
	"testing"
)

func mustDecode(t *testing.T, seg string) []byte {
	t.Helper()
	b, err := base64.RawURLEncoding.DecodeString(seg)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

func TestParseForm(t *testing.T) {
	tests := []struct {
		body    string
		wantErr bool
		check   func(map[string][]string) bool
	}{
		{body: "grant_type=client_credentials&scope=a+b", check: func(f map[string][]string) bool { return f["scope"][0] == "a b" }},
		{body: "grant_type=a&grant_type=b", wantErr: true},
		{body: "grant_type=a&grant_type=", check: func(f map[string][]string) bool { return len(f["grant_type"]) == 1 }},
		{body: "scope=", check: func(f map[string][]string) bool { _, ok := f["scope"]; return !ok }},
		{body: "audience=a&audience=b&resource=https://x&resource=https://y", check: func(f map[string][]string) bool { return len(f["audience"]) == 2 && len(f["resource"]) == 2 }},
		{body: "a=%zz", wantErr: true},
		{body: "a=b;c=d", wantErr: true},
	}
	for _, tc := range tests {
		f, err := parseForm(tc.body)
		if (err != nil) != tc.wantErr {
			t.Errorf("%q: err = %v", tc.body, err)
			continue
		}
		if err == nil && !tc.check(f) {
			t.Errorf("%q: parsed %v", tc.body, f)
		}
	}
}

func FuzzParseForm(f *testing.F) {
	for _, s := range []string{"grant_type=client_credentials&scope=a+b", "a=1&a=2", "audience=x&audience=y", "%", "a=%zz", "=&=&", "x=" + string([]byte{0xff})} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, body string) {
		form, err := parseForm(body)
		if err != nil {
			var oe *oauthError
			if !errors.As(err, &oe) || oe.Code != "invalid_request" {
				t.Fatalf("error %v is not invalid_request", err)
			}
			return
		}
		for name, vs := range form {
			if len(vs) == 0 {
				t.Fatalf("%q kept with no value", name)
			}
			if len(vs) > 1 && !repeatableParams[name] {
				t.Fatalf("%q repeated", name)
			}
			for _, v := range vs {
				if v == "" {
					t.Fatalf("%q kept an empty value", name)
				}
			}
		}
	})
}

func FuzzAssertionSubject(f *testing.F) {
	for _, s := range []string{"a.b.c", "eyJhbGciOiJFUzI1NiJ9.eyJzdWIiOiJzdmMifQ.sig", "..", "a.b", "eyJ9.e30.", "a.eyJzdWIiOjF9.c"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, assertion string) {
		sub, err := assertionSubject(assertion)
		if err == nil && sub == "" {
			t.Fatal("empty subject without an error")
		}
	})
}

func TestParseBasic(t *testing.T) {
	enc := func(s string) string { return "Basic " + base64.StdEncoding.EncodeToString([]byte(s)) }
	tests := []struct {
		header, id, secret string
		ok                 bool
	}{
		{enc("a:b"), "a", "b", true},
		{enc("a%3Ab:c%2B"), "a:b", "c+", true},
		{"basic " + base64.StdEncoding.EncodeToString([]byte("a:b")), "a", "b", true},
		{enc("nocolon"), "", "", false},
		{"Bearer x", "", "", false},
		{"Basic !!!", "", "", false},
		{enc("a%zz:b"), "", "", false},
	}
	for _, tc := range tests {
		id, secret, err := parseBasic(tc.header)
		if (err == nil) != tc.ok || id != tc.id || secret != tc.secret {
			t.Errorf("%q: %q %q %v", tc.header, id, secret, err)
		}
	}
}

func TestDescriptionText(t *testing.T) {
	for in, want := range map[string]string{
		`scope "admin" is not registered`: `scope 'admin' is not registered`,
		"a\\b\nc\u00e9":                   "a?b?c?",
		"plain text, ok: [x]":             "plain text, ok: [x]",
	} {
		if got := descriptionText(in); got != want {
			t.Errorf("descriptionText(%q) = %q, want %q", in, got, want)
		}
	}
}
