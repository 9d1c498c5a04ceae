package audit

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
)

// Names on NATS.
const (
	// Stream is the JetStream stream that collects the trails of every
	// replica, each on its own subject meshauth.audit.REPLICA.
	Stream        = "MESHAUTH_AUDIT"
	subjectPrefix = "meshauth.audit."
)

// StreamConfig configures a StreamSink.
type StreamConfig struct {
	// Replica names this process's chain, the last token of its subject:
	// 1 to 64 letters, digits, '-' or '_'. Each process writes its own.
	// Required.
	Replica string
	// Replicas is the JetStream replication factor of the stream if this
	// sink creates it (3 in a NATS cluster); default 1. An existing stream
	// is used as it is configured.
	Replicas int
	// Timeout bounds one publication or lookup; default 5s.
	Timeout time.Duration
}

// StreamSink writes a chain to the JetStream stream Stream, on the subject
// of its replica, a batch of records per message. Each message is
// published with the expected last sequence of the subject, so that two
// writers can never interleave one chain: the second is refused, reads the
// chain's new head and frames its records after it. It needs NATS only to
// write: it finds (or creates) the stream and the chain's head at its
// first write, and again after any failure; the trail keeps the events
// queued meanwhile.
type StreamSink struct {
	nc      *nats.Conn
	js      jetstream.JetStream
	cfg     StreamConfig
	subject string

	stream jetstream.Stream // nil until found, and after a failure
	// loaded says that last and lastSeq are the stream's: the chain's
	// head, and the stream sequence of its message.
	loaded  bool
	last    Link
	lastSeq uint64
	doubt   *inDoubt

	buf []byte
}

// inDoubt is the message of a publication that failed without an answer
// (a timeout, a lost connection): the stream may have stored it.
type inDoubt struct {
	from, to Link // the chain's head before it and after it
	n        int  // its records: the first n of the next append
}

// NewStreamSink returns a sink writing the chain of cfg.Replica over nc,
// which should reconnect forever (natsconn.Connect).
func NewStreamSink(nc *nats.Conn, cfg StreamConfig) (*StreamSink, error) {
	if err := CheckReplica(cfg.Replica); err != nil {
		return nil, err
	}
	if cfg.Replicas == 0 {
		cfg.Replicas = 1
	}
	if cfg.Timeout == 0 {
		cfg.Timeout = 5 * time.Second
	}
	js, err := jetstream.New(nc)
	if err != nil {
		return nil, fmt.Errorf("audit stream: %w", err)
	}
	return &StreamSink{nc: nc, js: js, cfg: cfg, subject: subjectPrefix + cfg.Replica}, nil
}

// CheckReplica returns an error unless r can name a replica's chain: one
// NATS subject token of 1 to 64 letters, digits, '-' or '_'.
func CheckReplica(r string) error {
	if r == "" || len(r) > 64 {
		return fmt.Errorf("audit replica name %q: give 1 to 64 letters, digits, '-' or '_'", r)
	}
	for i := range len(r) {
		if c := r[i]; !isBase64URL(c) {
			return fmt.Errorf("audit replica name %q: %q is not a letter, digit, '-' or '_'", r, c)
		}
	}
	return nil
}

func (s *StreamSink) name() string { return "stream " + s.subject }

func (s *StreamSink) head() Link { return s.last }

func (s *StreamSink) close() error { return nil }

func (s *StreamSink) append(ctx context.Context, bodies [][]byte) (int, error) {
	written := 0
	if !s.loaded {
		if err := s.load(ctx); err != nil {
			return 0, err
		}
		if d := s.doubt; d != nil {
			switch s.last {
			case d.to: // stored; only its answer was lost
				written, s.doubt = min(d.n, len(bodies)), nil
			case d.from:
				// Not stored, or not yet: publishing it again stores it, or
				// is refused if the first copy lands first, and the next
				// load finds it.
			default: // another writer moved the chain on
				s.doubt = nil
			}
		}
	}
	limit := s.messageLimit()
	for written < len(bodies) {
		buf, next, n := s.buf[:0], s.last, 0
		for _, b := range bodies[written:] {
			mark := len(buf)
			var l Link
			buf, l = next.appendRecord(buf, b)
			buf = append(buf, '\n')
			if len(buf) > limit && n > 0 {
				buf = buf[:mark]
				break
			}
			next, n = l, n+1
		}
		s.buf = buf
		if err := s.publish(ctx, buf); err != nil {
			s.loaded, s.stream = false, nil
			if !isAPIError(err) {
				s.doubt = &inDoubt{from: s.last, to: next, n: n}
			}
			return written, fmt.Errorf("publish to %s: %w", s.subject, err)
		}
		s.last, s.doubt = next, nil
		written += n
	}
	return written, nil
}

