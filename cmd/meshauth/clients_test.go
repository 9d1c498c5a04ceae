package main

import (
	"context"
	"encoding/json"
	"io"
	"strings"
	"testing"

	"github.com/meshauth/meshauth/issuer"
)

func TestClientsManageCommands(t *testing.T) {
	issuerURL := startIssuer(t)
	t.Setenv(envAdminToken, "admin-test-token")
	clientToken(t, issuerURL, "web", "profile", "api")
	clients := func(args ...string) (string, error) {
		var out strings.Builder
		err := run(context.Background(), append([]string{"clients"}, args...), &out, io.Discard)
		return out.String(), err
	}

	out, err := clients("list", "--issuer", issuerURL)
	var list []issuer.ClientInfo
	if err != nil || json.Unmarshal([]byte(out), &list) != nil || len(list) != 1 || list[0].ClientID != "web" {
		t.Fatalf("list: %v %s", err, out)
	}
	if strings.Contains(out, `"client_secret"`) {
		t.Errorf("list shows a secret: %s", out)
	}
	out, err = clients("show", "web", "--issuer", issuerURL)
	var info issuer.ClientInfo
	if err != nil || json.Unmarshal([]byte(out), &info) != nil || info.Scope != "profile" {
		t.Fatalf("show: %v %s", err, out)
	}
	if out, err = clients("delete", "web", "--issuer", issuerURL); err != nil || !strings.HasPrefix(out, "deleted client web; its tokens are refused until ") {
		t.Fatalf("delete: %v %q", err, out)
	}

	for _, tc := range []struct {
		name string
		args []string
		want string
	}{
		{"show a deleted client", []string{"show", "web", "--issuer", issuerURL}, "404"},
		{"delete twice", []string{"delete", "web", "--issuer", issuerURL}, "404"},
		{"show without an id", []string{"show", "--issuer", issuerURL}, "needs the client id"},
		{"list without an issuer", []string{"list"}, "--issuer is required"},
		{"list with an argument", []string{"list", "web", "--issuer", issuerURL}, "unexpected argument"},
		{"unknown command", []string{"rename", "web"}, `unknown clients command "rename"`},
		{"no command", nil, "usage"},
	} {
		if _, err := clients(tc.args...); err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%s: error %v, want one containing %q", tc.name, err, tc.want)
		}
	}
}
