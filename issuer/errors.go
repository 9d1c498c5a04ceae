package issuer

import (
	"encoding/json"
	"errors"
	"log/slog"
	"net/http"
	"strings"
)

// oauthError is an error answer of RFC 6749 §5.2 (and of RFC 7591 §3.2.2,
// RFC 8707 §2, which use the same shape). Description is shown to the client:
// it must never contain a secret or a token.
type oauthError struct {
	Status      int
	Code        string
	Description string
	// basicChallenge asks for WWW-Authenticate: Basic on a 401, which RFC 6749
	// §5.2 requires when the client tried the Authorization header.
	basicChallenge bool
}

func (e *oauthError) Error() string { return e.Code + ": " + e.Description }

func errInvalidRequest(desc string) *oauthError {
	return &oauthError{Status: http.StatusBadRequest, Code: "invalid_request", Description: desc}
}

func errInvalidClient(desc string, basic bool) *oauthError {
	return &oauthError{Status: http.StatusUnauthorized, Code: "invalid_client", Description: desc, basicChallenge: basic}
}

func errUnauthorizedClient(desc string) *oauthError {
	return &oauthError{Status: http.StatusBadRequest, Code: "unauthorized_client", Description: desc}
}

// errInvalidGrant answers a subject token that is invalid, expired, from an
// untrusted issuer, or unacceptable to the exchange policy. RFC 8693 §2.2.2
// names invalid_request for this but allows other codes "as appropriate";
// invalid_grant (RFC 6749 §5.2: the grant is "invalid, expired, revoked")
// tells the client that the token, not the request, has to change, so a
// sidecar knows that retrying with the same token is pointless.
func errInvalidGrant(desc string) *oauthError {
	return &oauthError{Status: http.StatusBadRequest, Code: "invalid_grant", Description: desc}
}

func errInvalidScope(desc string) *oauthError {
	return &oauthError{Status: http.StatusBadRequest, Code: "invalid_scope", Description: desc}
}

func errInvalidTarget(desc string) *oauthError {
	return &oauthError{Status: http.StatusBadRequest, Code: "invalid_target", Description: desc}
}

func errUnsupportedGrantType(desc string) *oauthError {
	return &oauthError{Status: http.StatusBadRequest, Code: "unsupported_grant_type", Description: desc}
}

func errInvalidClientMetadata(desc string) *oauthError {
	return &oauthError{Status: http.StatusBadRequest, Code: "invalid_client_metadata", Description: desc}
}

// errUnavailable is the answer when the store cannot be reached: the request
// changed nothing and may be retried.
var errUnavailable = &oauthError{Status: http.StatusServiceUnavailable, Code: "temporarily_unavailable", Description: "the authorization server's store is unavailable; retry later"}

// writeError answers err. An *oauthError is sent as it is; anything else is
// an internal failure (typically the store), logged here and answered 503
// without details.
func (s *Server) writeError(w http.ResponseWriter, r *http.Request, err error) {
	var oe *oauthError
	if !errors.As(err, &oe) {
		s.remote.LogAttrs(r.Context(), slog.LevelError, "request failed", slog.String("path", r.URL.Path), slog.Any("error", err))
		oe = errUnavailable
	}
	h := w.Header()
	if oe.Status == http.StatusUnauthorized && oe.basicChallenge {
		h.Set("WWW-Authenticate", `Basic realm="meshauth"`)
	}
	if oe.Status == http.StatusServiceUnavailable {
		h.Set("Retry-After", "5")
	}
	writeJSON(w, oe.Status, struct {
		Error       string `json:"error"`
		Description string `json:"error_description,omitempty"`
	}{oe.Code, descriptionText(oe.Description)})
}

// descriptionText keeps an error_description within the characters RFC 6749
// §5.2 allows (%x20-21 / %x23-5B / %x5D-7E): quotes become apostrophes,
// anything else outside the set a '?'.
func descriptionText(s string) string {
	return strings.Map(func(r rune) rune {
		switch {
		case r == '"':
			return '\''
		case r == '\\' || r < 0x20 || r > 0x7e:
			return '?'
		}
		return r
	}, s)
}

// writeJSON sends v with the no-store headers RFC 6749 §5.1 requires for
// anything that may carry a token or a secret.
func writeJSON(w http.ResponseWriter, status int, v any) {
	h := w.Header()
	h.Set("Content-Type", "application/json")
	h.Set("Cache-Control", "no-store")
	h.Set("Pragma", "no-cache")
	w.WriteHeader(status)
	_ = json.NewEncoder(w).Encode(v)
}
