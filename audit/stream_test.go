package audit

import (
	"context"
	"fmt"
	"net"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats.go"

	"github.com/meshauth/meshauth/internal/natstest"
)

// streamRecords reads and verifies the chain of replica from the stream.
func streamRecords(t *testing.T, nc *nats.Conn, replica string) []recordJSON {
	t.Helper()
	r, err := ReadStream(context.Background(), nc, replica)
	if err != nil {
		t.Fatal(err)
	}
	var text strings.Builder
	last, err := Verify(teeReader{r, &text})
	if err != nil {
		t.Fatalf("chain of %s: %v", replica, err)
	}
	var out []recordJSON
	for line := range strings.Lines(text.String()) {
		out = append(out, decodeRecord(t, []byte(line)))
	}
	if last.Seq != uint64(len(out)) {
		t.Fatalf("last %v for %d records", last, len(out))
	}
	return out
}

type teeReader struct {
	r interface{ Read([]byte) (int, error) }
	w *strings.Builder
}

func (t teeReader) Read(p []byte) (int, error) {
	n, err := t.r.Read(p)
	t.w.Write(p[:n])
	return n, err
}

func names(prefix string, from, to int) []string {
	var s []string
	for i := from; i < to; i++ {
		s = append(s, fmt.Sprintf("%s%d", prefix, i))
	}
	return s
}