// messageLimit is the most bytes of records put in one message: below the
// server's maximum payload, and at most 1 MiB.
func (s *StreamSink) messageLimit() int {
	const most, headers = 1 << 20, 1 << 10
	limit := most
	if p := int(s.nc.MaxPayload()); p > 0 {
		limit = min(limit, p)
	}
	return limit - headers
}

func (s *StreamSink) publish(ctx context.Context, data []byte) error {
	ctx, cancel := context.WithTimeout(ctx, s.cfg.Timeout)
	defer cancel()
	ack, err := s.js.Publish(ctx, s.subject, data,
		jetstream.WithExpectStream(Stream), jetstream.WithExpectLastSequencePerSubject(s.lastSeq))
	if err != nil {
		return err
	}
	s.lastSeq = ack.Sequence
	return nil
}

// isAPIError reports whether err is JetStream's answer refusing a
// publication (a wrong expected sequence, a missing stream), which stored
// nothing.
func isAPIError(err error) bool {
	var apiErr *jetstream.APIError
	return errors.As(err, &apiErr)
}

// load finds the stream, creating it if needed, and reads the chain's head
// from the last message on the subject.
func (s *StreamSink) load(ctx context.Context) error {
	ctx, cancel := context.WithTimeout(ctx, s.cfg.Timeout)
	defer cancel()
	if s.stream == nil {
		st, err := s.js.Stream(ctx, Stream)
		if errors.Is(err, jetstream.ErrStreamNotFound) {
			st, err = s.js.CreateStream(ctx, jetstream.StreamConfig{
				Name:        Stream,
				Description: "meshauth audit trails: one hash chain per replica, on meshauth.audit.REPLICA",
				Subjects:    []string{subjectPrefix + ">"},
				Storage:     jetstream.FileStorage,
				Replicas:    s.cfg.Replicas,
				// A trail is appended to, never edited.
				DenyDelete: true,
				DenyPurge:  true,
			})
			if errors.Is(err, jetstream.ErrStreamNameAlreadyInUse) { // another replica was first
				st, err = s.js.Stream(ctx, Stream)
			}
		}
		if err != nil {
			return fmt.Errorf("stream %s: %w", Stream, err)
		}
		s.stream = st
	}
	msg, err := s.stream.GetLastMsgForSubject(ctx, s.subject)
	switch {
	case errors.Is(err, jetstream.ErrMsgNotFound):
		s.last, s.lastSeq = Link{}, 0
	case err != nil:
		return fmt.Errorf("read the head of %s: %w", s.subject, err)
	default:
		line := bytes.TrimSuffix(msg.Data, []byte{'\n'})
		line = line[bytes.LastIndexByte(line, '\n')+1:]
		last, _, err := parseRecord(line, newDigest())
		if err != nil {
			return fmt.Errorf("stream %s, message %d on %s: its last record: %w", Stream, msg.Sequence, s.subject, err)
		}
		s.last, s.lastSeq = last, msg.Sequence
	}
	s.loaded = true
	return nil
}

// ReadStream returns the chain of replica in the stream Stream as the
// lines of a trail, for Verify.
func ReadStream(ctx context.Context, nc *nats.Conn, replica string) (io.Reader, error) {
	if err := CheckReplica(replica); err != nil {
		return nil, err
	}
	js, err := jetstream.New(nc)
	if err != nil {
		return nil, fmt.Errorf("audit stream: %w", err)
	}
	st, err := js.Stream(ctx, Stream)
	if errors.Is(err, jetstream.ErrStreamNotFound) {
		return nil, fmt.Errorf("no stream %s: no audit trail was written to this NATS", Stream)
	}
	if err != nil {
		return nil, fmt.Errorf("stream %s: %w", Stream, err)
	}
	return &streamReader{ctx: ctx, stream: st, subject: subjectPrefix + replica, next: 1}, nil
}

// streamReader reads the messages of one subject in order.
type streamReader struct {
	ctx     context.Context
	stream  jetstream.Stream
	subject string
	next    uint64 // the stream sequence to look from
	data    []byte // what is left of the current message
}

func (r *streamReader) Read(p []byte) (int, error) {
	for len(r.data) == 0 {
		msg, err := r.stream.GetMsg(r.ctx, r.next, jetstream.WithGetMsgSubject(r.subject))
		if errors.Is(err, jetstream.ErrMsgNotFound) {
			return 0, io.EOF
		}
		if err != nil {
			return 0, fmt.Errorf("read %s from stream sequence %d: %w", r.subject, r.next, err)
		}
		r.data, r.next = msg.Data, msg.Sequence+1
	}
	n := copy(p, r.data)
	r.data = r.data[n:]
	return n, nil
}
