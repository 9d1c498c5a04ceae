package main

import (
	"context"
	"encoding/base64"
	"encoding/json"
	"io"
	"net/http"
	"net/http/httptest"
	"regexp"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/meshauth/meshauth/internal/natsconn"
	"github.com/meshauth/meshauth/internal/natstest"
	"github.com/meshauth/meshauth/proxy"
)

// register creates a client through the CLI and returns its secret.
func register(t *testing.T, issuerURL string, args ...string) string {
	t.Helper()
	t.Setenv(envAdminToken, "admin-test-token")
	var out strings.Builder
	if err := run(context.Background(), append([]string{"clients", "create", "--issuer", issuerURL}, args...), &out, io.Discard); err != nil {
		t.Fatal(err)
	}
	var reg struct {
		Secret string `json:"client_secret"`
	}
	if err := json.Unmarshal([]byte(out.String()), &reg); err != nil {
		t.Fatal(err)
	}
	return reg.Secret
}

func tokenFor(t *testing.T, issuerURL, id, secret, aud string) string {
	t.Helper()
	req, _ := http.NewRequest(http.MethodPost, issuerURL+"/token", strings.NewReader("grant_type=client_credentials&audience="+aud))
	req.SetBasicAuth(id, secret)
	req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	var tok struct {
		AccessToken string `json:"access_token"`
	}
	if err := json.NewDecoder(resp.Body).Decode(&tok); err != nil || tok.AccessToken == "" {
		t.Fatalf("token for %s: %d %v", id, resp.StatusCode, err)
	}
	return tok.AccessToken
}

// recorder is a service that keeps the Authorization it last received.
type recorder struct {
	hits  atomic.Int32
	authz atomic.Value
}

func (r *recorder) ServeHTTP(w http.ResponseWriter, req *http.Request) {
	r.hits.Add(1)
	r.authz.Store(req.Header.Get("Authorization"))
	w.Write([]byte("ok"))
}

// TestExchangeAtEveryHop: client → sidecar(orders) → orders → egress(orders)
// → sidecar(payments) → payments. payments must receive a token for itself
// alone, narrowed, with act naming orders; that token must be refused by
// orders and by ledger.
func TestExchangeAtEveryHop(t *testing.T) {
	issuerURL := startIssuer(t)
	webSecret := register(t, issuerURL, "--id", "web", "--scope", "orders.read payments.charge payments.read", "--allowed-audience", "orders")
	ordersSecret := register(t, issuerURL, "--id", "orders", "--scope", "payments.charge payments.read",
		"--grant-type", "client_credentials", "--grant-type", "urn:ietf:params:oauth:grant-type:token-exchange", "--allowed-audience", "payments")
	register(t, issuerURL, "--id", "payments")
	register(t, issuerURL, "--id", "ledger")

	payments, ledger := &recorder{}, &recorder{}
	paymentsSvc := httptest.NewServer(payments)
	defer paymentsSvc.Close()
	ledgerSvc := httptest.NewServer(ledger)
	defer ledgerSvc.Close()

	sidecarFor := func(aud, upstream string, extra func(*sidecarFlags)) (string, *sidecarFlags) {
		f := &sidecarFlags{upstream: upstream, audience: aud, listen: "127.0.0.1:0", forwardAuthPath: proxy.DefaultForwardAuthPath,
			cacheMiB: 4, cacheMaxAge: time.Minute, upstreamTimeout: 5 * time.Second}
		f.trust = append(f.trust, issuerURL)
		if extra != nil {
			extra(f)
		}
		addr, _ := startSidecarWithSecret(t, f, proxy.Policy{}, ordersSecret)
		return addr, f
	}
	paymentsSidecar, _ := sidecarFor("payments", paymentsSvc.URL, nil)
	ledgerSidecar, _ := sidecarFor("ledger", ledgerSvc.URL, nil)

	egressAddr := freeAddr(t)
	// orders calls payments through its egress, passing on the token of the
	// request it serves.
	var ordersHits atomic.Int32
	ordersSvc := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		ordersHits.Add(1)
		req, _ := http.NewRequest(http.MethodGet, "http://"+egressAddr+"/payments/charge", nil)
		req.Header.Set("Authorization", r.Header.Get("Authorization"))
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			http.Error(w, err.Error(), http.StatusBadGateway)
			return
		}
		defer resp.Body.Close()
		w.WriteHeader(resp.StatusCode)
		io.Copy(w, resp.Body)
	}))
	defer ordersSvc.Close()
	ordersSidecar, _ := sidecarFor("orders", ordersSvc.URL, func(f *sidecarFlags) {
		f.egress = egressAddr
		f.egressRoutes = append(f.egressRoutes, "payments=http://"+paymentsSidecar)
		f.routeScopes = append(f.routeScopes, "payments=payments.charge")
	})

	webToken := tokenFor(t, issuerURL, "web", webSecret, "orders")
	status := get(t, "http://"+ordersSidecar+"/order", webToken)
	if status != 200 {
		t.Fatalf("call through both hops: %d", status)
	}
	got, _ := payments.authz.Load().(string)
	paymentsToken, ok := strings.CutPrefix(got, "Bearer ")
	if !ok || paymentsToken == webToken {
		t.Fatalf("payments received %q, not an exchanged token", got)
	}
	var claims struct {
		Sub, Scope, ClientID string
		Aud                  any
		Act                  struct{ Sub string }
	}
	payload, _ := base64.RawURLEncoding.DecodeString(strings.Split(paymentsToken, ".")[1])
	if err := json.Unmarshal(payload, &claims); err != nil {
		t.Fatal(err)
	}
	if claims.Aud != "payments" || claims.Scope != "payments.charge" || claims.Act.Sub != "orders" || claims.Sub != "web" {
		t.Errorf("payments' token claims = %s", payload)
	}

	for _, replay := range []struct {
		name, addr string
		service    *atomic.Int32
	}{{"at orders", ordersSidecar, &ordersHits}, {"at ledger", ledgerSidecar, &ledger.hits}} {
		before := replay.service.Load()
		if status := get(t, "http://"+replay.addr+"/x", paymentsToken); status != http.StatusUnauthorized {
			t.Errorf("payments' token replayed %s: %d", replay.name, status)
		}
		if replay.service.Load() != before {
			t.Errorf("the token replayed %s reached the service", replay.name)
		}
	}
}

