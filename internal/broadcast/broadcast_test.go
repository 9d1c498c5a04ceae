package broadcast

import (
	"sync"
	"testing"
)

func TestSignal(t *testing.T) {
	var s Signal
	s.Notify() // nobody waits: nothing to close
	a, b := s.C(), s.C()
	if a != b || Closed(a) {
		t.Fatal("two waiters before a change must share one open channel")
	}
	s.Notify()
	if !Closed(a) {
		t.Fatal("Notify did not close the channel")
	}
	if c := s.C(); Closed(c) {
		t.Fatal("the channel after a close is closed already")
	}
}

func TestSignalConcurrent(t *testing.T) {
	var s Signal
	var wg sync.WaitGroup
	for range 8 {
		wg.Go(func() {
			for range 1000 {
				ch := s.C()
				s.Notify()
				<-ch
			}
		})
	}
	wg.Wait()
}
