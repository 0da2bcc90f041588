package registry_test

import (
	"strings"
	"sync"
	"testing"

	"github.com/opencontainers/go-digest"
	"github.com/stretchr/testify/require"

	"github.com/krakenctl/krakenctl/server/registry"
)

func cached(t *testing.T, c *registry.ManifestCache, repo, body string) bool {
	t.Helper()
	m, ok := c.Get(repo, digest.FromString(body))
	if ok {
		require.Equal(t, body, string(m.Body))
	}
	return ok
}

func TestManifestCacheBounds(t *testing.T) {
	t.Parallel()
	m := func(s string) *registry.Manifest {
		return &registry.Manifest{Digest: digest.FromString(s), Body: []byte(s)}
	}
	c := registry.NewManifestCache(10, 3)
	c.Add("r", m("aaaa"))
	c.Add("r", m("bbbb"))
	require.True(t, cached(t, c, "r", "aaaa")) // a is now the most recent
	c.Add("r", m("cc"))                        // 10 bytes, 3 entries: all fit
	require.True(t, cached(t, c, "r", "bbbb"))
	c.Add("r", m("d")) // 4 entries: the least recently used, a, goes
	require.False(t, cached(t, c, "r", "aaaa"), "least recently used")
	require.True(t, cached(t, c, "r", "cc"))
	c.Add("r", m(strings.Repeat("e", 8))) // bytes: evicts until 8 + what remains <= 10
	require.True(t, cached(t, c, "r", strings.Repeat("e", 8)))
	require.False(t, cached(t, c, "r", "bbbb"))
	n, size := c.Len()
	require.LessOrEqual(t, size, int64(10))
	require.Equal(t, 2, n)                 // e and cc: b, then d, the least recently used, went
	c.Add("r", m(strings.Repeat("f", 11))) // larger than the cache: not kept
	require.False(t, cached(t, c, "r", strings.Repeat("f", 11)))

	// Entries are per repository.
	require.False(t, cached(t, c, "other", strings.Repeat("e", 8)))

	// Without an entry bound only bytes count.
	u := registry.NewManifestCache(10, 0)
	for _, s := range []string{"1", "2", "3", "4", "5", "6", "7", "8", "9", "0"} {
		u.Add("r", m(s))
	}
	n, _ = u.Len()
	require.Equal(t, 10, n)
	u.Add("r", m("x"))
	require.False(t, cached(t, u, "r", "1"), "least recently used")
}

func TestManifestCacheCopies(t *testing.T) {
	t.Parallel()
	c := registry.NewManifestCache(1<<10, 10)
	in := &registry.Manifest{Digest: digest.FromString("m"), MediaType: "a", Body: []byte("m")}
	c.Add("r", in)
	in.MediaType = "changed after Add"
	got, ok := c.Get("r", in.Digest)
	require.True(t, ok)
	require.Equal(t, "a", got.MediaType)
	got.MediaType = "changed after Get"
	again, _ := c.Get("r", in.Digest)
	require.Equal(t, "a", again.MediaType)
}

func TestManifestCacheConcurrent(t *testing.T) {
	t.Parallel()
	c := registry.NewManifestCache(64, 4)
	var wg sync.WaitGroup
	for i := range 8 {
		wg.Go(func() {
			for j := range 200 {
				s := strings.Repeat(string(rune('a'+i)), j%9+1)
				c.Add("r", &registry.Manifest{Digest: digest.FromString(s), Body: []byte(s)})
				c.Get("r", digest.FromString(s))
			}
		})
	}
	wg.Wait()
	n, size := c.Len()
	require.LessOrEqual(t, n, 4)
	require.LessOrEqual(t, size, int64(64))
}
