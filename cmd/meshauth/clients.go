package main

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"os"
	"strings"
	"time"

	"github.com/meshauth/meshauth/internal/flagconf"
	"github.com/meshauth/meshauth/issuer"
	"github.com/meshauth/meshauth/issuer/store/storeurl"
)

const clientsUsage = "usage: meshauth clients create --id NAME [flags] | list | show ID | delete ID (see meshauth clients <command> --help)"

func runClients(ctx context.Context, args []string, stdout io.Writer) error {
	if len(args) == 0 {
		return errors.New(clientsUsage)
	}
	switch args[0] {
	case "create":
		return createClient(ctx, args[1:], stdout)
	case "list", "show", "delete":
		return manageClient(ctx, args[0], args[1:], stdout)
	}
	return fmt.Errorf("unknown clients command %q: %s", args[0], clientsUsage)
}

// manageClient lists, shows or deletes clients through the issuer's admin
// API. Deleting also revokes every token the client holds, which only a
// running issuer can push to the verifiers, so there is no --store form.
func manageClient(ctx context.Context, cmd string, args []string, stdout io.Writer) error {
	fs := flag.NewFlagSet("clients "+cmd, flag.ContinueOnError)
	issuerURL := fs.String("issuer", "", "the running issuer (needs "+envAdminToken+")")
	var id string
	if cmd != "list" && len(args) > 0 && !strings.HasPrefix(args[0], "-") {
		id, args = args[0], args[1:]
	}
	if err := flagconf.Parse(fs, args, nil); err != nil {
		return err
	}
	switch {
	case cmd != "list" && id == "":
		return fmt.Errorf("clients %s needs the client id: %s", cmd, clientsUsage)
	case *issuerURL == "":
		return errors.New("--issuer is required")
	}
	c, err := newAdminClient(*issuerURL, os.Getenv(envAdminToken))
	if err != nil {
		return err
	}
	path := "/admin/clients"
	if id != "" {
		path += "/" + url.PathEscape(id)
	}
	enc := json.NewEncoder(stdout)
	enc.SetIndent("", "  ")
	switch cmd {
	case "list":
		var out []issuer.ClientInfo
		if err := c.do(ctx, http.MethodGet, path, nil, &out); err != nil {
			return fmt.Errorf("list clients: %w", err)
		}
		return enc.Encode(out)
	case "show":
		var out issuer.ClientInfo
		if err := c.do(ctx, http.MethodGet, path, nil, &out); err != nil {
			return fmt.Errorf("show client %s: %w", id, err)
		}
		return enc.Encode(out)
	default:
		var out issuer.RevokeResponse
		if err := c.do(ctx, http.MethodDelete, path, nil, &out); err != nil {
			return fmt.Errorf("delete client %s: %w", id, err)
		}
		fmt.Fprintf(stdout, "deleted client %s; its tokens are refused until %s (revocation %s)\n", id, out.ExpiresAt.Format(time.RFC3339), out.ID)
		return nil
	}
}

// createClient registers a client, through the issuer or into the store.
func createClient(ctx context.Context, args []string, stdout io.Writer) error {
	fs := flag.NewFlagSet("clients create", flag.ContinueOnError)
	var (
		md         issuer.ClientMetadata
		grants     flagconf.StringList
		audiences  flagconf.StringList
		exchScopes flagconf.StringList
		jwksFile   string
		issuerURL  string
		storeURL   string
	)
	fs.StringVar(&md.ClientID, "id", "", "client id to register; a service's client id is its audience name (generated when empty)")
	fs.StringVar(&md.ClientName, "name", "", "human-readable client name")
	fs.StringVar(&md.Scope, "scope", "", "space-separated scopes the client may request")
	fs.Var(&grants, "grant-type", "grant type the client may use (repeatable; default client_credentials)")
	fs.Var(&audiences, "allowed-audience", "audience the client may obtain tokens for (repeatable)")
	fs.Var(&exchScopes, "exchange-scope", `AUDIENCE="SCOPES": the scopes this client may obtain for AUDIENCE by token exchange (repeatable)`)
	fs.IntVar(&md.MaxDelegationDepth, "max-delegation-depth", 0, "longest act chain of tokens this client obtains by exchange (0: the issuer's default, 5)")
	fs.StringVar(&md.TokenEndpointAuthMethod, "auth-method", "client_secret_basic", "token endpoint authentication: client_secret_basic, client_secret_post or private_key_jwt")
	fs.StringVar(&jwksFile, "jwks-file", "", "JWK Set file with the client's public keys (for private_key_jwt)")
	fs.StringVar(&md.AccessTokenFormat, "access-token-format", "jwt", "format of the client's access tokens: jwt or reference")
	fs.StringVar(&issuerURL, "issuer", "", "register through this running issuer's registration endpoint (needs "+envAdminToken+")")
	fs.StringVar(&storeURL, "store", "", "or write directly to this store (file:DIR while no issuer holds it, or postgres://...)")
	if err := flagconf.Parse(fs, args, nil); err != nil {
		return err
	}
	md.GrantTypes, md.AllowedAudiences = grants, audiences
	for _, es := range exchScopes {
		aud, scope, ok := strings.Cut(es, "=")
		if !ok || aud == "" {
			return fmt.Errorf(`--exchange-scope %q: use AUDIENCE="SCOPE ..."`, es)
		}
		if md.ExchangeScopes == nil {
			md.ExchangeScopes = map[string]string{}
		}
		md.ExchangeScopes[aud] = scope
	}
	if jwksFile != "" {
		b, err := os.ReadFile(jwksFile)
		if err != nil {
			return fmt.Errorf("read --jwks-file: %w", err)
		}
		md.JWKS = b
	}
	var reg *issuer.Registration
	switch {
	case (issuerURL == "") == (storeURL == ""):
		return errors.New("give exactly one of --issuer URL or --store URL")
	case issuerURL != "":
		c, err := newAdminClient(issuerURL, os.Getenv(envAdminToken))
		if err != nil {
			return err
		}
		reg = new(issuer.Registration)
		if err := c.do(ctx, http.MethodPost, "/register", md, reg); err != nil {
			return fmt.Errorf("register client: %w", err)
		}
	default:
		st, err := storeurl.Open(ctx, storeURL)
		if err != nil {
			return fmt.Errorf("open store: %w", err)
		}
		defer st.Close()
		if reg, err = issuer.RegisterClient(ctx, st, md, time.Now()); err != nil {
			return fmt.Errorf("register client: %w", err)
		}
	}
	enc := json.NewEncoder(stdout)
	enc.SetIndent("", "  ")
	return enc.Encode(reg)
}
