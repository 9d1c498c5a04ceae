package proxy

import (
	"cmp"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"sync"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"
)

// DefaultPolicyCheckInterval is how often a PolicyFile reads its file for a
// change unless configured otherwise.
const DefaultPolicyCheckInterval = 5 * time.Second

// PolicyFileConfig configures a PolicyFile.
type PolicyFileConfig struct {
	// Path is the file that holds the policy.
	Path string
	// Parse reads the Policy from the file's content. Its errors should
	// name the file and the line at fault.
	Parse func(data []byte) (Policy, error)
	// Interval is how often the file is read for a change: 0 means
	// DefaultPolicyCheckInterval, a negative value never (Signals only).
	Interval time.Duration
	// Signals, if not nil, reload the file on every value received: wire
	// SIGHUP to it.
	Signals <-chan os.Signal
	// Logger receives reloads and refusals; nil discards them.
	Logger *slog.Logger
	// Registerer, if not nil, gets meshauth_policy_version and
	// meshauth_policy_reloads_total.
	Registerer prometheus.Registerer
}

// PolicyFile holds the Rules read from a file and keeps them in step with
// it: a new content that is valid replaces the policy of every entry point
// sharing the Rules at once; one that is not is refused, with its error
// logged, and the policy in force stays. The content is compared by its
// SHA-256, which meshauth_policy_version names. Start and Stop run and end
// its goroutine.
type PolicyFile struct {
	cfg   PolicyFileConfig
	rules *Rules
	log   *slog.Logger

	mu      sync.Mutex
	live    [sha256.Size]byte // digest of the content in force
	refused [sha256.Size]byte // digest of the last content refused
	lastErr string            // the last failure logged

	applied, refusals atomic.Uint64
	stop, done        chan struct{}
	startOnce         sync.Once
	stopOnce          sync.Once
}

// NewPolicyFile reads and compiles the policy in cfg.Path: any error there
// refuses the start.
func NewPolicyFile(cfg PolicyFileConfig) (*PolicyFile, error) {
	if cfg.Path == "" || cfg.Parse == nil {
		return nil, errors.New("proxy: policy file: no path or parser")
	}
	data, err := os.ReadFile(cfg.Path)
	if err != nil {
		return nil, fmt.Errorf("proxy: policy file: %w", err)
	}
	p, err := cfg.Parse(data)
	if err != nil {
		return nil, err
	}
	rules, err := NewRules(p)
	if err != nil {
		return nil, fmt.Errorf("policy file %s: %w", cfg.Path, err)
	}
	f := &PolicyFile{
		cfg:   cfg,
		rules: rules,
		log:   cmp.Or(cfg.Logger, slog.New(slog.DiscardHandler)),
		live:  sha256.Sum256(data),
		stop:  make(chan struct{}),
		done:  make(chan struct{}),
	}
	if cfg.Registerer != nil {
		if err := cfg.Registerer.Register(policyCollector{f}); err != nil {
			return nil, fmt.Errorf("proxy: registering policy metrics: %w", err)
		}
	}
	return f, nil
}

// Rules returns the rules the file holds, for the entry points' Config.
func (f *PolicyFile) Rules() *Rules { return f.rules }

// Start watches the file until Stop.
func (f *PolicyFile) Start() {
	f.startOnce.Do(func() { go f.run() })
}

// Stop ends the watch and waits for it to end. The Rules stay usable.
func (f *PolicyFile) Stop() {
	f.stopOnce.Do(func() { close(f.stop) })
	f.startOnce.Do(func() { close(f.done) }) // never started
	<-f.done
}

func (f *PolicyFile) run() {
	defer close(f.done)
	var tick <-chan time.Time
	if interval := cmp.Or(f.cfg.Interval, DefaultPolicyCheckInterval); interval > 0 {
		t := time.NewTicker(interval)
		defer t.Stop()
		tick = t.C
	}
	for {
		select {
		case <-f.stop:
			return
		case <-tick:
			f.check(false)
		case <-f.cfg.Signals:
			f.check(true)
		}
	}
}

// check reads the file and applies a new content. asked says whether an
// operator asked (a signal): then even a content unchanged, or refused
// before, is reported again.
func (f *PolicyFile) check(asked bool) {
	f.mu.Lock()
	defer f.mu.Unlock()
	data, err := os.ReadFile(f.cfg.Path)
	if err != nil {
		f.refuse(err, asked)
		return
	}
	sum := sha256.Sum256(data)
	switch {
	case sum == f.live:
		f.lastErr = ""
		if asked {
			f.log.Info("policy file unchanged", "path", f.cfg.Path, "version", f.rules.Version(), "sha256", hex.EncodeToString(sum[:]))
		}
		return
	case sum == f.refused && !asked:
		return // refused already, and said so
	}
	p, err := f.cfg.Parse(data)
	if err == nil {
		err = f.rules.Replace(p)
	}
	if err != nil {
		f.refused = sum
		f.refuse(err, asked)
		return
	}
	f.live, f.lastErr = sum, ""
	f.applied.Add(1)
	f.log.Info("policy reloaded", "path", f.cfg.Path, "version", f.rules.Version(), "sha256", hex.EncodeToString(sum[:]))
}

// refuse counts a failed reload and logs it, once per distinct error
// unless an operator asked: a file that stays unreadable is one refusal.
func (f *PolicyFile) refuse(err error, asked bool) {
	if msg := err.Error(); asked || msg != f.lastErr {
		f.lastErr = msg
		f.refusals.Add(1)
		f.log.Error("policy file refused; the policy in force stays", "path", f.cfg.Path, "version", f.rules.Version(), "err", err)
	}
}

// policyCollector exports which policy is live and how reloads went.
type policyCollector struct{ f *PolicyFile }

var (
	policyVersionDesc = prometheus.NewDesc("meshauth_policy_version",
		"Version of the route policy in force (1 for the one read at start, then one more per reload applied), labelled with the SHA-256 of its file.",
		[]string{"sha256"}, nil)
	policyReloadsDesc = prometheus.NewDesc("meshauth_policy_reloads_total",
		"Reloads of the policy file, by result: applied, or refused (unreadable or invalid; the policy in force stays).",
		[]string{"result"}, nil)
)

func (c policyCollector) Describe(ch chan<- *prometheus.Desc) {
	ch <- policyVersionDesc
	ch <- policyReloadsDesc
}

func (c policyCollector) Collect(ch chan<- prometheus.Metric) {
	c.f.mu.Lock()
	live := c.f.live
	c.f.mu.Unlock()
	ch <- prometheus.MustNewConstMetric(policyVersionDesc, prometheus.GaugeValue, float64(c.f.rules.Version()), hex.EncodeToString(live[:]))
	ch <- prometheus.MustNewConstMetric(policyReloadsDesc, prometheus.CounterValue, float64(c.f.applied.Load()), "applied")
	ch <- prometheus.MustNewConstMetric(policyReloadsDesc, prometheus.CounterValue, float64(c.f.refusals.Load()), "refused")
}
