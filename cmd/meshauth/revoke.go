package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"net/http"
	"os"
	"strings"
	"time"

	"github.com/meshauth/meshauth/internal/flagconf"
	"github.com/meshauth/meshauth/issuer"
)

const revokeUsage = "usage: meshauth revoke token JTI | token --token-file FILE | client ID | user NAME | subject SUB | grant ID --issuer URL (see meshauth revoke --help)"

// runRevoke revokes tokens through the issuer's admin API.
func runRevoke(ctx context.Context, args []string, stdout io.Writer) error {
	fs := flag.NewFlagSet("revoke token|client|user|subject|grant VALUE", flag.ContinueOnError)
	issuerURL := fs.String("issuer", "", "the running issuer that revokes (needs "+envAdminToken+")")
	tokenFile := fs.String("token-file", "", "with kind token: revoke the access token (JWT or reference) in this file instead of giving its jti")
	var req issuer.RevokeRequest
	if len(args) > 0 && !strings.HasPrefix(args[0], "-") {
		req.Kind, args = args[0], args[1:]
	}
	if len(args) > 0 && !strings.HasPrefix(args[0], "-") {
		req.Value, args = args[0], args[1:]
	}
	if err := flagconf.Parse(fs, args, nil); err != nil {
		return err
	}
	switch {
	case req.Kind == "":
		return errors.New(revokeUsage)
	case *tokenFile != "" && (req.Kind != "token" || req.Value != ""):
		return errors.New("--token-file goes with kind token and no JTI: " + revokeUsage)
	case *tokenFile == "" && req.Value == "":
		return fmt.Errorf("revoke %s: no value given: %s", req.Kind, revokeUsage)
	case *issuerURL == "":
		return errors.New("--issuer is required")
	}
	if *tokenFile != "" {
		b, err := os.ReadFile(*tokenFile)
		if err != nil {
			return fmt.Errorf("read --token-file: %w", err)
		}
		if req.Token = strings.TrimSpace(string(b)); req.Token == "" {
			return fmt.Errorf("--token-file %s is empty", *tokenFile)
		}
	}
	c, err := newAdminClient(*issuerURL, os.Getenv(envAdminToken))
	if err != nil {
		return err
	}
	var out issuer.RevokeResponse
	if err := c.do(ctx, http.MethodPost, "/admin/revoke", req, &out); err != nil {
		return fmt.Errorf("revoke: %w", err)
	}
	what := out.Kind + " " + out.Value
	if out.Subject != "" {
		what += " (sub " + out.Subject + ")"
	}
	fmt.Fprintf(stdout, "revoked %s (revocation %s): tokens issued until %s are refused until %s\n",
		what, out.ID, out.RevokedAt.Format(time.RFC3339), out.ExpiresAt.Format(time.RFC3339))
	if out.Warning != "" {
		fmt.Fprintln(os.Stderr, "meshauth: warning:", out.Warning)
	}
	return nil
}
