package agent

import (
	"sync"
	"time"
)

// Bounds of the agent's cache of links known to exist.
const (
	// linkTTL is how long a link found on the build-index is trusted without asking again: a
	// blob deleted from a repository stops being served under it after this long at most.
	linkTTL = 30 * time.Second
	// linkCacheEntries bounds the cache; a pull of a large image names a few hundred links.
	linkCacheEntries = 64 << 10
)

// linkCache remembers, for a while, that a repository holds a link. It only ever says yes:
// a miss asks the build-index.
type linkCache struct {
	ttl time.Duration
	max int
	now func() time.Time

	mu   sync.Mutex
	seen map[linkKey]time.Time // when the answer expires
}

type linkKey struct{ repo, link string }

func newLinkCache(max int, ttl time.Duration) *linkCache {
	return &linkCache{ttl: ttl, max: max, now: time.Now, seen: map[linkKey]time.Time{}}
}

func (c *linkCache) has(repo, link string) bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	exp, ok := c.seen[linkKey{repo, link}]
	return ok && c.now().Before(exp)
}

func (c *linkCache) add(repo, link string) {
	c.mu.Lock()
	defer c.mu.Unlock()
	now := c.now()
	if len(c.seen) >= c.max {
		for k, exp := range c.seen {
			if !now.Before(exp) {
				delete(c.seen, k)
			}
		}
		// Still full of live answers: forget about half of them (map order is arbitrary).
		// They are only a cache; the build-index is asked again.
		for k := range c.seen {
			if len(c.seen) < c.max/2 {
				break
			}
			delete(c.seen, k)
		}
	}
	c.seen[linkKey{repo, link}] = now.Add(c.ttl)
}
