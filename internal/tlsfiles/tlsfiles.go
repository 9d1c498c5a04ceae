// Package tlsfiles serves TLS from certificate files that are replaced
// while the server runs (cert-manager and SPIFFE agents renew them): a
// listener's certificate and key, and optionally the CA that client
// certificates must chain to. Run notices a replaced file and loads the
// set again; handshakes from then on use the new one, and connections
// already established are not touched. A new set that does not load (a
// half-written file, a key that does not match, garbage) is refused: the
// last good one stays in use, and Status and the log say why.
package tlsfiles

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"strings"
	"sync"
	"sync/atomic"
	"time"
)

// DefaultPollInterval is how often Run checks the files by default.
const DefaultPollInterval = 10 * time.Second

// Config names the files of a TLS listener.
type Config struct {
	// CertFile holds the certificate (PEM), followed by its intermediates;
	// KeyFile its private key (PEM).
	CertFile, KeyFile string
	// ClientCAFile, if set, holds the CA certificates (PEM) that client
	// certificates must chain to; clients without one are refused in the
	// handshake. Empty: clients are not asked for a certificate.
	ClientCAFile string
	// NextProtos are the ALPN protocols offered, such as "h2".
	NextProtos []string
	// PollInterval is how often Run checks the files for a change;
	// default DefaultPollInterval.
	PollInterval time.Duration
	// Logger receives reloads and refusals; default slog.Default().
	Logger *slog.Logger
}

// Files is a loaded set of TLS files, reloaded by Run.
type Files struct {
	cfg     Config
	current atomic.Pointer[loaded]

	mu       sync.Mutex // guards what follows
	stamps   []os.FileInfo
	reloads  uint64
	failures uint64
	lastErr  string
}

// loaded is one good set of files.
type loaded struct {
	config   *tls.Config
	leaf     *x509.Certificate
	loadedAt time.Time
}

// Status is what Files serves and how its reloads went.
type Status struct {
	Subject   string    // of the certificate served
	NotAfter  time.Time // its expiry
	LoadedAt  time.Time // when it was loaded
	Reloads   uint64    // new sets loaded after the first
	Failures  uint64    // new sets refused
	LastError string    // why the newest set was refused; "" once one loads
}

// Load reads the files. An error names the file and what is wrong.
func Load(cfg Config) (*Files, error) {
	if cfg.CertFile == "" || cfg.KeyFile == "" {
		return nil, errors.New("tls: a certificate file and a key file are both required")
	}
	if cfg.PollInterval <= 0 {
		cfg.PollInterval = DefaultPollInterval
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.Default()
	}
	f := &Files{cfg: cfg}
	stamps, err := f.stat()
	if err != nil {
		return nil, err
	}
	l, err := f.load()
	if err != nil {
		return nil, err
	}
	f.current.Store(l)
	f.stamps = stamps
	return f, nil
}

// ServerConfig returns a server configuration whose every handshake uses
// the files loaded last.
func (f *Files) ServerConfig() *tls.Config {
	return &tls.Config{
		MinVersion: tls.VersionTLS12,
		NextProtos: f.cfg.NextProtos,
		GetConfigForClient: func(*tls.ClientHelloInfo) (*tls.Config, error) {
			return f.current.Load().config, nil
		},
	}
}

// Status reports the certificate served and the reloads.
func (f *Files) Status() Status {
	l := f.current.Load()
	f.mu.Lock()
	defer f.mu.Unlock()
	return Status{
		Subject: l.leaf.Subject.String(), NotAfter: l.leaf.NotAfter, LoadedAt: l.loadedAt,
		Reloads: f.reloads, Failures: f.failures, LastError: f.lastErr,
	}
}

// Run checks the files every PollInterval until ctx is done, and loads
// them again when one changed.
func (f *Files) Run(ctx context.Context) {
	t := time.NewTicker(f.cfg.PollInterval)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
			f.check()
		}
	}
}

