package audit

import (
	"errors"
	"fmt"
	"slices"
	"strings"
	"testing"
)

// testTrail returns the lines of a chain of n records.
func testTrail(n int) []string {
	var (
		lines []string
		last  Link
	)
	for i := range n {
		ev := Event{Time: t0, Type: TokenIssued, Grant: "client_credentials", Actor: Client("web"), Subject: fmt.Sprint("event-", i+1)}
		var line []byte
		line, last = last.appendRecord(nil, appendBody(nil, &ev))
		lines = append(lines, string(line))
	}
	return lines
}

// body returns the members of a record's line after its chain members.
func body(line string) string {
	i := strings.Index(line, `"hash":"`)
	return line[i+hashMember : len(line)-1]
}

// reframe returns line made a consistent record again after prev, as one
// who edits a line and fixes its hash and seq would.
func reframe(prev Link, line string) (string, Link) {
	out, l := prev.appendRecord(nil, []byte(body(line)))
	return string(out), l
}

func linkOf(t *testing.T, line string) Link {
	t.Helper()
	l, _, err := parseRecord([]byte(line), newDigest())
	if err != nil {
		t.Fatal(err)
	}
	return l
}

func join(lines []string) string { return strings.Join(lines, "\n") + "\n" }

func TestVerifyIntact(t *testing.T) {
	lines := testTrail(5)
	last, err := Verify(strings.NewReader(join(lines)))
	if err != nil {
		t.Fatal(err)
	}
	if want := linkOf(t, lines[4]); last != want || last.Seq != 5 {
		t.Errorf("last %v, want %v", last, want)
	}
	if last, err := Verify(strings.NewReader("")); err != nil || last != (Link{}) {
		t.Errorf("empty trail: %v, %v", last, err)
	}
}

// TestVerifyNamesTheBrokenLine tampers with a trail of six records in each
// way there is and checks the line Verify names.
func TestVerifyNamesTheBrokenLine(t *testing.T) {
	for _, tt := range []struct {
		name   string
		tamper func(t *testing.T, lines []string) []string
		line   int
		reason string
	}{
		{"a field edited", func(_ *testing.T, l []string) []string {
			l[2] = strings.Replace(l[2], "event-3", "event-X", 1)
			return l
		}, 3, "the record was changed"},
		{"the outcome edited", func(_ *testing.T, l []string) []string {
			l[3] = strings.Replace(l[3], `"success"`, `"failure"`, 1)
			return l
		}, 4, "the record was changed"},
		{"the last line edited", func(_ *testing.T, l []string) []string {
			l[5] = strings.Replace(l[5], "web", "wab", 1)
			return l
		}, 6, "the record was changed"},
		{"a line edited and its hash fixed", func(t *testing.T, l []string) []string {
			l[2], _ = reframe(linkOf(t, l[1]), strings.Replace(l[2], "event-3", "event-X", 1))
			return l
		}, 4, "prev is not the hash of line 3"},
		{"a line deleted", func(_ *testing.T, l []string) []string { return slices.Delete(l, 2, 3) },
			3, "seq 4 after 2: 1 record is missing"},
		{"the first line deleted", func(_ *testing.T, l []string) []string { return l[1:] },
			1, "the records before it are missing"},
		{"two lines swapped", func(_ *testing.T, l []string) []string {
			l[1], l[2] = l[2], l[1]
			return l
		}, 2, "seq 3 after 1"},
		{"a line repeated", func(_ *testing.T, l []string) []string { return slices.Insert(l, 4, l[3]) },
			5, "seq 4 after 4: the record was moved, repeated or inserted"},
		{"a line deleted, the next renumbered and its hash fixed", func(t *testing.T, l []string) []string {
			l = slices.Delete(l, 2, 3)
			l[2], _ = reframe(linkOf(t, l[1]), l[2])
			return l
		}, 4, "seq 5 after 3: 1 record is missing"},
		{"a forged line inserted", func(t *testing.T, l []string) []string {
			forged, _ := reframe(linkOf(t, l[2]), strings.Replace(l[3], "event-4", "forged", 1))
			return slices.Insert(l, 3, forged)
		}, 5, "seq 4 after 4"},
		{"a forged line appended", func(_ *testing.T, l []string) []string {
			forged := strings.Replace(l[5], `{"seq":6,`, `{"seq":7,`, 1)
			return append(l, forged)
		}, 7, "the record was changed"},
		{"a forged line appended, its hash fixed but its prev copied", func(t *testing.T, l []string) []string {
			forged, _ := reframe(linkOf(t, l[4]), l[5]) // seq 6 again, after 5
			forged = strings.Replace(forged, `{"seq":6,`, `{"seq":7,`, 1)
			forged, _ = reframe(Link{Seq: 6, Hash: linkOf(t, l[4]).Hash}, forged)
			return append(l, forged)
		}, 7, "prev is not the hash of line 6"},
		{"an empty line", func(_ *testing.T, l []string) []string { return slices.Insert(l, 2, "") },
			3, "not an audit record"},
		{"a line of other JSON", func(_ *testing.T, l []string) []string { return slices.Insert(l, 2, `{"level":"info"}`) },
			3, "not an audit record"},
		{"CRLF", func(_ *testing.T, l []string) []string {
			l[1] += "\r"
			return l
		}, 2, "not a JSON object"},
	} {
		t.Run(tt.name, func(t *testing.T) {
			lines := tt.tamper(t, testTrail(6))
			_, err := Verify(strings.NewReader(join(lines)))
			var broken *BrokenError
			if !errors.As(err, &broken) {
				t.Fatalf("err = %v, want a broken chain", err)
			}
			if broken.Line != tt.line || !strings.Contains(broken.Reason, tt.reason) {
				t.Errorf("err = %v, want line %d: …%s…", err, tt.line, tt.reason)
			}
		})
	}
}

