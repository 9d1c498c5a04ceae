// Package inprocess is an HTTP client for tests whose server is a handler
// in the same process: no socket, so that a test can run in a
// testing/synctest bubble, where network I/O does not count as blocked and
// the fake clock would not advance.
package inprocess

import (
	"net/http"
	"net/http/httptest"
)

// Client returns an HTTP client whose requests h answers. A request whose
// context ends before h answers gets the context's error, as from a real
// transport; h sees that context as the request's.
func Client(h http.Handler) *http.Client {
	return &http.Client{Transport: transport{h}}
}

type transport struct{ h http.Handler }

func (t transport) RoundTrip(r *http.Request) (*http.Response, error) {
	done := make(chan *http.Response, 1)
	go func() {
		w := httptest.NewRecorder()
		t.h.ServeHTTP(w, r)
		done <- w.Result()
	}()
	select {
	case resp := <-done:
		return resp, nil
	case <-r.Context().Done():
		return nil, r.Context().Err()
	}
}
