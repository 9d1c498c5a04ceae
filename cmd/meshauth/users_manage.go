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
	"time"

	"github.com/meshauth/meshauth/internal/flagconf"
	"github.com/meshauth/meshauth/issuer"
	"github.com/meshauth/meshauth/issuer/store/storeurl"
)

// manageUsers lists, shows or deletes users. list and show read through a
// running issuer's admin API or straight from a store; delete revokes
// every token of the person, which only a running issuer can push to the
// verifiers, so it has no --store form.
func manageUsers(ctx context.Context, cmd string, args []string, stdout io.Writer) error {
	fs := flag.NewFlagSet("users "+cmd, flag.ContinueOnError)
	issuerURL := fs.String("issuer", "", "the running issuer (needs "+envAdminToken+")")
	var storeURL, name *string
	if cmd != "delete" {
		storeURL = fs.String("store", "", "or read this store directly: file:DIR (while no issuer holds it) or postgres://...")
	}
	if cmd != "list" {
		name = fs.String("name", "", "the user's login name (case-insensitive)")
	}
	if err := flagconf.Parse(fs, args, nil); err != nil {
		return err
	}
	switch {
	case name != nil && *name == "":
		return fmt.Errorf("users %s needs --name", cmd)
	case storeURL == nil && *issuerURL == "":
		return errors.New("--issuer is required")
	case storeURL != nil && (*issuerURL == "") == (*storeURL == ""):
		return errors.New("give exactly one of --issuer URL or --store URL")
	}
	enc := json.NewEncoder(stdout)
	enc.SetIndent("", "  ")
	if storeURL != nil && *storeURL != "" {
		st, err := storeurl.Open(ctx, *storeURL)
		if err != nil {
			return fmt.Errorf("open store: %w", err)
		}
		defer st.Close()
		if cmd == "show" {
			u, err := issuer.DescribeUser(ctx, st, *name)
			if err != nil {
				return err
			}
			return enc.Encode(u)
		}
		return listUsers(enc, func(after string) (*issuer.UserList, error) {
			return issuer.ListUsers(ctx, st, after, issuer.MaxUserPage)
		})
	}
	c, err := newAdminClient(*issuerURL, os.Getenv(envAdminToken))
	if err != nil {
		return err
	}
	switch cmd {
	case "list":
		return listUsers(enc, func(after string) (*issuer.UserList, error) {
			var page issuer.UserList
			q := url.Values{"limit": {fmt.Sprint(issuer.MaxUserPage)}, "after": {after}}
			if err := c.do(ctx, http.MethodGet, "/admin/users?"+q.Encode(), nil, &page); err != nil {
				return nil, fmt.Errorf("list users: %w", err)
			}
			return &page, nil
		})
	case "show":
		var u issuer.UserInfo
		if err := c.do(ctx, http.MethodGet, "/admin/users/"+url.PathEscape(*name), nil, &u); err != nil {
			return fmt.Errorf("show user %s: %w", *name, err)
		}
		return enc.Encode(u)
	default:
		var out issuer.RevokeResponse
		if err := c.do(ctx, http.MethodDelete, "/admin/users/"+url.PathEscape(*name), nil, &out); err != nil {
			return fmt.Errorf("delete user %s: %w", *name, err)
		}
		fmt.Fprintf(stdout, "deleted user %s (%s); their tokens are refused until %s (revocation %s)\n", out.Value, out.Subject, out.ExpiresAt.Format(time.RFC3339), out.ID)
		return nil
	}
}

// listUsers prints every user as one JSON array, reading the pages that
// next returns.
func listUsers(enc *json.Encoder, next func(after string) (*issuer.UserList, error)) error {
	users := []issuer.UserInfo{}
	for after := ""; ; {
		page, err := next(after)
		if err != nil {
			return err
		}
		users = append(users, page.Users...)
		if page.Next == "" {
			return enc.Encode(users)
		}
		after = page.Next
	}
}
