// Package demo is the small upstream service that `meshauth dev` puts behind
// a sidecar, so the quick start can show what a protected service receives.
package demo

import (
	"encoding/json"
	"net/http"
)

// Handler answers every request with the service's name and the identity
// the sidecar vouched for.
func Handler(service string) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "application/json")
		_ = json.NewEncoder(w).Encode(struct {
			Service string `json:"service"`
			Path    string `json:"path"`
			Subject string `json:"caller_subject"`
			Client  string `json:"caller_client"`
			Scope   string `json:"caller_scope"`
		}{service, r.URL.Path, r.Header.Get("X-Meshauth-Subject"), r.Header.Get("X-Meshauth-Client"), r.Header.Get("X-Meshauth-Scope")})
	})
}