func get(t *testing.T, url, tok string) int {
	t.Helper()
	req, _ := http.NewRequest(http.MethodGet, url, nil)
	req.Header.Set("Authorization", "Bearer "+tok)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	return resp.StatusCode
}

// TestEgressRevocation: an egress whose inbound token is revoked, by its
// jti, its subject or its client, stops forwarding the token it obtained
// for it as soon as the revocation reaches the sidecar over NATS, while
// another caller's cached token keeps working. The route goes straight to
// the service, so that only the egress can stop the call.
func TestEgressRevocation(t *testing.T) {
	ns := natstest.Start(t, t.TempDir(), -1)
	issuerURL := startIssuerWith(t, func(f *issuerFlags) { f.nats.URLs = ns.ClientURL() })
	ordersSecret := register(t, issuerURL, "--id", "orders", "--scope", "payments.charge",
		"--grant-type", "client_credentials", "--grant-type", "urn:ietf:params:oauth:grant-type:token-exchange", "--allowed-audience", "payments")
	register(t, issuerURL, "--id", "payments")
	payments := &recorder{}
	paymentsSvc := httptest.NewServer(payments)
	defer paymentsSvc.Close()

	egressAddr, admin := freeAddr(t), freeAddr(t)
	f := &sidecarFlags{upstream: paymentsSvc.URL, audience: "orders", listen: "127.0.0.1:0", adminListen: admin,
		forwardAuthPath: proxy.DefaultForwardAuthPath, cacheMiB: 4, cacheMaxAge: time.Minute, upstreamTimeout: 5 * time.Second,
		trust: []string{issuerURL}, nats: natsconn.Flags{URLs: ns.ClientURL()},
		egress: egressAddr, egressRoutes: []string{"payments=" + paymentsSvc.URL}, routeScopes: []string{"payments=payments.charge"}}
	startSidecarWithSecret(t, f, proxy.Policy{}, ordersSecret)
	waitReady(t, "http://"+admin+"/readyz")
	// callPayments calls payments through the egress with tok, as orders
	// does with the token of the request it serves, and returns the status
	// and the token payments received.
	callPayments := func(tok string) (int, string) {
		t.Helper()
		before := payments.hits.Load()
		code := get(t, "http://"+egressAddr+"/payments/charge", tok)
		if code != 200 {
			if payments.hits.Load() != before {
				t.Errorf("refused call (%d) reached payments", code)
			}
			return code, ""
		}
		got, _ := payments.authz.Load().(string)
		return code, got
	}
	warm := func(tok string) string {
		t.Helper()
		_, first := callPayments(tok)
		if code, again := callPayments(tok); code != 200 || again != first || first == "" || first == "Bearer "+tok {
			t.Fatalf("warm-up: %d, payments received %q then %q", code, first, again)
		}
		return first
	}

	t.Setenv(envAdminToken, "admin-test-token")
	tests := []struct {
		name   string
		revoke func(client, tok string) []string // the revoke command's arguments
	}{
		{"jti", func(_, tok string) []string { return []string{"token", claimOf(t, tok, "jti")} }},
		{"sub", func(client, _ string) []string { return []string{"subject", client} }},
		{"client_id", func(client, _ string) []string { return []string{"client", client} }},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			client, other := "web-"+tt.name, "other-"+tt.name
			var toks []string
			for _, id := range []string{client, other} {
				secret := register(t, issuerURL, "--id", id, "--scope", "payments.charge", "--allowed-audience", "orders")
				toks = append(toks, tokenFor(t, issuerURL, id, secret, "orders"))
			}
			revoked, kept := toks[0], toks[1]
			warm(revoked)
			keptExchanged := warm(kept)

			if err := run(context.Background(), append(append([]string{"revoke"}, tt.revoke(client, revoked)...), "--issuer", issuerURL), io.Discard, io.Discard); err != nil {
				t.Fatal(err)
			}
			waitFor(t, "the egress to stop forwarding with the revoked token", func() bool {
				code, _ := callPayments(revoked)
				return code == http.StatusUnauthorized
			})
			if code, got := callPayments(kept); code != 200 || got != keptExchanged {
				t.Errorf("another caller: %d, payments received %q, want the cached %q", code, got, keptExchanged)
			}
		})
	}
	if m := fetchBody(t, "http://"+admin+"/metrics"); !regexp.MustCompile(`meshauth_egress_revocation_evictions_total [1-9]`).MatchString(m) {
		t.Errorf("metrics lack the evictions:\n%s", grepLines(m, "meshauth_egress"))
	}
}

// claimOf returns the string claim name of the JWT tok, unverified.
func claimOf(t *testing.T, tok, name string) string {
	t.Helper()
	parts := strings.Split(tok, ".")
	if len(parts) != 3 {
		t.Fatalf("not a JWT: %q", tok)
	}
	payload, err := base64.RawURLEncoding.DecodeString(parts[1])
	var claims map[string]any
	if err == nil {
		err = json.Unmarshal(payload, &claims)
	}
	s, _ := claims[name].(string)
	if err != nil || s == "" {
		t.Fatalf("claim %s of %s: %v", name, payload, err)
	}
	return s
}
