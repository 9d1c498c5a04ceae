package bench

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/sha256"
	"encoding/base64"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"net/url"
	"os"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/meshauth/meshauth/issuer"
	"github.com/meshauth/meshauth/issuer/keys"
	"github.com/meshauth/meshauth/issuer/store"
	"github.com/meshauth/meshauth/issuer/store/filestore"
	"github.com/meshauth/meshauth/issuer/store/pgstore"
)

// BenchmarkES256SignFloor is the floor for the token endpoint: one bare
// ES256 signature (SHA-256 and ecdsa.SignASN1) over a typical claims set.
func BenchmarkES256SignFloor(b *testing.B) {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		b.Fatal(err)
	}
	input := []byte(`eyJhbGciOiJFUzI1NiIsImtpZCI6ImtpZCIsInR5cCI6ImF0K2p3dCJ9.` + strings.Repeat("x", 260))
	b.ReportAllocs()
	b.RunParallel(func(pb *testing.PB) {
		for pb.Next() {
			sum := sha256.Sum256(input)
			if _, err := ecdsa.SignASN1(rand.Reader, key, sum[:]); err != nil {
				b.Error(err)
			}
		}
	})
}

// BenchmarkClientCredentials measures client_credentials tokens through the
// real HTTP endpoint over loopback, with each store.
func BenchmarkClientCredentials(b *testing.B) {
	eachStore(b, benchClientCredentials)
}

// BenchmarkClientCredentialsPaired is BenchmarkClientCredentials against
// its floor, bare ES256 signatures, interleaved in one loop: each parallel
// client alternates a block of token requests and a block of signatures,
// so that the load of a shared machine weighs on both alike. It reports
// tokens/signs, client_credentials tokens/s ÷ ES256 signs/s.
func BenchmarkClientCredentialsPaired(b *testing.B) {
	eachStore(b, func(b *testing.B, st store.Store) {
		issuerURL := startBenchIssuer(b, st)
		id := fmt.Sprintf("bench-paired-%d", time.Now().UnixNano())
		authz := basicAuth(id, registerBench(b, st, issuer.ClientMetadata{ClientID: id, Scope: "read", AllowedAudiences: []string{"api"}}))
		body := url.Values{"grant_type": {"client_credentials"}, "audience": {"api"}}.Encode()
		key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
		if err != nil {
			b.Fatal(err)
		}
		input := []byte(`eyJhbGciOiJFUzI1NiIsImtpZCI6ImtpZCIsInR5cCI6ImF0K2p3dCJ9.` + strings.Repeat("x", 260))
		client := &http.Client{Transport: &http.Transport{MaxIdleConnsPerHost: 64}}
		var tokenNs, signNs atomic.Int64
		const block = 4
		b.ReportAllocs()
		b.ResetTimer()
		b.RunParallel(func(pb *testing.PB) {
			for pb.Next() {
				t0 := time.Now()
				for range block {
					if err := postForm(client, issuerURL+"/token", authz, "", body); err != nil {
						b.Error(err)
						return
					}
				}
				t1 := time.Now()
				for range block {
					sum := sha256.Sum256(input)
					if _, err := ecdsa.SignASN1(rand.Reader, key, sum[:]); err != nil {
						b.Error(err)
						return
					}
				}
				signNs.Add(int64(time.Since(t1)))
				tokenNs.Add(int64(t1.Sub(t0)))
			}
		})
		b.ReportMetric(float64(signNs.Load())/float64(tokenNs.Load()), "tokens/signs")
	})
}

