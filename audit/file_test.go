package audit

import (
	"bytes"
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// writeEvents opens the trail in file, records the events named, and
// closes it.
func writeEvents(t *testing.T, file string, names ...string) {
	t.Helper()
	s, err := OpenFile(file)
	if err != nil {
		t.Fatal(err)
	}
	tr, _ := New(Options{Logger: quiet}, s)
	tr.Start()
	for _, n := range names {
		if err := tr.Record(ev(n)); err != nil {
			t.Fatal(err)
		}
	}
	if err := tr.Close(context.Background()); err != nil {
		t.Fatal(err)
	}
}

func verifyFile(t *testing.T, file string) (Link, error) {
	t.Helper()
	f, err := os.Open(file)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	return Verify(f)
}

// TestFileReopenContinuesChain: a trail reopened after a restart continues
// its chain after its last record.
func TestFileReopenContinuesChain(t *testing.T) {
	file := filepath.Join(t.TempDir(), "audit.jsonl")
	writeEvents(t, file, "a", "b", "c")
	writeEvents(t, file)
	writeEvents(t, file, "d", "e")
	last, err := verifyFile(t, file)
	if err != nil || last.Seq != 5 {
		t.Fatalf("verify: %v, %v", last, err)
	}
	if got := subjects(readRecords(t, file)); got != "a b c d e" {
		t.Errorf("records %q", got)
	}
	if fi, err := os.Stat(file); err != nil || fi.Mode().Perm() != 0o600 {
		t.Errorf("mode %v, %v", fi.Mode(), err)
	}
}

// TestFileReopenRefusesBrokenEnd: a last line that is not a whole record
// stops the trail from opening, naming the line, instead of starting a new
// chain after it.
func TestFileReopenRefusesBrokenEnd(t *testing.T) {
	for _, tt := range []struct {
		name   string
		tamper func(b []byte) []byte
		want   string
	}{
		{"cut short", func(b []byte) []byte { return b[:len(b)-7] }, "line 3: no newline"},
		{"last line edited", func(b []byte) []byte { return bytes.Replace(b, []byte(`"c"`), []byte(`"X"`), 1) }, "line 3, its last, is not a whole record (the record was changed"},
		{"something else appended", func(b []byte) []byte { return append(b, "hello\n"...) }, "line 4, its last, is not a whole record (not an audit record"},
		{"a huge line", func(b []byte) []byte { return append(b, strings.Repeat("x", maxLine+1)+"\n"...) }, "line 4: longer than"},
	} {
		t.Run(tt.name, func(t *testing.T) {
			file := filepath.Join(t.TempDir(), "audit.jsonl")
			writeEvents(t, file, "a", "b", "c")
			b, err := os.ReadFile(file)
			if err != nil {
				t.Fatal(err)
			}
			if err := os.WriteFile(file, tt.tamper(b), 0o600); err != nil {
				t.Fatal(err)
			}
			_, err = OpenFile(file)
			if err == nil || !strings.Contains(err.Error(), tt.want) || !strings.Contains(err.Error(), "meshauth audit verify") {
				t.Errorf("OpenFile = %v, want …%s…", err, tt.want)
			}
		})
	}
}

func TestOpenFileErrors(t *testing.T) {
	if _, err := OpenFile(filepath.Join(t.TempDir(), "missing", "audit.jsonl")); err == nil || !strings.Contains(err.Error(), "audit log") {
		t.Errorf("OpenFile in a missing directory: %v", err)
	}
	if s, err := OpenFile("-"); err != nil || s.name() != "stdout" {
		t.Errorf("OpenFile(-) = %v, %v", s, err)
	}
}

// halfWriter writes half of what it is given to w and fails, while fail.
type halfWriter struct {
	w    *os.File
	fail bool
}

func (h *halfWriter) Write(p []byte) (int, error) {
	if h.fail {
		n, _ := h.w.Write(p[:len(p)/2])
		return n, os.ErrDeadlineExceeded
	}
	return h.w.Write(p)
}

// TestFileCutsOffFailedWrite: a write that fails half-way is cut off the
// file, so that the retry continues the chain where it stood.
func TestFileCutsOffFailedWrite(t *testing.T) {
	file := filepath.Join(t.TempDir(), "audit.jsonl")
	writeEvents(t, file, "a")
	s, err := OpenFile(file)
	if err != nil {
		t.Fatal(err)
	}
	hw := &halfWriter{w: s.f, fail: true}
	s.w = hw
	bodies := [][]byte{appendBody(nil, &Event{Type: TokenIssued, Subject: "b"}), appendBody(nil, &Event{Type: TokenIssued, Subject: "c"})}
	if n, err := s.append(context.Background(), bodies); n != 0 || err == nil {
		t.Fatalf("failing write: %d, %v", n, err)
	}
	if last, err := verifyFile(t, file); err != nil || last.Seq != 1 {
		t.Fatalf("after the failed write: %v, %v", last, err)
	}
	hw.fail = false
	if n, err := s.append(context.Background(), bodies); n != 2 || err != nil {
		t.Fatalf("retry: %d, %v", n, err)
	}
	s.close()
	if last, err := verifyFile(t, file); err != nil || last.Seq != 3 {
		t.Fatalf("after the retry: %v, %v", last, err)
	}
	if got := subjects(readRecords(t, file)); got != "a b c" {
		t.Errorf("records %q", got)
	}
}
