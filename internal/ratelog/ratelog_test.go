package ratelog

import (
	"bytes"
	"errors"
	"fmt"
	"log/slog"
	"strings"
	"testing"
	"testing/synctest"
	"time"
)

// lines returns the log's lines.
func lines(buf *bytes.Buffer) []string {
	return strings.Split(strings.TrimSuffix(buf.String(), "\n"), "\n")
}

func newLogger(cfg Config) (*slog.Logger, *Handler, *bytes.Buffer) {
	var buf bytes.Buffer
	h := NewHandler(slog.NewTextHandler(&buf, &slog.HandlerOptions{
		ReplaceAttr: func(_ []string, a slog.Attr) slog.Attr {
			if a.Key == slog.TimeKey {
				return slog.Attr{}
			}
			return a
		},
	}), cfg)
	return slog.New(h), h, &buf
}

// TestBurstPerInterval: Burst lines of a kind per Interval, the rest
// counted, and the count written on the next line let through.
func TestBurstPerInterval(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		log, h, buf := newLogger(Config{Interval: time.Minute, Burst: 2})
		for i := range 10 {
			log.Warn("upstream failed", "i", i)
			log.Info("other kind", "i", i)
		}
		got := lines(buf)
		want := []string{
			`level=WARN msg="upstream failed" i=0`, `level=INFO msg="other kind" i=0`,
			`level=WARN msg="upstream failed" i=1`, `level=INFO msg="other kind" i=1`,
		}
		if strings.Join(got, "\n") != strings.Join(want, "\n") {
			t.Fatalf("lines:\n%s\nwant:\n%s", strings.Join(got, "\n"), strings.Join(want, "\n"))
		}
		if h.Dropped() != 16 {
			t.Fatalf("Dropped %d, want 16", h.Dropped())
		}

		time.Sleep(59 * time.Second)
		log.Warn("upstream failed", "i", 10)
		if n := len(lines(buf)); n != 4 {
			t.Fatalf("a line before the interval ended was written: %d lines", n)
		}
		time.Sleep(time.Second)
		log.Warn("upstream failed", "i", 11)
		if last := lines(buf)[4]; last != `level=WARN msg="upstream failed" i=11 dropped=9` {
			t.Fatalf("line after the interval: %s", last)
		}
		if h.Dropped() != 17 {
			t.Fatalf("Dropped %d, want 17", h.Dropped())
		}
	})
}

// TestKind: a Kind attribute replaces level and message as the kind, and
// is not written.
func TestKind(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		log, _, buf := newLogger(Config{Burst: 1})
		for range 3 {
			for _, node := range []string{"a", "b"} {
				log.Warn("NACK", Kind("nack "+node), "node", node)
			}
		}
		got := buf.String()
		if got != "level=WARN msg=NACK node=a\nlevel=WARN msg=NACK node=b\n" {
			t.Fatalf("log:\n%s", got)
		}
	})
}

// TestCut: the message and every string-like value are cut to MaxBytes,
// on a UTF-8 boundary, saying how long they were; other values stay.
func TestCut(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		log, _, buf := newLogger(Config{MaxBytes: 8})
		big := strings.Repeat("x", 1<<20)
		log.Warn(big, "s", big, "err", errors.New(big), "b", []byte(big), "n", 1234567890123,
			slog.Group("g", "inner", big), "utf8", "ééééé", "d", time.Second)
		want := `level=WARN msg="xxxxxxxx…(1048576 bytes)" s="xxxxxxxx…(1048576 bytes)" err="xxxxxxxx…(1048576 bytes)" b="xxxxxxxx…(1048576 bytes)" n=1234567890123 g.inner="xxxxxxxx…(1048576 bytes)" utf8="éééé…(10 bytes)" d=1s` + "\n"
		if got := buf.String(); got != want {
			t.Fatalf("log:\n%s\nwant:\n%s", got, want)
		}
	})
}

// TestDisabledLevelSpendsNothing: a record below the handler's level
// neither counts nor uses up the kind's budget.
func TestDisabledLevelSpendsNothing(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		var buf bytes.Buffer
		h := NewHandler(slog.NewTextHandler(&buf, &slog.HandlerOptions{Level: slog.LevelWarn}), Config{Burst: 1})
		log := slog.New(h)
		for range 5 {
			log.Debug("refused")
		}
		if h.Dropped() != 0 || buf.Len() != 0 {
			t.Fatalf("debug lines: dropped %d, log %q", h.Dropped(), buf.String())
		}
	})
}

// TestManyKindsBounded: a flood of distinct kinds (a peer choosing node
// ids, say) is followed in at most MaxKinds windows; beyond, they share
// one budget, so the lines written per interval stay bounded. Idle kinds
// are forgotten when the table is full.
func TestManyKindsBounded(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		log, h, buf := newLogger(Config{Interval: time.Minute, Burst: 1, MaxKinds: 10})
		for i := range 1000 {
			log.Warn("unknown node", Kind(fmt.Sprint("node-", i)))
		}
		if n := len(lines(buf)); n != 11 {
			t.Fatalf("%d lines for 1000 kinds, want 10 followed + 1 shared", n)
		}
		if n := len(h.lim.kinds); n != 10 {
			t.Fatalf("%d kinds followed", n)
		}
		if h.Dropped() != 989 {
			t.Fatalf("Dropped %d", h.Dropped())
		}
		time.Sleep(time.Minute)
		buf.Reset()
		for i := range 1000 {
			log.Warn("unknown node", Kind(fmt.Sprint("other-", i)))
		}
		if n := len(lines(buf)); n != 11 {
			t.Fatalf("after the interval, %d lines for 1000 new kinds, want 11", n)
		}
	})
}

// TestDerivedHandlersShareBudget: With and WithGroup do not open new
// budgets.
func TestDerivedHandlersShareBudget(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		log, _, buf := newLogger(Config{Burst: 1})
		log.Warn("x")
		log.With("a", 1).Warn("x")
		log.WithGroup("g").Warn("x")
		if n := len(lines(buf)); n != 1 {
			t.Fatalf("%d lines", n)
		}
	})
}
