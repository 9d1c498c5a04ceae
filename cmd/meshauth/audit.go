package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"os"
	"strings"

	"github.com/nats-io/nats.go"

	"github.com/meshauth/meshauth/audit"
	"github.com/meshauth/meshauth/internal/flagconf"
	"github.com/meshauth/meshauth/internal/natsconn"
)

const auditUsage = "usage: meshauth audit verify FILE|- | audit verify --nats URL --replica ID (see meshauth audit verify --help)"

// runAudit checks an audit trail: a file, standard input, or one replica's
// chain in the JetStream stream.
func runAudit(ctx context.Context, args []string, stdout io.Writer) error {
	if len(args) == 0 || args[0] != "verify" {
		return errors.New(auditUsage)
	}
	args = args[1:]
	fs := flag.NewFlagSet("audit verify [FILE|-]", flag.ContinueOnError)
	var nf natsconn.Flags
	nf.Register(fs, "check the chain of --replica in the stream "+audit.Stream+" instead of a file")
	replica := fs.String("replica", "", "with --nats: the replica whose chain to check (the issuer's --audit-replica)")
	var file string
	if len(args) > 0 && (args[0] == "-" || !strings.HasPrefix(args[0], "-")) {
		file, args = args[0], args[1:]
	}
	if err := flagconf.Parse(fs, args, nil); err != nil {
		return err
	}
	// A FILE wins over --nats, which may come from the environment of a
	// server's shell.
	switch {
	case file == "" && !nf.Enabled():
		return errors.New(auditUsage)
	case file == "" && *replica == "":
		return errors.New("--replica is required with --nats")
	case file == "":
		if err := audit.CheckReplica(*replica); err != nil {
			return fmt.Errorf("--replica: %w", err)
		}
	}
	var (
		r    io.Reader
		name = file
	)
	switch file {
	case "":
		nc, err := natsconn.Connect(&nf, "meshauth audit verify", slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelWarn})))
		if err != nil {
			return err
		}
		defer nc.Close()
		if r, err = audit.ReadStream(ctx, nc, *replica); err != nil {
			if !nc.IsConnected() {
				return fmt.Errorf("--nats: no server reached (%w)", err)
			}
			return err
		}
		name = "stream " + audit.Stream + ", replica " + *replica
	case "-":
		r, name = os.Stdin, "standard input"
	default:
		f, err := os.Open(file)
		if err != nil {
			return err
		}
		defer f.Close()
		r = f
	}
	last, err := audit.Verify(r)
	var broken *audit.BrokenError
	if errors.As(err, &broken) {
		return brokenTrailError{fmt.Errorf("audit trail %s is broken at %w", name, err)}
	}
	if err != nil {
		return fmt.Errorf("read %s: %w", name, err)
	}
	if file == "" && last.Seq == 0 {
		return fmt.Errorf("--replica %s: no records in the stream %s for this replica", *replica, audit.Stream)
	}
	fmt.Fprintf(stdout, "%s: %d records, chain intact; last record %s\n", name, last.Seq, last)
	return nil
}

// brokenTrailError is a trail that failed verification: a finding, on which
// meshauth exits 1, not a usage error.
type brokenTrailError struct{ error }

func (brokenTrailError) ExitStatus() int { return 1 }

func (e brokenTrailError) Unwrap() error { return e.error }

// auditFlags are a server's audit trail settings.
type auditFlags struct {
	log        string
	stream     bool
	replica    string
	failClosed bool
	queue      int
}

func (a *auditFlags) register(fs *flag.FlagSet) {
	fs.StringVar(&a.log, "audit-log", "", "write the audit trail as JSON lines to this file, continuing its hash chain, or - for standard output (no trail unless this or --audit-stream is set)")
	fs.BoolVar(&a.stream, "audit-stream", false, "write the audit trail to the replicated JetStream stream "+audit.Stream+" too, one chain per --audit-replica (needs --nats)")
	fs.StringVar(&a.replica, "audit-replica", "", "this process's chain in the audit stream: 1 to 64 letters, digits, '-' or '_', unique per process (default: the host name, other characters as '_')")
	fs.BoolVar(&a.failClosed, "audit-fail-closed", false, "refuse a request (503) whose audit event cannot be queued or goes to a failing sink, instead of dropping and counting the event")
	fs.IntVar(&a.queue, "audit-queue", audit.DefaultQueue, "audit events that may wait for each sink; beyond it they are dropped and counted, or refused with --audit-fail-closed")
}

// start opens the sinks the flags ask for and starts the trail, which has
// no sinks (and records nothing) when no flag asks for one. nc is the
// server's NATS connection, nil without --nats; natsReplicas is the
// replication factor of the stream if the trail creates it.
func (a *auditFlags) start(nc *nats.Conn, natsReplicas int, log *slog.Logger) (*audit.Trail, error) {
	switch {
	case a.queue < 1:
		return nil, fmt.Errorf("--audit-queue %d: give at least 1", a.queue)
	case a.stream && nc == nil:
		return nil, errors.New("--audit-stream needs --nats")
	}
	var sinks []audit.Sink
	if a.stream {
		replica := a.replica
		if replica == "" {
			host, err := os.Hostname()
			if err != nil {
				return nil, fmt.Errorf("no host name to name this replica's audit chain after (%w): set --audit-replica", err)
			}
			replica = replicaName(host)
		}
		if err := audit.CheckReplica(replica); err != nil {
			return nil, fmt.Errorf("--audit-replica: %w", err)
		}
		s, err := audit.NewStreamSink(nc, audit.StreamConfig{Replica: replica, Replicas: natsReplicas})
		if err != nil {
			return nil, err
		}
		sinks = append(sinks, s)
	}
	if a.log != "" {
		s, err := audit.OpenFile(a.log)
		if err != nil {
			return nil, fmt.Errorf("--audit-log: %w", err)
		}
		sinks = append(sinks, s)
	}
	t, err := audit.New(audit.Options{Queue: a.queue, FailClosed: a.failClosed, Logger: log.With("part", "audit")}, sinks...)
	if err != nil {
		return nil, err
	}
	t.Start()
	return t, nil
}

// replicaName makes a host name a replica name: characters other than
// letters, digits, '-' and '_' become '_', and it is cut to 64.
func replicaName(host string) string {
	b := []byte(host[:min(len(host), 64)])
	for i, c := range b {
		if !('a' <= c && c <= 'z' || 'A' <= c && c <= 'Z' || '0' <= c && c <= '9' || c == '-' || c == '_') {
			b[i] = '_'
		}
	}
	return string(b)
}
