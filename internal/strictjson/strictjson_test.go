package strictjson

import (
	"encoding/json"
	"strings"
	"testing"
)

func TestMembers(t *testing.T) {
	for _, tc := range []struct {
		name, body string
		want       []string // JSON of each named member, "" when absent
		err        string
	}{
		{"chosen members", `{"a":1,"b":"x","c":true}`, []string{"1", `"x"`}, ""},
		{"absent member", `{"a":1}`, []string{"1", ""}, ""},
		{"names match exactly", `{"A":1,"b":2}`, []string{"", "2"}, ""},
		{"a named member twice", `{"a":1,"a":2}`, nil, "repeated"},
		{"another member twice", `{"a":1,"z":1,"z":2}`, []string{"1", ""}, ""},
		{"not an object", `[1]`, nil, "not a JSON object"},
		{"data after the object", `{"a":1} {}`, nil, "data after"},
		{"truncated", `{"a":`, nil, "EOF"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			v, err := Members([]byte(tc.body), "a", "b")
			if tc.err != "" {
				if err == nil || !strings.Contains(err.Error(), tc.err) {
					t.Fatalf("error %v, want %q", err, tc.err)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			for i, w := range tc.want {
				if string(v[i]) != w {
					t.Errorf("member %d = %s, want %s", i, v[i], w)
				}
			}
		})
	}
}

func TestString(t *testing.T) {
	for in, want := range map[string]bool{`"x"`: true, `1`: false, ``: false, `"\ud800"`: true, `"bad`: false} {
		if _, ok := String(json.RawMessage(in)); ok != want {
			t.Errorf("String(%s) ok = %v, want %v", in, ok, want)
		}
	}
}
