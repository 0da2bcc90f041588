package gc_test

import (
	"context"
	"errors"
	"sync/atomic"
	"testing"
	"time"

	"github.com/opencontainers/go-digest"
	"github.com/stretchr/testify/require"

	"github.com/krakenctl/krakenctl/server/api"
	"github.com/krakenctl/krakenctl/server/gc"
	"github.com/krakenctl/krakenctl/server/registry"
)

func run(t *testing.T, cfg gc.Config, deps gc.Deps) *gc.Report {
	t.Helper()
	c, err := gc.New(cfg, deps)
	require.NoError(t, err)
	rep, err := c.Run(t.Context())
	require.NoError(t, err)
	return rep
}

// comparable strips what differs between two runs over the same state.
func comparable(r *gc.Report) *gc.Report {
	c := *r
	c.DryRun, c.Started, c.Duration, c.MarkDuration = false, time.Time{}, 0, 0
	return &c
}

// A dry run reports exactly what the run that follows it on the same state collects, and the
// run collects every old unreferenced blob and nothing else.
func TestDryRunAndRunAgree(t *testing.T) {
	wd := newWorld(3, 20, 3, 30)
	// Unreferenced but used within the grace period, and unreferenced but being read.
	recent, busy := blobDigest(9001), blobDigest(9002)
	for _, o := range wd.origins {
		o.put(recent, 10, wd.now.Add(-time.Hour))
		o.put(busy, 10, wd.now.Add(-48*time.Hour))
		o.blobs[busy].inUse = true
	}
	cfg := gc.Config{Grace: 24 * time.Hour, PageSize: 7}

	dry := cfg
	dry.DryRun = true
	before := run(t, dry, wd.deps())
	require.True(t, before.DryRun)
	for _, o := range wd.origins {
		require.Zero(t, o.deletes, "a dry run deletes nothing")
	}
	after := run(t, cfg, wd.deps())
	require.Equal(t, comparable(before), comparable(after))

	tot := after.Totals()
	require.Equal(t, 3*len(wd.garbage), tot.Collected)
	require.Equal(t, int64(3*10*len(wd.garbage)), tot.Bytes)
	require.Equal(t, 3*len(wd.referenced), tot.Referenced)
	require.Equal(t, map[string]int{api.GCKeptRecent: 3, api.GCKeptInUse: 3}, tot.Kept)
	require.Equal(t, len(wd.referenced), after.Marked)
	for _, o := range wd.origins {
		for _, d := range wd.referenced {
			require.True(t, o.has(d), "referenced %s kept on %s", d, o.addr)
		}
		for _, d := range wd.garbage {
			require.False(t, o.has(d), "garbage %s collected on %s", d, o.addr)
		}
		require.True(t, o.has(recent))
		require.True(t, o.has(busy))
	}
	// Nothing is left to do.
	again := run(t, cfg, wd.deps())
	require.Zero(t, again.Totals().Collected)
}

// A manifest pushed between the mark and the sweep that references an old blob the mark did
// not reach: the proxy's touch makes the blob newer than the cutoff, so it survives; a blob
// pushed during the run survives too. Without the touch, the same push would lose the blob,
// which is what the touch is for.
func TestPushDuringRunKeepsBlob(t *testing.T) {
	for _, touch := range []bool{true, false} {
		wd := newWorld(2, 4, 2, 5)
		victim := wd.garbage[0]
		fresh := blobDigest(7777)
		deps := wd.deps()
		deps.AfterMark = func(context.Context) error {
			// What a push does now: upload a new blob, then a manifest referencing it and
			// the old victim; the proxy touches both before linking the manifest.
			for _, o := range wd.origins {
				o.put(fresh, 10, wd.now)
			}
			if touch {
				for _, o := range wd.origins {
					o.touch(victim)
				}
			}
			m := digest.FromString("pushed during the run")
			wd.w.graphs[m] = []digest.Digest{victim, fresh}
			wd.ix.link("team/late", registry.ManifestLink(m), m)
			wd.ix.tag("team/late", "v1", m)
			return nil
		}
		run(t, gc.Config{Grace: 24 * time.Hour}, deps)
		for _, o := range wd.origins {
			require.True(t, o.has(fresh), "a blob pushed during the run is never collected")
			require.Equal(t, touch, o.has(victim), "touched=%v", touch)
			require.False(t, o.has(wd.garbage[1]))
		}
	}
}

