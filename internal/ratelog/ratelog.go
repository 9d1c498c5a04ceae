// Package ratelog bounds the log lines that a remote party can cause. A
// [Handler] passes records on to another slog.Handler at most Burst times
// per Interval for each kind of line (by default its level and message),
// counts the ones it drops, and writes that count on the next line of the
// kind it lets through. It cuts long messages and string values, so that a
// peer's megabyte of text becomes a few hundred bytes of log.
//
// Time is read from time.Now, so tests run it in a testing/synctest bubble.
package ratelog

import (
	"context"
	"fmt"
	"hash/maphash"
	"log/slog"
	"strconv"
	"sync"
	"sync/atomic"
	"time"
	"unicode/utf8"
)

// Defaults of [Config].
const (
	DefaultInterval = time.Minute
	DefaultBurst    = 5
	DefaultMaxKinds = 1024
	DefaultMaxBytes = 512
)

// Config bounds a [Handler]. Zero values take the defaults.
type Config struct {
	// Interval and Burst: each kind of line is written at most Burst times
	// per Interval.
	Interval time.Duration
	Burst    int
	// MaxKinds bounds the kinds followed at once; when that many are
	// followed and none of them is idle, further kinds share one budget.
	MaxKinds int
	// MaxBytes cuts the message and every string, error or byte-slice
	// value to this many bytes, and says how long it was.
	MaxBytes int
}

// DroppedKey is the attribute that carries, on a line written, how many
// lines of its kind were dropped since the previous one.
const DroppedKey = "dropped"

// kindKey is the attribute that names a record's kind (see [Kind]).
const kindKey = "ratelog.kind"

// Kind returns an attribute that sets the kind of the record it is logged
// with, in place of its level and message: NACKs counted per node, for
// one. The attribute itself is not written.
func Kind(kind string) slog.Attr { return slog.String(kindKey, kind) }

// Handler is a slog.Handler that passes records on at a bounded rate.
// Handlers derived from it (WithAttrs, WithGroup) share its budgets.
type Handler struct {
	next slog.Handler
	lim  *limiter
}

// NewHandler returns a Handler writing to next.
func NewHandler(next slog.Handler, cfg Config) *Handler {
	if cfg.Interval <= 0 {
		cfg.Interval = DefaultInterval
	}
	if cfg.Burst <= 0 {
		cfg.Burst = DefaultBurst
	}
	if cfg.MaxKinds <= 0 {
		cfg.MaxKinds = DefaultMaxKinds
	}
	if cfg.MaxBytes <= 0 {
		cfg.MaxBytes = DefaultMaxBytes
	}
	return &Handler{next: next, lim: &limiter{cfg: cfg, seed: maphash.MakeSeed(), kinds: map[uint64]*window{}}}
}

// New returns a logger that writes to log through a Handler with the
// default Config.
func New(log *slog.Logger) *slog.Logger {
	return slog.New(NewHandler(log.Handler(), Config{}))
}

// Dropped returns how many records h and the handlers derived from it
// have dropped.
func (h *Handler) Dropped() uint64 { return h.lim.dropped.Load() }

// Enabled reports whether the next handler is enabled at level: a level
// not logged spends no budget.
func (h *Handler) Enabled(ctx context.Context, level slog.Level) bool {
	return h.next.Enabled(ctx, level)
}

// Handle passes r on, cut, if its kind has budget left, and drops it
// otherwise.
func (h *Handler) Handle(ctx context.Context, r slog.Record) error {
	kind := ""
	r.Attrs(func(a slog.Attr) bool {
		if a.Key == kindKey {
			kind = a.Value.String()
			return false
		}
		return true
	})
	if kind == "" {
		kind = r.Level.String() + " " + r.Message
	}
	ok, dropped := h.lim.allow(kind)
	if !ok {
		return nil
	}
	limit := h.lim.cfg.MaxBytes
	out := slog.NewRecord(r.Time, r.Level, cut(r.Message, limit), r.PC)
	r.Attrs(func(a slog.Attr) bool {
		if a.Key != kindKey {
			out.AddAttrs(cutAttr(a, limit))
		}
		return true
	})
	if dropped > 0 {
		out.AddAttrs(slog.Uint64(DroppedKey, dropped))
	}
	return h.next.Handle(ctx, out)
}