// check loads the files again if one of them changed since the last load
// (or the last refusal: a refused set is not read again until it changes).
func (f *Files) check() {
	stamps, err := f.stat()
	f.mu.Lock()
	same := err == nil && sameFiles(f.stamps, stamps)
	f.mu.Unlock()
	if same {
		return
	}
	var l *loaded
	if err == nil {
		l, err = f.load()
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	if stamps != nil {
		f.stamps = stamps
	}
	if err != nil {
		f.failures++
		if err.Error() != f.lastErr {
			f.lastErr = err.Error()
			f.cfg.Logger.Error("TLS files refused; serving the previous certificate", "err", err,
				"subject", f.current.Load().leaf.Subject.String())
		}
		return
	}
	f.current.Store(l)
	f.reloads++
	f.lastErr = ""
	f.cfg.Logger.Info("TLS files reloaded", "cert_file", f.cfg.CertFile, "subject", l.leaf.Subject.String(), "not_after", l.leaf.NotAfter)
}

// files returns the names of the files in use.
func (f *Files) files() []string {
	names := []string{f.cfg.CertFile, f.cfg.KeyFile}
	if f.cfg.ClientCAFile != "" {
		names = append(names, f.cfg.ClientCAFile)
	}
	return names
}

// stat returns what identifies the current version of each file. Stat
// follows symbolic links, so a Kubernetes volume that swaps its ..data
// link is seen as changed.
func (f *Files) stat() ([]os.FileInfo, error) {
	var out []os.FileInfo
	for _, name := range f.files() {
		fi, err := os.Stat(name)
		if err != nil {
			return nil, fmt.Errorf("tls: %w", err)
		}
		out = append(out, fi)
	}
	return out, nil
}

func sameFiles(a, b []os.FileInfo) bool {
	if len(a) != len(b) {
		return false
	}
	for i := range a {
		if !os.SameFile(a[i], b[i]) || !a[i].ModTime().Equal(b[i].ModTime()) || a[i].Size() != b[i].Size() {
			return false
		}
	}
	return true
}

// maxFile bounds what is read of each file: certificates are small.
const maxFile = 1 << 20

// load reads and checks the files.
func (f *Files) load() (*loaded, error) {
	certPEM, err := readFile(f.cfg.CertFile)
	if err != nil {
		return nil, err
	}
	keyPEM, err := readFile(f.cfg.KeyFile)
	if err != nil {
		return nil, err
	}
	cert, err := tls.X509KeyPair(certPEM, keyPEM)
	if err != nil {
		return nil, fmt.Errorf("tls: certificate %s and key %s: %w", f.cfg.CertFile, f.cfg.KeyFile, err)
	}
	now := time.Now()
	if now.After(cert.Leaf.NotAfter) {
		return nil, fmt.Errorf("tls: certificate %s expired at %s", f.cfg.CertFile, cert.Leaf.NotAfter.UTC().Format(time.RFC3339))
	}
	config := &tls.Config{
		MinVersion:   tls.VersionTLS12,
		NextProtos:   f.cfg.NextProtos,
		Certificates: []tls.Certificate{cert},
	}
	if f.cfg.ClientCAFile != "" {
		caPEM, err := readFile(f.cfg.ClientCAFile)
		if err != nil {
			return nil, err
		}
		pool := x509.NewCertPool()
		if !pool.AppendCertsFromPEM(caPEM) {
			return nil, fmt.Errorf("tls: client CA file %s holds no PEM certificate", f.cfg.ClientCAFile)
		}
		config.ClientCAs = pool
		config.ClientAuth = tls.RequireAndVerifyClientCert
	}
	return &loaded{config: config, leaf: cert.Leaf, loadedAt: now}, nil
}

func readFile(name string) ([]byte, error) {
	fh, err := os.Open(name)
	if err != nil {
		return nil, fmt.Errorf("tls: %w", err)
	}
	defer fh.Close()
	data, err := io.ReadAll(io.LimitReader(fh, maxFile+1))
	if err != nil {
		return nil, fmt.Errorf("tls: read %s: %w", name, err)
	}
	if len(data) > maxFile {
		return nil, fmt.Errorf("tls: %s is larger than %d bytes", name, maxFile)
	}
	return data, nil
}

// Identity names the client of a verified certificate: its SPIFFE ID (a
// URI SAN with scheme spiffe, of which a SPIFFE certificate has exactly
// one), or else its subject common name.
func Identity(cert *x509.Certificate) (string, error) {
	var spiffe []string
	for _, u := range cert.URIs {
		if strings.EqualFold(u.Scheme, "spiffe") {
			spiffe = append(spiffe, u.String())
		}
	}
	switch {
	case len(spiffe) == 1:
		return spiffe[0], nil
	case len(spiffe) > 1:
		return "", fmt.Errorf("certificate of %q names %d SPIFFE IDs; a SPIFFE certificate names one", cert.Subject.CommonName, len(spiffe))
	case cert.Subject.CommonName != "":
		return cert.Subject.CommonName, nil
	}
	return "", errors.New("certificate names neither a SPIFFE ID nor a subject common name")
}