// A manifest that cannot be read (other than stored nowhere) stops the run before anything is
// deleted; a manifest stored nowhere is reported and the run goes on.
func TestIncompleteMarkDeletesNothing(t *testing.T) {
	wd := newWorld(2, 3, 2, 4)
	wd.w.fail = errors.New("origin unreachable")
	c, err := gc.New(gc.Config{Grace: time.Hour}, wd.deps())
	require.NoError(t, err)
	_, err = c.Run(t.Context())
	require.ErrorIs(t, err, gc.ErrIncompleteMark)
	for _, o := range wd.origins {
		require.Zero(t, o.deletes)
	}

	wd = newWorld(2, 3, 2, 4)
	lost := digest.FromString("lost manifest")
	wd.ix.tag("team/lost", "v1", lost)
	rep := run(t, gc.Config{Grace: time.Hour}, wd.deps())
	require.Equal(t, 1, rep.Dangling)
	require.Equal(t, 2*len(wd.garbage), rep.Totals().Collected)

	wd = newWorld(1, 1, 1, 1)
	wd.ix.fail = errors.New("build-index down")
	c, err = gc.New(gc.Config{}, wd.deps())
	require.NoError(t, err)
	_, err = c.Run(t.Context())
	require.ErrorIs(t, err, gc.ErrIncompleteMark)
	require.Zero(t, wd.origins[0].deletes)
}

// A run interrupted in the middle of its sweep leaves every referenced blob in place; the next
// run collects the rest.
func TestInterruptedRunResumes(t *testing.T) {
	wd := newWorld(2, 5, 2, 40)
	ctx, cancel := context.WithCancel(t.Context())
	defer cancel()
	var n atomic.Int32
	for _, o := range wd.origins {
		o.onDelete = func() {
			if n.Add(1) == 10 {
				cancel()
			}
		}
	}
	c, err := gc.New(gc.Config{Grace: time.Hour, PageSize: 5, Parallel: 2}, wd.deps())
	require.NoError(t, err)
	rep, err := c.Run(ctx)
	require.ErrorIs(t, err, context.Canceled)
	require.NotNil(t, rep)
	partial := 0
	for _, o := range wd.origins {
		partial += o.deletes
		for _, d := range wd.referenced {
			require.True(t, o.has(d))
		}
	}
	require.Less(t, partial, 2*len(wd.garbage), "the interruption stopped the sweep early")

	for _, o := range wd.origins {
		o.onDelete = nil
	}
	run(t, gc.Config{Grace: time.Hour}, wd.deps())
	for _, o := range wd.origins {
		for _, d := range wd.garbage {
			require.False(t, o.has(d))
		}
	}
}

// Backend copies go through the digest's owner: kept while it holds a local copy it keeps,
// deleted once nothing references them and the owner's copy is gone; a dry run agrees.
func TestBackendSweep(t *testing.T) {
	wd := newWorld(2, 3, 2, 6)
	old := wd.now.Add(-48 * time.Hour)
	owner := func(d digest.Digest) *fakeOrigin { return wd.origins[int(d.Encoded()[0])%len(wd.origins)] }
	for _, d := range append(append([]digest.Digest{}, wd.referenced...), wd.garbage...) {
		wd.be.put("team/app0", d, old)
	}
	// An unreferenced blob its owner read an hour ago: both copies stay.
	kept := wd.garbage[0]
	owner(kept).blobs[kept].lastUsed = wd.now.Add(-time.Hour)
	// Only in the backend, changed recently: stays.
	newer := blobDigest(5555)
	wd.be.put("team/app0", newer, wd.now.Add(-time.Minute))

	// A blob pushed outside any repository (krakenctl push): its namespace is known only
	// from the origins' listing.
	bare := blobDigest(6666)
	for _, o := range wd.origins {
		o.put(bare, 10, old)
		o.blobs[bare].ns = []string{"krakenctl"}
	}
	wd.be.put("krakenctl", bare, old)

	cfg := gc.Config{Grace: 24 * time.Hour, Backends: true}
	dry := cfg
	dry.DryRun = true
	before := run(t, dry, wd.deps())
	after := run(t, cfg, wd.deps())
	require.Equal(t, comparable(before), comparable(after))
	be := after.Rows[len(after.Rows)-1]
	require.Equal(t, "backend", be.Name)
	require.Equal(t, len(wd.garbage)-1+1, be.Collected, "the garbage but the blob read recently, and the bare one")
	require.False(t, wd.be.has("krakenctl", bare))
	require.Equal(t, map[string]int{api.GCKeptLocal: 1, api.GCKeptRecent: 1}, be.Kept)
	for _, d := range wd.referenced {
		require.True(t, wd.be.has("team/app0", d))
	}
	require.True(t, wd.be.has("team/app0", kept))
	require.True(t, wd.be.has("team/app0", newer))
	require.False(t, wd.be.has("team/app0", wd.garbage[1]))
}
