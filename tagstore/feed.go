package tagstore

import (
	"sort"
	"sync"
)

// feedChanBuffer is the channel buffer of each change feed subscriber.
const feedChanBuffer = 64

// feed is the bounded, in-memory log of tag changes behind Store.Changes.
//
// Changes are kept in a ring of fixed size (Config.ChangeFeedRetain), each with a sequence
// number (several changes may share a log index: an import batch). Every subscriber has its
// own goroutine that copies from the ring to its channel at the pace the consumer reads, so
// a slow consumer never blocks the FSM and memory stays bounded. A subscriber whose next
// change was evicted from the ring, or whose position predates a snapshot restore (the state
// jumped without individual changes), receives one OpResync change and then its channel is
// closed: it must rebuild from a full listing (Store.Export) and subscribe again.
//
// floor is the highest index that is no longer fully retained: every change with an index
// above floor is in the ring. Subscribing from an index below floor resyncs at once.
type feed struct {
	mu    sync.Mutex
	buf   []Change
	head  uint64 // sequence number of the oldest retained change
	tail  uint64 // sequence number of the next change
	floor uint64
	// wake is closed (and cleared) on every publish, reset and close, when someone waits.
	wake   chan struct{}
	closed bool
	// done is closed by close, so a subscriber goroutine blocked on a consumer that stopped
	// reading still ends.
	done chan struct{}
	wg   sync.WaitGroup
	// onResync counts resyncs (a metric); never nil.
	onResync func()
}

func newFeed(retain int, onResync func()) *feed {
	return &feed{buf: make([]Change, retain), onResync: onResync, done: make(chan struct{})}
}

func (f *feed) signal() {
	if f.wake != nil {
		close(f.wake)
		f.wake = nil
	}
}

// publish appends changes, evicting the oldest when the ring is full. Only the FSM goroutine
// calls it, in log order.
func (f *feed) publish(changes ...Change) {
	if len(changes) == 0 {
		return
	}
	n := uint64(len(f.buf))
	f.mu.Lock()
	for _, c := range changes {
		if f.tail-f.head == n {
			f.floor = f.buf[f.head%n].Index
			f.buf[f.head%n] = Change{}
			f.head++
		}
		f.buf[f.tail%n] = c
		f.tail++
	}
	f.signal()
	f.mu.Unlock()
}

// reset forgets every retained change after a snapshot restore replaced the state at index:
// current subscribers must resync, and new ones can start from index on.
func (f *feed) reset(index uint64) {
	f.mu.Lock()
	clear(f.buf)
	f.tail++ // a gap in sequence numbers puts every current subscriber behind head
	f.head = f.tail
	f.floor = index
	f.signal()
	f.mu.Unlock()
}

// close ends every subscription (channels are closed without a resync marker) and waits for
// their goroutines.
func (f *feed) close() {
	f.mu.Lock()
	if !f.closed {
		f.closed = true
		close(f.done)
		f.signal()
	}
	f.mu.Unlock()
	f.wg.Wait()
}

type subscription struct {
	ch   chan Change
	done chan struct{}
	once sync.Once
	from uint64
	next uint64
}

func (sub *subscription) cancel() { sub.once.Do(func() { close(sub.done) }) }

// subscribe starts a subscription to changes with an index above from.
func (f *feed) subscribe(from uint64) (<-chan Change, func()) {
	sub := &subscription{ch: make(chan Change, feedChanBuffer), done: make(chan struct{}), from: from}
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.closed {
		close(sub.ch)
		return sub.ch, sub.cancel
	}
	if from < f.floor {
		// Behind the ring: resync at once. head > 0 whenever floor > 0 (both only grow by
		// eviction or reset, which advance head).
		sub.next = f.head - 1
	} else {
		// The first retained change with an index above from; the ring is in index order.
		n := uint64(len(f.buf))
		count := int(f.tail - f.head)
		i := sort.Search(count, func(i int) bool { return f.buf[(f.head+uint64(i))%n].Index > from })
		sub.next = f.head + uint64(i)
	}
	f.wg.Add(1)
	go f.run(sub)
	return sub.ch, sub.cancel
}

// run copies changes from the ring to one subscriber's channel.
func (f *feed) run(sub *subscription) {
	defer f.wg.Done()
	defer close(sub.ch)
	n := uint64(len(f.buf))
	batch := make([]Change, 0, feedChanBuffer)
	for {
		f.mu.Lock()
		for sub.next >= f.tail && !f.closed {
			if f.wake == nil {
				f.wake = make(chan struct{})
			}
			w := f.wake
			f.mu.Unlock()
			select {
			case <-w:
			case <-sub.done:
				return
			}
			f.mu.Lock()
		}
		if f.closed {
			f.mu.Unlock()
			return
		}
		if sub.next < f.head {
			f.mu.Unlock()
			f.onResync()
			select {
			case sub.ch <- Change{Op: OpResync}:
			case <-sub.done:
			case <-f.done:
			}
			return
		}
		batch = batch[:0]
		for sub.next < f.tail && len(batch) < cap(batch) {
			if c := f.buf[sub.next%n]; c.Index > sub.from {
				batch = append(batch, c)
			}
			sub.next++
		}
		f.mu.Unlock()
		for _, c := range batch {
			select {
			case sub.ch <- c:
			case <-sub.done:
				return
			case <-f.done:
				return
			}
		}
	}
}
