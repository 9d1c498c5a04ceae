package flagconf

import (
	"flag"
	"io"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

func TestParse(t *testing.T) {
	dir := t.TempDir()
	write := func(name, content string) string {
		p := filepath.Join(dir, name)
		if err := os.WriteFile(p, []byte(content), 0o600); err != nil {
			t.Fatal(err)
		}
		return p
	}
	yamlFile := write("c.yaml", "listen: 127.0.0.1:1\ntoken-lifetime: 2m\ntrust:\n  - https://a\n  - https://b\n")
	jsonFile := write("c.json", `{"listen": "127.0.0.1:3", "trust": ["https://j"]}`)
	unknownKey := write("bad.yaml", "listen: x\nlisten-typo: y\n")
	nested := write("nested.yaml", "listen:\n  a: b\n")

	tests := []struct {
		name     string
		args     []string
		env      map[string]string
		listen   string
		lifetime time.Duration
		trust    string
		errPart  string
	}{
		{name: "defaults", listen: ":8080", lifetime: 5 * time.Minute},
		{name: "flag", args: []string{"--listen", "a:1"}, listen: "a:1", lifetime: 5 * time.Minute},
		{name: "env", env: map[string]string{"MESHAUTH_LISTEN": "e:1", "MESHAUTH_TOKEN_LIFETIME": "1m", "MESHAUTH_TRUST": "https://x,https://y"}, listen: "e:1", lifetime: time.Minute, trust: "https://x,https://y"},
		{name: "flag beats env", args: []string{"--listen", "f:1"}, env: map[string]string{"MESHAUTH_LISTEN": "e:1"}, listen: "f:1", lifetime: 5 * time.Minute},
		{name: "yaml file", args: []string{"--config", yamlFile}, listen: "127.0.0.1:1", lifetime: 2 * time.Minute, trust: "https://a,https://b"},
		{name: "json file via env", env: map[string]string{"MESHAUTH_CONFIG": jsonFile}, listen: "127.0.0.1:3", lifetime: 5 * time.Minute, trust: "https://j"},
		{name: "env beats file", args: []string{"--config", yamlFile}, env: map[string]string{"MESHAUTH_LISTEN": "e:2"}, listen: "e:2", lifetime: 2 * time.Minute, trust: "https://a,https://b"},
		{name: "unknown key", args: []string{"--config", unknownKey}, errPart: `line 2: unknown key "listen-typo"`},
		{name: "nested value", args: []string{"--config", nested}, errPart: `key "listen" must be a value`},
		{name: "missing file", args: []string{"--config", filepath.Join(dir, "nope")}, errPart: "read config file"},
		{name: "bad env value", env: map[string]string{"MESHAUTH_TOKEN_LIFETIME": "soon"}, errPart: "MESHAUTH_TOKEN_LIFETIME"},
		{name: "stray argument", args: []string{"extra"}, errPart: `unexpected argument "extra"`},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			fs := flag.NewFlagSet("test", flag.ContinueOnError)
			fs.SetOutput(io.Discard)
			listen := fs.String("listen", ":8080", "address")
			lifetime := fs.Duration("token-lifetime", 5*time.Minute, "lifetime")
			var trust StringList
			fs.Var(&trust, "trust", "issuer (repeatable)")
			err := Parse(fs, tc.args, func(k string) string { return tc.env[k] })
			if tc.errPart != "" {
				if err == nil || !strings.Contains(err.Error(), tc.errPart) {
					t.Fatalf("err = %v, want it to mention %q", err, tc.errPart)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if *listen != tc.listen || *lifetime != tc.lifetime || trust.String() != tc.trust {
				t.Errorf("got listen=%q lifetime=%v trust=%q", *listen, *lifetime, trust.String())
			}
		})
	}
}

func TestUsageNamesEnvironment(t *testing.T) {
	fs := flag.NewFlagSet("issuer", flag.ContinueOnError)
	fs.String("issuer-url", "", "issuer identifier")
	var b strings.Builder
	fs.SetOutput(&b)
	if err := Parse(fs, []string{"--help"}, func(string) string { return "" }); err != flag.ErrHelp {
		t.Fatalf("err = %v", err)
	}
	for _, want := range []string{"--issuer-url", "MESHAUTH_ISSUER_URL", "--config", "MESHAUTH_CONFIG"} {
		if !strings.Contains(b.String(), want) {
			t.Errorf("usage lacks %q:\n%s", want, b.String())
		}
	}
}

func TestParseWithStructured(t *testing.T) {
	dir := t.TempDir()
	good := filepath.Join(dir, "good.yaml")
	os.WriteFile(good, []byte("listen: 127.0.0.1:9\nroutes:\n  - prefix: /admin\n    scopes: [admin]\n"), 0o600)
	typo := filepath.Join(dir, "typo.yaml")
	os.WriteFile(typo, []byte("listen: 127.0.0.1:9\n# routes\nroutes:\n  - prefix: /\n  - prefx: /admin\n"), 0o600)
	unknown := filepath.Join(dir, "unknown.yaml")
	os.WriteFile(unknown, []byte("listen: 127.0.0.1:9\n\nroute:\n  - prefix: /\n"), 0o600)
	type route struct {
		Prefix string   `yaml:"prefix"`
		Scopes []string `yaml:"scopes"`
	}
	for _, tc := range []struct {
		file    string
		errPart string
	}{{good, ""}, {typo, "line 5: field prefx not found"}, {unknown, `line 3: unknown key "route"`}} {
		fs := flag.NewFlagSet("test", flag.ContinueOnError)
		listen := fs.String("listen", "", "")
		var cfg struct {
			Routes []route `yaml:"routes"`
		}
		err := ParseWith(fs, []string{"--config", tc.file}, func(string) string { return "" }, &cfg)
		if tc.errPart != "" {
			if err == nil || !strings.Contains(err.Error(), tc.errPart) {
				t.Errorf("%s: err = %v", tc.file, err)
			}
			continue
		}
		if err != nil || *listen != "127.0.0.1:9" || len(cfg.Routes) != 1 || cfg.Routes[0].Scopes[0] != "admin" {
			t.Errorf("got %v %q %+v", err, *listen, cfg)
		}
	}
}
