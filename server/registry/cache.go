package registry

import (
	"container/list"
	"sync"

	"github.com/opencontainers/go-digest"
)

// ManifestCache keeps parsed manifests by repository and digest, the least recently used
// evicted first, within a byte budget (the sum of the bodies) and an entry budget. A manifest's
// content never changes for its digest, so entries need no invalidation. Entries are per
// repository so that a cached manifest is never served from a repository that does not hold it;
// whether a repository still holds one (it may have been deleted since) is for the caller to
// decide.
//
// Add keeps a copy of the Manifest struct and Get returns a fresh copy, so callers may change
// the struct's fields; the slices and maps a Manifest points at are shared and must not be
// modified. It is safe for concurrent use.
type ManifestCache struct {
	maxBytes   int64
	maxEntries int

	mu    sync.Mutex
	bytes int64
	lru   *list.List // of cacheEntry, most recently used first
	byKey map[cacheKey]*list.Element
}

type cacheKey struct {
	repo string
	d    digest.Digest
}

type cacheEntry struct {
	key cacheKey
	m   *Manifest
}

// NewManifestCache returns a cache of at most maxBytes of manifest bodies and, when maxEntries
// is positive, at most maxEntries manifests. A manifest larger than maxBytes is never kept.
func NewManifestCache(maxBytes int64, maxEntries int) *ManifestCache {
	return &ManifestCache{maxBytes: maxBytes, maxEntries: maxEntries, lru: list.New(), byKey: map[cacheKey]*list.Element{}}
}

// Get returns a copy of manifest d of repo, and whether it was cached.
func (c *ManifestCache) Get(repo string, d digest.Digest) (*Manifest, bool) {
	c.mu.Lock()
	defer c.mu.Unlock()
	e, ok := c.byKey[cacheKey{repo, d}]
	if !ok {
		return nil, false
	}
	c.lru.MoveToFront(e)
	return copyManifest(e.Value.(cacheEntry).m), true
}

// Add caches a copy of m under repo and m.Digest, evicting the least recently used manifests
// until the budgets hold. A manifest already cached only becomes the most recently used.
func (c *ManifestCache) Add(repo string, m *Manifest) {
	size := int64(len(m.Body))
	if size > c.maxBytes {
		return
	}
	k := cacheKey{repo, m.Digest}
	c.mu.Lock()
	defer c.mu.Unlock()
	if e, ok := c.byKey[k]; ok {
		c.lru.MoveToFront(e)
		return
	}
	c.byKey[k] = c.lru.PushFront(cacheEntry{key: k, m: copyManifest(m)})
	c.bytes += size
	for c.bytes > c.maxBytes || c.maxEntries > 0 && c.lru.Len() > c.maxEntries {
		old := c.lru.Remove(c.lru.Back()).(cacheEntry)
		delete(c.byKey, old.key)
		c.bytes -= int64(len(old.m.Body))
	}
}

// Len returns the number of cached manifests and the bytes of their bodies.
func (c *ManifestCache) Len() (entries int, bytes int64) {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.lru.Len(), c.bytes
}

// copyManifest returns a copy of m that shares its (never modified) slices and map.
func copyManifest(m *Manifest) *Manifest {
	c := *m
	return &c
}
