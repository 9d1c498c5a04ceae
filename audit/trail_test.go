package audit

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"io"
	"log/slog"
	"net/netip"
	"os"
	"path/filepath"
	"runtime"
	"strings"
	"sync"
	"testing"
	"testing/synctest"
	"time"
)

var quiet = slog.New(slog.DiscardHandler)

// readRecords decodes every record of the trail in file.
func readRecords(t *testing.T, file string) []recordJSON {
	t.Helper()
	f, err := os.Open(file)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	var out []recordJSON
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		out = append(out, decodeRecord(t, sc.Bytes()))
	}
	if err := sc.Err(); err != nil {
		t.Fatal(err)
	}
	return out
}

// TestTrailRecordsScriptedSequence records the acts of a scripted session,
// one Record call each, as the issuer will, and checks that the file holds
// exactly the expected records, in order, in one intact chain.
func TestTrailRecordsScriptedSequence(t *testing.T) {
	from := Origin{RemoteAddr: netip.MustParseAddr("198.51.100.7"), RequestID: "req-1"}
	at := func(i int) time.Time { return t0.Add(time.Duration(i) * time.Second) }
	script := []struct {
		ev   Event
		want recordJSON
	}{
		{Event{Type: AdminAuthentication, Outcome: Failure, Actor: Admin(), Reason: "wrong admin token", Origin: from},
			recordJSON{Type: "admin.authentication", Outcome: "failure", ActorKind: "admin", Reason: "wrong admin token", RemoteAddr: "198.51.100.7", RequestID: "req-1"}},
		{Event{Type: ClientRegistered, Actor: Admin(), Subject: "web", Scope: "payments.charge"},
			recordJSON{Type: "client.registered", Outcome: "success", ActorKind: "admin", Subject: "web", Scope: "payments.charge"}},
		{Event{Type: AdminCall, Actor: Admin(), Operation: "POST /register"},
			recordJSON{Type: "admin.call", Outcome: "success", ActorKind: "admin", Operation: "POST /register"}},
		{Event{Type: ClientAuthentication, Outcome: Failure, Actor: Client("web"), Reason: "invalid_client: wrong secret"},
			recordJSON{Type: "client.authentication", Outcome: "failure", ActorKind: "client", Actor: "web", Reason: "invalid_client: wrong secret"}},
		{Event{Type: TokenIssued, Grant: "client_credentials", Actor: Client("web"), Subject: "web", Audience: "orders", Scope: "orders.read", JTI: "jti-a"},
			recordJSON{Type: "token.issued", Outcome: "success", Grant: "client_credentials", ActorKind: "client", Actor: "web", Subject: "web", Audience: "orders", Scope: "orders.read", JTIHash: jtiHash("jti-a")}},
		{Event{Type: TokenExchanged, Grant: "urn:ietf:params:oauth:grant-type:token-exchange", Actor: Client("orders"), Subject: "web", Audience: "payments", Scope: "payments.charge", JTI: "jti-b"},
			recordJSON{Type: "token.exchanged", Outcome: "success", Grant: "urn:ietf:params:oauth:grant-type:token-exchange", ActorKind: "client", Actor: "orders", Subject: "web", Audience: "payments", Scope: "payments.charge", JTIHash: jtiHash("jti-b")}},
		{Event{Type: TokenExchanged, Outcome: Failure, Grant: "urn:ietf:params:oauth:grant-type:token-exchange", Actor: Client("orders"), Audience: "ledger", Reason: "invalid_target: ledger is not in allowed_audiences"},
			recordJSON{Type: "token.exchanged", Outcome: "failure", Grant: "urn:ietf:params:oauth:grant-type:token-exchange", ActorKind: "client", Actor: "orders", Audience: "ledger", Reason: "invalid_target: ledger is not in allowed_audiences"}},
		{Event{Type: TokenDereferenced, Actor: Client("edge"), Subject: "alice", Audience: "orders", JTI: "jti-c"},
			recordJSON{Type: "token.dereferenced", Outcome: "success", ActorKind: "client", Actor: "edge", Subject: "alice", Audience: "orders", JTIHash: jtiHash("jti-c")}},
		{Event{Type: TokenIntrospected, Actor: Client("orders"), JTI: "jti-c"},
			recordJSON{Type: "token.introspected", Outcome: "success", ActorKind: "client", Actor: "orders", JTIHash: jtiHash("jti-c")}},
		{Event{Type: TokenRevoked, Actor: Client("web"), JTI: "jti-a"},
			recordJSON{Type: "token.revoked", Outcome: "success", ActorKind: "client", Actor: "web", JTIHash: jtiHash("jti-a")}},
		{Event{Type: KeyRotated, Actor: Admin(), Subject: "kid-2"},
			recordJSON{Type: "key.rotated", Outcome: "success", ActorKind: "admin", Subject: "kid-2"}},
		{Event{Type: SignIn, Outcome: Failure, Actor: User("alice"), Reason: "wrong password"},
			recordJSON{Type: "user.sign_in", Outcome: "failure", ActorKind: "user", Actor: "alice", Reason: "wrong password"}},
		{Event{Type: SignIn, Actor: User("alice"), Subject: "u-1"},
			recordJSON{Type: "user.sign_in", Outcome: "success", ActorKind: "user", Actor: "alice", Subject: "u-1"}},
		{Event{Type: UserCreated, Actor: Admin(), Subject: "bob"},
			recordJSON{Type: "user.created", Outcome: "success", ActorKind: "admin", Subject: "bob"}},
		{Event{Type: UserDisabled, Actor: Admin(), Subject: "bob"},
			recordJSON{Type: "user.disabled", Outcome: "success", ActorKind: "admin", Subject: "bob"}},
		{Event{Type: UserDeleted, Actor: Admin(), Subject: "bob"},
			recordJSON{Type: "user.deleted", Outcome: "success", ActorKind: "admin", Subject: "bob"}},
		{Event{Type: ClientUpdated, Actor: Admin(), Subject: "web"},
			recordJSON{Type: "client.updated", Outcome: "success", ActorKind: "admin", Subject: "web"}},
		{Event{Type: ClientDeleted, Actor: Admin(), Subject: "web"},
			recordJSON{Type: "client.deleted", Outcome: "success", ActorKind: "admin", Subject: "web"}},
	}
	file := filepath.Join(t.TempDir(), "audit.jsonl")
	s, err := OpenFile(file)
	if err != nil {
		t.Fatal(err)
	}
	tr, err := New(Options{Logger: quiet}, s)
	if err != nil {
		t.Fatal(err)
	}
	tr.Start()
	for i, step := range script {
		step.ev.Time = at(i)
		if err := tr.Record(step.ev); err != nil {
			t.Fatal(err)
		}
	}
	if err := tr.Close(context.Background()); err != nil {
		t.Fatal(err)
	}
	got := readRecords(t, file)
	if len(got) != len(script) {
		t.Fatalf("%d records, want %d", len(got), len(script))
	}
	prev := strings.Repeat("0", 64)
	for i, r := range got {
		want := script[i].want
		want.Seq, want.Prev, want.Hash = uint64(i+1), prev, r.Hash
		if !r.Time.Equal(at(i)) {
			t.Errorf("record %d: time %v, want %v", i+1, r.Time, at(i))
		}
		r.Time = want.Time
		if r != want {
			t.Errorf("record %d:\n got  %+v\n want %+v", i+1, r, want)
		}
		prev = r.Hash
	}
	f, err := os.Open(file)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	if last, err := Verify(f); err != nil || last.Seq != uint64(len(script)) {
		t.Errorf("verify: %v, %v", last, err)
	}
	if st := tr.Stats(); len(st) != 1 || st[0] != (SinkStats{Sink: "file " + file, Written: uint64(len(script)), Seq: uint64(len(script))}) {
		t.Errorf("stats %+v", st)
	}
}

