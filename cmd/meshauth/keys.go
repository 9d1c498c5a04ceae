package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"net/http"
	"os"
	"time"

	"github.com/meshauth/meshauth/internal/flagconf"
)

func runKeys(ctx context.Context, args []string, stdout io.Writer) error {
	if len(args) == 0 || args[0] != "rotate" {
		return errors.New("usage: meshauth keys rotate --issuer URL [--immediate] (see meshauth keys rotate --help)")
	}
	fs := flag.NewFlagSet("keys rotate", flag.ContinueOnError)
	issuerURL := fs.String("issuer", "", "the running issuer to rotate (needs "+envAdminToken+")")
	immediate := fs.Bool("immediate", false, "sign with the new key at once instead of after the pre-publication delay (for a compromised key; verifiers that have not seen the new key refetch on the unknown kid)")
	if err := flagconf.Parse(fs, args[1:], nil); err != nil {
		return err
	}
	if *issuerURL == "" {
		return errors.New("--issuer is required")
	}
	c, err := newAdminClient(*issuerURL, os.Getenv(envAdminToken))
	if err != nil {
		return err
	}
	path := "/admin/keys/rotate"
	if *immediate {
		path += "?immediate=true"
	}
	var out struct {
		KeyID       string    `json:"kid"`
		Algorithm   string    `json:"alg"`
		ActivatesAt time.Time `json:"activates_at"`
	}
	if err := c.do(ctx, http.MethodPost, path, nil, &out); err != nil {
		return fmt.Errorf("rotate keys: %w", err)
	}
	fmt.Fprintf(stdout, "new signing key %s (%s), signs from %s\n", out.KeyID, out.Algorithm, out.ActivatesAt.Format(time.RFC3339))
	return nil
}
