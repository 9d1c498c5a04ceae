package jwks

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"sync"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/meshauth/meshauth/issuer/store"
	"github.com/meshauth/meshauth/token"
)

// PublisherConfig configures a [Publisher].
type PublisherConfig struct {
	// Conn is the NATS connection; it should reconnect forever. Required.
	Conn *nats.Conn
	// Issuer is the issuer identifier, as in its tokens' "iss". Required.
	Issuer string
	// Keyring signs the updates and is the key set published. Required.
	Keyring *Keyring
	// Revocations lists the revocations republished at start and after a
	// reconnect: the issuer's store. Required.
	Revocations RevocationLister
	// Providers are the federated providers whose key sets are relayed,
	// by issuer identifier; each cache must be started.
	Providers map[string]*KeySetCache
	// Replicas is the JetStream replication factor of the bucket and the
	// stream. Default 1.
	Replicas int
	// Reassert is how often the key sets are published again even if
	// nothing changed here (a replica's keys may have been overwritten, a
	// bucket lost). It also bounds the wait before the retry of a failed
	// publication. Default 1m.
	Reassert time.Duration
	// Logger; default slog.Default().
	Logger *slog.Logger
	// Now returns the current time; default time.Now.
	Now func() time.Time
}

// RevocationLister lists the revocations that have not expired at now, as
// store.Store does.
type RevocationLister interface {
	RevocationsAfter(ctx context.Context, after int64, now time.Time) ([]*store.Revocation, store.ChangeSeq, error)
}

// A Publisher pushes an issuer's key set, its federated providers' key
// sets and its revocations to NATS (see the package documentation). Run
// does the work; NotifyRevocation queues a revocation for it. Nothing is
// lost while NATS is unreachable: key sets are republished when it comes
// back, and every unexpired revocation is republished from the store.
type Publisher struct {
	cfg PublisherConfig
	js  jetstream.JetStream

	// kick wakes Run when a revocation is queued.
	kick chan struct{}

	mu      sync.Mutex
	pending []*store.Revocation // queued by NotifyRevocation, not yet published
}

// NewPublisher checks cfg and returns a Publisher; call Run.
func NewPublisher(cfg PublisherConfig) (*Publisher, error) {
	switch {
	case cfg.Conn == nil:
		return nil, errors.New("publisher: a NATS connection is required")
	case cfg.Issuer == "":
		return nil, errors.New("publisher: the issuer identifier is required")
	case cfg.Keyring == nil:
		return nil, errors.New("publisher: a Keyring is required")
	case cfg.Revocations == nil:
		return nil, errors.New("publisher: a RevocationLister is required")
	case cfg.Reassert < 0:
		return nil, fmt.Errorf("publisher: Reassert must not be negative (got %v)", cfg.Reassert)
	}
	if cfg.Reassert == 0 {
		cfg.Reassert = time.Minute
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.Default()
	}
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	js, err := jetstream.New(cfg.Conn)
	if err != nil {
		return nil, fmt.Errorf("publisher: %w", err)
	}
	return &Publisher{cfg: cfg, js: js, kick: make(chan struct{}, 1)}, nil
}

// NotifyRevocation queues r, already stored, for publication, and returns
// at once; Run publishes it. It implements issuer.RevocationNotifier.
func (p *Publisher) NotifyRevocation(_ context.Context, r *store.Revocation) {
	rc := *r
	p.mu.Lock()
	p.pending = append(p.pending, &rc)
	p.mu.Unlock()
	select {
	case p.kick <- struct{}{}:
	default:
	}
}

// opTimeout bounds one round of publications, so that a NATS that stopped
// answering delays the loop, never blocks it.
const opTimeout = 10 * time.Second

