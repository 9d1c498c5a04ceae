package main

import (
	"flag"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/meshauth/meshauth/internal/flagconf"
)

// TestUpstreamProvidersConfig: the config file's upstream_providers take
// their client secret from a file or an environment variable, exactly one.
func TestUpstreamProvidersConfig(t *testing.T) {
	dir := t.TempDir()
	secretFile := filepath.Join(dir, "corp-secret")
	if err := os.WriteFile(secretFile, []byte("file-secret\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	t.Setenv("CORP_OIDC_SECRET", "env-secret")
	parse := func(entry string) ([]string, error) {
		t.Helper()
		configFile := filepath.Join(dir, "issuer.yaml")
		config := "password-login: false\nupstream_providers:\n  - id: corp\n    name: Corp SSO\n    issuer: https://sso.corp.example\n    client_id: meshauth\n" + entry
		if err := os.WriteFile(configFile, []byte(config), 0o600); err != nil {
			t.Fatal(err)
		}
		fs := flag.NewFlagSet("issuer", flag.ContinueOnError)
		var f issuerFlags
		f.register(fs, ":8080")
		var file issuerFile
		if err := flagconf.ParseWith(fs, []string{"--config", configFile}, func(string) string { return "" }, &file); err != nil {
			t.Fatal(err)
		}
		if *f.passwordLogin {
			t.Error("password-login: false not read")
		}
		ups, err := file.upstreamProviders()
		var secrets []string
		for _, u := range ups {
			if u.ID != "corp" || u.Name != "Corp SSO" || u.Issuer != "https://sso.corp.example" || u.ClientID != "meshauth" {
				t.Errorf("provider %+v", u)
			}
			secrets = append(secrets, u.ClientSecret)
		}
		return secrets, err
	}
	if s, err := parse("    client_secret_file: " + secretFile + "\n    create_users: true\n"); err != nil || len(s) != 1 || s[0] != "file-secret" {
		t.Errorf("secret from a file: %q %v", s, err)
	}
	if s, err := parse("    client_secret_env: CORP_OIDC_SECRET\n"); err != nil || len(s) != 1 || s[0] != "env-secret" {
		t.Errorf("secret from the environment: %q %v", s, err)
	}
	for entry, want := range map[string]string{
		"": "exactly one",
		"    client_secret_env: CORP_OIDC_SECRET\n    client_secret_file: " + secretFile + "\n": "exactly one",
		"    client_secret_env: UNSET_VARIABLE_OF_THIS_TEST\n":                                  "empty",
		"    client_secret_file: " + filepath.Join(dir, "missing") + "\n":                       "read client secret",
	} {
		if _, err := parse(entry); err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("%q: err = %v, want it to say %q", entry, err, want)
		}
	}
}
