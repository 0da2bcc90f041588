package origin

import (
	"container/list"
	"sync"
	"time"

	"github.com/opencontainers/go-digest"
)

// negCache remembers, for a short while, which (namespace, digest) the storage backend said it
// does not have, so that repeated GETs and HEADs of an unknown digest cost one backend round
// trip instead of one each (an S3 request is billed; a scanner asking for random digests
// should not run up the bill). It caches only the backend's answer: the local store and the
// other origins are still asked first, so a blob pushed to any origin of the ring is found
// whatever the cache says. A commit or a replica of the digest on this origin forgets it at once
// (forget). Entries live ttl and at most size of them are kept, least recently added or used
// first to go. Safe for concurrent use.
type negCache struct {
	ttl  time.Duration
	size int
	now  func() time.Time

	mu       sync.Mutex
	lru      *list.List // of *negEntry, most recent at the front
	byDigest map[digest.Digest]map[string]*list.Element
}

type negEntry struct {
	d       digest.Digest
	ns      string
	expires time.Time
}

// newNegCache returns a cache of at most size entries living ttl; with ttl or size <= 0 it
// remembers nothing.
func newNegCache(ttl time.Duration, size int, now func() time.Time) *negCache {
	if now == nil {
		now = time.Now
	}
	return &negCache{ttl: ttl, size: size, now: now, lru: list.New(), byDigest: map[digest.Digest]map[string]*list.Element{}}
}

func (c *negCache) enabled() bool { return c != nil && c.ttl > 0 && c.size > 0 }

// absent reports whether the backend said, less than ttl ago, that it does not have d in ns.
func (c *negCache) absent(ns string, d digest.Digest) bool {
	if !c.enabled() {
		return false
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	el := c.byDigest[d][ns]
	if el == nil {
		return false
	}
	if !c.now().Before(el.Value.(*negEntry).expires) {
		c.removeLocked(el)
		return false
	}
	c.lru.MoveToFront(el)
	return true
}

// add records that the backend does not have d in ns, evicting the oldest entry when full.
func (c *negCache) add(ns string, d digest.Digest) {
	if !c.enabled() {
		return
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	expires := c.now().Add(c.ttl)
	if el := c.byDigest[d][ns]; el != nil {
		el.Value.(*negEntry).expires = expires
		c.lru.MoveToFront(el)
		return
	}
	for c.lru.Len() >= c.size {
		c.removeLocked(c.lru.Back())
	}
	m := c.byDigest[d]
	if m == nil {
		m = map[string]*list.Element{}
		c.byDigest[d] = m
	}
	m[ns] = c.lru.PushFront(&negEntry{d: d, ns: ns, expires: expires})
}

// forget drops d in every namespace: it was just committed or replicated here.
func (c *negCache) forget(d digest.Digest) {
	if !c.enabled() {
		return
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	for _, el := range c.byDigest[d] {
		c.removeLocked(el)
	}
}

// len is the number of entries, expired ones included until they are met.
func (c *negCache) len() int {
	if !c.enabled() {
		return 0
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.lru.Len()
}

func (c *negCache) removeLocked(el *list.Element) {
	e := c.lru.Remove(el).(*negEntry)
	m := c.byDigest[e.d]
	delete(m, e.ns)
	if len(m) == 0 {
		delete(c.byDigest, e.d)
	}
}