// TestStreamSinkSurvivesNATSRestart records events while the NATS server
// is stopped and restarted: every event is in the stream once, in order,
// in one intact chain, and no goroutine is left behind.
func TestStreamSinkSurvivesNATSRestart(t *testing.T) {
	dir := t.TempDir()
	ns := natstest.Start(t, dir, -1)
	port := ns.Addr().(*net.TCPAddr).Port
	nc := natstest.Connect(t, ns.ClientURL())

	sink, err := NewStreamSink(nc, StreamConfig{Replica: "issuer-0", Timeout: 500 * time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	tr, _ := New(Options{RetryWait: 20 * time.Millisecond, Logger: quiet}, sink)
	tr.Start()
	stats := func() SinkStats { return tr.Stats()[0] }
	record := func(names []string) {
		for _, n := range names {
			if err := tr.Record(ev(n)); err != nil {
				t.Fatal(err)
			}
		}
	}
	record(names("e", 0, 50))
	waitFor(t, "the first events", func() bool { return stats().Written == 50 })

	ns.Shutdown()
	ns.WaitForShutdown()
	record(names("e", 50, 100))
	waitFor(t, "a failed write", func() bool { return stats().Errors > 0 })
	if err := tr.Err(); err == nil || !strings.Contains(err.Error(), "stream meshauth.audit.issuer-0") {
		t.Errorf("Err while NATS is down: %v", err)
	}
	natstest.Start(t, dir, port)
	record(names("e", 100, 120))
	waitFor(t, "every event", func() bool { return stats().Written == 120 })
	if trailGoroutines() == 0 {
		t.Fatal("no goroutine of the trail found while it runs")
	}
	if err := tr.Close(context.Background()); err != nil {
		t.Fatal(err)
	}
	if st := stats(); st.Dropped != 0 || st.Seq != 120 {
		t.Errorf("stats %+v", st)
	}
	if got, want := subjects(streamRecords(t, nc, "issuer-0")), strings.Join(names("e", 0, 120), " "); got != want {
		t.Errorf("stream holds\n%s\nwant\n%s", got, want)
	}
	waitFor(t, "the trail's goroutines to return", func() bool { return trailGoroutines() == 0 })
}

// TestStreamSinkContinuesChain: each replica's chain is its own, and a sink
// started again continues its chain from the stream.
func TestStreamSinkContinuesChain(t *testing.T) {
	ns := natstest.Start(t, t.TempDir(), -1)
	nc := natstest.Connect(t, ns.ClientURL())
	write := func(replica string, names ...string) {
		sink, err := NewStreamSink(nc, StreamConfig{Replica: replica})
		if err != nil {
			t.Fatal(err)
		}
		tr, _ := New(Options{Logger: quiet}, sink)
		tr.Start()
		for _, n := range names {
			tr.Record(ev(n))
		}
		if err := tr.Close(context.Background()); err != nil {
			t.Fatal(err)
		}
	}
	write("a", "a1", "a2")
	write("b", "b1")
	write("a", "a3")
	if got := subjects(streamRecords(t, nc, "a")); got != "a1 a2 a3" {
		t.Errorf("a: %q", got)
	}
	if got := subjects(streamRecords(t, nc, "b")); got != "b1" {
		t.Errorf("b: %q", got)
	}
}

// TestStreamSinkConcurrentWriters: two processes misconfigured with one
// replica name still write one intact chain, never interleaving it.
func TestStreamSinkConcurrentWriters(t *testing.T) {
	ns := natstest.Start(t, t.TempDir(), -1)
	const writers, batches = 2, 20
	var wg sync.WaitGroup
	for w := range writers {
		nc := natstest.Connect(t, ns.ClientURL())
		sink, err := NewStreamSink(nc, StreamConfig{Replica: "same"})
		if err != nil {
			t.Fatal(err)
		}
		wg.Go(func() {
			for b := range batches {
				bodies := [][]byte{
					appendBody(nil, &Event{Type: TokenIssued, Subject: fmt.Sprintf("w%d-%d-x", w, b)}),
					appendBody(nil, &Event{Type: TokenIssued, Subject: fmt.Sprintf("w%d-%d-y", w, b)}),
				}
				for len(bodies) > 0 {
					n, err := sink.append(context.Background(), bodies)
					bodies = bodies[n:]
					if err != nil && !strings.Contains(err.Error(), "wrong last sequence") {
						t.Errorf("writer %d: %v", w, err)
						return
					}
				}
			}
		})
	}
	wg.Wait()
	nc := natstest.Connect(t, ns.ClientURL())
	got := streamRecords(t, nc, "same")
	if len(got) != writers*batches*2 {
		t.Errorf("%d records, want %d", len(got), writers*batches*2)
	}
	seen := map[string]bool{}
	for _, r := range got {
		if seen[r.Subject] {
			t.Errorf("%s twice", r.Subject)
		}
		seen[r.Subject] = true
	}
}

// TestStreamSinkPublicationInDoubt: a message stored whose answer was lost
// is found at the next write, not published again.
func TestStreamSinkPublicationInDoubt(t *testing.T) {
	ns := natstest.Start(t, t.TempDir(), -1)
	nc := natstest.Connect(t, ns.ClientURL())
	sink, err := NewStreamSink(nc, StreamConfig{Replica: "r"})
	if err != nil {
		t.Fatal(err)
	}
	body := func(s string) []byte { return appendBody(nil, &Event{Type: TokenIssued, Subject: s}) }
	ctx := context.Background()
	if n, err := sink.append(ctx, [][]byte{body("a")}); n != 1 || err != nil {
		t.Fatal(n, err)
	}
	before, beforeSeq := sink.last, sink.lastSeq
	if n, err := sink.append(ctx, [][]byte{body("b"), body("c")}); n != 2 || err != nil {
		t.Fatal(n, err)
	}
	// As if the answer to b, c had been lost.
	sink.doubt = &inDoubt{from: before, to: sink.last, n: 2}
	sink.last, sink.lastSeq, sink.loaded = before, beforeSeq, false
	if n, err := sink.append(ctx, [][]byte{body("b"), body("c"), body("d")}); n != 3 || err != nil {
		t.Fatal(n, err)
	}
	if got := subjects(streamRecords(t, nc, "r")); got != "a b c d" {
		t.Errorf("stream holds %q", got)
	}
}

// TestStreamSinkRefusesForeignHead: a last message that is not a record
// stops the sink, which says so, rather than start a chain after it.
func TestStreamSinkRefusesForeignHead(t *testing.T) {
	ns := natstest.Start(t, t.TempDir(), -1)
	nc := natstest.Connect(t, ns.ClientURL())
	sink, err := NewStreamSink(nc, StreamConfig{Replica: "r"})
	if err != nil {
		t.Fatal(err)
	}
	body := appendBody(nil, &Event{Type: TokenIssued})
	if _, err := sink.append(context.Background(), [][]byte{body}); err != nil {
		t.Fatal(err)
	}
	if _, err := sink.js.Publish(context.Background(), subjectPrefix+"r", []byte("not a record\n")); err != nil {
		t.Fatal(err)
	}
	sink.loaded = false
	if _, err := sink.append(context.Background(), [][]byte{body}); err == nil || !strings.Contains(err.Error(), "its last record: not an audit record") {
		t.Errorf("append after a foreign message: %v", err)
	}
}

func TestStreamSinkChecksReplica(t *testing.T) {
	for _, r := range []string{"", "a.b", "a*", "a>", "a b", strings.Repeat("x", 65)} {
		if _, err := NewStreamSink(nil, StreamConfig{Replica: r}); err == nil || !strings.Contains(err.Error(), "audit replica name") {
			t.Errorf("replica %q: %v", r, err)
		}
	}
}