// switchWriter is a writer whose writes fail while err is set, and block
// while gate is set, until it is closed.
type switchWriter struct {
	mu   sync.Mutex
	buf  bytes.Buffer
	err  error
	gate chan struct{}
}

func (w *switchWriter) Write(p []byte) (int, error) {
	w.mu.Lock()
	gate := w.gate
	w.mu.Unlock()
	if gate != nil {
		<-gate
	}
	w.mu.Lock()
	defer w.mu.Unlock()
	if w.err != nil {
		return 0, w.err
	}
	return w.buf.Write(p)
}

func (w *switchWriter) set(err error, gate chan struct{}) {
	w.mu.Lock()
	w.err, w.gate = err, gate
	w.mu.Unlock()
}

func (w *switchWriter) records(t *testing.T) []recordJSON {
	t.Helper()
	w.mu.Lock()
	text := w.buf.String()
	w.mu.Unlock()
	if _, err := Verify(strings.NewReader(text)); err != nil {
		t.Errorf("trail: %v", err)
	}
	var out []recordJSON
	for line := range strings.Lines(text) {
		out = append(out, decodeRecord(t, []byte(line)))
	}
	return out
}

func subjects(rs []recordJSON) string {
	var s []string
	for _, r := range rs {
		s = append(s, r.Subject)
	}
	return strings.Join(s, " ")
}

func ev(subject string) Event { return Event{Type: TokenIssued, Subject: subject} }

