package proxy

import (
	"cmp"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"log/slog"
	"math"
	"math/rand/v2"
	"sync"
	"sync/atomic"

	"github.com/prometheus/client_golang/prometheus"
)

// DefaultDecisionLogBuffer is the default of DecisionLogConfig.Buffer.
const DefaultDecisionLogBuffer = 512

// DecisionLogConfig configures a DecisionLog.
type DecisionLogConfig struct {
	// Logger receives one line per decision logged, at Info level.
	Logger *slog.Logger
	// AllowedRate is the share of allowed requests logged, from 0 (none,
	// the default) to 1 (all). Refusals are always logged.
	AllowedRate float64
	// Buffer bounds the lines waiting to be written; a line beyond it is
	// dropped and counted. 0 means DefaultDecisionLogBuffer.
	Buffer int
	// Registerer, if not nil, gets meshauth_decision_log_dropped_total.
	Registerer prometheus.Registerer
}

// DecisionLog writes one structured line per refusal and per sampled
// allowed request: entry point, route, outcome, reason, status, method,
// canonical path (as sent if it cannot be made canonical), and, once the
// token is verified, its issuer, qualified
// sub and client_id, and the first 8 bytes of the SHA-256 of its jti;
// never the token. Requests only queue their line: a goroutine of its
// own writes them, so that a slow log never slows a request, and a full
// queue drops lines rather than wait. Close stops it.
type DecisionLog struct {
	log       *slog.Logger
	threshold uint64 // an allowed request is logged if a random uint64 is below
	all       bool   // every allowed request is logged
	lines     chan decisionLine
	dropped   atomic.Uint64
	stop      chan struct{}
	done      chan struct{}
	closeOnce sync.Once
}

// NewDecisionLog returns a DecisionLog, writing.
func NewDecisionLog(cfg DecisionLogConfig) (*DecisionLog, error) {
	switch {
	case cfg.Logger == nil:
		return nil, errors.New("proxy: decision log: no logger")
	case !(cfg.AllowedRate >= 0 && cfg.AllowedRate <= 1):
		return nil, fmt.Errorf("proxy: decision log: allowed rate %v outside [0, 1]", cfg.AllowedRate)
	case cfg.Buffer < 0:
		return nil, fmt.Errorf("proxy: decision log: negative buffer %d", cfg.Buffer)
	}
	d := &DecisionLog{
		log:   cfg.Logger,
		all:   cfg.AllowedRate == 1,
		lines: make(chan decisionLine, cmp.Or(cfg.Buffer, DefaultDecisionLogBuffer)),
		stop:  make(chan struct{}),
		done:  make(chan struct{}),
	}
	if !d.all {
		d.threshold = uint64(cfg.AllowedRate * math.MaxUint64)
	}
	if cfg.Registerer != nil {
		err := cfg.Registerer.Register(prometheus.NewCounterFunc(prometheus.CounterOpts{
			Name: "meshauth_decision_log_dropped_total",
			Help: "Decision log lines dropped because the log could not keep up.",
		}, func() float64 { return float64(d.dropped.Load()) }))
		if err != nil {
			return nil, fmt.Errorf("proxy: registering decision log metrics: %w", err)
		}
	}
	go d.run()
	return d, nil
}

// Dropped returns the number of lines dropped so far.
func (d *DecisionLog) Dropped() uint64 { return d.dropped.Load() }

// Close writes the lines queued and stops the log's goroutine. Lines
// recorded after Close are dropped.
func (d *DecisionLog) Close() {
	d.closeOnce.Do(func() { close(d.stop) })
	<-d.done
}

func (d *DecisionLog) run() {
	defer close(d.done)
	for {
		select {
		case l := <-d.lines:
			d.write(&l)
		case <-d.stop:
			for {
				select {
				case l := <-d.lines:
					d.write(&l)
				default:
					return
				}
			}
		}
	}
}

// Budgets of a line's text fields, in bytes: longer values are cut.
const (
	lineMethod = 16
	linePath   = 256
	lineID     = 128 // sub, client_id, iss
	lineJTI    = 128
)

// decisionLine is a decision waiting to be written. It holds copies, not
// references: the request's memory is reused once it is answered.
type decisionLine struct {
	entry     entry
	code      code
	route     string // immutable, from the compiled rules
	verified  bool
	truncated bool
	jti       [8]byte
	n         [5]uint16 // lengths in text of method, path, sub, client_id, iss
	text      [lineMethod + linePath + 3*lineID]byte
}

// record queues the line of a decision, if it is to be logged. It neither
// blocks nor allocates.
func (d *DecisionLog) record(e entry, c code, r *request, method []byte) {
	if o := answers[c].outcome; (o == outcomeAllowed || o == outcomePublic) && !d.all && rand.Uint64() >= d.threshold {
		return
	}
	var l decisionLine
	l.entry, l.code = e, c
	if r.route != nil {
		l.route = r.route.label
	}
	text := appendField(&l, l.text[:0], 0, method, lineMethod)
	text = appendField(&l, text, 1, r.canon, linePath)
	if r.verified {
		cl := &r.claims
		l.verified = true
		var buf [lineID]byte
		text = appendField(&l, text, 2, cl.AppendQualified(buf[:0], cl.Subject), lineID)
		text = appendField(&l, text, 3, cl.AppendQualified(buf[:0], cl.ClientID), lineID)
		appendField(&l, text, 4, cl.Issuer, lineID)
		l.jti = jtiDigest(cl.ID)
	}
	select {
	case d.lines <- l:
	default:
		d.dropped.Add(1)
	}
}

// appendField appends v, cut to budget bytes, to text as l's field i.
func appendField[T string | []byte](l *decisionLine, text []byte, i int, v T, budget int) []byte {
	if len(v) > budget {
		v = v[:budget]
		l.truncated = true
	}
	n := len(text)
	text = append(text, v...)
	l.n[i] = uint16(len(text) - n)
	return text
}

// jtiDigest returns the first 8 bytes of the SHA-256 of a jti: enough to
// find a token's decisions, useless to replay it.
func jtiDigest(id string) (d [8]byte) {
	if id == "" {
		return d
	}
	var buf [lineJTI]byte
	var sum [sha256.Size]byte
	if len(id) <= len(buf) {
		sum = sha256.Sum256(append(buf[:0], id...))
	} else {
		sum = sha256.Sum256([]byte(id))
	}
	copy(d[:], sum[:])
	return d
}

func (d *DecisionLog) write(l *decisionLine) {
	a := &answers[l.code]
	var parts [5]string
	rest := l.text[:]
	for i, n := range l.n {
		parts[i], rest = string(rest[:n]), rest[n:]
	}
	attrs := make([]slog.Attr, 0, 12)
	attrs = append(attrs,
		slog.String("entry", entryNames[l.entry]),
		slog.String("route", cmp.Or(l.route, "none")),
		slog.String("outcome", a.outcome),
		slog.String("reason", a.reason),
		slog.Int("status", a.status),
		slog.String("method", parts[0]),
		slog.String("path", parts[1]),
	)
	if l.verified {
		attrs = append(attrs,
			slog.String("iss", parts[4]),
			slog.String("sub", parts[2]),
			slog.String("client_id", parts[3]))
		if l.jti != [8]byte{} {
			attrs = append(attrs, slog.String("jti_sha256", hex.EncodeToString(l.jti[:])))
		}
	}
	if l.truncated {
		attrs = append(attrs, slog.Bool("truncated", true))
	}
	d.log.LogAttrs(context.Background(), slog.LevelInfo, "decision", attrs...)
}