// Run publishes until ctx is done: at once, whenever the keyring or a
// provider's keys change, when a revocation is queued, after every
// reconnect, and every Reassert. Failures are logged and retried with
// backoff.
func (p *Publisher) Run(ctx context.Context) {
	reconnected := p.cfg.Conn.StatusChanged(nats.CONNECTED)
	defer p.cfg.Conn.RemoveStatusListener(reconnected)

	providersChanged := make(chan struct{}, 1)
	for _, c := range p.cfg.Providers {
		go func() {
			// The next channel is taken before signalling, so that keys
			// installed meanwhile close it and signal again.
			changed := c.Changed()
			for {
				select {
				case <-ctx.Done():
					return
				case <-changed:
					changed = c.Changed()
				}
				select {
				case providersChanged <- struct{}{}:
				default:
				}
			}
		}()
	}

	var (
		kv       jetstream.KeyValue
		stream   jetstream.Stream
		failures int
	)
	reassert := time.NewTimer(0)
	defer reassert.Stop()
	for {
		// Taken before publishing, so that a change made meanwhile wakes
		// the next round.
		keysChanged := p.cfg.Keyring.Changed()
		err := func() error {
			octx, cancel := context.WithTimeout(ctx, opTimeout)
			defer cancel()
			if kv == nil {
				var err error
				if kv, stream, err = Setup(octx, p.js, p.cfg.Replicas); err != nil {
					return err
				}
				// A new bucket and stream, or the first connection:
				// everything the store holds goes out again.
				if err := p.queueStored(octx); err != nil {
					kv = nil
					return err
				}
			}
			return errors.Join(p.publishKeySets(octx, kv), p.publishPending(octx, stream))
		}()
		wait := p.cfg.Reassert
		if err != nil && ctx.Err() == nil {
			wait = backoff(failures, p.cfg.Reassert)
			failures++
			p.cfg.Logger.Warn("key and revocation distribution: publication failed; will retry", "retry_in", wait.Round(time.Millisecond), "err", err)
		} else {
			failures = 0
		}
		reassert.Reset(wait)
		select {
		case <-ctx.Done():
			return
		case <-reassert.C:
		case <-keysChanged:
		case <-providersChanged:
		case <-p.kick:
		case <-reconnected:
			// The server may have lost its state (a new one, or storage
			// wiped): set up and republish everything.
			kv = nil
		}
	}
}

// backoff returns a randomised wait after n+1 failures in a row: doubling
// from a second (or max, if shorter) up to max, and randomised over its
// upper half so that the many sidecars of an issuer, or replicas, do not
// all retry at once.
func backoff(n int, max time.Duration) time.Duration {
	d := min(time.Second, max)
	for ; n > 0 && d < max; n-- {
		d *= 2
	}
	d = min(d, max)
	return d/2 + rand.N(d/2+1)
}

// queueStored queues every unexpired revocation in the store.
func (p *Publisher) queueStored(ctx context.Context) error {
	revs, _, err := p.cfg.Revocations.RevocationsAfter(ctx, 0, p.cfg.Now())
	if err != nil {
		return fmt.Errorf("list revocations to republish: %w", err)
	}
	p.mu.Lock()
	p.pending = append(p.pending, revs...)
	p.mu.Unlock()
	return nil
}

// publishPending publishes the queued revocations; those that fail stay
// queued.
func (p *Publisher) publishPending(ctx context.Context, stream jetstream.Stream) error {
	p.mu.Lock()
	queue := p.pending
	p.pending = nil
	p.mu.Unlock()
	var (
		failed []*store.Revocation
		errs   []error
	)
	for _, r := range queue {
		if err := p.publishRevocation(ctx, stream, r); err != nil {
			failed = append(failed, r)
			errs = append(errs, err)
		}
	}
	if len(failed) > 0 {
		p.mu.Lock()
		p.pending = append(failed, p.pending...)
		p.mu.Unlock()
	}
	return errors.Join(errs...)
}

// publishRevocation publishes r unless it has expired or its message is in
// the stream already.
func (p *Publisher) publishRevocation(ctx context.Context, stream jetstream.Stream, r *store.Revocation) error {
	// Nats-TTL has a resolution of a second; round up so the message
	// never goes before the revocation does.
	ttl := r.ExpiresAt.Sub(p.cfg.Now()).Truncate(time.Second) + time.Second
	if ttl <= time.Second {
		return nil // expired, or about to: no verifier needs it
	}
	subject := revocationSubject(p.cfg.Issuer, r.ID)
	if _, err := stream.GetLastMsgForSubject(ctx, subject); err == nil {
		return nil
	} else if !errors.Is(err, jetstream.ErrMsgNotFound) {
		return fmt.Errorf("look up revocation %s: %w", r.ID, err)
	}
	payload, err := json.Marshal(revocationMessage{
		Issuer: p.cfg.Issuer, ID: r.ID, Seq: r.Seq, Kind: r.Kind, Value: r.Value,
		RevokedAt: r.RevokedAt, ExpiresAt: r.ExpiresAt,
	})
	if err != nil {
		return fmt.Errorf("encode revocation %s: %w", r.ID, err)
	}
	msg, err := p.cfg.Keyring.SignUpdate(typRevocation, payload)
	if err != nil {
		return fmt.Errorf("sign revocation %s: %w", r.ID, err)
	}
	_, err = p.js.Publish(ctx, subject, []byte(msg),
		jetstream.WithMsgID(r.ID), jetstream.WithMsgTTL(ttl), jetstream.WithExpectStream(RevocationStream))
	if err != nil {
		return fmt.Errorf("publish revocation %s: %w", r.ID, err)
	}
	return nil
}

