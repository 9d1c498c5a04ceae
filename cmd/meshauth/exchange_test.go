package main

import (
	"context"
	"encoding/base64"
	"encoding/json"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync/atomic"
	"testing"
	"time"

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
