package ring_test

import (
	"crypto/sha256"
	"encoding/binary"
	"fmt"
	"hash/fnv"
	"slices"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/krakenctl/krakenctl/ring"
)

// fiveMembers look alike on purpose: a weak hash would correlate their weights.
var fiveMembers = []string{"10.0.0.1:7602", "10.0.0.2:7602", "10.0.0.3:7602", "10.0.0.4:7602", "10.0.0.5:7602"}

// digestKeys returns n realistic keys: full sha256 digest strings.
func digestKeys(n int) []string {
	keys := make([]string, n)
	for i := range keys {
		var b [8]byte
		binary.BigEndian.PutUint64(b[:], uint64(i))
		keys[i] = fmt.Sprintf("sha256:%x", sha256.Sum256(b[:]))
	}
	return keys
}

// sequentialKeys returns n keys that differ only in their last few characters.
func sequentialKeys(n int) []string {
	keys := make([]string, n)
	for i := range keys {
		keys[i] = fmt.Sprintf("blob-%08d", i)
	}
	return keys
}

// referenceWeight recomputes the documented weight with the standard library's FNV-1a and the
// MurmurHash3 fmix64 finalizer, independently of the package's inlined loop.
func referenceWeight(member, key string) uint64 {
	h := fnv.New64a()
	_, _ = h.Write([]byte(member + "\x00" + key))
	x := h.Sum64()
	x ^= x >> 33
	x *= 0xff51afd7ed558ccd
	x ^= x >> 33
	x *= 0xc4ceb9fe1a85ec53
	x ^= x >> 33
	return x
}

func TestWeightMatchesDocumentedFunction(t *testing.T) {
	t.Parallel()
	for _, m := range append(slices.Clone(fiveMembers), "origin-a.example:443", "[::1]:80") {
		for _, k := range append(digestKeys(50), "", "x") {
			require.Equal(t, referenceWeight(m, k), ring.Weight(m, k), "member %s key %s", m, k)
		}
	}
}

// TestRankGolden pins the placement: every process of a cluster, across versions, must agree
// on it. If this fails, the change reshuffles every blob in every deployed ring.
func TestRankGolden(t *testing.T) {
	t.Parallel()
	key := "sha256:e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"
	require.Equal(t, goldenRank, ring.Rank(key, fiveMembers))
	require.Equal(t, goldenWeight, ring.Weight("10.0.0.1:7602", key))
}

var (
	goldenRank   = []string{"10.0.0.4:7602", "10.0.0.1:7602", "10.0.0.2:7602", "10.0.0.5:7602", "10.0.0.3:7602"}
	goldenWeight = uint64(0xbea90ada04a58899)
)

func TestRankDeterministicAndOrderIndependent(t *testing.T) {
	t.Parallel()
	reversed := slices.Clone(fiveMembers)
	slices.Reverse(reversed)
	withDups := append(slices.Clone(fiveMembers), fiveMembers[2], fiveMembers[0], fiveMembers[2])
	input := slices.Clone(withDups)
	for _, k := range digestKeys(200) {
		want := ring.Rank(k, fiveMembers)
		require.Len(t, want, len(fiveMembers))
		require.ElementsMatch(t, fiveMembers, want)
		require.Equal(t, want, ring.Rank(k, fiveMembers))
		require.Equal(t, want, ring.Rank(k, reversed))
		require.Equal(t, want, ring.Rank(k, withDups), "duplicates must be removed")
	}
	require.Equal(t, input, withDups, "Rank must not modify its argument")
	require.Empty(t, ring.Rank("k", nil))
	require.Equal(t, []string{"a:1"}, ring.Rank("k", []string{"a:1", "a:1"}))
}

// without returns s minus every occurrence of v, in a new slice.
func without(s []string, v string) []string {
	return slices.DeleteFunc(slices.Clone(s), func(x string) bool { return x == v })
}

func TestRankStableWhenMemberRemoved(t *testing.T) {
	t.Parallel()
	const r = 3
	keys := digestKeys(10_000)
	for _, gone := range fiveMembers {
		rest := without(fiveMembers, gone)
		moved := 0
		for _, k := range keys {
			before := ring.Rank(k, fiveMembers)
			after := ring.Rank(k, rest)
			// The whole order is kept; only the removed member disappears.
			require.Equal(t, without(before, gone), after, "key %s", k)
			if !slices.Contains(before[:r], gone) {
				require.Equal(t, before[:r], after[:r], "key %s did not involve %s but moved", k, gone)
				continue
			}
			moved++
			// The removed member's place goes to the member ranked right after the top R.
			require.Equal(t, append(without(before[:r], gone), before[r]), after[:r])
		}
		// Each member is in the top 3 of 3/5 of the keys; only those keys move.
		require.InDelta(t, 6000, moved, 300, "keys moved when removing %s", gone)
	}
}

func TestRankStableWhenMemberAdded(t *testing.T) {
	t.Parallel()
	const r = 3
	added := "10.0.0.6:7602"
	grown := append(slices.Clone(fiveMembers), added)
	gained := 0
	for _, k := range digestKeys(10_000) {
		before := ring.Rank(k, fiveMembers)
		after := ring.Rank(k, grown)
		require.Equal(t, before, without(after, added), "key %s", k)
		if slices.Contains(after[:r], added) {
			gained++
		} else {
			require.Equal(t, before[:r], after[:r])
		}
	}
	// The new member takes its fair share, 3/6 of the keys' replica sets, and no more.
	require.InDelta(t, 5000, gained, 300)
}

// TestRankEvenShares checks that every member is equally likely at every rank position and
// that members are ordered independently of each other. Bounds are about 7 standard
// deviations wide: a correct hash essentially never fails them, a biased one does.
func TestRankEvenShares(t *testing.T) {
	t.Parallel()
	for name, keys := range map[string][]string{"digests": digestKeys(10_000), "sequential": sequentialKeys(10_000)} {
		t.Run(name, func(t *testing.T) {
			t.Parallel()
			n := len(fiveMembers)
			pos := map[string][]int{}
			above := map[[2]string]int{}
			for _, m := range fiveMembers {
				pos[m] = make([]int, n)
			}
			for _, k := range keys {
				rank := ring.Rank(k, fiveMembers)
				for i, m := range rank {
					pos[m][i]++
					for _, lower := range rank[i+1:] {
						above[[2]string{m, lower}]++
					}
				}
			}
			// Position counts: Binomial(10000, 1/5), sd = 40.
			for m, counts := range pos {
				for i, c := range counts {
					require.InDelta(t, 2000, c, 280, "member %s at position %d", m, i)
				}
				top3 := counts[0] + counts[1] + counts[2]
				// Binomial(10000, 3/5), sd = 49.
				require.InDelta(t, 6000, top3, 340, "member %s in top 3", m)
			}
			// Pairwise order: Binomial(10000, 1/2), sd = 50.
			for _, a := range fiveMembers {
				for _, b := range fiveMembers {
					if a != b {
						require.InDelta(t, 5000, above[[2]string{a, b}], 350, "%s above %s", a, b)
					}
				}
			}
		})
	}
}

func BenchmarkRank(b *testing.B) {
	members := make([]string, 20)
	for i := range members {
		members[i] = fmt.Sprintf("origin-%02d.example:7602", i)
	}
	key := digestKeys(1)[0]
	b.ReportAllocs()
	for b.Loop() {
		ring.Rank(key, members)
	}
}
