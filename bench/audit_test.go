package bench

import (
	"context"
	"log/slog"
	"net/netip"
	"path/filepath"
	"testing"
	"time"

	"github.com/meshauth/meshauth/audit"
)

// auditEvent is the event of a token issued, as the token endpoint records
// it: with the time it stamped the token with.
var auditEvent = audit.Event{Time: time.Now(),
	Type: audit.TokenIssued, Grant: "client_credentials", Actor: audit.Client("orders"),
	Subject: "orders", Audience: "payments", Scope: "payments.charge", JTI: "3q2mX0Lr7q1mJ4Wc0y3Fpg",
	Origin: audit.Origin{RemoteAddr: netip.MustParseAddr("10.1.2.3"), RequestID: "9f1c2a7e-5b1d-4c1e-8f3a-2d6b7c8e9f01"},
}

const (
	// auditChunk is how many events a benchmark sends before its timer
	// stops to empty the queue: nothing is ever dropped.
	auditChunk = 1024
	auditQueue = 16 * auditChunk
)

// BenchmarkAuditRecord is the cost of Trail.Record on the caller's
// goroutine (a token request's): stamping nothing (the event carries the
// token's time), checking the sinks and copying the event into the queue.
// Its floor is a bare non-blocking send of the same event on a buffered
// channel. Neither queue's reader runs while the timer does: each chunk
// goes into an empty queue, which is emptied with the timer stopped.
func BenchmarkAuditRecord(b *testing.B) {
	b.Run("floor", func(b *testing.B) {
		ch := make(chan audit.Event, auditChunk)
		b.ReportAllocs()
		for i := range b.N {
			if i%auditChunk == 0 && i > 0 {
				b.StopTimer()
				for len(ch) > 0 {
					<-ch
				}
				b.StartTimer()
			}
			select {
			case ch <- auditEvent:
			default:
				b.Fatal("floor dropped an event")
			}
		}
	})
	b.Run("record", func(b *testing.B) {
		// A trail that is not started has its queue filled by Record and
		// emptied by Close, uncounted; Record does the same either way.
		newTrail := func() *audit.Trail {
			s, err := audit.OpenFile("-")
			if err != nil {
				b.Fatal(err)
			}
			tr, err := audit.New(audit.Options{Queue: auditChunk, FailClosed: true, Logger: slog.New(slog.DiscardHandler)}, s)
			if err != nil {
				b.Fatal(err)
			}
			return tr
		}
		tr := newTrail()
		b.ReportAllocs()
		for i := range b.N {
			if i%auditChunk == 0 && i > 0 {
				b.StopTimer()
				tr.Close(context.Background())
				tr = newTrail()
				b.StartTimer()
			}
			if err := tr.Record(auditEvent); err != nil {
				b.Fatal(err)
			}
		}
		b.StopTimer()
		tr.Close(context.Background())
	})
}

// BenchmarkAuditWrite is the time per event of a trail writing to a file,
// kept busy: Record, then encoding, chaining and a synced write per batch
// on the trail's goroutine. The loop waits whenever half the queue is
// taken, so nothing is dropped. Its ratio to a bare ES256 signature says
// how far the trail outpaces the token endpoint, which signs once per
// token.
func BenchmarkAuditWrite(b *testing.B) {
	tr, written := fileTrail(b)
	b.ReportAllocs()
	for i := range b.N {
		if i%auditChunk == 0 {
			for uint64(i)-written() > auditQueue/2 {
				time.Sleep(50 * time.Microsecond)
			}
		}
		if err := tr.Record(auditEvent); err != nil {
			b.Fatal(err)
		}
	}
	for written() < uint64(b.N) {
		time.Sleep(50 * time.Microsecond)
	}
	b.StopTimer()
	if err := tr.Close(context.Background()); err != nil {
		b.Fatal(err)
	}
}

// fileTrail starts a trail writing to a new file and returns it with a
// count of the records it wrote.
func fileTrail(b *testing.B) (*audit.Trail, func() uint64) {
	b.Helper()
	s, err := audit.OpenFile(filepath.Join(b.TempDir(), "audit.jsonl"))
	if err != nil {
		b.Fatal(err)
	}
	tr, err := audit.New(audit.Options{Queue: auditQueue, Logger: slog.New(slog.DiscardHandler)}, s)
	if err != nil {
		b.Fatal(err)
	}
	tr.Start()
	return tr, func() uint64 { return tr.Stats()[0].Written }
}
