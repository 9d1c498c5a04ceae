package pgstore

import (
	"maps"
	"slices"
	"sync"
	"time"

	"github.com/meshauth/meshauth/issuer/store"
)

// Clients are read on every token request; the cache spares the database
// round trip. It holds clients only while the store listens for the
// NOTIFY that every write of a client sends (migration 004): a client
// written by any replica, or by meshauth clients, leaves every cache when
// that arrives, milliseconds after the write commits.
const (
	// clientCacheSize bounds the clients held.
	clientCacheSize = 10000
	// clientCacheTTL bounds how long one is held, should a NOTIFY be lost
	// without the connection.
	clientCacheTTL = time.Minute
)

type clientCache struct {
	mu      sync.Mutex
	live    bool   // the store listens: invalidations arrive
	gen     uint64 // bumped by every invalidation
	entries map[string]cachedClient
	now     func() time.Time
}

type cachedClient struct {
	c  *store.Client
	at time.Time
}

func newClientCache() *clientCache {
	return &clientCache{entries: map[string]cachedClient{}, now: time.Now}
}

// get returns a copy of the cached client id, and the generation to pass
// to put after reading it from the database on a miss.
func (cc *clientCache) get(id string) (c *store.Client, gen uint64) {
	cc.mu.Lock()
	defer cc.mu.Unlock()
	e, ok := cc.entries[id]
	if ok && cc.now().Sub(e.at) < clientCacheTTL {
		return cloneClient(e.c), cc.gen
	}
	return nil, cc.gen
}

// put caches c, read from the database when the generation was gen,
// unless an invalidation came since: c may be older than it.
func (cc *clientCache) put(c *store.Client, gen uint64) {
	cc.mu.Lock()
	defer cc.mu.Unlock()
	if !cc.live || cc.gen != gen {
		return
	}
	if len(cc.entries) >= clientCacheSize {
		for id := range cc.entries { // any one
			delete(cc.entries, id)
			break
		}
	}
	cc.entries[c.ID] = cachedClient{c: cloneClient(c), at: cc.now()}
}

func (cc *clientCache) invalidate(id string) {
	cc.mu.Lock()
	defer cc.mu.Unlock()
	cc.gen++
	delete(cc.entries, id)
}

// setLive empties the cache, and lets it fill again if live: whatever it
// held may have changed unannounced.
func (cc *clientCache) setLive(live bool) {
	cc.mu.Lock()
	defer cc.mu.Unlock()
	cc.gen++
	cc.live = live
	clear(cc.entries)
}

// cloneClient copies c deeply, so that no caller shares the cached one.
func cloneClient(c *store.Client) *store.Client {
	d := *c
	d.GrantTypes = slices.Clone(c.GrantTypes)
	d.Scope = slices.Clone(c.Scope)
	d.JWKS = slices.Clone(c.JWKS)
	d.AllowedAudiences = slices.Clone(c.AllowedAudiences)
	d.RedirectURIs = slices.Clone(c.RedirectURIs)
	d.ExchangeScopes = maps.Clone(c.ExchangeScopes)
	for k, v := range d.ExchangeScopes {
		d.ExchangeScopes[k] = slices.Clone(v)
	}
	return &d
}
