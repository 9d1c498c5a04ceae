package issuer

import (
	"errors"
	"fmt"
	"io"
	"mime"
	"net/http"
	"net/url"
)

// maxFormBytes bounds a token request body: a client assertion is the largest
// legitimate part and stays far below it.
const maxFormBytes = 64 << 10

// repeatableParams may appear more than once: RFC 8707 §2 (resource) and
// RFC 8693 §2.1 (audience, resource). Every other parameter must not
// (RFC 6749 §3.2).
var repeatableParams = map[string]bool{"resource": true, "audience": true}

// readForm reads an application/x-www-form-urlencoded POST body.
func readForm(w http.ResponseWriter, r *http.Request) (url.Values, error) {
	mt, _, err := mime.ParseMediaType(r.Header.Get("Content-Type"))
	if err != nil || mt != "application/x-www-form-urlencoded" {
		return nil, errInvalidRequest("the request body must be application/x-www-form-urlencoded")
	}
	body, err := io.ReadAll(http.MaxBytesReader(w, r.Body, maxFormBytes))
	if err != nil {
		var tooLarge *http.MaxBytesError
		if errors.As(err, &tooLarge) {
			return nil, &oauthError{Status: http.StatusRequestEntityTooLarge, Code: "invalid_request", Description: fmt.Sprintf("request body larger than %d bytes", maxFormBytes)}
		}
		return nil, errInvalidRequest("could not read the request body")
	}
	return parseForm(string(body))
}

// parseForm parses a form body strictly: malformed encoding and repeated
// parameters are refused; parameters sent without a value are treated as
// omitted (RFC 6749 §3.1).
func parseForm(body string) (url.Values, error) {
	raw, err := url.ParseQuery(body)
	if err != nil {
		return nil, errInvalidRequest("malformed form encoding")
	}
	form := make(url.Values, len(raw))
	for name, values := range raw {
		kept := values[:0]
		for _, v := range values {
			if v != "" {
				kept = append(kept, v)
			}
		}
		if len(kept) == 0 {
			continue
		}
		if len(kept) > 1 && !repeatableParams[name] {
			return nil, errInvalidRequest(fmt.Sprintf("parameter %q must not be repeated", truncate(name, 64)))
		}
		form[name] = kept
	}
	return form, nil
}

// truncate shortens attacker-chosen text before it is echoed in an error.
func truncate(s string, n int) string {
	if len(s) <= n {
		return s
	}
	return s[:n] + "..."
}
