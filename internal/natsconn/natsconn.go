// Package natsconn connects meshauth's commands to NATS: the flags that say
// where and how (servers, credentials, TLS), shared by the issuer and the
// sidecar, and a connection that reconnects forever and logs what happens
// to it.
package natsconn

import (
	"errors"
	"flag"
	"fmt"
	"log/slog"
	"net/url"
	"strings"
	"time"

	"github.com/nats-io/nats.go"
)

// Flags are the NATS connection settings of a command.
type Flags struct {
	// URLs is a comma-separated list of servers, nats:// or tls://; empty
	// means no NATS.
	URLs string
	// CredsFile is a NATS credentials file (user JWT and NKey seed).
	CredsFile string
	// NKeyFile is a file holding an NKey seed, for NKey authentication.
	NKeyFile string
	// TLSCA, TLSCert and TLSKey are PEM files: the CA that signed the
	// servers' certificates, and a client certificate and its key.
	TLSCA, TLSCert, TLSKey string
}

// Register adds the flags to fs: --nats, --nats-creds, --nats-nkey,
// --nats-tls-ca, --nats-tls-cert, --nats-tls-key.
func (f *Flags) Register(fs *flag.FlagSet, use string) {
	fs.StringVar(&f.URLs, "nats", "", "NATS server URLs, comma-separated (nats://host:4222, tls://...): "+use)
	fs.StringVar(&f.CredsFile, "nats-creds", "", "NATS credentials file (user JWT and NKey seed)")
	fs.StringVar(&f.NKeyFile, "nats-nkey", "", "file holding the NKey seed to authenticate to NATS with")
	fs.StringVar(&f.TLSCA, "nats-tls-ca", "", "PEM file of the CA that signed the NATS servers' certificates")
	fs.StringVar(&f.TLSCert, "nats-tls-cert", "", "PEM client certificate for NATS (mutual TLS)")
	fs.StringVar(&f.TLSKey, "nats-tls-key", "", "PEM private key of --nats-tls-cert")
}

// Enabled reports whether a NATS server is configured.
func (f *Flags) Enabled() bool { return strings.TrimSpace(f.URLs) != "" }

// ReconnectWait is the pause between reconnection attempts to one server.
const ReconnectWait = time.Second

// PingInterval and MaxPingsOut bound how long a connection whose server
// went silent (a node lost without closing its connections, a partition)
// goes unnoticed: MaxPingsOut pings unanswered, PingInterval apart. A
// server that stops closes its connections, which the client notices at
// once; either way it then reconnects to another server of the list
// within ReconnectWait.
const (
	PingInterval = 5 * time.Second
	MaxPingsOut  = 2
)

// Connect returns a connection to the servers of f, named name in the
// servers' monitoring. It does not wait for a server: if none answers yet,
// the connection keeps trying, as it does after losing its server, forever,
// logging each connect, disconnect and reconnect on log. NATS is a fast
// path that the callers can do without while it is down. extra options go
// last (tests shorten waits with them).
func Connect(f *Flags, name string, log *slog.Logger, extra ...nats.Option) (*nats.Conn, error) {
	if !f.Enabled() {
		return nil, errors.New("no NATS server configured (--nats)")
	}
	if (f.TLSCert == "") != (f.TLSKey == "") {
		return nil, errors.New("--nats-tls-cert and --nats-tls-key go together")
	}
	if f.CredsFile != "" && f.NKeyFile != "" {
		return nil, errors.New("give --nats-creds or --nats-nkey, not both")
	}
	opts := []nats.Option{
		nats.Name(name),
		nats.MaxReconnects(-1),
		nats.ReconnectWait(ReconnectWait),
		nats.PingInterval(PingInterval),
		nats.MaxPingsOutstanding(MaxPingsOut),
		nats.RetryOnFailedConnect(true),
		nats.ConnectHandler(func(c *nats.Conn) {
			log.Info("NATS connected", "server", redact(c.ConnectedUrl()))
		}),
		nats.DisconnectErrHandler(func(_ *nats.Conn, err error) {
			if err != nil {
				log.Warn("NATS disconnected; reconnecting", "err", err)
			} else {
				log.Info("NATS disconnected")
			}
		}),
		nats.ReconnectHandler(func(c *nats.Conn) {
			log.Info("NATS reconnected", "server", redact(c.ConnectedUrl()))
		}),
		nats.ErrorHandler(func(_ *nats.Conn, sub *nats.Subscription, err error) {
			subject := ""
			if sub != nil {
				subject = sub.Subject
			}
			log.Warn("NATS error", "subject", subject, "err", err)
		}),
	}
	if f.CredsFile != "" {
		opts = append(opts, nats.UserCredentials(f.CredsFile))
	}
	if f.NKeyFile != "" {
		o, err := nats.NkeyOptionFromSeed(f.NKeyFile)
		if err != nil {
			return nil, fmt.Errorf("--nats-nkey: %w", err)
		}
		opts = append(opts, o)
	}
	if f.TLSCA != "" {
		opts = append(opts, nats.RootCAs(f.TLSCA))
	}
	if f.TLSCert != "" {
		opts = append(opts, nats.ClientCert(f.TLSCert, f.TLSKey))
	}
	opts = append(opts, extra...)
	nc, err := nats.Connect(f.URLs, opts...)
	if err != nil {
		return nil, fmt.Errorf("NATS at %s: %w", redactList(f.URLs), err)
	}
	return nc, nil
}

// redact returns a server URL without the password it may carry.
func redact(raw string) string {
	u, err := url.Parse(raw)
	if err != nil {
		return "(unparsable URL)"
	}
	return u.Redacted()
}

func redactList(urls string) string {
	parts := strings.Split(urls, ",")
	for i, p := range parts {
		parts[i] = redact(strings.TrimSpace(p))
	}
	return strings.Join(parts, ",")
}