// publishKeySets publishes the issuer's key set and each provider's.
func (p *Publisher) publishKeySets(ctx context.Context, kv jetstream.KeyValue) error {
	doc, readAt := p.cfg.Keyring.Published()
	if doc == nil {
		return errors.New("signing keys not loaded")
	}
	ownKeys := p.cfg.Keyring
	errs := []error{p.publishKeySet(ctx, kv, ownKeys, p.cfg.Issuer, doc, readAt)}
	for owner, c := range p.cfg.Providers {
		pdoc, loadedAt := c.Document()
		if pdoc == nil {
			continue // not loaded yet; its Changed will wake Run
		}
		errs = append(errs, p.publishKeySet(ctx, kv, ownKeys, owner, pdoc, loadedAt))
	}
	return errors.Join(errs...)
}

// publishKeySet writes the key set doc of owner, read at readAt, unless the
// bucket holds the same keys or newer ones already. ownKeys verify what
// the bucket holds: anything they do not verify is overwritten.
func (p *Publisher) publishKeySet(ctx context.Context, kv jetstream.KeyValue, ownKeys token.Keys, owner string, doc []byte, readAt time.Time) error {
	doc, err := compactJSON(doc)
	if err != nil {
		return fmt.Errorf("key set of %s: %w", owner, err)
	}
	key := keySetKey(p.cfg.Issuer, owner)
	version := readAt.UnixMicro()
	// Another replica may write between our read and our write; the
	// compare-and-swap then fails, and we look again.
	for range 3 {
		var rev uint64
		entry, err := kv.Get(ctx, key)
		switch {
		case errors.Is(err, jetstream.ErrKeyNotFound):
		case err != nil:
			return fmt.Errorf("read key set of %s: %w", owner, err)
		default:
			rev = entry.Revision()
			cur, _, err := decodeKeySetUpdate(entry.Value(), ownKeys, p.cfg.Issuer)
			if err == nil && cur.Owner == owner && (cur.Version >= version || bytes.Equal(cur.JWKS, doc)) {
				return nil
			}
		}
		payload, err := json.Marshal(keySetUpdate{Issuer: p.cfg.Issuer, Owner: owner, Version: version, JWKS: doc})
		if err != nil {
			return fmt.Errorf("encode key set of %s: %w", owner, err)
		}
		msg, err := p.cfg.Keyring.SignUpdate(typKeySetUpdate, payload)
		if err != nil {
			return fmt.Errorf("sign key set of %s: %w", owner, err)
		}
		if rev == 0 {
			_, err = kv.Create(ctx, key, []byte(msg))
		} else {
			_, err = kv.Update(ctx, key, []byte(msg), rev)
		}
		if err == nil {
			p.cfg.Logger.Debug("key set published", "owner", owner, "version", version)
			return nil
		}
		if !errors.Is(err, jetstream.ErrKeyExists) && !isWrongLastSequence(err) {
			return fmt.Errorf("publish key set of %s: %w", owner, err)
		}
	}
	return fmt.Errorf("publish key set of %s: other writers kept changing it", owner)
}

// isWrongLastSequence reports whether err is JetStream's refusal of a
// compare-and-swap whose expected revision is not the current one.
func isWrongLastSequence(err error) bool {
	var apiErr *jetstream.APIError
	return errors.As(err, &apiErr) && apiErr.ErrorCode == jetstream.JSErrCodeStreamWrongLastSequence
}
