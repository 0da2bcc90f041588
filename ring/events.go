package ring

import (
	"slices"
	"sync"
)

// Event reports that a member's health flipped, or that it joined or left the ring (SetMembers).
type Event struct {
	// Member is the member's "host:port".
	Member string
	// Healthy is the member's state after the event: true when it came back up or joined,
	// false when it went down or left.
	Healthy bool
	// Joined and Left say the event is a change of membership rather than of health.
	Joined, Left bool
}

// subscription delivers events to one subscriber without ever blocking the publisher. The
// publisher appends to pending under mu; a forwarder goroutine moves pending events to out one
// at a time. A member has at most one pending event: a newer flip replaces the older one, so a
// slow subscriber always ends up with every member's latest state and memory stays bounded by
// the number of members.
type subscription struct {
	mu      sync.Mutex
	pending []Event

	wake     chan struct{} // capacity 1: "pending may be non-empty"
	out      chan Event
	stop     chan struct{}
	stopOnce sync.Once
	done     chan struct{} // closed when the forwarder has exited and closed out
}

func newSubscription() *subscription {
	s := &subscription{
		wake: make(chan struct{}, 1),
		out:  make(chan Event),
		stop: make(chan struct{}),
		done: make(chan struct{}),
	}
	go s.forward()
	return s
}

// push queues ev, replacing any event still pending for the same member, and never blocks.
func (s *subscription) push(ev Event) {
	s.mu.Lock()
	s.pending = slices.DeleteFunc(s.pending, func(p Event) bool { return p.Member == ev.Member })
	s.pending = append(s.pending, ev)
	s.mu.Unlock()
	select {
	case s.wake <- struct{}{}:
	default: // a wake-up is already queued
	}
}

// pop removes and returns the oldest pending event.
func (s *subscription) pop() (Event, bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if len(s.pending) == 0 {
		return Event{}, false
	}
	ev := s.pending[0]
	s.pending = slices.Delete(s.pending, 0, 1)
	return ev, true
}

func (s *subscription) forward() {
	defer close(s.done)
	defer close(s.out)
	for {
		ev, ok := s.pop()
		if !ok {
			select {
			case <-s.wake:
				continue
			case <-s.stop:
				return
			}
		}
		select {
		case s.out <- ev:
		case <-s.stop:
			return
		}
	}
}

// close stops the forwarder and waits for it to exit; out is closed when it returns. It is
// idempotent.
func (s *subscription) close() {
	s.stopOnce.Do(func() { close(s.stop) })
	<-s.done
}

// Subscribe returns a channel of health flips that happen after the call, and a cancel
// function that ends the subscription.
//
// Delivery never blocks the health checks. Events are delivered in the order they happened,
// except that while a subscriber is not receiving, a member's newer flip replaces its older
// undelivered one: a slow subscriber may miss intermediate flips (and so may see two events
// with the same state for a member in a row) but always receives every member's latest state.
// The channel is unbuffered and is closed by cancel; undelivered events are dropped then.
// cancel is idempotent, safe to call from any goroutine (including the receiving one), and
// must be called to release the subscription's goroutine.
func (r *Ring) Subscribe() (<-chan Event, func()) {
	s := newSubscription()
	r.mu.Lock()
	r.subs[s] = struct{}{}
	r.mu.Unlock()
	cancel := func() {
		r.mu.Lock()
		delete(r.subs, s)
		r.mu.Unlock()
		s.close()
	}
	return s.out, cancel
}
