// Command meshauth is OAuth 2.0 for microservice meshes: the issuer, and
// (in later subcommands) the sidecar, edge and xDS control plane. This
// package only parses flags and wires packages together.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/signal"
	"syscall"
)

type command struct {
	name    string
	summary string
	run     func(ctx context.Context, args []string, stdout io.Writer) error
}

var commands = []command{
	{"dev", "run everything on one machine: issuer, embedded store and NATS, demo services behind sidecars", runDev},
	{"issuer", "run the authorization server", runIssuer},
	{"clients", "register clients (clients create --id NAME ...)", runClients},
	{"users", "people who sign in at the login page (users add --name NAME; users passwd|disable|enable|link|list|show|delete)", runUsers},
	{"keys", "manage signing keys (keys rotate)", runKeys},
	{"revoke", "revoke tokens by id, client, user, subject or grant (revoke user NAME ...)", runRevoke},
	{"audit", "check a tamper-evident audit trail (audit verify FILE)", runAudit},
	{"sidecar", "verify tokens in front of a service: reverse proxy, forward-auth, Envoy ext_authz", runSidecar},
	{"edge", "gateway for Internet clients: reference tokens in, internal JWTs to the service", runEdge},
	{"xds", "Envoy control plane: listeners with ext_authz (and jwt_authn with pushed keys) for every node", runXDS},
}

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	err := run(ctx, os.Args[1:], os.Stdout, os.Stderr)
	stop()
	switch {
	case errors.Is(err, flag.ErrHelp):
	case err != nil:
		fmt.Fprintln(os.Stderr, "meshauth:", err)
		os.Exit(exitStatus(err))
	}
}

// exitStatus is 2, unless err says otherwise: 1 for a finding, such as a
// broken audit trail.
func exitStatus(err error) int {
	var s interface{ ExitStatus() int }
	if errors.As(err, &s) {
		return s.ExitStatus()
	}
	return 2
}

func run(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	if len(args) == 0 || args[0] == "help" || args[0] == "-h" || args[0] == "--help" {
		usage(stderr)
		if len(args) == 0 {
			return errors.New("no command given")
		}
		return nil
	}
	for _, c := range commands {
		if c.name == args[0] {
			return c.run(ctx, args[1:], stdout)
		}
	}
	usage(stderr)
	return fmt.Errorf("unknown command %q", args[0])
}

func usage(w io.Writer) {
	fmt.Fprintln(w, "Usage: meshauth <command> [flags]\n\nCommands:")
	for _, c := range commands {
		fmt.Fprintf(w, "  %-8s %s\n", c.name, c.summary)
	}
	fmt.Fprintln(w, "\nRun 'meshauth <command> --help' for a command's flags.")
}

// newLogger builds the process logger from --log-level and --log-format.
func newLogger(level, format string) (*slog.Logger, error) {
	var lv slog.Level
	if err := lv.UnmarshalText([]byte(level)); err != nil {
		return nil, fmt.Errorf("--log-level %q: use debug, info, warn or error", level)
	}
	opts := &slog.HandlerOptions{Level: lv}
	switch format {
	case "text":
		return slog.New(slog.NewTextHandler(os.Stderr, opts)), nil
	case "json":
		return slog.New(slog.NewJSONHandler(os.Stderr, opts)), nil
	default:
		return nil, fmt.Errorf("--log-format %q: use text or json", format)
	}
}

type logFlags struct{ level, format string }

func (l *logFlags) register(fs *flag.FlagSet) {
	fs.StringVar(&l.level, "log-level", "info", "log level: debug, info, warn or error")
	fs.StringVar(&l.format, "log-format", "text", "log format: text or json")
}
