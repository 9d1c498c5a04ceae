package audit

import (
	"bytes"
	"errors"
	"strings"
	"testing"
)

// FuzzParseRecord: the verifier's line parser never panics, and a line it
// accepts is exactly the line the writer makes of the same record: there
// is one way to write a record, so no variant of one passes for it.
func FuzzParseRecord(f *testing.F) {
	for _, line := range testTrail(3) {
		f.Add([]byte(line))
		f.Add([]byte(strings.Replace(line, "event", "evant", 1)))
	}
	f.Add([]byte(`{"seq":1,"prev":"","hash":""}`))
	f.Add([]byte(`{"seq":18446744073709551616,"prev":"0","hash":"0",}`))
	f.Fuzz(func(t *testing.T, line []byte) {
		rec, prev, err := parseRecord(line, newDigest())
		if err != nil {
			return
		}
		i := bytes.Index(line, []byte(`"hash":"`))
		again, next := Link{Seq: rec.Seq - 1, Hash: prev}.appendRecord(nil, line[i+hashMember:len(line)-1])
		if !bytes.Equal(again, line) || next != rec {
			t.Fatalf("accepted %q\nwhich the writer makes as %q", line, again)
		}
	})
}

// FuzzVerify: Verify never panics on any file, and an intact chain has as
// many records as lines.
func FuzzVerify(f *testing.F) {
	lines := testTrail(4)
	f.Add([]byte(join(lines)))
	f.Add([]byte(join(lines[1:])))
	f.Add([]byte(join(lines)[:100]))
	f.Add([]byte("\n\n"))
	f.Fuzz(func(t *testing.T, data []byte) {
		last, err := Verify(bytes.NewReader(data))
		var broken *BrokenError
		switch {
		case err == nil && last.Seq != uint64(bytes.Count(data, []byte{'\n'})):
			t.Fatalf("intact chain of %d records in %d lines", last.Seq, bytes.Count(data, []byte{'\n'}))
		case err != nil && (!errors.As(err, &broken) || broken.Line < 1):
			t.Fatalf("err = %v, want a *BrokenError with a line", err)
		}
	})
}
