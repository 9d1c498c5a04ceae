package main

import (
	"context"
	"flag"
	"fmt"
	"log/slog"
	"strings"
	"sync"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/meshauth/meshauth/internal/natsconn"
	"github.com/meshauth/meshauth/jwks"
	"github.com/meshauth/meshauth/token"
)

// trustedKeys are the key-set caches of the issuers a sidecar trusts: those
// configured, which must be loaded for the sidecar to be ready, then the
// federated providers that issuers relay, added as they arrive; and the
// subscribers that follow the configured issuers' distribution.
type trustedKeys struct {
	reg prometheus.Registerer

	// federating makes looking up or adding a relayed provider one step
	// across every issuer's subscriber: two issuers may relay the same
	// provider, and it must be added, and its metrics registered, once.
	federating sync.Mutex

	mu          sync.Mutex
	issuers     []string
	caches      []*jwks.KeySetCache
	configured  int // the first ones
	subscribers map[string]*jwks.Subscriber
}

// add records the cache of issuer; configured says whether the sidecar's
// configuration names it.
func (k *trustedKeys) add(issuer string, c *jwks.KeySetCache, configured bool) {
	k.mu.Lock()
	k.issuers = append(k.issuers, issuer)
	k.caches = append(k.caches, c)
	if configured {
		k.configured++
	}
	k.mu.Unlock()
	registerKeySetMetrics(k.reg, issuer, c)
	k.reg.MustRegister(prometheus.NewGaugeFunc(prometheus.GaugeOpts{Name: "meshauth_keyset_dropped",
		Help: "1 if the trusted issuer's keys were dropped: a federated provider whose keys were not renewed in time, or no longer relayed.", ConstLabels: prometheus.Labels{"issuer": issuer}},
		func() float64 { return boolGauge(c.Status().Dropped != "") }))
}

func boolGauge(b bool) float64 {
	if b {
		return 1
	}
	return 0
}

// lookup returns the cache of issuer and whether it is configured.
func (k *trustedKeys) lookup(issuer string) (c *jwks.KeySetCache, configured bool) {
	k.mu.Lock()
	defer k.mu.Unlock()
	for i, is := range k.issuers {
		if is == issuer {
			return k.caches[i], i < k.configured
		}
	}
	return nil, false
}

// ready is the sidecar's readiness: every configured issuer's keys loaded.
// How old the revocations are does not make it unready, which would take
// every sidecar out of service when the issuer is down; status says it.
func (k *trustedKeys) ready(context.Context) error {
	k.mu.Lock()
	defer k.mu.Unlock()
	var missing []string
	for _, c := range k.caches[:k.configured] {
		if !c.Ready() {
			st := c.Status()
			missing = append(missing, fmt.Sprintf("%s (%s)", st.Source, st.LastError))
		}
	}
	if len(missing) > 0 {
		return fmt.Errorf("keys not loaded: %s", strings.Join(missing, "; "))
	}
	return nil
}

// status describes, one line per issuer, where its keys came from and how
// old they are, and how far and how recently its distribution was
// followed, for /readyz.
func (k *trustedKeys) status() string {
	k.mu.Lock()
	defer k.mu.Unlock()
	var b strings.Builder
	for i, c := range k.caches {
		st := c.Status()
		kind := "trusted"
		if i >= k.configured {
			kind = "federated"
		}
		switch {
		case st.Dropped != "":
			fmt.Fprintf(&b, "%s %s: keys dropped (%s)", kind, k.issuers[i], st.Dropped)
		case st.Keys == 0:
			fmt.Fprintf(&b, "%s %s: no keys yet", kind, k.issuers[i])
		default:
			fmt.Fprintf(&b, "%s %s: %d keys from %s, %s old", kind, k.issuers[i], st.Keys, st.Source, st.Age.Round(time.Second))
		}
		if sub := k.subscribers[k.issuers[i]]; sub != nil {
			b.WriteString("; " + distributionStatus(sub.Status()))
		}
		b.WriteByte('\n')
	}
	return b.String()
}

