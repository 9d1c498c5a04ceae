package keys

import (
	"context"
	"encoding/json"
	"io"
	"log/slog"
	"net"
	"net/http"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go"

	"github.com/meshauth/meshauth/internal/natstest"
	"github.com/meshauth/meshauth/internal/testlog"
	"github.com/meshauth/meshauth/issuer/store"
	"github.com/meshauth/meshauth/jwks"
	"github.com/meshauth/meshauth/token"
)

func TestDistributionKeySets(t *testing.T) {
	iss, natsURL := newNATSIssuer(t)
	sidecars := []*sidecar{
		newSidecar(t, iss, sidecarOptions{natsURLs: natsURL}),
		newSidecar(t, iss, sidecarOptions{natsURLs: natsURL}),
		newSidecar(t, iss, sidecarOptions{natsURLs: natsURL}),
	}
	for _, sc := range sidecars {
		if src := sc.keys.Status().Source; src != jwks.SourceSnapshot {
			t.Fatalf("keys from %q after the first snapshot", src)
		}
	}
	jwksFetches, snapshots := iss.jwksFetches.Load(), iss.snapshotFetches.Load()

	// A scheduled rotation: the new key is pre-published.
	next := iss.rotate(t, false)
	for _, sc := range sidecars {
		distWait(t, "the pre-published key", func() bool { return sc.has(next) })
	}
	// An immediate rotation: the new key signs at once, and its delta is
	// signed by a key the sidecars hold, so no one fetches anything.
	now := iss.rotate(t, true)
	for _, sc := range sidecars {
		distWait(t, "the immediately rotated key", func() bool { return sc.has(now) })
		if sc.has(next) {
			t.Error("the pending key deleted by the immediate rotation is still trusted")
		}
		if src := sc.keys.Status().Source; src != jwks.SourceNATS {
			t.Errorf("keys from %q after a rotation, want nats", src)
		}
	}
	if got := iss.jwksFetches.Load(); got != jwksFetches {
		t.Errorf("JWKS fetched %d times during the rotations; the keys should have come over NATS", got-jwksFetches)
	}
	// The immediate rotation is two changes (the pending key deleted, the
	// new one added) and one delta: the gap sends each sidecar to the
	// snapshot once.
	distWait(t, "the gap healed", func() bool {
		for _, sc := range sidecars {
			if sc.sub.Status().Seq != iss.changeSeq(t).Seq {
				return false
			}
		}
		return true
	})
	if got := iss.snapshotFetches.Load() - snapshots; got > int64(len(sidecars)) {
		t.Errorf("%d snapshot fetches for two rotations by %d sidecars", got, len(sidecars))
	}

	// A sidecar that starts after the change learns it from the snapshot.
	late := newSidecar(t, iss, sidecarOptions{natsURLs: natsURL})
	if !late.has(now) || late.has(next) {
		t.Fatal("a late sidecar does not have the current keys")
	}
}

