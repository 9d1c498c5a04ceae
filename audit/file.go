package audit

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
)

// FileSink writes a chain as JSON lines to a file, or to standard output.
// One process writes a file: replicas each write their own.
type FileSink struct {
	label string
	w     io.Writer
	// f is the file, nil for standard output. Each write is synced; a
	// failed one is cut off the file (to size, the bytes that hold whole
	// records), so that the retry continues the chain where it stood.
	f     *os.File
	size  int64
	dirty bool // a failed write could not be cut off yet

	last Link
	buf  []byte
}

// OpenFile opens the trail in the file at path for appending, creating it
// (mode 0600) if needed, and continues its chain after its last record.
// A last line that is not a whole record (a write cut short, an edit) is
// an error, not a new chain: check the file with meshauth audit verify. A
// path of "-" is standard output, where each start begins a new chain.
func OpenFile(path string) (*FileSink, error) {
	if path == "-" {
		return newWriterSink("stdout", os.Stdout), nil
	}
	f, err := os.OpenFile(path, os.O_RDWR|os.O_APPEND|os.O_CREATE, 0o600)
	if err != nil {
		return nil, fmt.Errorf("audit log: %w", err)
	}
	s := &FileSink{label: "file " + path, w: f, f: f}
	if err := s.readHead(); err != nil {
		f.Close()
		return nil, fmt.Errorf("audit log %s: %w", path, err)
	}
	return s, nil
}

// newWriterSink returns a sink starting a new chain on w, which it cannot
// read back.
func newWriterSink(label string, w io.Writer) *FileSink {
	return &FileSink{label: label, w: w}
}

// readHead finds the chain's last record, at the end of the file.
func (s *FileSink) readHead() error {
	var (
		last []byte
		n    int
	)
	err := forEachLine(s.f, func(i int, line []byte) error {
		last, n = append(last[:0], line...), i
		return nil
	})
	var broken *BrokenError
	if errors.As(err, &broken) {
		return fmt.Errorf("line %d: %s; check the file with meshauth audit verify, and move it aside to start a new chain", broken.Line, broken.Reason)
	}
	if err != nil {
		return err
	}
	if last != nil {
		if s.last, _, err = parseRecord(last, newDigest()); err != nil {
			return fmt.Errorf("line %d, its last, is not a whole record (%v); check the file with meshauth audit verify, and move it aside to start a new chain", n, err)
		}
	}
	s.size, err = s.f.Seek(0, io.SeekEnd)
	return err
}

func (s *FileSink) name() string { return s.label }

func (s *FileSink) head() Link { return s.last }

func (s *FileSink) append(_ context.Context, bodies [][]byte) (int, error) {
	if s.dirty {
		if err := s.f.Truncate(s.size); err != nil {
			return 0, fmt.Errorf("cut off a failed write: %w", err)
		}
		s.dirty = false
	}
	buf, last := s.buf[:0], s.last
	for _, b := range bodies {
		buf, last = last.appendRecord(buf, b)
		buf = append(buf, '\n')
	}
	s.buf = buf
	_, err := s.w.Write(buf)
	if err == nil && s.f != nil {
		err = s.f.Sync()
	}
	if err != nil {
		if s.f != nil {
			s.dirty = s.f.Truncate(s.size) != nil
		}
		return 0, fmt.Errorf("write: %w", err)
	}
	s.size += int64(len(buf))
	s.last = last
	return len(bodies), nil
}

func (s *FileSink) close() error {
	if s.f == nil {
		return nil
	}
	return s.f.Close()
}
