package inprocess

import (
	"context"
	"errors"
	"io"
	"net/http"
	"testing"
	"testing/synctest"
	"time"
)

func TestClient(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		release := make(chan struct{})
		c := Client(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			if r.URL.Path == "/slow" {
				select {
				case <-release:
				case <-r.Context().Done():
					return
				}
			}
			w.Header().Set("X-Path", r.URL.Path)
			io.WriteString(w, "hello")
		}))
		resp, err := c.Get("https://example.test/fast")
		if err != nil {
			t.Fatal(err)
		}
		body, _ := io.ReadAll(resp.Body)
		if resp.StatusCode != 200 || string(body) != "hello" || resp.Header.Get("X-Path") != "/fast" {
			t.Errorf("answer %d %q %v", resp.StatusCode, body, resp.Header)
		}
		ctx, cancel := context.WithTimeout(t.Context(), time.Second)
		defer cancel()
		req, _ := http.NewRequestWithContext(ctx, http.MethodGet, "https://example.test/slow", nil)
		start := time.Now()
		if _, err := c.Do(req); !errors.Is(err, context.DeadlineExceeded) || time.Since(start) != time.Second {
			t.Errorf("a request whose context ends first: %v after %v", err, time.Since(start))
		}
		close(release)
	})
}
