package origin

import (
	"testing"
	"time"

	"github.com/opencontainers/go-digest"
	"github.com/stretchr/testify/require"
)

// TestNegCache: entries live ttl, at most size are kept (least recently used out first), a
// commit forgets a digest in every namespace, and a cache with no ttl or size remembers nothing.
func TestNegCache(t *testing.T) {
	t.Parallel()
	now := time.Date(2026, 12, 8, 0, 0, 0, 0, time.UTC)
	c := newNegCache(10*time.Second, 3, func() time.Time { return now })
	a, b, x, y := digest.FromString("a"), digest.FromString("b"), digest.FromString("x"), digest.FromString("y")

	require.False(t, c.absent("ns", a))
	c.add("ns", a)
	require.True(t, c.absent("ns", a))
	require.False(t, c.absent("other", a), "per namespace: another may route to another backend")

	now = now.Add(10*time.Second - 1)
	require.True(t, c.absent("ns", a))
	now = now.Add(1)
	require.False(t, c.absent("ns", a), "expired after ttl")
	require.Zero(t, c.len(), "an expired entry met is dropped")

	// LRU bound: the least recently used of four goes.
	c.add("ns", a)
	c.add("ns", b)
	c.add("ns", x)
	require.True(t, c.absent("ns", a)) // a is now the most recent
	c.add("ns", y)
	require.Equal(t, 3, c.len())
	require.False(t, c.absent("ns", b), "b was the least recently used")
	require.True(t, c.absent("ns", a))
	require.True(t, c.absent("ns", x))
	require.True(t, c.absent("ns", y))

	// A commit of a forgets it in every namespace at once.
	c.add("other", a)
	c.forget(a)
	require.False(t, c.absent("ns", a))
	require.False(t, c.absent("other", a))
	require.True(t, c.absent("ns", y), "others stay")

	// Re-adding refreshes the expiry.
	c.add("ns", x)
	now = now.Add(9 * time.Second)
	c.add("ns", x)
	now = now.Add(9 * time.Second)
	require.True(t, c.absent("ns", x))

	for _, off := range []*negCache{newNegCache(0, 10, nil), newNegCache(-time.Second, 10, nil), newNegCache(time.Second, 0, nil), nil} {
		off.add("ns", a)
		require.False(t, off.absent("ns", a))
		off.forget(a)
		require.Zero(t, off.len())
	}
}
