package storetest

import (
	"testing"
	"time"

	"github.com/meshauth/meshauth/issuer/store"
)

// nonceTests are the tests of store.Nonces.
var nonceTests = []suiteTest{
	{"UseOnce", testUseOnce},
	{"UseOnceAfterExpiry", testUseOnceAfterExpiry},
	{"UseOnceRace", testUseOnceRace},
}

func testUseOnce(t *testing.T, h Harness) {
	s := h.Open(t)
	exp := time.Now().Add(time.Hour)
	if err := s.UseOnce(t.Context(), "client-assertion/a/1", exp); err != nil {
		t.Fatalf("first UseOnce: %v", err)
	}
	wantErr(t, "second UseOnce", s.UseOnce(t.Context(), "client-assertion/a/1", exp), store.ErrReplay)
	wantErr(t, "UseOnce with a later expiry", s.UseOnce(t.Context(), "client-assertion/a/1", exp.Add(time.Hour)), store.ErrReplay)
	if err := s.UseOnce(t.Context(), "client-assertion/a/2", exp); err != nil {
		t.Errorf("UseOnce of another value: %v", err)
	}
}

func testUseOnceAfterExpiry(t *testing.T, h Harness) {
	s := h.Open(t)
	// Expiries an hour away from now tolerate clock skew between the test
	// and a database server.
	if err := s.UseOnce(t.Context(), "v", time.Now().Add(-time.Hour)); err != nil {
		t.Fatalf("UseOnce with a past expiry: %v", err)
	}
	if err := s.UseOnce(t.Context(), "v", time.Now().Add(time.Hour)); err != nil {
		t.Fatalf("UseOnce after expiry: %v", err)
	}
	wantErr(t, "UseOnce after reuse", s.UseOnce(t.Context(), "v", time.Now().Add(time.Hour)), store.ErrReplay)
}

func testUseOnceRace(t *testing.T, h Harness) {
	s := h.Open(t)
	for _, name := range []string{"new", "expired"} {
		t.Run(name, func(t *testing.T) {
			if name == "expired" {
				if err := s.UseOnce(t.Context(), name, time.Now().Add(-time.Hour)); err != nil {
					t.Fatalf("UseOnce: %v", err)
				}
			}
			errs := race(t, s, func(int) error { return s.UseOnce(t.Context(), name, time.Now().Add(time.Hour)) })
			checkOneWinner(t, errs, store.ErrReplay)
		})
	}
}
