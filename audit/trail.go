package audit

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"sync/atomic"
	"time"
)

// A Recorder takes the events of security-relevant acts. Record must not
// block. A non-nil error means the event will not be written and the act
// must be refused (503): only a fail-closed Trail returns one.
type Recorder interface {
	Record(Event) error
}

// ErrUnavailable is Record's error in fail-closed mode when a sink cannot
// take the event: its queue is full, it is failing, or the trail is closed.
// Err says which.
var ErrUnavailable = errors.New("audit trail unavailable")

// DefaultQueue is the default of Options.Queue.
const DefaultQueue = 8192

// maxBatch bounds the events a sink takes from its queue for one write.
const maxBatch = 1024

// Options configure a Trail.
type Options struct {
	// Queue is how many events wait for each sink; an event beyond it is
	// dropped and counted (fail-open) or refused (fail-closed). 0 means
	// DefaultQueue.
	Queue int
	// FailClosed makes Record refuse, with ErrUnavailable, an event that
	// a sink cannot take or that goes to a failing sink, so that no act
	// happens without its event on every sink. An event may then be
	// written by one sink for an act refused because of another: the
	// trail can hold an attempt, never miss an act. The default,
	// fail-open, drops and counts the event and lets the act go on.
	FailClosed bool
	// RetryWait is the pause before writing again to a sink that failed.
	// 0 means a second.
	RetryWait time.Duration
	// Logger gets a line when a sink starts failing, when it writes
	// again, and each chain's head at Close. Default slog.Default().
	Logger *slog.Logger
}

// A Sink writes records at the end of one hash chain: a FileSink or a
// StreamSink (its methods are unexported: a sink must keep the chain). A
// Trail calls them from one goroutine at a time.
type Sink interface {
	// name identifies the sink in errors, logs and Stats.
	name() string
	// append writes records for bodies (see appendBody), in order, after
	// the chain's head, and returns how many it wrote. After an error it
	// is called again with those it did not write.
	append(ctx context.Context, bodies [][]byte) (int, error)
	// head is the last record written.
	head() Link
	close() error
}

// A Trail queues events for its sinks and writes them from goroutines of
// its own, one per sink: New, Start, Record from any goroutine, Close.
type Trail struct {
	opts  Options
	log   *slog.Logger
	sinks []*sinkQueue

	// mu is held for reading while events are queued and for writing to
	// close the queues, so that no event goes into a closed queue.
	mu      sync.RWMutex
	started bool
	closed  bool

	// ctx ends when Close stops waiting for failing sinks.
	ctx    context.Context
	cancel context.CancelFunc
	wg     sync.WaitGroup
}

// sinkQueue is a sink, its queue and its counters.
type sinkQueue struct {
	sink  Sink
	name  string
	queue chan Event

	written, dropped, errors, seq atomic.Uint64
	failing                       atomic.Bool

	mu  sync.Mutex
	err error // the last write error, while failing
}

// New returns a trail writing to sinks, each its own chain; call Start. A
// trail without sinks records nothing: the trail of a server that keeps
// none. If opts are invalid, New closes the sinks.
func New(opts Options, sinks ...Sink) (*Trail, error) {
	var err error
	switch {
	case opts.Queue < 0:
		err = fmt.Errorf("audit: negative queue length %d", opts.Queue)
	case opts.RetryWait < 0:
		err = fmt.Errorf("audit: negative retry wait %v", opts.RetryWait)
	}
	if err != nil {
		for _, s := range sinks {
			s.close()
		}
		return nil, err
	}
	if opts.Queue == 0 {
		opts.Queue = DefaultQueue
	}
	if opts.RetryWait == 0 {
		opts.RetryWait = time.Second
	}
	t := &Trail{opts: opts, log: opts.Logger}
	if t.log == nil {
		t.log = slog.Default()
	}
	t.ctx, t.cancel = context.WithCancel(context.Background())
	for _, s := range sinks {
		q := &sinkQueue{sink: s, name: s.name(), queue: make(chan Event, opts.Queue)}
		q.seq.Store(s.head().Seq)
		t.sinks = append(t.sinks, q)
	}
	return t, nil
}

var _ Recorder = (*Trail)(nil)

// Start starts writing: one goroutine per sink, until Close.
func (t *Trail) Start() {
	t.mu.Lock()
	defer t.mu.Unlock()
	if t.started || t.closed {
		return
	}
	t.started = true
	for _, s := range t.sinks {
		t.wg.Add(1)
		go t.drain(s)
	}
}

// Record queues ev for every sink and returns at once; the sinks' own
// goroutines encode and write it. It sets ev.Time to now if it is zero
// (give the time the act already has, such as a token's iat: reading the
// clock costs more than the rest of Record). An event that a sink cannot
// take is counted as dropped; in fail-closed mode Record then returns
// ErrUnavailable, and the caller refuses the act.
func (t *Trail) Record(ev Event) error {
	if ev.Time.IsZero() {
		ev.Time = time.Now()
	}
	refused := false
	t.mu.RLock()
	for _, s := range t.sinks {
		if !t.closed && !(t.opts.FailClosed && s.failing.Load()) {
			select {
			case s.queue <- ev:
				continue
			default:
			}
		}
		s.dropped.Add(1)
		refused = true
	}
	t.mu.RUnlock()
	if refused && t.opts.FailClosed {
		return ErrUnavailable
	}
	return nil
}