// WithAttrs returns a handler with attrs, sharing h's budgets.
func (h *Handler) WithAttrs(attrs []slog.Attr) slog.Handler {
	return &Handler{next: h.next.WithAttrs(attrs), lim: h.lim}
}

// WithGroup returns a handler with group name, sharing h's budgets.
func (h *Handler) WithGroup(name string) slog.Handler {
	return &Handler{next: h.next.WithGroup(name), lim: h.lim}
}

// limiter keeps a fixed window per kind: Burst lines from the first line
// of the window until Interval later.
type limiter struct {
	cfg     Config
	seed    maphash.Seed
	dropped atomic.Uint64

	mu        sync.Mutex
	kinds     map[uint64]*window // by hash of the kind: bounded memory whatever the kind's length
	shared    window             // the budget of kinds beyond MaxKinds
	nextSweep time.Time          // the earliest time a full table is swept again
}

type window struct {
	start   time.Time
	lines   int
	dropped uint64 // since the last line written
}

// allow reports whether a line of kind may be written now and, if so, how
// many of its kind were dropped since the last one written.
func (l *limiter) allow(kind string) (bool, uint64) {
	now := time.Now()
	h := maphash.String(l.seed, kind)
	l.mu.Lock()
	defer l.mu.Unlock()
	w := l.kinds[h]
	if w == nil {
		if len(l.kinds) >= l.cfg.MaxKinds {
			l.sweep(now)
		}
		if len(l.kinds) < l.cfg.MaxKinds {
			w = &window{start: now}
			l.kinds[h] = w
		} else {
			w = &l.shared
		}
	}
	if now.Sub(w.start) >= l.cfg.Interval {
		w.start, w.lines = now, 0
	}
	if w.lines >= l.cfg.Burst {
		w.dropped++
		l.dropped.Add(1)
		return false, 0
	}
	w.lines++
	dropped := w.dropped
	w.dropped = 0
	return true, dropped
}

// sweep forgets the kinds whose window ended, at most once per Interval,
// so that a flood of new kinds does not scan the table on every line. The
// drops counted for a forgotten kind are in the total only.
func (l *limiter) sweep(now time.Time) {
	if now.Before(l.nextSweep) {
		return
	}
	l.nextSweep = now.Add(l.cfg.Interval)
	for h, w := range l.kinds {
		if now.Sub(w.start) >= l.cfg.Interval {
			delete(l.kinds, h)
		}
	}
}

// cutAttr cuts the strings in a.
func cutAttr(a slog.Attr, limit int) slog.Attr {
	v := a.Value.Resolve()
	switch v.Kind() {
	case slog.KindString:
		return slog.String(a.Key, cut(v.String(), limit))
	case slog.KindGroup:
		attrs := v.Group()
		out := make([]slog.Attr, len(attrs))
		for i, g := range attrs {
			out[i] = cutAttr(g, limit)
		}
		return slog.Attr{Key: a.Key, Value: slog.GroupValue(out...)}
	case slog.KindAny:
		switch x := v.Any().(type) {
		case error:
			return slog.String(a.Key, cut(x.Error(), limit))
		case []byte:
			return slog.String(a.Key, cut(string(x), limit))
		case fmt.Stringer:
			return slog.String(a.Key, cut(x.String(), limit))
		}
	}
	return slog.Attr{Key: a.Key, Value: v}
}

// cut returns s, or its first limit bytes (whole UTF-8 sequences)
// followed by how long it was.
func cut(s string, limit int) string {
	if len(s) <= limit {
		return s
	}
	n := limit
	for n > 0 && !utf8.RuneStart(s[n]) {
		n--
	}
	return s[:n] + "…(" + strconv.Itoa(len(s)) + " bytes)"
}