// eachStore runs bench as the sub-benchmarks store=file, on a new embedded
// store, and store=postgres, on the database MESHAUTH_TEST_POSTGRES_URL
// names (skipped without it).
func eachStore(b *testing.B, bench func(*testing.B, store.Store)) {
	b.Run("store=file", func(b *testing.B) {
		st, err := filestore.Open(b.TempDir())
		if err != nil {
			b.Fatal(err)
		}
		defer st.Close()
		bench(b, st)
	})
	b.Run("store=postgres", func(b *testing.B) {
		pgURL := os.Getenv("MESHAUTH_TEST_POSTGRES_URL")
		if pgURL == "" {
			b.Skip("MESHAUTH_TEST_POSTGRES_URL not set; skipping the PostgreSQL figure")
		}
		st, err := pgstore.Open(context.Background(), pgURL)
		if err != nil {
			b.Fatal(err)
		}
		defer st.Close()
		bench(b, st)
	})
}

func benchClientCredentials(b *testing.B, st store.Store) {
	issuerURL := startBenchIssuer(b, st)
	id := fmt.Sprintf("bench-%d", time.Now().UnixNano())
	secret := registerBench(b, st, issuer.ClientMetadata{ClientID: id, Scope: "read", AllowedAudiences: []string{"api"}})
	postTokens(b, issuerURL, basicAuth(id, secret), url.Values{"grant_type": {"client_credentials"}, "audience": {"api"}}.Encode())
}

// startBenchIssuer serves an issuer on st over loopback until the benchmark
// ends.
func startBenchIssuer(b *testing.B, st store.Store) string {
	ctx := context.Background()
	sealer, err := keys.NewSealer(make([]byte, 32))
	if err != nil {
		b.Fatal(err)
	}
	log := slog.New(slog.NewTextHandler(io.Discard, nil))
	keyring, err := keys.NewKeyring(keys.KeyringConfig{Store: st, Sealer: sealer, Logger: log, MaxTokenLifetime: 5 * time.Minute})
	if err != nil {
		b.Fatal(err)
	}
	if err := keyring.Load(ctx); err != nil {
		b.Fatal(err)
	}
	hs := httptest.NewUnstartedServer(nil)
	issuerURL := "http://" + hs.Listener.Addr().String()
	srv, err := issuer.New(issuer.Config{IssuerURL: issuerURL, Store: st, Keys: keyring, Logger: log})
	if err != nil {
		b.Fatal(err)
	}
	hs.Config.Handler = srv
	hs.Start()
	b.Cleanup(hs.Close)
	return issuerURL
}

// registerBench registers md straight into the store and returns its secret.
func registerBench(b *testing.B, st store.Store, md issuer.ClientMetadata) string {
	reg, err := issuer.RegisterClient(context.Background(), st, md, time.Now())
	if err != nil {
		b.Fatal(err)
	}
	return reg.ClientSecret
}

func basicAuth(id, secret string) string {
	return "Basic " + base64.StdEncoding.EncodeToString([]byte(id+":"+secret))
}

// postTokens sends b.N token requests with body from parallel clients.
func postTokens(b *testing.B, issuerURL, authz, body string) {
	postForms(b, issuerURL+"/token", authz, "", body)
}

// postForms sends b.N form posts of body to endpoint from parallel
// clients, with an Accept header if accept is not empty, and fails on any
// answer but 200.
func postForms(b *testing.B, endpoint, authz, accept, body string) {
	client := &http.Client{Transport: &http.Transport{MaxIdleConnsPerHost: 64}}
	b.ReportAllocs()
	b.ResetTimer()
	b.RunParallel(func(pb *testing.PB) {
		for pb.Next() {
			if err := postForm(client, endpoint, authz, accept, body); err != nil {
				b.Error(err)
				return
			}
		}
	})
}

// postForm sends one form post of body to endpoint, with an Accept header
// if accept is not empty, and fails on any answer but 200.
func postForm(client *http.Client, endpoint, authz, accept, body string) error {
	req, _ := http.NewRequest(http.MethodPost, endpoint, strings.NewReader(body))
	req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	req.Header.Set("Authorization", authz)
	if accept != "" {
		req.Header.Set("Accept", accept)
	}
	resp, err := client.Do(req)
	if err != nil {
		return err
	}
	_, _ = io.Copy(io.Discard, resp.Body)
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return fmt.Errorf("%s answered %d", endpoint, resp.StatusCode)
	}
	return nil
}
