package demo

import (
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"testing"
)

func TestHandlerEchoesIdentity(t *testing.T) {
	req := httptest.NewRequest(http.MethodGet, "/charge", nil)
	req.Header.Set("X-Meshauth-Subject", "orders")
	req.Header.Set("X-Meshauth-Scope", "payments.charge")
	rec := httptest.NewRecorder()
	Handler("payments").ServeHTTP(rec, req)
	var got map[string]string
	if err := json.Unmarshal(rec.Body.Bytes(), &got); err != nil {
		t.Fatal(err)
	}
	if got["service"] != "payments" || got["path"] != "/charge" || got["caller_subject"] != "orders" || got["caller_scope"] != "payments.charge" {
		t.Errorf("answer = %v", got)
	}
}
