package jwks

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"strings"
	"sync/atomic"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/meshauth/meshauth/token"
)

// SourceNATS is the [KeySetStatus.Source] of keys a [Subscriber] installed.
const SourceNATS = "nats"

// SubscriberConfig configures a [Subscriber].
type SubscriberConfig struct {
	// Conn is the NATS connection; it should reconnect forever. Required.
	Conn *nats.Conn
	// Issuer is the trusted issuer whose updates are followed. Required.
	Issuer string
	// Keys is the issuer's key-set cache, loaded from its metadata over
	// HTTPS: it verifies every update, and takes the issuer's pushed key
	// sets. It must be started. Required.
	Keys *KeySetCache
	// Provider returns the key-set cache of a provider the issuer federates,
	// the first time trusting the provider with the issuer's policy, or nil
	// to refuse it. Nil refuses every relayed key set.
	Provider func(issuer string) *KeySetCache
	// Revoked receives each verified revocation of the issuer that has not
	// expired, possibly more than once. Nil ignores revocations.
	Revoked func(token.Revocation)
	// Logger; default slog.Default().
	Logger *slog.Logger
	// Now returns the current time; default time.Now.
	Now func() time.Time
}

// A Subscriber follows one trusted issuer's key sets and revocations on
// NATS (see the package documentation): it installs each verified, newer
// key set in the issuer's cache (or a federated provider's) and passes each
// verified revocation on. While NATS is unreachable the caches go on
// polling over HTTPS; once it is back, the watch catches up.
type Subscriber struct {
	cfg SubscriberConfig
	js  jetstream.JetStream

	// in carries messages from NATS's callbacks to the goroutine that
	// verifies and applies them, which alone owns what follows.
	in chan received
	// versions is the newest version taken per key owner.
	versions map[string]int64
	// unverified holds messages whose kid was unknown, retried when the
	// issuer's keys change; bounded by maxUnverified.
	unverified []received

	applied atomic.Uint64 // updates and revocations taken, for tests and metrics
	refused atomic.Uint64 // messages refused
}

// received is one message from NATS: a key-set update (key is its KV
// key) or a revocation (key is "").
type received struct {
	key  string
	data []byte
}

// maxUnverified bounds the messages kept for a retry: a flood of messages
// with unknown kids must not grow memory.
const maxUnverified = 1024

// NewSubscriber checks cfg and returns a Subscriber; call Run.
func NewSubscriber(cfg SubscriberConfig) (*Subscriber, error) {
	switch {
	case cfg.Conn == nil:
		return nil, errors.New("subscriber: a NATS connection is required")
	case cfg.Issuer == "":
		return nil, errors.New("subscriber: the issuer is required")
	case cfg.Keys == nil:
		return nil, errors.New("subscriber: the issuer's key-set cache is required")
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.Default()
	}
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	js, err := jetstream.New(cfg.Conn)
	if err != nil {
		return nil, fmt.Errorf("subscriber: %w", err)
	}
	return &Subscriber{cfg: cfg, js: js, in: make(chan received, 256), versions: map[string]int64{}}, nil
}

// SubscriberStats counts what a Subscriber did.
type SubscriberStats struct {
	Applied uint64 // key sets installed and revocations passed on
	Refused uint64 // messages refused: unverifiable, malformed or stale
}

// Stats returns the counts so far.
func (s *Subscriber) Stats() SubscriberStats {
	return SubscriberStats{Applied: s.applied.Load(), Refused: s.refused.Load()}
}

// Run follows the issuer until ctx is done. It starts once the issuer's
// keys are loaded, since nothing can be verified before.
func (s *Subscriber) Run(ctx context.Context) {
	for {
		changed := s.cfg.Keys.Changed()
		if s.cfg.Keys.Ready() {
			break
		}
		select {
		case <-ctx.Done():
			return
		case <-changed:
		}
	}
	reconnected := s.cfg.Conn.StatusChanged(nats.CONNECTED)
	defer s.cfg.Conn.RemoveStatusListener(reconnected)
	for {
		// After a reconnect, the watch and the consumer are made anew
		// rather than left to notice missed heartbeats, which takes
		// seconds: the new watch delivers the current key sets, the new
		// consumer every revocation, and what was seen already is ignored.
		follow, stop := context.WithCancel(ctx)
		go s.watchKeySets(follow)
		go s.consumeRevocations(follow)
		again := s.process(ctx, reconnected)
		stop()
		if !again {
			return
		}
	}
}