// TestFailOpenCountsDrops: a sink that does not keep up fills its queue;
// further events are dropped and counted, Record does not fail, and Ready
// says so.
func TestFailOpenCountsDrops(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		w := &switchWriter{}
		gate := make(chan struct{})
		w.set(nil, gate)
		tr, err := New(Options{Queue: 2, Logger: quiet}, newWriterSink("slow", w))
		if err != nil {
			t.Fatal(err)
		}
		tr.Start()
		if err := tr.Record(ev("e1")); err != nil { // taken, its write blocks
			t.Fatal(err)
		}
		synctest.Wait()
		for _, s := range []string{"e2", "e3", "e4", "e5"} { // e2, e3 queue; e4, e5 do not
			if err := tr.Record(ev(s)); err != nil {
				t.Fatalf("fail-open Record: %v", err)
			}
		}
		if st := tr.Stats()[0]; st.Dropped != 2 || st.Queued != 2 {
			t.Errorf("stats %+v, want 2 dropped and 2 queued", st)
		}
		if err := tr.Err(); err == nil || !strings.Contains(err.Error(), "queue full") || !strings.Contains(err.Error(), "dropped") {
			t.Errorf("Err = %v", err)
		}
		if err := tr.Ready(); err != nil {
			t.Errorf("fail-open Ready = %v, want nil: the server goes on", err)
		}
		close(gate)
		synctest.Wait()
		if err := tr.Err(); err != nil {
			t.Errorf("Err after the queue drained: %v", err)
		}
		err = tr.Close(context.Background())
		if err == nil || !strings.Contains(err.Error(), "events not written: 2") {
			t.Errorf("Close = %v", err)
		}
		if got := subjects(w.records(t)); got != "e1 e2 e3" {
			t.Errorf("written %q", got)
		}
	})
}

// TestFailClosedRefuses: once a sink fails, Record refuses events (the
// caller answers 503) until the sink writes again; nothing it accepted is
// lost.
func TestFailClosedRefuses(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		w := &switchWriter{}
		w.set(errors.New("disk full"), nil)
		tr, err := New(Options{FailClosed: true, RetryWait: time.Second, Logger: quiet}, newWriterSink("disk", w))
		if err != nil {
			t.Fatal(err)
		}
		tr.Start()
		if err := tr.Record(ev("accepted")); err != nil {
			t.Fatalf("before the failure is known: %v", err)
		}
		synctest.Wait() // the write failed; the sink waits to retry
		if err := tr.Record(ev("refused")); !errors.Is(err, ErrUnavailable) {
			t.Errorf("Record on a failing sink = %v, want ErrUnavailable", err)
		}
		if err := tr.Ready(); err == nil || !strings.Contains(err.Error(), "disk full") {
			t.Errorf("fail-closed Ready = %v", err)
		}
		w.set(nil, nil)
		time.Sleep(time.Second)
		synctest.Wait()
		if err := tr.Record(ev("after")); err != nil {
			t.Errorf("Record after the sink recovered: %v", err)
		}
		if err := tr.Close(context.Background()); err == nil || !strings.Contains(err.Error(), "events not written: 1") {
			t.Errorf("Close = %v", err)
		}
		st := tr.Stats()[0]
		if st.Written != 2 || st.Dropped != 1 || st.Errors != 1 {
			t.Errorf("stats %+v", st)
		}
		if got := subjects(w.records(t)); got != "accepted after" {
			t.Errorf("written %q", got)
		}
	})
}

// TestFailClosedFullQueue: a full queue refuses too.
func TestFailClosedFullQueue(t *testing.T) {
	tr, err := New(Options{FailClosed: true, Queue: 1, Logger: quiet}, newWriterSink("mem", io.Discard))
	if err != nil {
		t.Fatal(err)
	}
	// Not started: the queue fills.
	if err := tr.Record(ev("1")); err != nil {
		t.Fatal(err)
	}
	if err := tr.Record(ev("2")); !errors.Is(err, ErrUnavailable) {
		t.Errorf("full queue: %v", err)
	}
	if err := tr.Close(context.Background()); err == nil {
		t.Error("Close of a trail that never started wrote everything?")
	}
	if st := tr.Stats()[0]; st.Dropped != 2 {
		t.Errorf("stats %+v", st)
	}
}

// TestCloseGivesUp: Close waits for a failing sink until its context ends,
// then counts what is left as dropped.
func TestCloseGivesUp(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		w := &switchWriter{}
		w.set(errors.New("unreachable"), nil)
		tr, _ := New(Options{RetryWait: time.Second, Logger: quiet}, newWriterSink("down", w))
		tr.Start()
		for _, s := range []string{"a", "b", "c"} {
			tr.Record(ev(s))
		}
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		start := time.Now()
		err := tr.Close(ctx)
		if waited := time.Since(start); waited != 10*time.Second {
			t.Errorf("Close waited %v, want the context's 10s", waited)
		}
		if err == nil || !strings.Contains(err.Error(), "events not written: 3") {
			t.Errorf("Close = %v", err)
		}
		if st := tr.Stats()[0]; st.Dropped != 3 || st.Written != 0 || st.Errors < 10 {
			t.Errorf("stats %+v", st)
		}
	})
}

