package main

import (
	"context"
	"io"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

func TestRevokeCommand(t *testing.T) {
	issuerURL := startIssuer(t)
	tok := clientToken(t, issuerURL, "web", "profile", "api")
	tokenFile := filepath.Join(t.TempDir(), "token")
	if err := os.WriteFile(tokenFile, []byte(tok+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	empty := filepath.Join(t.TempDir(), "empty")
	if err := os.WriteFile(empty, []byte("\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		name    string
		args    []string
		noAdmin bool
		want    string // in the output, or in the error when wantErr
		wantErr bool
	}{
		{name: "subject", args: []string{"subject", "alice", "--issuer", issuerURL}, want: "revoked subject alice "},
		{name: "client", args: []string{"client", "web", "--issuer", issuerURL}, want: "revoked client web "},
		{name: "jti", args: []string{"token", "j-1", "--issuer", issuerURL}, want: "revoked token j-1 "},
		{name: "grant", args: []string{"grant", "g-1", "--issuer", issuerURL}, want: "revoked grant g-1 "},
		{name: "token file", args: []string{"token", "--token-file", tokenFile, "--issuer", issuerURL}, want: "revoked token "},

		{name: "no kind", args: []string{"--issuer", issuerURL}, wantErr: true, want: "usage"},
		{name: "no value", args: []string{"subject", "--issuer", issuerURL}, wantErr: true, want: "no value"},
		{name: "token file with another kind", args: []string{"client", "--token-file", tokenFile, "--issuer", issuerURL}, wantErr: true, want: "--token-file"},
		{name: "token file and jti", args: []string{"token", "j-1", "--token-file", tokenFile, "--issuer", issuerURL}, wantErr: true, want: "--token-file"},
		{name: "empty token file", args: []string{"token", "--token-file", empty, "--issuer", issuerURL}, wantErr: true, want: "empty"},
		{name: "missing token file", args: []string{"token", "--token-file", empty + ".x", "--issuer", issuerURL}, wantErr: true, want: "read --token-file"},
		{name: "no issuer", args: []string{"subject", "alice"}, wantErr: true, want: "--issuer"},
		{name: "no admin token", args: []string{"subject", "alice", "--issuer", issuerURL}, noAdmin: true, wantErr: true, want: envAdminToken},
		{name: "unknown kind", args: []string{"audience", "api", "--issuer", issuerURL}, wantErr: true, want: "400 invalid_request"},
		{name: "extra argument", args: []string{"subject", "alice", "bob", "--issuer", issuerURL}, wantErr: true, want: "unexpected argument"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			admin := "admin-test-token"
			if tt.noAdmin {
				admin = ""
			}
			t.Setenv(envAdminToken, admin)
			var out strings.Builder
			err := run(context.Background(), append([]string{"revoke"}, tt.args...), &out, io.Discard)
			if tt.wantErr {
				if err == nil || !strings.Contains(err.Error(), tt.want) {
					t.Errorf("error %v, want one containing %q", err, tt.want)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if !strings.Contains(out.String(), tt.want) || !strings.Contains(out.String(), "refused until") {
				t.Errorf("output %q, want %q", out.String(), tt.want)
			}
			if strings.Contains(out.String(), tok) {
				t.Error("the output quotes the token")
			}
		})
	}
}
