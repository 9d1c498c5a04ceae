package demo

import (
	"encoding/base64"
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"testing"
)

func TestHandlerEchoesIdentity(t *testing.T) {
	payload := base64.RawURLEncoding.EncodeToString([]byte(`{"aud":"payments","act":{"sub":"orders"}}`))
	req := httptest.NewRequest(http.MethodGet, "/charge", nil)
	req.Header.Set("X-Meshauth-Subject", "web")
	req.Header.Set("X-Meshauth-Scope", "payments.charge")
	req.Header.Set("Authorization", "Bearer e30."+payload+".sig")
	rec := httptest.NewRecorder()
	Handler("payments").ServeHTTP(rec, req)
	var got map[string]any
	if err := json.Unmarshal(rec.Body.Bytes(), &got); err != nil {
		t.Fatal(err)
	}
	act, _ := got["token_act"].(map[string]any)
	if got["service"] != "payments" || got["path"] != "/charge" || got["caller_subject"] != "web" ||
		got["caller_scope"] != "payments.charge" || got["token_aud"] != "payments" || act["sub"] != "orders" {
		t.Errorf("answer = %v", got)
	}
}

func TestCallerPassesTokenOn(t *testing.T) {
	var gotPath, gotAuthz string
	egress := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		gotPath, gotAuthz = r.URL.Path, r.Header.Get("Authorization")
		w.Write([]byte(`{"ok":true}`))
	}))
	defer egress.Close()
	req := httptest.NewRequest(http.MethodGet, "/checkout", nil)
	req.Header.Set("Authorization", "Bearer T")
	rec := httptest.NewRecorder()
	Caller("orders", egress.URL, "payments").ServeHTTP(rec, req)
	if gotPath != "/payments/checkout" || gotAuthz != "Bearer T" || rec.Code != 200 {
		t.Errorf("egress got %q %q; answer %d %s", gotPath, gotAuthz, rec.Code, rec.Body)
	}
}