func TestRecordAfterClose(t *testing.T) {
	for _, failClosed := range []bool{false, true} {
		tr, _ := New(Options{FailClosed: failClosed, Logger: quiet}, newWriterSink("mem", io.Discard))
		tr.Start()
		if err := tr.Close(context.Background()); err != nil {
			t.Fatal(err)
		}
		err := tr.Record(ev("late"))
		if failClosed != errors.Is(err, ErrUnavailable) {
			t.Errorf("fail-closed %v: Record after Close = %v", failClosed, err)
		}
		if tr.Stats()[0].Dropped != 1 || tr.Err() == nil {
			t.Errorf("fail-closed %v: %+v, Err %v", failClosed, tr.Stats(), tr.Err())
		}
	}
}

// TestTrailLeavesNoGoroutine starts and closes trails and counts their
// goroutines against the baseline.
func TestTrailLeavesNoGoroutine(t *testing.T) {
	baseline := trailGoroutines()
	dir := t.TempDir()
	for i := range 3 {
		s1, err := OpenFile(filepath.Join(dir, "a.jsonl"))
		if err != nil {
			t.Fatal(err)
		}
		tr, _ := New(Options{Logger: quiet}, s1, newWriterSink("mem", io.Discard))
		tr.Start()
		for range 100 {
			tr.Record(ev("x"))
		}
		if n := trailGoroutines(); n != baseline+2 {
			t.Fatalf("round %d: %d goroutines of the trail running, want one per sink", i, n-baseline)
		}
		if err := tr.Close(context.Background()); err != nil {
			t.Fatal(err)
		}
		// Close has waited for them; they may not have returned yet.
		waitFor(t, "the trail's goroutines to return", func() bool { return trailGoroutines() == baseline })
	}
}

func TestNoSinks(t *testing.T) {
	tr, err := New(Options{FailClosed: true})
	if err != nil {
		t.Fatal(err)
	}
	tr.Start()
	if err := tr.Record(ev("x")); err != nil {
		t.Error(err)
	}
	if err := tr.Err(); err != nil {
		t.Error(err)
	}
	if err := tr.Close(context.Background()); err != nil {
		t.Error(err)
	}
}

func TestNewRefusesBadOptions(t *testing.T) {
	for _, o := range []Options{{Queue: -1}, {RetryWait: -time.Second}} {
		if _, err := New(o); err == nil {
			t.Errorf("%+v accepted", o)
		}
	}
}

// TestRecordAllocatesNothing: the caller's side of Record copies the event
// into the queue and nothing else.
func TestRecordAllocatesNothing(t *testing.T) {
	tr, _ := New(Options{Queue: 4096, Logger: quiet}, newWriterSink("mem", io.Discard))
	e := Event{Type: TokenIssued, Grant: "client_credentials", Actor: Client("web"), Subject: "web", Audience: "orders", JTI: "jti"}
	if n := testing.AllocsPerRun(1000, func() { tr.Record(e) }); n != 0 {
		t.Errorf("Record allocates %v times", n)
	}
	tr.Close(context.Background())
}

// TestWriteAllocatesNothing: the trail's side, encoding an event and
// writing its record, allocates nothing per event once its buffers have
// grown.
func TestWriteAllocatesNothing(t *testing.T) {
	s := newWriterSink("mem", io.Discard)
	e := Event{Time: t0, Type: TokenIssued, Grant: "client_credentials", Actor: Client("web"), Subject: "web", JTI: "3q2mX0Lr7q1mJ4Wc0y3Fpg",
		Origin: Origin{RemoteAddr: netip.MustParseAddr("10.0.0.1"), RequestID: "r-1", TraceID: TraceID{1}}}
	var buf []byte
	bodies := make([][]byte, 1)
	write := func() {
		buf = appendBody(buf[:0], &e)
		bodies[0] = buf
		if _, err := s.append(context.Background(), bodies); err != nil {
			t.Fatal(err)
		}
	}
	write()
	if n := testing.AllocsPerRun(1000, write); n != 0 {
		t.Errorf("encoding and writing an event allocates %v times", n)
	}
}

// waitFor polls cond until it holds, failing the test after 20 seconds:
// for what synctest's clock cannot wait on (a real NATS server, a
// goroutine's return).
func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(20 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// trailGoroutines counts the goroutines running the trail's code (an
// embedded NATS server and its connections have goroutines of their own,
// which a restart changes).
func trailGoroutines() int {
	buf := make([]byte, 1<<20)
	buf = buf[:runtime.Stack(buf, true)]
	n := 0
	for g := range strings.SplitSeq(string(buf), "\n\n") {
		if strings.Contains(g, "meshauth/audit.(*Trail)") {
			n++
		}
	}
	return n
}