// process applies the messages received until ctx is done (it returns
// false) or the connection is re-established (true).
func (s *Subscriber) process(ctx context.Context, reconnected <-chan nats.Status) bool {
	for {
		changed := s.cfg.Keys.Changed()
		select {
		case <-ctx.Done():
			return false
		case <-reconnected:
			return true
		case m := <-s.in:
			s.apply(m)
		case <-changed:
			retry := s.unverified
			s.unverified = nil
			for _, m := range retry {
				s.apply(m)
			}
		}
	}
}

// deliver hands m to Run, or drops it if ctx is done.
func (s *Subscriber) deliver(ctx context.Context, m received) {
	select {
	case s.in <- m:
	case <-ctx.Done():
	}
}

// retryWait returns the wait before re-creating a watch or consumer that
// failed n+1 times in a row.
func retryWait(n int) time.Duration { return backoff(n, 30*time.Second) }

// watchKeySets watches the issuer's entries of the key-set bucket,
// re-creating the watch whenever it ends, until ctx is done.
func (s *Subscriber) watchKeySets(ctx context.Context) {
	for failures := 0; ; failures++ {
		if err := s.watchOnce(ctx); err != nil && ctx.Err() == nil {
			level := slog.LevelWarn
			if errors.Is(err, jetstream.ErrBucketNotFound) {
				level = slog.LevelInfo // the issuer has not published yet
			}
			s.cfg.Logger.Log(ctx, level, "key sets over NATS: watch failed; will retry; keys are still polled over HTTPS", "err", err)
		} else {
			failures = 0
		}
		select {
		case <-ctx.Done():
			return
		case <-time.After(retryWait(failures)):
		}
	}
}

func (s *Subscriber) watchOnce(ctx context.Context) error {
	kv, err := s.js.KeyValue(ctx, KeysBucket)
	if err != nil {
		return fmt.Errorf("open bucket %s: %w", KeysBucket, err)
	}
	// The watch first delivers the current value of every key, then each
	// change: a sidecar that starts or comes back learns the current keys.
	w, err := kv.Watch(ctx, nameToken(s.cfg.Issuer)+".*", jetstream.IgnoreDeletes())
	if err != nil {
		return fmt.Errorf("watch bucket %s: %w", KeysBucket, err)
	}
	defer w.Stop()
	for e := range w.Updates() {
		if e != nil && e.Operation() == jetstream.KeyValuePut {
			s.deliver(ctx, received{key: e.Key(), data: e.Value()})
		}
	}
	return nil
}

// consumeRevocations reads the issuer's revocations from the start of the
// stream, re-creating the consumer if it cannot be made, until ctx is done.
func (s *Subscriber) consumeRevocations(ctx context.Context) {
	filter := revocationSubjects + "." + nameToken(s.cfg.Issuer) + ".>"
	for failures := 0; ; failures++ {
		err := func() error {
			// An ordered consumer re-creates itself after a reconnect or a
			// missed heartbeat, from where it was.
			c, err := s.js.OrderedConsumer(ctx, RevocationStream, jetstream.OrderedConsumerConfig{
				FilterSubjects: []string{filter},
				DeliverPolicy:  jetstream.DeliverAllPolicy,
			})
			if err != nil {
				return fmt.Errorf("consume stream %s: %w", RevocationStream, err)
			}
			cc, err := c.Consume(func(m jetstream.Msg) {
				s.deliver(ctx, received{data: m.Data()})
			}, jetstream.ConsumeErrHandler(func(_ jetstream.ConsumeContext, err error) {
				s.cfg.Logger.Debug("revocations over NATS: consumer", "err", err)
			}))
			if err != nil {
				return fmt.Errorf("consume stream %s: %w", RevocationStream, err)
			}
			defer cc.Stop()
			select {
			case <-ctx.Done():
			case <-cc.Closed():
			}
			return nil
		}()
		if err != nil && ctx.Err() == nil {
			level := slog.LevelWarn
			if errors.Is(err, jetstream.ErrStreamNotFound) {
				level = slog.LevelInfo
			}
			s.cfg.Logger.Log(ctx, level, "revocations over NATS: will retry", "err", err)
		} else {
			failures = 0
		}
		select {
		case <-ctx.Done():
			return
		case <-time.After(retryWait(failures)):
		}
	}
}