func (iss *distIssuer) changeSeq(t testing.TB) store.ChangeSeq {
	t.Helper()
	cs, err := iss.store.ChangeSeq(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	return cs
}

func TestDistributionRevocations(t *testing.T) {
	iss, natsURL := newNATSIssuer(t)
	iss.revoke(t, store.RevokeClient, "stored-client")
	ctx := context.Background()
	expired := &store.Revocation{ID: "old", Kind: store.RevokeToken, Value: "expired-jti", RevokedAt: time.Now().Add(-2 * time.Hour), ExpiresAt: time.Now().Add(-time.Hour)}
	if err := iss.store.AddRevocation(ctx, expired); err != nil {
		t.Fatal(err)
	}
	sidecars := []*sidecar{newSidecar(t, iss, sidecarOptions{natsURLs: natsURL}), newSidecar(t, iss, sidecarOptions{natsURLs: natsURL})}
	alice := iss.revoke(t, store.RevokeSubject, "alice")
	iss.dist.NotifyRevocation(ctx, expired)
	want := []string{"alice", "stored-client"}
	for _, sc := range sidecars {
		distWait(t, "the revocations", func() bool { return slices.Equal(sc.revokedValues(), want) })
	}
	sc := sidecars[0]
	sc.mu.Lock()
	for _, r := range sc.revoked {
		if r.Value == "alice" && (r.Issuer != iss.url || r.Kind != token.RevokeSubject || !r.RevokedAt.Equal(alice.RevokedAt) || !r.ExpiresAt.Equal(alice.ExpiresAt)) {
			t.Errorf("revocation received as %+v", r)
		}
	}
	sc.mu.Unlock()
	// A sidecar that starts later rebuilds the whole list from the
	// snapshot.
	late := newSidecar(t, iss, sidecarOptions{natsURLs: natsURL})
	if got := late.revokedValues(); !slices.Equal(got, want) {
		t.Errorf("a late sidecar has %q, want %q", got, want)
	}
}

// TestRevocationOutlivesItsSigningKey: a revocation made after an
// immediate rotation reaches a sidecar that starts once the key that was
// active before it has left the key set. (Revocations were signed with the
// oldest published key and kept on NATS; a sidecar that started after that
// key left could not verify them, and accepted the revoked token.)
func TestRevocationOutlivesItsSigningKey(t *testing.T) {
	natsURL := natstest.Start(t, t.TempDir(), -1).ClientURL()
	iss := newDistIssuer(t)
	iss.keyring.cfg.MaxTokenLifetime = 2 * time.Minute
	iss.publish(t, natsURL, nil)
	iss.rotate(t, true)
	iss.revoke(t, store.RevokeSubject, "alice")
	first := newSidecar(t, iss, sidecarOptions{natsURLs: natsURL})
	if !first.hasRevoked(iss, "alice") {
		t.Fatal("the revocation is not at a sidecar")
	}
	// The old key leaves the key set when the tokens it signed expired.
	iss.clock.Set(time.Now().Add(4 * time.Minute))
	iss.keyring.tick(context.Background())
	if n := len(iss.keyring.state.Load().kids); n != 1 {
		t.Fatalf("%d keys published, want the new one alone", n)
	}
	late := newSidecar(t, iss, sidecarOptions{natsURLs: natsURL})
	if !late.hasRevoked(iss, "alice") {
		t.Fatal("a sidecar started after the key drop does not have the revocation")
	}
}

// TestPublishedGarbageErasesNothing: whatever anyone publishes on the
// issuer's subjects, a sidecar that starts afterwards has the revocations.
// (Revocations were kept one per subject on NATS, so that any bytes
// published there replaced a signed one.)
func TestPublishedGarbageErasesNothing(t *testing.T) {
	iss, natsURL := newNATSIssuer(t)
	iss.revoke(t, store.RevokeSubject, "alice")
	nc := natstest.Connect(t, natsURL)
	for _, kind := range []string{jwks.KindRevocation, jwks.KindKeys, jwks.KindRelay} {
		if err := nc.Publish(jwks.UpdateSubject(iss.url, kind), []byte("garbage")); err != nil {
			t.Fatal(err)
		}
	}
	if err := nc.Flush(); err != nil {
		t.Fatal(err)
	}
	late := newSidecar(t, iss, sidecarOptions{natsURLs: natsURL})
	if !late.hasRevoked(iss, "alice") {
		t.Fatal("a sidecar started after garbage was published lacks the revocation")
	}
}

// TestReplayedKeySetRefused: a key set published before a rotation and
// replayed after it changes nothing at a sidecar that started after the
// rotation. (The sidecar's replay protection lived in its memory only: a
// restarted one took the replayed key set and lost the current key.)
func TestReplayedKeySetRefused(t *testing.T) {
	iss, natsURL := newNATSIssuer(t)
	nc := natstest.Connect(t, natsURL)
	captured := make(chan []byte, 4)
	if _, err := nc.Subscribe(jwks.UpdateSubject(iss.url, jwks.KindKeys), func(m *nats.Msg) { captured <- m.Data }); err != nil {
		t.Fatal(err)
	}
	if err := nc.Flush(); err != nil {
		t.Fatal(err)
	}
	iss.rotate(t, false) // a pre-published key: one delta, captured
	old := <-captured
	current := iss.rotate(t, true)
	late := newSidecar(t, iss, sidecarOptions{natsURLs: natsURL})
	stale := late.sub.Status().Stale
	if err := nc.Publish(jwks.UpdateSubject(iss.url, jwks.KindKeys), old); err != nil {
		t.Fatal(err)
	}
	distWait(t, "the replay counted", func() bool { return late.sub.Status().Stale > stale })
	if !late.has(current) || late.keys.Keys().Len() != 2 {
		t.Fatal("a replayed key set replaced the current keys")
	}
}

// TestRevocationWhileNATSDown: with NATS down, a revocation reaches a
// running sidecar through the snapshot, within its polling interval. (It
// had no path at all: the token stayed valid until NATS came back.)
func TestRevocationWhileNATSDown(t *testing.T) {
	dir := t.TempDir()
	ns := natstest.Start(t, dir, -1)
	natsURL, port := ns.ClientURL(), ns.Addr().(*net.TCPAddr).Port
	iss := newDistIssuer(t)
	iss.publish(t, natsURL, nil)
	sc := newSidecar(t, iss, sidecarOptions{natsURLs: natsURL, poll: 100 * time.Millisecond})
	ns.Shutdown()
	ns.WaitForShutdown()
	distWait(t, "NATS noticed down", func() bool { return sc.sub.Status().NATS == "disconnected" })

	iss.revoke(t, store.RevokeSubject, "while-down")
	next := iss.rotate(t, true)
	distWait(t, "the revocation made while NATS is down", func() bool { return sc.hasRevoked(iss, "while-down") })
	distWait(t, "the rotation made while NATS is down", func() bool { return sc.has(next) })

	// NATS back: the sidecar follows its deltas again.
	natstest.Start(t, dir, port)
	distWait(t, "NATS back", func() bool { return sc.sub.Status().NATS == "connected" })
	iss.revoke(t, store.RevokeSubject, "after")
	distWait(t, "a revocation after the restart", func() bool { return sc.hasRevoked(iss, "after") })
}

// TestIssuerAndNATSDown: with both the issuer and NATS unreachable, a
// sidecar keeps everything it has, and says how old it is.
func TestIssuerAndNATSDown(t *testing.T) {
	ns := natstest.Start(t, t.TempDir(), -1)
	iss := newDistIssuer(t)
	iss.publish(t, ns.ClientURL(), nil)
	iss.revoke(t, store.RevokeSubject, "alice")
	sc := newSidecar(t, iss, sidecarOptions{natsURLs: ns.ClientURL(), poll: 50 * time.Millisecond})
	kid := iss.keyring.state.Load().kids[0]
	ns.Shutdown()
	iss.down.Store(true)
	confirmed := sc.sub.Status().ConfirmedAt
	distWait(t, "the failure reported", func() bool { return sc.sub.Status().LastError != "" })
	st := sc.sub.Status()
	if !st.ConfirmedAt.Equal(confirmed) || st.NATS != "disconnected" || st.Seq == 0 {
		t.Errorf("status with the issuer and NATS down: %+v", st)
	}
	time.Sleep(100 * time.Millisecond)
	if age := sc.sub.Status().Age; age < 100*time.Millisecond {
		t.Errorf("age %v: it must grow while nothing confirms the state", age)
	}
	if !sc.has(kid) || !sc.hasRevoked(iss, "alice") {
		t.Fatal("the keys or revocations were forgotten")
	}
	iss.down.Store(false)
	distWait(t, "the issuer back", func() bool { return sc.sub.Status().LastError == "" })
}

// TestForgedDeltasRefused publishes what anyone allowed on NATS could:
// nothing changes, each is counted, and an unverifiable one sends the
// sidecar to the snapshot.
func TestForgedDeltasRefused(t *testing.T) {
	iss, natsURL := newNATSIssuer(t)
	sc := newSidecar(t, iss, sidecarOptions{natsURLs: natsURL})
	current := iss.keyring.state.Load().kids[0]
	foreign := newDistIssuer(t)
	forgedDoc, _ := foreign.keyring.Published()
	sign := func(k *Keyring, typ string, v any) []byte {
		b, err := json.Marshal(v)
		if err != nil {
			t.Fatal(err)
		}
		msg, err := k.SignUpdate(typ, b)
		if err != nil {
			t.Fatal(err)
		}
		return []byte(msg)
	}
	revocation := func(value string) jwks.RevocationEntry {
		return jwks.RevocationEntry{ID: value, Seq: 1 << 40, Kind: store.RevokeSubject, Value: value, RevokedAt: time.Now(), ExpiresAt: time.Now().Add(time.Hour)}
	}
	nc := natstest.Connect(t, natsURL)
	for _, tt := range []struct {
		name  string
		kind  string
		value []byte
	}{
		{"not a JWS", jwks.KindKeys, []byte("garbage")},
		{"unsigned", jwks.KindKeys, []byte("eyJhbGciOiJub25lIn0.e30.")},
		{"key set signed by another issuer's key", jwks.KindKeys, sign(foreign.keyring, jwks.TypKeySet, jwks.KeySetUpdate{Issuer: iss.url, Seq: 1 << 40, JWKS: forgedDoc})},
		{"key set naming another issuer", jwks.KindKeys, sign(iss.keyring, jwks.TypKeySet, jwks.KeySetUpdate{Issuer: foreign.url, Seq: 1 << 40, JWKS: forgedDoc})},
		{"revocation signed by another issuer's key", jwks.KindRevocation, sign(foreign.keyring, jwks.TypRevocation, jwks.RevocationUpdate{Issuer: iss.url, RevocationEntry: revocation("bob")})},
		{"revocation on the key-set subject", jwks.KindKeys, sign(iss.keyring, jwks.TypRevocation, jwks.RevocationUpdate{Issuer: iss.url, RevocationEntry: revocation("carol")})},
		{"relay with federation off", jwks.KindRelay, sign(iss.keyring, jwks.TypRelay, jwks.RelayUpdate{Issuer: iss.url, ProviderKeys: jwks.ProviderKeys{Provider: foreign.url, Version: 1, JWKS: forgedDoc}})},
		{"unknown subject", "other", []byte("x")},
	} {
		t.Run(tt.name, func(t *testing.T) {
			refused, snapshots := sc.sub.Status().Refused, iss.snapshotFetches.Load()
			if err := nc.Publish(jwks.UpdateSubject(iss.url, tt.kind), tt.value); err != nil {
				t.Fatal(err)
			}
			distWait(t, "the refusal", func() bool { return sc.sub.Status().Refused > refused })
			if !sc.has(current) || sc.keys.Keys().Len() != 1 {
				t.Fatal("the keys changed")
			}
			if slices.ContainsFunc(sc.revokedValues(), func(v string) bool { return v == "bob" || v == "carol" }) {
				t.Fatal("a forged revocation was applied")
			}
			if tt.kind != jwks.KindRelay {
				distWait(t, "the snapshot fetched", func() bool { return iss.snapshotFetches.Load() > snapshots })
			}
		})
	}
}

// TestGapFetchesSnapshot: a delta that arrives while the one before it
// never did sends the sidecar to the snapshot, which has the missing
// change.
func TestGapFetchesSnapshot(t *testing.T) {
	iss, natsURL := newNATSIssuer(t)
	sc := newSidecar(t, iss, sidecarOptions{natsURLs: natsURL})
	ctx := context.Background()
	// Stored but never published: as from a replica that stopped
	// between storing and publishing.
	silent := &store.Revocation{ID: "silent", Kind: store.RevokeSubject, Value: "silent", RevokedAt: time.Now(), ExpiresAt: time.Now().Add(time.Hour)}
	if err := iss.store.AddRevocation(ctx, silent); err != nil {
		t.Fatal(err)
	}
	iss.revoke(t, store.RevokeSubject, "loud")
	distWait(t, "the missed revocation", func() bool { return sc.hasRevoked(iss, "silent") })
	if !sc.hasRevoked(iss, "loud") {
		t.Fatal("the published revocation is missing")
	}
}

// TestNodeLoss runs the issuer and sidecars on a 3-node cluster, each
// sidecar on its own node first, with polling out of the way: after the
// node of one sidecar is killed, the next revocation reaches every
// sidecar over NATS within seconds. (An ordered JetStream consumer took
// 12 s, two 5 s heartbeats, to recover from the loss of its stream's
// leader.) What bounds it: the client notices the lost connection at once
// (the TCP connection closes) or after two missed pings, reconnects to
// another node after ReconnectWait, and then fetches the snapshot, which
// has whatever was published meanwhile.
func TestNodeLoss(t *testing.T) {
	servers, _ := natstest.Cluster(t, t.TempDir(), 3)
	var all []string
	for _, s := range servers {
		all = append(all, s.ClientURL())
	}
	iss := newDistIssuer(t)
	iss.publish(t, all[1]+","+all[2], nil)
	var sidecars []*sidecar
	for i := range servers {
		urls := append([]string{all[i]}, slices.Delete(slices.Clone(all), i, i+1)...)
		sidecars = append(sidecars, newSidecar(t, iss, sidecarOptions{natsURLs: strings.Join(urls, ",")}))
	}
	iss.revoke(t, store.RevokeSubject, "warm-up")
	for _, sc := range sidecars {
		distWait(t, "the warm-up revocation", func() bool { return sc.hasRevoked(iss, "warm-up") })
	}
	servers[0].Shutdown()
	servers[0].WaitForShutdown()
	start := time.Now()
	iss.revoke(t, store.RevokeSubject, "alice")
	for _, sc := range sidecars {
		distWait(t, "the revocation after the node loss", func() bool { return sc.hasRevoked(iss, "alice") })
	}
	took := time.Since(start)
	t.Logf("the revocation reached every sidecar %v after the node loss", took)
	if took > 5*time.Second {
		t.Errorf("the revocation took %v after the node loss", took)
	}
}

// TestSnapshotPages: a sidecar that starts with more revocations to learn
// than one snapshot holds gets them all, page after page.
func TestSnapshotPages(t *testing.T) {
	iss := newDistIssuer(t)
	ctx := context.Background()
	n := jwks.SnapshotPage*2 + 7
	for i := range n {
		r := &store.Revocation{ID: strconv.Itoa(i), Kind: store.RevokeToken, Value: strconv.Itoa(i), RevokedAt: time.Now(), ExpiresAt: time.Now().Add(time.Hour)}
		if err := iss.store.AddRevocation(ctx, r); err != nil {
			t.Fatal(err)
		}
	}
	sc := newSidecar(t, iss, sidecarOptions{})
	if got := len(sc.revokedValues()); got != n {
		t.Fatalf("%d revocations at the sidecar, want %d", got, n)
	}
	if got := iss.snapshotFetches.Load(); got != 3 {
		t.Errorf("%d snapshot fetches, want 3 pages", got)
	}
	if st := sc.sub.Status(); st.Seq != iss.changeSeq(t).Seq {
		t.Errorf("sidecar at change %d, the issuer at %d", st.Seq, iss.changeSeq(t).Seq)
	}
}

// TestSnapshotEndpoint checks the HTTP side: conditional requests, pages
// by since, bad requests, and a store that cannot be read.
func TestSnapshotEndpoint(t *testing.T) {
	iss := newDistIssuer(t)
	get := func(query, etag string) *http.Response {
		t.Helper()
		req, _ := http.NewRequest(http.MethodGet, iss.url+"/snapshot"+query, nil)
		if etag != "" {
			req.Header.Set("If-None-Match", etag)
		}
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		return resp
	}
	resp := get("", "")
	etag := resp.Header.Get("ETag")
	if resp.StatusCode != 200 || etag == "" || resp.Header.Get("Content-Type") != jwks.SnapshotMediaType {
		t.Fatalf("snapshot: %d, ETag %q, %q", resp.StatusCode, etag, resp.Header.Get("Content-Type"))
	}
	if resp := get("?since=1", etag); resp.StatusCode != http.StatusNotModified {
		t.Errorf("unchanged, with its ETag: %d, want 304", resp.StatusCode)
	}
	iss.revoke(t, store.RevokeSubject, "alice")
	if resp := get("?since=1", etag); resp.StatusCode != 200 || resp.Header.Get("ETag") == etag {
		t.Errorf("after a revocation: %d, ETag %q", resp.StatusCode, resp.Header.Get("ETag"))
	}
	// Every since before the same revocation gets the same page.
	body := func(query string) string {
		resp, err := http.Get(iss.url + "/snapshot" + query)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		return string(b)
	}
	if a, b := body("?since=1"), body("?since=2"); a != b {
		t.Error("two verifiers without the one revocation got different pages")
	}
	for _, q := range []string{"?since=x", "?since=-1"} {
		if resp := get(q, ""); resp.StatusCode != http.StatusBadRequest {
			t.Errorf("%s: %d, want 400", q, resp.StatusCode)
		}
	}
	iss.store.Close() // nothing can be read
	iss.dist.mu.Lock()
	iss.dist.checkedAt = time.Time{}
	iss.dist.mu.Unlock()
	if resp := get("", ""); resp.StatusCode != http.StatusServiceUnavailable {
		t.Errorf("store closed: %d, want 503", resp.StatusCode)
	}
}

// TestDistributionFederation: a provider's keys reach the sidecars relayed
// by the issuer, from the snapshot and on NATS; when the issuer drops
// them (the provider is down, serves garbage or names another issuer for
// longer than its MaxStale), so do the sidecars. The issuer's own keys are
// never affected.
func TestDistributionFederation(t *testing.T) {
	natsURL := natstest.Start(t, t.TempDir(), -1).ClientURL()
	provider := newDistIssuer(t)
	ctx, cancel := context.WithCancel(context.Background())
	t.Cleanup(cancel)
	// Its drop timer may fire after the test, when nothing may log to it.
	relayed := newTestKeySetCache(t, jwks.KeySetConfig{Issuer: provider.url, MinRefresh: 10 * time.Millisecond, MaxRefresh: 50 * time.Millisecond, MaxStale: 500 * time.Millisecond,
		Logger: slog.New(slog.DiscardHandler)})
	relayed.Start(ctx)
	distWait(t, "the provider's keys at the issuer", relayed.Ready)

	home := newDistIssuer(t)
	home.publish(t, natsURL, map[string]*jwks.KeySetCache{provider.url: relayed})
	federated := newSidecar(t, home, sidecarOptions{natsURLs: natsURL, federation: true})
	isolated := newSidecar(t, home, sidecarOptions{natsURLs: natsURL})

	first := provider.keyring.state.Load().kids[0]
	distWait(t, "the provider's keys", func() bool { return cacheHas(federated.provider(provider.url), first) })
	if isolated.provider(provider.url) != nil {
		t.Fatal("federation off, yet a provider was added")
	}
	next := provider.rotate(t, false)
	distWait(t, "the provider's rotation", func() bool { return cacheHas(federated.provider(provider.url), next) })

	// The provider goes down: its keys are dropped at the issuer once
	// MaxStale has passed, and at the sidecar.
	provider.down.Store(true)
	distWait(t, "the drop at the issuer", func() bool { return relayed.Status().Dropped != "" })
	distWait(t, "the drop at the sidecar", func() bool { return !federated.provider(provider.url).Ready() })
	if st := federated.provider(provider.url).Status(); st.Dropped == "" {
		t.Errorf("sidecar's status of the dropped provider: %+v", st)
	}
	if lines := home.dist.Status(); len(lines) != 1 || !strings.Contains(lines[0], "keys dropped") {
		t.Errorf("issuer's status: %q", lines)
	}
	if !federated.keys.Ready() || !federated.has(home.keyring.state.Load().kids[0]) {
		t.Fatal("the issuer's own keys were affected")
	}
	// Back, and serving keys again: relayed again.
	provider.down.Store(false)
	distWait(t, "the provider back at the sidecar", func() bool { return cacheHas(federated.provider(provider.url), next) })
}

// TestDistributorChecksServer: an issuer whose NATS user may not publish
// on its subjects, or whose server takes too small messages, says so
// clearly at start.
func TestDistributorChecksServer(t *testing.T) {
	opts := &server.Options{Host: "127.0.0.1", Port: -1, NoLog: true, NoSigs: true, MaxPayload: 1024,
		Users: []*server.User{{Username: "issuer", Password: "secret", Permissions: &server.Permissions{
			Publish: &server.SubjectPermission{Deny: []string{"meshauth.>"}}}}}}
	ns, err := server.NewServer(opts)
	if err != nil {
		t.Fatal(err)
	}
	go ns.Start()
	if !ns.ReadyForConnections(10 * time.Second) {
		t.Fatal("NATS did not start")
	}
	t.Cleanup(ns.Shutdown)
	nc, err := nats.Connect(ns.ClientURL(), nats.UserInfo("issuer", "secret"), nats.ErrorHandler(func(*nats.Conn, *nats.Subscription, error) {}))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(nc.Close)
	iss := newDistIssuer(t)
	var logs testlog.Buffer
	d, err := NewDistributor(DistributorConfig{Issuer: iss.url, Keyring: iss.keyring, Store: iss.store, Conn: nc, Logger: slog.New(slog.NewTextHandler(&logs, nil))})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { defer close(done); d.Run(ctx) }()
	t.Cleanup(func() { cancel(); <-done })
	distWait(t, "the check", func() bool { return strings.Contains(logs.String(), "refuses this issuer's publications") })
	if !strings.Contains(logs.String(), "max_payload (1024 bytes) is below the largest delta") {
		t.Errorf("no word of the small max_payload:\n%s", logs.String())
	}
}
