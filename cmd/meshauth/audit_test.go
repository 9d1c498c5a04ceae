package main

import (
	"bytes"
	"context"
	"errors"
	"flag"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/meshauth/meshauth/audit"
	"github.com/meshauth/meshauth/internal/natstest"
)

// writeTrail writes a trail of three events to a new file and returns its
// path.
func writeTrail(t *testing.T) string {
	t.Helper()
	file := filepath.Join(t.TempDir(), "audit.jsonl")
	af := auditFlags{log: file, queue: audit.DefaultQueue}
	tr, err := af.start(nil, 1, slog.New(slog.DiscardHandler))
	if err != nil {
		t.Fatal(err)
	}
	for _, sub := range []string{"alice", "bob", "carol"} {
		if err := tr.Record(audit.Event{Type: audit.TokenIssued, Grant: "client_credentials", Actor: audit.Client("web"), Subject: sub}); err != nil {
			t.Fatal(err)
		}
	}
	if err := tr.Close(context.Background()); err != nil {
		t.Fatal(err)
	}
	return file
}

func TestAuditVerify(t *testing.T) {
	file := writeTrail(t)
	good, err := os.ReadFile(file)
	if err != nil {
		t.Fatal(err)
	}
	edited := filepath.Join(t.TempDir(), "edited.jsonl")
	if err := os.WriteFile(edited, bytes.Replace(good, []byte("bob"), []byte("eve"), 1), 0o600); err != nil {
		t.Fatal(err)
	}
	lines := strings.SplitAfter(string(good), "\n")
	deleted := filepath.Join(t.TempDir(), "deleted.jsonl")
	if err := os.WriteFile(deleted, []byte(lines[0]+lines[2]), 0o600); err != nil {
		t.Fatal(err)
	}
	for _, tt := range []struct {
		name   string
		args   []string
		stdin  []byte
		out    string
		err    string
		status int
	}{
		{"intact", []string{file}, nil, "3 records, chain intact; last record seq 3, hash ", "", 0},
		{"from standard input", []string{"-"}, good, "standard input: 3 records, chain intact", "", 0},
		{"a line edited", []string{edited}, nil, "", "audit trail " + edited + " is broken at line 2: the record was changed", 1},
		{"a line deleted", []string{deleted}, nil, "", "is broken at line 2: seq 3 after 1: 1 record is missing", 1},
		{"no such file", []string{filepath.Join(t.TempDir(), "none")}, nil, "", "no such file", 2},
		{"nothing to verify", []string{}, nil, "", "usage: meshauth audit verify", 2},
		{"no subcommand", nil, nil, "", "usage: meshauth audit verify", 2},
		{"a file wins over NATS", []string{file, "--nats", "nats://127.0.0.1:1"}, nil, "3 records, chain intact", "", 0},
		{"NATS without a replica", []string{"--nats", "nats://127.0.0.1:1"}, nil, "", "--replica is required", 2},
		{"a bad replica name", []string{"--nats", "nats://127.0.0.1:1", "--replica", "a.b"}, nil, "", "--replica: audit replica name \"a.b\"", 2},
		{"flags after the file only", []string{"--replica", "x", file}, nil, "", "unexpected argument", 2},
	} {
		t.Run(tt.name, func(t *testing.T) {
			if tt.stdin != nil {
				r, w, err := os.Pipe()
				if err != nil {
					t.Fatal(err)
				}
				go func() { w.Write(tt.stdin); w.Close() }()
				old := os.Stdin
				os.Stdin = r
				defer func() { os.Stdin = old; r.Close() }()
			}
			var out bytes.Buffer
			args := []string{"audit"}
			if tt.args != nil {
				args = append(args, "verify")
				args = append(args, tt.args...)
			}
			err := run(context.Background(), args, &out, io.Discard)
			if tt.err == "" && err != nil || tt.err != "" && (err == nil || !strings.Contains(err.Error(), tt.err)) {
				t.Fatalf("err = %v, want %q", err, tt.err)
			}
			if err != nil && exitStatus(err) != tt.status {
				t.Errorf("exit status %d, want %d", exitStatus(err), tt.status)
			}
			if !strings.Contains(out.String(), tt.out) {
				t.Errorf("output %q, want %q", out.String(), tt.out)
			}
		})
	}
}

