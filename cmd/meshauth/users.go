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

func runUsers(ctx context.Context, args []string, stdout io.Writer) error {
	if len(args) == 0 || (args[0] != "add" && args[0] != "passwd") {
		return errors.New("usage: meshauth users add|passwd --store URL --name NAME (see meshauth users add --help)")
	}
	sub := args[0]
	fs := flag.NewFlagSet("users "+sub, flag.ContinueOnError)
	storeURL := fs.String("store", "", "the store the issuer uses: file:DIR (while no issuer holds it) or postgres://...")
	name := fs.String("name", "", "login name: letters, digits, '.', '_', '@', '+', '-'; case-insensitive")
	passwordFile := fs.String("password-file", "", "file holding the password (or set "+envUserPassword+"; on a terminal it is asked for without echo)")
	if err := flagconf.Parse(fs, args[1:], nil); err != nil {
		return err
	}
	if *storeURL == "" || *name == "" {
		return errors.New("--store and --name are required")
	}
	password, err := userPassword(*passwordFile)
	if err != nil {
		return err
	}
	st, err := storeurl.Open(ctx, *storeURL)
	if err != nil {
		return fmt.Errorf("open store: %w", err)
	}
	defer st.Close()
	if sub == "passwd" {
		u, err := issuer.SetUserPassword(ctx, st, *name, password)
		if err != nil {
			return err
		}
		fmt.Fprintf(stdout, "password of %s (%s) changed\n", u.Name, u.ID)
		return nil
	}
	u, err := issuer.CreateUser(ctx, st, *name, password, time.Now())
	if err != nil {
		return err
	}
	fmt.Fprintln(stdout, u.ID)
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
