// Package broadcast tells any number of waiters that something changed,
// without a goroutine or a queue per waiter: a channel closed at the next
// change.
package broadcast

import "sync"

// A Signal is closed-channel notification. The zero value is ready to use
// and safe for concurrent use.
type Signal struct {
	mu sync.Mutex
	ch chan struct{}
}

// C returns a channel that is closed at the next Notify. Take it before
// looking at what it announces, so that a change made meanwhile closes it;
// call C again after each close.
func (s *Signal) C() <-chan struct{} {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.ch == nil {
		s.ch = make(chan struct{})
	}
	return s.ch
}

// Notify closes the channel C returned, if anyone took it.
func (s *Signal) Notify() {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.ch != nil {
		close(s.ch)
		s.ch = nil
	}
}

// Closed reports, without waiting, whether ch (one C returned) is closed.
func Closed(ch <-chan struct{}) bool {
	select {
	case <-ch:
		return true
	default:
		return false
	}
}