func TestAuditVerifyHelp(t *testing.T) {
	out := captureStderr(t, func() {
		if err := run(context.Background(), []string{"audit", "verify", "--help"}, io.Discard, io.Discard); !errors.Is(err, flag.ErrHelp) {
			t.Errorf("--help: %v", err)
		}
	})
	for _, want := range []string{"Usage: meshauth audit verify [FILE|-]", "--nats string", "env MESHAUTH_NATS", "--replica string", "env MESHAUTH_REPLICA"} {
		if !strings.Contains(out, want) {
			t.Errorf("help lacks %q:\n%s", want, out)
		}
	}
}

// TestAuditFlags opens trails as a server will from its flags, the stream
// one read back with audit verify --nats.
func TestAuditFlags(t *testing.T) {
	ns := natstest.Start(t, t.TempDir(), -1)
	nc := natstest.Connect(t, ns.ClientURL())
	log := slog.New(slog.DiscardHandler)
	parse := func(args ...string) *auditFlags {
		t.Helper()
		var af auditFlags
		fs := flag.NewFlagSet("test", flag.ContinueOnError)
		af.register(fs)
		if err := fs.Parse(args); err != nil {
			t.Fatal(err)
		}
		return &af
	}
	for _, tt := range []struct {
		name  string
		args  []string
		sinks []string
		err   string
	}{
		{"off", nil, nil, ""},
		{"file", []string{"--audit-log", filepath.Join(t.TempDir(), "a.jsonl")}, []string{"file "}, ""},
		{"stream and file", []string{"--audit-stream", "--audit-replica", "issuer-1", "--audit-log", "-"}, []string{"stream meshauth.audit.issuer-1", "stdout"}, ""},
		{"stream with the host name", []string{"--audit-stream"}, []string{"stream meshauth.audit."}, ""},
		{"bad replica name", []string{"--audit-stream", "--audit-replica", "a.b"}, nil, "--audit-replica: audit replica name"},
		{"no queue", []string{"--audit-log", "-", "--audit-queue", "0"}, nil, "--audit-queue 0"},
		{"file in a missing directory", []string{"--audit-log", filepath.Join(t.TempDir(), "no", "a.jsonl")}, nil, "--audit-log: audit log"},
	} {
		t.Run(tt.name, func(t *testing.T) {
			tr, err := parse(tt.args...).start(nc, 1, log)
			if tt.err != "" {
				if err == nil || !strings.Contains(err.Error(), tt.err) {
					t.Fatalf("err = %v, want %q", err, tt.err)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			defer tr.Close(context.Background())
			st := tr.Stats()
			if len(st) != len(tt.sinks) {
				t.Fatalf("sinks %+v, want %q", st, tt.sinks)
			}
			for i, s := range st {
				if !strings.HasPrefix(s.Sink, tt.sinks[i]) {
					t.Errorf("sink %q, want %q…", s.Sink, tt.sinks[i])
				}
			}
		})
	}
	if _, err := parse("--audit-stream").start(nil, 1, log); err == nil || !strings.Contains(err.Error(), "needs --nats") {
		t.Errorf("--audit-stream without NATS: %v", err)
	}

	tr, err := parse("--audit-stream", "--audit-replica", "issuer-2").start(nc, 1, log)
	if err != nil {
		t.Fatal(err)
	}
	for _, sub := range []string{"a", "b"} {
		tr.Record(audit.Event{Type: audit.TokenRevoked, Subject: sub})
	}
	if err := tr.Close(context.Background()); err != nil {
		t.Fatal(err)
	}
	var out bytes.Buffer
	if err := run(context.Background(), []string{"audit", "verify", "--nats", ns.ClientURL(), "--replica", "nobody"}, &out, io.Discard); err == nil || !strings.Contains(err.Error(), "--replica nobody: no records") {
		t.Errorf("a replica without records: %v", err)
	}
	if err := run(context.Background(), []string{"audit", "verify", "--nats", ns.ClientURL(), "--replica", "issuer-2"}, &out, io.Discard); err != nil {
		t.Fatal(err)
	}
	if want := "stream MESHAUTH_AUDIT, replica issuer-2: 2 records, chain intact"; !strings.Contains(out.String(), want) {
		t.Errorf("output %q, want %q", out.String(), want)
	}
}

func TestReplicaName(t *testing.T) {
	for host, want := range map[string]string{
		"issuer-0":                   "issuer-0",
		"pod-7.ns.svc.cluster.local": "pod-7_ns_svc_cluster_local",
		strings.Repeat("h", 80):      strings.Repeat("h", 64),
	} {
		if got := replicaName(host); got != want {
			t.Errorf("replicaName(%q) = %q, want %q", host, got, want)
		}
	}
}