// apply verifies and applies one message. Refusals are logged without the
// message, which may be hostile and large.
func (s *Subscriber) apply(m received) {
	var err error
	if m.key != "" {
		err = s.applyKeySet(m.key, m.data)
	} else {
		err = s.applyRevocation(m.data)
	}
	switch {
	case err == nil:
		s.applied.Add(1)
	case errors.Is(err, errStale):
		s.cfg.Logger.Debug("update over NATS ignored", "err", err)
	case errors.Is(err, token.ErrUnknownKey) && len(s.unverified) < maxUnverified:
		// Signed with a key not fetched yet: try again when the keys
		// change.
		s.unverified = append(s.unverified, m)
		s.refused.Add(1)
		s.cfg.Logger.Warn("update over NATS signed with an unknown key; will retry when the issuer's keys change", "issuer", s.cfg.Issuer, "size", len(m.data))
	default:
		s.refused.Add(1)
		s.cfg.Logger.Warn("update over NATS refused", "issuer", s.cfg.Issuer, "size", len(m.data), "err", err)
	}
}

func (s *Subscriber) applyKeySet(key string, data []byte) error {
	u, keys, err := decodeKeySetUpdate(data, s.cfg.Keys, s.cfg.Issuer)
	if err != nil {
		return err
	}
	// The entry's key names the owner too; an update filed under another
	// owner's key was moved there by someone other than the issuer.
	if _, ownerToken, _ := strings.Cut(key, "."); ownerToken != nameToken(u.Owner) {
		return fmt.Errorf("key-set update for %s found under key %s", u.Owner, key)
	}
	now := s.cfg.Now()
	if u.Version > now.Add(token.MaxLeeway).UnixMicro() {
		return fmt.Errorf("key-set update for %s dated in the future (%v)", u.Owner, time.UnixMicro(u.Version).UTC())
	}
	last := s.versions[u.Owner]
	if u.Version < last {
		return fmt.Errorf("key-set update for %s is older (version %d) than the one taken (%d): replayed", u.Owner, u.Version, last)
	}
	if u.Version == last {
		return fmt.Errorf("key-set update for %s, version %d: %w", u.Owner, u.Version, errStale)
	}
	target := s.cfg.Keys
	if u.Owner != s.cfg.Issuer {
		if s.cfg.Provider == nil {
			return fmt.Errorf("key set of federated provider %s refused: federation is off", u.Owner)
		}
		if target = s.cfg.Provider(u.Owner); target == nil {
			return fmt.Errorf("key set of federated provider %s refused", u.Owner)
		}
	}
	target.Set(keys, SourceNATS)
	s.versions[u.Owner] = u.Version
	s.cfg.Logger.Info("key set updated over NATS", "issuer", s.cfg.Issuer, "owner", u.Owner, "keys", len(keys), "version", u.Version)
	return nil
}

func (s *Subscriber) applyRevocation(data []byte) error {
	r, err := decodeRevocation(data, s.cfg.Keys, s.cfg.Issuer)
	if err != nil {
		return err
	}
	if !r.ExpiresAt.After(s.cfg.Now()) {
		return fmt.Errorf("revocation %s expired: %w", r.ID, errStale)
	}
	if s.cfg.Revoked != nil {
		s.cfg.Revoked(token.Revocation{Issuer: r.Issuer, Kind: r.Kind, Value: r.Value, RevokedAt: r.RevokedAt, ExpiresAt: r.ExpiresAt})
	}
	return nil
}