// distributionStatus describes a subscriber's state in a few words.
func distributionStatus(st jwks.SubscriberStatus) string {
	var s string
	if st.ConfirmedAt.IsZero() {
		s = "revocations: none from the issuer yet"
	} else {
		s = fmt.Sprintf("revocations and keys up to change %d, confirmed by the issuer %s ago", st.Seq, st.Age.Round(time.Second))
	}
	s += ", NATS " + st.NATS
	if st.LastError != "" {
		s += "; keeping the last state: " + st.LastError
	}
	return s
}

// registerSnapshotInterval adds --snapshot-interval, for sidecars and
// edges.
func registerSnapshotInterval(fs *flag.FlagSet, interval *time.Duration) {
	fs.DurationVar(interval, "snapshot-interval", jwks.DefaultPollInterval, "how often each trusted issuer's signed snapshot of keys and revocations is fetched (a conditional request): with NATS down or without it, revocations arrive within it")
}

// follower starts one jwks.Subscriber per issuer followed, with their
// metrics, all on one NATS connection if NATS is configured.
type follower struct {
	nc       *nats.Conn
	interval time.Duration
	reg      prometheus.Registerer
	log      *slog.Logger
}

func newFollower(ctx context.Context, natsFlags *natsconn.Flags, interval time.Duration, name string, reg prometheus.Registerer, log *slog.Logger) (*follower, error) {
	fl := &follower{interval: interval, reg: reg, log: log}
	if natsFlags.Enabled() {
		nc, err := natsconn.Connect(natsFlags, name, log.With("part", "nats"))
		if err != nil {
			return nil, err
		}
		context.AfterFunc(ctx, nc.Close)
		fl.nc = nc
	}
	return fl, nil
}

// follow follows one issuer until ctx ends: keys to keys (and relayed
// providers through provider), revocations to revoked.
func (fl *follower) follow(ctx context.Context, issuer string, keys *jwks.KeySetCache, provider func(string) *jwks.KeySetCache, revoked token.RevocationSink) (*jwks.Subscriber, error) {
	sub, err := jwks.NewSubscriber(jwks.SubscriberConfig{Conn: fl.nc, Issuer: issuer, Keys: keys, Provider: provider, Revoked: revoked,
		PollInterval: fl.interval, Logger: fl.log.With("issuer", issuer)})
	if err != nil {
		return nil, fmt.Errorf("follow %s: %w", issuer, err)
	}
	labels := prometheus.Labels{"issuer": issuer}
	counter := func(name, help string, v func(jwks.SubscriberStatus) uint64) prometheus.Collector {
		return prometheus.NewCounterFunc(prometheus.CounterOpts{Name: name, Help: help, ConstLabels: labels}, func() float64 { return float64(v(sub.Status())) })
	}
	gauge := func(name, help string, v func(jwks.SubscriberStatus) float64) prometheus.Collector {
		return prometheus.NewGaugeFunc(prometheus.GaugeOpts{Name: name, Help: help, ConstLabels: labels}, func() float64 { return v(sub.Status()) })
	}
	fl.reg.MustRegister(
		counter("meshauth_distribution_applied_total", "Snapshots and deltas of the issuer's keys and revocations applied.", func(s jwks.SubscriberStatus) uint64 { return s.Applied }),
		counter("meshauth_distribution_refused_total", "Snapshots and deltas refused: unverifiable, malformed, another issuer's, or an older snapshot.", func(s jwks.SubscriberStatus) uint64 { return s.Refused }),
		counter("meshauth_distribution_stale_total", "Deltas that changed nothing: replayed, reordered or duplicated.", func(s jwks.SubscriberStatus) uint64 { return s.Stale }),
		counter("meshauth_distribution_snapshot_fetches_total", "Fetches of the issuer's snapshot.", func(s jwks.SubscriberStatus) uint64 { return s.Snapshots }),
		gauge("meshauth_distribution_seq", "The issuer's change number up to which its keys and revocations are applied.", func(s jwks.SubscriberStatus) float64 { return float64(s.Seq) }),
		gauge("meshauth_distribution_age_seconds", "Time since the issuer last confirmed the keys and revocations held (-1 before).", func(s jwks.SubscriberStatus) float64 {
			if s.ConfirmedAt.IsZero() {
				return -1
			}
			return s.Age.Seconds()
		}),
		gauge("meshauth_distribution_failing", "1 while the issuer's snapshot cannot be fetched or is refused: the last good state is kept.", func(s jwks.SubscriberStatus) float64 { return boolGauge(s.LastError != "") }),
	)
	go sub.Run(ctx)
	return sub, nil
}