// Err returns nil while every sink writes and has room in its queue, or
// what stops one: its last write error, or a full queue. A server shows it
// on /readyz; see Ready.
func (t *Trail) Err() error {
	t.mu.RLock()
	closed := t.closed
	t.mu.RUnlock()
	if closed {
		return errors.New("audit trail closed")
	}
	for _, s := range t.sinks {
		if s.failing.Load() {
			s.mu.Lock()
			err := s.err
			s.mu.Unlock()
			return fmt.Errorf("audit sink %s: %w; events wait in its queue (%d of %d)", s.name, err, len(s.queue), cap(s.queue))
		}
		if len(s.queue) == cap(s.queue) {
			return fmt.Errorf("audit sink %s: queue full (%d events); further events are %s", s.name, cap(s.queue), t.fate())
		}
	}
	return nil
}

// Ready is the trail's part in a server's readiness: Err in fail-closed
// mode, where a trail that cannot take events refuses the acts, so that
// traffic goes to replicas that can; nil in fail-open mode, where the
// server goes on (only showing Err), as its operator chose.
func (t *Trail) Ready() error {
	if !t.opts.FailClosed {
		return nil
	}
	return t.Err()
}

// fate says what happens to an event a sink cannot take.
func (t *Trail) fate() string {
	if t.opts.FailClosed {
		return "refused, and their acts with them"
	}
	return "dropped and counted"
}

// SinkStats are the counters of one sink, for metrics.
type SinkStats struct {
	// Sink is the sink's name: "file PATH", "stdout", "stream SUBJECT".
	Sink string
	// Written counts the records written.
	Written uint64
	// Dropped counts the events not written: a full queue, a failing
	// sink in fail-closed mode, or given up at Close.
	Dropped uint64
	// Errors counts the failed writes; each is retried.
	Errors uint64
	// Seq is the sequence number of the chain's last record: a value
	// lower than before across a restart means records were removed from
	// the end of the chain.
	Seq uint64
	// Queued is the number of events waiting.
	Queued int
}

// Stats returns the counters of each sink.
func (t *Trail) Stats() []SinkStats {
	out := make([]SinkStats, len(t.sinks))
	for i, s := range t.sinks {
		out[i] = SinkStats{Sink: s.name, Written: s.written.Load(), Dropped: s.dropped.Load(),
			Errors: s.errors.Load(), Seq: s.seq.Load(), Queued: len(s.queue)}
	}
	return out
}

// Close stops taking events, writes those queued, closes the sinks and
// waits for the trail's goroutines. When ctx ends first, it stops retrying
// failing sinks and counts what they did not write as dropped. The error
// names each sink that did not write every event it was given, and how
// many it dropped. It logs each chain's head, so that a chain's end can be
// checked against the log.
func (t *Trail) Close(ctx context.Context) error {
	t.mu.Lock()
	if t.closed {
		t.mu.Unlock()
		return nil
	}
	t.closed = true
	for _, s := range t.sinks {
		close(s.queue)
	}
	started := t.started
	t.mu.Unlock()
	if started {
		stop := context.AfterFunc(ctx, t.cancel)
		t.wg.Wait()
		stop()
	} else {
		for _, s := range t.sinks {
			s.dropped.Add(uint64(len(s.queue)))
		}
	}
	t.cancel()
	var errs []error
	for _, s := range t.sinks {
		if err := s.sink.close(); err != nil {
			errs = append(errs, fmt.Errorf("audit sink %s: close: %w", s.name, err))
		}
		if n := s.dropped.Load(); n > 0 {
			errs = append(errs, fmt.Errorf("audit sink %s: events not written: %d", s.name, n))
		}
		if h := s.sink.head(); h.Seq > 0 {
			t.log.Info("audit chain head", "sink", s.name, "seq", h.Seq, "hash", fmt.Sprintf("%x", h.Hash))
		}
	}
	return errors.Join(errs...)
}

// drain writes the events of s's queue in batches until Close.
func (t *Trail) drain(s *sinkQueue) {
	defer t.wg.Done()
	var (
		batch  = make([]Event, 0, maxBatch)
		ends   = make([]int, 0, maxBatch)
		bodies = make([][]byte, 0, maxBatch)
		buf    []byte
	)
	for ev := range s.queue {
		batch = append(batch[:0], ev)
		// Only this goroutine receives, so what len counts is there.
		for len(batch) < maxBatch && len(s.queue) > 0 {
			batch = append(batch, <-s.queue)
		}
		buf, ends, bodies = buf[:0], ends[:0], bodies[:0]
		for i := range batch {
			buf = appendBody(buf, &batch[i])
			ends = append(ends, len(buf))
		}
		start := 0
		for _, end := range ends {
			bodies = append(bodies, buf[start:end])
			start = end
		}
		clear(batch) // let the strings go
		if !t.write(s, bodies) {
			for range s.queue {
				s.dropped.Add(1)
			}
			return
		}
	}
}

// write appends bodies to s's sink, retrying every RetryWait until it
// succeeds, or until Close gives up (false).
func (t *Trail) write(s *sinkQueue, bodies [][]byte) bool {
	for {
		n, err := s.sink.append(t.ctx, bodies)
		s.written.Add(uint64(n))
		s.seq.Store(s.sink.head().Seq)
		bodies = bodies[n:]
		if err == nil {
			if s.failing.Load() {
				s.failing.Store(false)
				t.log.Info("audit sink writing again", "sink", s.name, "dropped_total", s.dropped.Load())
			}
			return true
		}
		s.errors.Add(1)
		s.mu.Lock()
		s.err = err
		s.mu.Unlock()
		if !s.failing.Swap(true) {
			t.log.Warn("audit sink failing; retrying", "sink", s.name, "err", err,
				"retry_every", t.opts.RetryWait, "when_queue_full", t.fate())
		}
		timer := time.NewTimer(t.opts.RetryWait)
		select {
		case <-timer.C:
		case <-t.ctx.Done():
			timer.Stop()
			s.dropped.Add(uint64(len(bodies)))
			return false
		}
	}
}
