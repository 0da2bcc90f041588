package proxy

import (
	"container/list"
	"sync"

	"github.com/opencontainers/go-digest"

	"github.com/krakenctl/krakenctl/server/registry"
)

// manifestCache keeps parsed manifests by digest, least recently used first out, within a byte
// budget. A manifest's content never changes for its digest, so entries need no invalidation;
// whether a repository holds the manifest is decided by its links, never by the cache. It is
// safe for concurrent use. Cached manifests are shared: callers must not modify them.
type manifestCache struct {
	mu      sync.Mutex
	max     int64
	used    int64
	lru     *list.List // of *registry.Manifest; the front is the most recently used
	entries map[digest.Digest]*list.Element
}

func newManifestCache(max int64) *manifestCache {
	return &manifestCache{max: max, lru: list.New(), entries: map[digest.Digest]*list.Element{}}
}

func (c *manifestCache) get(d digest.Digest) (*registry.Manifest, bool) {
	c.mu.Lock()
	defer c.mu.Unlock()
	e, ok := c.entries[d]
	if !ok {
		return nil, false
	}
	c.lru.MoveToFront(e)
	return e.Value.(*registry.Manifest), true
}

// add caches m under m.Digest unless it is larger than the whole budget.
func (c *manifestCache) add(m *registry.Manifest) {
	size := int64(len(m.Body))
	c.mu.Lock()
	defer c.mu.Unlock()
	if size > c.max {
		return
	}
	if e, ok := c.entries[m.Digest]; ok {
		c.lru.MoveToFront(e)
		return
	}
	c.entries[m.Digest] = c.lru.PushFront(m)
	c.used += size
	for c.used > c.max {
		e := c.lru.Back()
		old := e.Value.(*registry.Manifest)
		c.lru.Remove(e)
		delete(c.entries, old.Digest)
		c.used -= int64(len(old.Body))
	}
}
