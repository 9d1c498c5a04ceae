// Package demo holds the small services that `meshauth dev` puts behind
// sidecars, so the quick start can show what a protected service receives.
package demo

import (
	"encoding/base64"
	"encoding/json"
	"io"
	"net/http"
	"strings"
)

// Handler answers every request with the service's name, the identity the
// sidecar vouched for, and the audience and actor chain of the token it was
// given. It decodes the token without checking it: its sidecar already has.
func Handler(service string) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		var claims struct {
			Aud any             `json:"aud"`
			Act json.RawMessage `json:"act,omitempty"`
		}
		if tok, ok := strings.CutPrefix(r.Header.Get("Authorization"), "Bearer "); ok {
			if parts := strings.Split(tok, "."); len(parts) == 3 {
				if payload, err := base64.RawURLEncoding.DecodeString(parts[1]); err == nil {
					_ = json.Unmarshal(payload, &claims)
				}
			}
		}
		w.Header().Set("Content-Type", "application/json")
		_ = json.NewEncoder(w).Encode(struct {
			Service string          `json:"service"`
			Path    string          `json:"path"`
			Subject string          `json:"caller_subject"`
			Client  string          `json:"caller_client"`
			Scope   string          `json:"caller_scope"`
			Aud     any             `json:"token_aud,omitempty"`
			Act     json.RawMessage `json:"token_act,omitempty"`
		}{service, r.URL.Path, r.Header.Get("X-Meshauth-Subject"), r.Header.Get("X-Meshauth-Client"), r.Header.Get("X-Meshauth-Scope"), claims.Aud, claims.Act})
	})
}

// Caller is a service that, for every request, calls the service named
// route through its sidecar's egress (egressURL, path form), passing on the
// token of the request it serves, and answers with what it got back.
func Caller(service, egressURL, route string) http.Handler {
	client := &http.Client{}
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		req, err := http.NewRequestWithContext(r.Context(), http.MethodGet, egressURL+"/"+route+r.URL.Path, nil)
		if err != nil {
			http.Error(w, err.Error(), http.StatusInternalServerError)
			return
		}
		if authz := r.Header.Get("Authorization"); authz != "" {
			req.Header.Set("Authorization", authz)
		}
		resp, err := client.Do(req)
		if err != nil {
			http.Error(w, "call "+route+": "+err.Error(), http.StatusBadGateway)
			return
		}
		defer resp.Body.Close()
		answer, _ := io.ReadAll(io.LimitReader(resp.Body, 64<<10))
		if !json.Valid(answer) {
			answer, _ = json.Marshal(string(answer))
		}
		w.Header().Set("Content-Type", "application/json")
		w.WriteHeader(resp.StatusCode)
		_ = json.NewEncoder(w).Encode(struct {
			Service string          `json:"service"`
			Called  string          `json:"called"`
			Status  int             `json:"status"`
			Answer  json.RawMessage `json:"answer"`
		}{service, route, resp.StatusCode, answer})
	})
}