func TestVerifyCutShortAndLongLines(t *testing.T) {
	lines := testTrail(3)
	text := join(lines)
	for _, tt := range []struct {
		name, trail string
		line        int
		reason      string
	}{
		{"the last write cut short", text[:len(text)-10], 3, "no newline at its end"},
		{"no newline after the last record", text[:len(text)-1], 3, "no newline at its end"},
		{"a line over the limit", join(lines[:1]) + strings.Repeat("x", maxLine+1) + "\n", 2, "longer than"},
	} {
		t.Run(tt.name, func(t *testing.T) {
			_, err := Verify(strings.NewReader(tt.trail))
			var broken *BrokenError
			if !errors.As(err, &broken) || broken.Line != tt.line || !strings.Contains(broken.Reason, tt.reason) {
				t.Errorf("err = %v, want line %d: …%s…", err, tt.line, tt.reason)
			}
		})
	}
}

func TestParseRecordRefuses(t *testing.T) {
	good := testTrail(1)[0]
	for _, tt := range []struct{ name, line, reason string }{
		{"seq zero", strings.Replace(good, `"seq":1`, `"seq":0`, 1), "positive"},
		{"seq with a leading zero", strings.Replace(good, `"seq":1`, `"seq":01`, 1), "positive"},
		{"seq out of range", strings.Replace(good, `"seq":1`, `"seq":99999999999999999999`, 1), "out of range"},
		{"upper-case prev", strings.Replace(good, `"prev":"00`, `"prev":"0A`, 1), "prev is not"},
		{"short hash", strings.Replace(good, `","hash":"`, `","hash":"0`, 1)[:len(good)-len(body(good))-20] + "}", "hash is not"},
		{"members missing", good[:strings.Index(good, `"time"`)-1] + "}", "not a JSON object"},
		{"trailing bytes", good + "x", "not a JSON object"},
		{"members reordered", strings.Replace(good, `{"seq":1,"prev"`, `{"prev"`, 1), "not an audit record"},
	} {
		t.Run(tt.name, func(t *testing.T) {
			if _, _, err := parseRecord([]byte(tt.line), newDigest()); err == nil || !strings.Contains(err.Error(), tt.reason) {
				t.Errorf("err = %v, want …%s…", err, tt.reason)
			}
		})
	}
}
