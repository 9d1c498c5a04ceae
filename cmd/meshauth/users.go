package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"strings"
	"time"

	"golang.org/x/term"

	"github.com/meshauth/meshauth/internal/flagconf"
	"github.com/meshauth/meshauth/issuer"
	"github.com/meshauth/meshauth/issuer/store/storeurl"
)

// envUserPassword carries a new user's password; like every secret it is
// never a flag value.
const envUserPassword = "MESHAUTH_USER_PASSWORD"

const usersUsage = "usage: meshauth users add|passwd|disable|enable|link --store URL --name NAME | list --issuer URL|--store URL | show --name NAME --issuer URL|--store URL | delete --name NAME --issuer URL (see meshauth users <command> --help)"

func runUsers(ctx context.Context, args []string, stdout io.Writer) error {
	if len(args) == 0 {
		return errors.New(usersUsage)
	}
	switch args[0] {
	case "add", "passwd", "disable", "enable", "link":
		return editUser(ctx, args[0], args[1:], stdout)
	case "list", "show", "delete":
		return manageUsers(ctx, args[0], args[1:], stdout)
	}
	return fmt.Errorf("unknown users command %q: %s", args[0], usersUsage)
}

// editUser writes a user into the store directly, as an issuer that does
// not hold the store finds at its next read.
func editUser(ctx context.Context, sub string, args []string, stdout io.Writer) error {
	fs := flag.NewFlagSet("users "+sub, flag.ContinueOnError)
	storeURL := fs.String("store", "", "the store the issuer uses: file:DIR (while no issuer holds it) or postgres://...")
	name := fs.String("name", "", "login name: letters, digits, '.', '_', '@', '+', '-'; case-insensitive")
	var passwordFile *string
	if sub == "add" || sub == "passwd" {
		passwordFile = fs.String("password-file", "", "file holding the password (or set "+envUserPassword+"; on a terminal it is asked for without echo)")
	}
	var profile issuer.Profile
	if sub == "add" {
		fs.StringVar(&profile.DisplayName, "display-name", "", "the person's name, the OpenID Connect claim name (scope profile)")
		fs.StringVar(&profile.Email, "email", "", "the person's email address, the claim email (scope email); stored lower-cased")
		fs.BoolVar(&profile.EmailVerified, "email-verified", false, "the email address is known to be the person's (claim email_verified)")
	}
	var upstreamIssuer, upstreamSubject string
	if sub == "link" {
		fs.StringVar(&upstreamIssuer, "issuer", "", "the upstream provider's issuer URL (the iss of its ID Tokens)")
		fs.StringVar(&upstreamSubject, "subject", "", "the person's identity there (the sub of its ID Tokens)")
	}
	if err := flagconf.Parse(fs, args, nil); err != nil {
		return err
	}
	if *storeURL == "" || *name == "" {
		return errors.New("--store and --name are required")
	}
	if sub == "link" && (upstreamIssuer == "" || upstreamSubject == "") {
		return errors.New("--issuer and --subject are required")
	}
	var password string
	if passwordFile != nil {
		var err error
		if password, err = userPassword(*passwordFile); err != nil {
			return err
		}
	}
	st, err := storeurl.Open(ctx, *storeURL)
	if err != nil {
		return fmt.Errorf("open store: %w", err)
	}
	defer st.Close()
	switch sub {
	case "passwd":
		u, err := issuer.SetUserPassword(ctx, st, *name, password)
		if err != nil {
			return err
		}
		fmt.Fprintf(stdout, "password of %s (%s) changed\n", u.Name, u.ID)
	case "link":
		u, err := issuer.LinkUpstreamIdentity(ctx, st, *name, upstreamIssuer, upstreamSubject, time.Now())
		if err != nil {
			return err
		}
		fmt.Fprintf(stdout, "%s (%s) signs in as %s at %s\n", u.Name, u.ID, upstreamSubject, upstreamIssuer)
	case "disable", "enable":
		u, err := issuer.SetUserDisabled(ctx, st, *name, sub == "disable")
		if err != nil {
			return err
		}
		fmt.Fprintf(stdout, "%s (%s) %sd\n", u.Name, u.ID, sub)
	default:
		u, err := issuer.CreateUserWithProfile(ctx, st, *name, password, profile, time.Now())
		if err != nil {
			return err
		}
		fmt.Fprintln(stdout, u.ID)
	}
	return nil
}

// userPassword reads the password from the environment, from file, or, when
// stdin is a terminal, from a prompt without echo, typed twice.
func userPassword(file string) (string, error) {
	fromEnv := os.Getenv(envUserPassword)
	switch {
	case file != "" && fromEnv != "":
		return "", fmt.Errorf("password given both in %s and in --password-file; use one", envUserPassword)
	case fromEnv != "":
		return fromEnv, nil
	case file != "":
		b, err := os.ReadFile(file)
		if err != nil {
			return "", fmt.Errorf("read password: %w", err)
		}
		return strings.TrimRight(string(b), "\r\n"), nil
	}
	fd := int(os.Stdin.Fd())
	if !term.IsTerminal(fd) {
		return "", fmt.Errorf("no password: set %s, give --password-file, or run on a terminal to be asked", envUserPassword)
	}
	fmt.Fprint(os.Stderr, "Password: ")
	first, err := term.ReadPassword(fd)
	fmt.Fprintln(os.Stderr)
	if err != nil {
		return "", fmt.Errorf("read password: %w", err)
	}
	fmt.Fprint(os.Stderr, "Repeat password: ")
	second, err := term.ReadPassword(fd)
	fmt.Fprintln(os.Stderr)
	if err != nil {
		return "", fmt.Errorf("read password: %w", err)
	}
	if string(first) != string(second) {
		return "", errors.New("the passwords differ")
	}
	return string(first), nil
}