// followIssuers follows every trusted issuer until ctx ends: keys to the
// issuers' caches, revocations to every sink of revoked, and with
// federation on, the providers an issuer relays trusted with that issuer's
// audiences and types.
func followIssuers(ctx context.Context, f *sidecarFlags, trusted []trustedIssuer, keys *trustedKeys, auth *token.Authenticator, revoked *token.RevocationSinks, reg prometheus.Registerer, log *slog.Logger) error {
	fl, err := newFollower(ctx, &f.nats, f.snapshotInterval, "meshauth sidecar "+f.audience, reg, log)
	if err != nil {
		return err
	}
	subs := map[string]*jwks.Subscriber{}
	for _, t := range trusted {
		cache, _ := keys.lookup(t.Issuer)
		var provider func(string) *jwks.KeySetCache
		if f.federation {
			provider = providerTrust(t, keys, auth, log)
		}
		sub, err := fl.follow(ctx, t.Issuer, cache, provider, revoked.Revoke)
		if err != nil {
			return err
		}
		subs[t.Issuer] = sub
	}
	keys.follow(subs)
	return nil
}

// follow records the subscribers of the configured issuers, by issuer,
// for status.
func (k *trustedKeys) follow(subs map[string]*jwks.Subscriber) {
	k.mu.Lock()
	defer k.mu.Unlock()
	k.subscribers = subs
}

// providerTrust returns the SubscriberConfig.Provider of issuer t: a
// provider it relays is trusted with t's audiences and types, its keys
// held by a cache that only the relay fills (and an unknown kid, once,
// rate-limited, from the provider's metadata). A provider configured in
// this sidecar keeps its own configuration: relayed sets for it are
// refused.
func providerTrust(t trustedIssuer, keys *trustedKeys, auth *token.Authenticator, log *slog.Logger) func(string) *jwks.KeySetCache {
	return func(provider string) *jwks.KeySetCache {
		keys.federating.Lock()
		defer keys.federating.Unlock()
		if c, configured := keys.lookup(provider); c != nil {
			if configured {
				return nil
			}
			return c
		}
		// Fetched here only for a kid the relay lacks; bounded like the
		// relay, should the provider go bad.
		c, err := jwks.NewKeySetCache(jwks.KeySetConfig{Issuer: provider, MaxRefresh: providerMaxRefresh, MaxStale: providerMaxStale, Logger: log.With("provider", provider)})
		if err != nil {
			log.Warn("federated provider refused", "provider", provider, "err", err)
			return nil
		}
		err = auth.AddIssuer(token.Issuer{Policy: token.Policy{Issuer: provider, Audiences: t.Audiences, Types: t.Types, SubjectPrefix: provider + "#"}, Keys: c})
		if err != nil {
			log.Warn("federated provider refused", "provider", provider, "err", err)
			return nil
		}
		keys.add(provider, c, false)
		log.Info("federated provider trusted", "provider", provider, "relayed_by", t.Issuer)
		return c
	}
}

// keySourceCollector exports where a trusted issuer's keys came from, as a
// gauge of 1 labelled with the source.
type keySourceCollector struct {
	keys *jwks.KeySetCache
	desc *prometheus.Desc
}

func newKeySourceCollector(issuer string, keys *jwks.KeySetCache) *keySourceCollector {
	return &keySourceCollector{keys: keys, desc: prometheus.NewDesc("meshauth_keyset_source",
		"Where the trusted issuer's current keys came from (nats, metadata, jwks_url, file): 1 for the current source.",
		[]string{"source"}, prometheus.Labels{"issuer": issuer})}
}

func (c *keySourceCollector) Describe(ch chan<- *prometheus.Desc) { ch <- c.desc }

func (c *keySourceCollector) Collect(ch chan<- prometheus.Metric) {
	ch <- prometheus.MustNewConstMetric(c.desc, prometheus.GaugeValue, 1, c.keys.Status().Source)
}
