package main

import (
	"context"
	"fmt"
	"log/slog"
	"strings"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/meshauth/meshauth/internal/natsconn"
	"github.com/meshauth/meshauth/jwks"
	"github.com/meshauth/meshauth/token"
)

// trustedKeys are the key-set caches of the issuers a sidecar trusts: those
// configured, which must be loaded for the sidecar to be ready, then the
// federated providers that issuers relay over NATS, added as they arrive.
type trustedKeys struct {
	reg prometheus.Registerer

	// federating makes looking up or adding a relayed provider one step
	// across every issuer's subscriber: two issuers may relay the same
	// provider, and it must be added, and its metrics registered, once.
	federating sync.Mutex

	mu         sync.Mutex
	issuers    []string
	caches     []*jwks.KeySetCache
	configured int // the first ones
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
// old they are, for /readyz.
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
		if st.Keys == 0 {
			fmt.Fprintf(&b, "%s %s: no keys yet\n", kind, k.issuers[i])
			continue
		}
		fmt.Fprintf(&b, "%s %s: %d keys from %s, %s old\n", kind, k.issuers[i], st.Keys, st.Source, st.Age.Round(time.Second))
	}
	return b.String()
}

// followNATS subscribes to the key sets and revocations of every trusted
// issuer over NATS until ctx ends: pushed keys go to the issuers' caches,
// revocations to revoked, and with federation on, the providers an issuer
// relays are trusted with that issuer's audiences and types.
func followNATS(ctx context.Context, f *sidecarFlags, trusted []trustedIssuer, keys *trustedKeys, auth *token.Authenticator, revoked func(token.Revocation), reg prometheus.Registerer, log *slog.Logger) error {
	nc, err := natsconn.Connect(&f.nats, "meshauth sidecar "+f.audience, log.With("part", "nats"))
	if err != nil {
		return err
	}
	context.AfterFunc(ctx, nc.Close)
	for _, t := range trusted {
		cache, _ := keys.lookup(t.Issuer)
		cfg := jwks.SubscriberConfig{Conn: nc, Issuer: t.Issuer, Keys: cache, Revoked: revoked, Logger: log.With("issuer", t.Issuer)}
		if f.federation {
			cfg.Provider = providerTrust(t, keys, auth, log)
		}
		if err := subscribe(ctx, cfg, reg, prometheus.Labels{"issuer": t.Issuer}); err != nil {
			return err
		}
	}
	return nil
}

// subscribe follows one issuer over NATS until ctx ends (jwks.Subscriber),
// with its counters in reg.
func subscribe(ctx context.Context, cfg jwks.SubscriberConfig, reg prometheus.Registerer, labels prometheus.Labels) error {
	sub, err := jwks.NewSubscriber(cfg)
	if err != nil {
		return err
	}
	reg.MustRegister(
		prometheus.NewCounterFunc(prometheus.CounterOpts{Name: "meshauth_nats_updates_applied_total", Help: "Key sets and revocations taken from NATS.", ConstLabels: labels},
			func() float64 { return float64(sub.Stats().Applied) }),
		prometheus.NewCounterFunc(prometheus.CounterOpts{Name: "meshauth_nats_updates_refused_total", Help: "Messages from NATS refused: unverifiable, malformed or replayed.", ConstLabels: labels},
			func() float64 { return float64(sub.Stats().Refused) }),
	)
	go sub.Run(ctx)
	return nil
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
		c, err := jwks.NewKeySetCache(jwks.KeySetConfig{Issuer: provider, Logger: log.With("provider", provider)})
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
