package castore_test

import (
	"bytes"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"sync"
	"testing"
	"time"

	"github.com/opencontainers/go-digest"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/stretchr/testify/require"
	"golang.org/x/sys/unix"

	"github.com/krakenctl/krakenctl/swarm/castore"
)

// fakeClock is a store clock the test moves.
type fakeClock struct {
	mu  sync.Mutex
	now time.Time
}

func newClock() *fakeClock {
	return &fakeClock{now: time.Date(2026, 12, 8, 0, 0, 0, 0, time.UTC)}
}

func (c *fakeClock) Now() time.Time { c.mu.Lock(); defer c.mu.Unlock(); return c.now }

func (c *fakeClock) advance(d time.Duration) { c.mu.Lock(); c.now = c.now.Add(d); c.mu.Unlock() }

func removed(rep castore.CleanupReport) map[digest.Digest]string {
	out := map[digest.Digest]string{}
	for _, b := range rep.Removed {
		out[b.Digest] = b.Reason
	}
	return out
}

func kept(rep castore.CleanupReport) map[digest.Digest]string {
	out := map[digest.Digest]string{}
	for _, b := range rep.Kept {
		out[b.Digest] = b.Kept
	}
	return out
}

func present(t *testing.T, s *castore.Store, d digest.Digest) bool {
	t.Helper()
	_, err := s.Stat(d)
	return err == nil
}

func reasonCount(t *testing.T, reg *prometheus.Registry, name, reason string) float64 {
	t.Helper()
	families, err := reg.Gather()
	require.NoError(t, err)
	for _, f := range families {
		if f.GetName() != name {
			continue
		}
		for _, m := range f.GetMetric() {
			for _, l := range m.GetLabel() {
				if l.GetName() == "reason" && l.GetValue() == reason {
					return m.GetCounter().GetValue()
				}
			}
		}
	}
	t.Fatalf("no metric %s{reason=%q}", name, reason)
	return 0
}

// TTI removes the blobs not used for the idle time, and only those: a read makes an old blob
// young again. The removal counts in the metrics by reason.
func TestCleanupTTI(t *testing.T) {
	clock := newClock()
	reg := prometheus.NewRegistry()
	s := openStore(t, t.TempDir(), castore.Options{Now: clock.Now, Registerer: reg})
	a := ingest(t, s, blobData(1, 100))
	clock.advance(time.Hour)
	b := ingest(t, s, blobData(2, 200))
	clock.advance(time.Hour)
	c := ingest(t, s, blobData(3, 300))
	clock.advance(time.Hour)
	readBlob(t, s, a) // a: idle 0; b: idle 2h; c: idle 1h

	rep, err := s.Cleanup(castore.CleanupOptions{Policy: castore.Policy{TTI: 2 * time.Hour}})
	require.NoError(t, err)
	require.Equal(t, map[digest.Digest]string{b: castore.ReasonTTI}, removed(rep))
	require.False(t, present(t, s, b))
	require.True(t, present(t, s, a))
	require.True(t, present(t, s, c))
	freed, by := rep.Freed()
	require.Equal(t, int64(200), freed)
	require.Equal(t, int64(200), by[castore.ReasonTTI])
	require.Equal(t, 1.0, reasonCount(t, reg, "krakenctl_store_cleanup_removed_blobs_total", castore.ReasonTTI))
	require.Equal(t, 200.0, reasonCount(t, reg, "krakenctl_store_cleanup_removed_bytes_total", castore.ReasonTTI))
	require.Equal(t, 0.0, reasonCount(t, reg, "krakenctl_store_cleanup_removed_blobs_total", castore.ReasonTTL))
}

// TTL measures from the blob's arrival, not its last use: a blob read a moment ago goes when
// it is old enough, a younger one that nobody read stays.
func TestCleanupTTLUsesArrivalNotLastUse(t *testing.T) {
	clock := newClock()
	s := openStore(t, t.TempDir(), castore.Options{Now: clock.Now})
	old := ingest(t, s, blobData(1, 100))
	clock.advance(2 * time.Hour)
	young := ingest(t, s, blobData(2, 100))
	clock.advance(3 * time.Hour)
	readBlob(t, s, old)
	info, err := s.Stat(old)
	require.NoError(t, err)
	require.Equal(t, clock.Now().Add(-5*time.Hour), info.Created)
	require.Equal(t, clock.Now(), info.LastAccess)

	rep, err := s.Cleanup(castore.CleanupOptions{Policy: castore.Policy{TTL: 4 * time.Hour}})
	require.NoError(t, err)
	require.Equal(t, map[digest.Digest]string{old: castore.ReasonTTL}, removed(rep))
	require.True(t, present(t, s, young))
}

// After a restart a blob's age comes from its file's birth time, not its mtime (which the
// store writes last uses into): a blob whose mtime says it was last used long ago is still
// young.
func TestCleanupTTLAfterReopenUsesBirthTime(t *testing.T) {
	dir := t.TempDir()
	s, err := castore.Open(dir, castore.Options{})
	require.NoError(t, err)
	d := ingest(t, s, blobData(1, 100))
	require.NoError(t, s.Close())
	born := time.Now()
	path := filepath.Join(dir, "blobs", "sha256", d.Encoded())
	require.NoError(t, os.Chtimes(path, time.Time{}, born.Add(-10*time.Hour)))

	at := born.Add(30 * time.Minute)
	s = openStore(t, dir, castore.Options{Now: func() time.Time { return at }})
	info, err := s.Stat(d)
	require.NoError(t, err)
	if info.Created.Equal(info.LastAccess) {
		t.Skip("this file system records no birth time: ages come from the mtime")
	}
	require.WithinDuration(t, born, info.Created, time.Minute)
	require.WithinDuration(t, born.Add(-10*time.Hour), info.LastAccess, time.Second)

	rep, err := s.Cleanup(castore.CleanupOptions{Policy: castore.Policy{TTL: time.Hour}})
	require.NoError(t, err)
	require.Empty(t, rep.Removed, "30 minutes old by its birth time")
	rep, err = s.Cleanup(castore.CleanupOptions{Policy: castore.Policy{TTI: time.Hour}})
	require.NoError(t, err)
	require.Equal(t, map[digest.Digest]string{d: castore.ReasonTTI}, removed(rep), "idle 10 hours by its mtime")
}

// Above the high watermark of the capacity, least recently used blobs go until usage is at
// or below the low one; a blob being read is passed over for the next.
func TestCleanupWatermarkOfCapacity(t *testing.T) {
	clock := newClock()
	s := openStore(t, t.TempDir(), castore.Options{Capacity: 1000, Now: clock.Now})
	var ds []digest.Digest // least recently used first
	for i := range 9 {
		ds = append(ds, ingest(t, s, blobData(uint64(i), 100)))
		clock.advance(time.Minute)
	}
	policy := castore.Policy{HighWatermark: 90, LowWatermark: 50}
	rep, err := s.Cleanup(castore.CleanupOptions{Policy: policy})
	require.NoError(t, err)
	require.Empty(t, rep.Removed, "900 of 1000 is not over 90%")

	ds = append(ds, ingest(t, s, blobData(9, 50)))
	b, err := s.Open(t.Context(), ds[1])
	require.NoError(t, err)
	defer func() { require.NoError(t, b.Close()) }()
	// ds[1] is now the most recently used, but open; ds[0], ds[2..5] are the oldest.
	rep, err = s.Cleanup(castore.CleanupOptions{Policy: policy})
	require.NoError(t, err)
	require.Equal(t, "capacity", rep.Basis.Name)
	require.Equal(t, int64(950), rep.Basis.Used)
	require.Equal(t, int64(500), rep.Target)
	want := map[digest.Digest]string{}
	for _, d := range []digest.Digest{ds[0], ds[2], ds[3], ds[4], ds[5]} {
		want[d] = castore.ReasonWatermark
	}
	require.Equal(t, want, removed(rep))
	used, _ := s.Usage()
	require.Equal(t, int64(450), used)
}

// With no capacity the watermarks measure the file system, whatever else fills it.
func TestCleanupWatermarkOfFilesystem(t *testing.T) {
	clock := newClock()
	var s *castore.Store
	const total, others = 10000, 5000
	disk := func(string) (int64, int64, error) {
		used, _ := s.Usage()
		return total, total - others - used, nil
	}
	s = openStore(t, t.TempDir(), castore.Options{Now: clock.Now, DiskUsage: disk})
	var ds []digest.Digest
	for i := range 9 {
		ds = append(ds, ingest(t, s, blobData(uint64(i), 500)))
		clock.advance(time.Minute)
	}
	// 5000 + 4500 = 95% of the disk; down to 70% means 2500 bytes of the store must go.
	rep, err := s.Cleanup(castore.CleanupOptions{Policy: castore.Policy{HighWatermark: 90, LowWatermark: 70}})
	require.NoError(t, err)
	require.Equal(t, castore.Basis{Name: "filesystem", Total: total, Used: 9500}, rep.Basis)
	require.Len(t, rep.Removed, 5)
	for i, b := range rep.Removed {
		require.Equal(t, ds[i], b.Digest, "least recently used first")
	}
	used, _ := s.Usage()
	require.Equal(t, int64(2000), used)
}

// mountTmpfs mounts a tmpfs of size bytes under a temporary directory, unmounted at the end.
func mountTmpfs(t *testing.T, size int) string {
	t.Helper()
	dir := t.TempDir()
	if err := unix.Mount("tmpfs", dir, "tmpfs", 0, "size="+strconv.Itoa(size)); err != nil {
		t.Skipf("cannot mount a tmpfs (needs root on Linux): %v", err)
	}
	t.Cleanup(func() { require.NoError(t, unix.Unmount(dir, 0)) })
	return dir
}

// The watermarks against a real file system: a tmpfs shared with a file that is not the
// store's. After the run, statfs itself says usage is at or below the low watermark.
func TestCleanupWatermarkOnTmpfs(t *testing.T) {
	const size = 4 << 20
	dir := mountTmpfs(t, size)
	require.NoError(t, os.WriteFile(filepath.Join(dir, "other"), make([]byte, 1<<20), 0o644))
	s := openStore(t, filepath.Join(dir, "store"), castore.Options{})
	for i := range 40 {
		ingest(t, s, blobData(uint64(i), 64<<10)) // 2.5 MiB: with the other file, ~88%
	}
	total, used, err := s.DiskUsage()
	require.NoError(t, err)
	require.Greater(t, float64(used)/float64(total), 0.85)

	rep, err := s.Cleanup(castore.CleanupOptions{Policy: castore.Policy{HighWatermark: 80, LowWatermark: 50}})
	require.NoError(t, err)
	require.Equal(t, "filesystem", rep.Basis.Name)
	require.NotEmpty(t, rep.Removed)
	total, used, err = s.DiskUsage()
	require.NoError(t, err)
	require.LessOrEqual(t, float64(used)/float64(total), 0.50, "statfs after the run")
	require.FileExists(t, filepath.Join(dir, "other"), "only the store's blobs go")
}

// A blob open, held or claimed by Keep is never removed, by any policy or a manual eviction;
// the report says why each stayed.
func TestCleanupNeverRemovesInUse(t *testing.T) {
	clock := newClock()
	s := openStore(t, t.TempDir(), castore.Options{Capacity: 1000, Now: clock.Now})
	open := ingest(t, s, blobData(1, 100))
	held := ingest(t, s, blobData(2, 100))
	active := ingest(t, s, blobData(3, 100))
	free := ingest(t, s, blobData(4, 100))
	b, err := s.Open(t.Context(), open)
	require.NoError(t, err)
	defer func() { require.NoError(t, b.Close()) }()
	defer s.Hold(held)()
	keep := func(d digest.Digest) bool { return d == active }
	clock.advance(48 * time.Hour)

	wantKept := map[digest.Digest]string{open: castore.KeptOpen, held: castore.KeptHeld, active: castore.KeptActive}
	for name, opts := range map[string]castore.CleanupOptions{
		"tti":       {Policy: castore.Policy{TTI: time.Hour}},
		"ttl":       {Policy: castore.Policy{TTL: time.Hour}},
		"digests":   {Manual: &castore.Manual{Digests: []digest.Digest{open, held, active}}},
		"down to 0": {Manual: &castore.Manual{DownTo: &castore.Target{Bytes: new(int64)}}},
	} {
		opts.Keep, opts.DryRun = keep, true
		rep, err := s.Cleanup(opts)
		require.NoError(t, err, name)
		require.Equal(t, wantKept, kept(rep), name)
	}
	rep, err := s.Cleanup(castore.CleanupOptions{Policy: castore.Policy{HighWatermark: 2, LowWatermark: 1}, Keep: keep})
	require.NoError(t, err)
	require.Equal(t, wantKept, kept(rep))
	require.Equal(t, map[digest.Digest]string{free: castore.ReasonWatermark}, removed(rep))
	for _, d := range []digest.Digest{open, held, active} {
		require.True(t, present(t, s, d))
	}
	_, err = s.Cleanup(castore.CleanupOptions{Manual: &castore.Manual{Digests: []digest.Digest{free}}})
	require.NoError(t, err)
}

// A dry run reports exactly what a real run on the same state then removes, for the policy
// and a manual eviction, and removes nothing itself.
func TestCleanupDryRunMatchesRealRun(t *testing.T) {
	for name, opts := range map[string]castore.CleanupOptions{
		"policy": {Policy: castore.Policy{TTI: 5 * time.Hour, TTL: 8 * time.Hour, HighWatermark: 60, LowWatermark: 30}},
		"manual": {Manual: &castore.Manual{IdleOver: 6 * time.Hour, DownTo: &castore.Target{Percent: new(40.0)}}},
	} {
		t.Run(name, func(t *testing.T) {
			clock := newClock()
			s := openStore(t, t.TempDir(), castore.Options{Capacity: 20000, Now: clock.Now})
			var ds []digest.Digest
			for i := range 30 {
				ds = append(ds, ingest(t, s, blobData(uint64(i), 300+17*i)))
				clock.advance(20 * time.Minute)
				if i%4 == 0 {
					readBlob(t, s, ds[i/2])
				}
			}
			b, err := s.Open(t.Context(), ds[0])
			require.NoError(t, err)
			defer func() { require.NoError(t, b.Close()) }()
			defer s.Hold(ds[1])()

			dryOpts := opts
			dryOpts.DryRun = true
			dry, err := s.Cleanup(dryOpts)
			require.NoError(t, err)
			require.True(t, dry.DryRun)
			require.NotEmpty(t, dry.Removed)
			for _, r := range dry.Removed {
				require.True(t, present(t, s, r.Digest), "a dry run removes nothing")
			}
			real, err := s.Cleanup(opts)
			require.NoError(t, err)
			require.Equal(t, dry.Removed, real.Removed)
			require.Equal(t, dry.Kept, real.Kept)
			for _, r := range real.Removed {
				require.False(t, present(t, s, r.Digest))
			}
		})
	}
}

// Manual evictions: named digests (an absent one is reported, not an error), idle over, older
// than, down to a size; all through the same rules.
func TestCleanupManual(t *testing.T) {
	clock := newClock()
	s := openStore(t, t.TempDir(), castore.Options{Now: clock.Now})
	a := ingest(t, s, blobData(1, 100))
	clock.advance(time.Hour)
	b := ingest(t, s, blobData(2, 100))
	clock.advance(time.Hour)
	c := ingest(t, s, blobData(3, 100))
	clock.advance(time.Hour)
	d := ingest(t, s, blobData(4, 100))
	absent := digest.FromString("nobody has this")

	rep, err := s.Cleanup(castore.CleanupOptions{DryRun: true, Manual: &castore.Manual{Digests: []digest.Digest{c, absent}}})
	require.NoError(t, err)
	require.Equal(t, map[digest.Digest]string{c: castore.ReasonManual}, removed(rep))
	require.Equal(t, map[digest.Digest]string{absent: castore.KeptAbsent}, kept(rep))

	rep, err = s.Cleanup(castore.CleanupOptions{DryRun: true, Manual: &castore.Manual{IdleOver: 2 * time.Hour}})
	require.NoError(t, err)
	require.Equal(t, map[digest.Digest]string{a: castore.ReasonManual, b: castore.ReasonManual}, removed(rep))

	readBlob(t, s, a)
	rep, err = s.Cleanup(castore.CleanupOptions{DryRun: true, Manual: &castore.Manual{OlderThan: 3 * time.Hour}})
	require.NoError(t, err)
	require.Equal(t, map[digest.Digest]string{a: castore.ReasonManual}, removed(rep), "a was read, but is 3h old")

	rep, err = s.Cleanup(castore.CleanupOptions{Manual: &castore.Manual{DownTo: &castore.Target{Bytes: new(int64(250))}}})
	require.NoError(t, err)
	require.Equal(t, map[digest.Digest]string{b: castore.ReasonManual, c: castore.ReasonManual}, removed(rep),
		"least recently used first: b, c (a was read)")
	require.True(t, present(t, s, a))
	require.True(t, present(t, s, d))

	rep, err = s.Cleanup(castore.CleanupOptions{Manual: &castore.Manual{DownTo: &castore.Target{Percent: new(10.0)}}})
	require.NoError(t, err)
	require.Equal(t, "filesystem", rep.Basis.Name, "no capacity: a percentage is of the disk")
}

// Out-of-range policies and evictions are refused with ErrBadPolicy, and change nothing.
func TestCleanupRefusesBadInput(t *testing.T) {
	s := openStore(t, t.TempDir(), castore.Options{})
	d := ingest(t, s, blobData(1, 100))
	for name, opts := range map[string]castore.CleanupOptions{
		"negative tti":     {Policy: castore.Policy{TTI: -time.Second}},
		"negative ttl":     {Policy: castore.Policy{TTL: -time.Second}},
		"low above high":   {Policy: castore.Policy{HighWatermark: 50, LowWatermark: 60}},
		"low equal high":   {Policy: castore.Policy{HighWatermark: 50, LowWatermark: 50}},
		"high over 100":    {Policy: castore.Policy{HighWatermark: 101, LowWatermark: 50}},
		"low 0":            {Policy: castore.Policy{HighWatermark: 90}},
		"nothing":          {Manual: &castore.Manual{}},
		"negative idle":    {Manual: &castore.Manual{IdleOver: -time.Hour}},
		"bad digest":       {Manual: &castore.Manual{Digests: []digest.Digest{"sha256:nope"}}},
		"both targets":     {Manual: &castore.Manual{DownTo: &castore.Target{Bytes: new(int64(1)), Percent: new(1.0)}}},
		"negative bytes":   {Manual: &castore.Manual{DownTo: &castore.Target{Bytes: new(int64(-1))}}},
		"percent over 100": {Manual: &castore.Manual{DownTo: &castore.Target{Percent: new(100.5)}}},
	} {
		_, err := s.Cleanup(opts)
		require.Error(t, err, name)
		if name != "bad digest" {
			require.ErrorIs(t, err, castore.ErrBadPolicy, name)
		}
	}
	require.True(t, present(t, s, d))
	require.NoError(t, castore.Policy{}.Validate())
}

// LeastRecentlyUsed lists blobs oldest use first, with what keeps them.
func TestLeastRecentlyUsed(t *testing.T) {
	clock := newClock()
	s := openStore(t, t.TempDir(), castore.Options{Now: clock.Now})
	var ds []digest.Digest
	for i := range 4 {
		ds = append(ds, ingest(t, s, blobData(uint64(i), 10)))
		clock.advance(time.Second)
	}
	defer s.Hold(ds[1])()
	got := s.LeastRecentlyUsed(3)
	require.Len(t, got, 3)
	require.Equal(t, []digest.Digest{ds[0], ds[1], ds[2]}, []digest.Digest{got[0].Digest, got[1].Digest, got[2].Digest})
	require.True(t, got[1].Held)
	require.False(t, got[0].Held || got[0].Open)
	require.Len(t, s.LeastRecentlyUsed(100), 4)
	require.Empty(t, s.LeastRecentlyUsed(0))
	require.True(t, slices.IsSortedFunc(s.LeastRecentlyUsed(4), func(a, b castore.BlobState) int {
		return a.LastAccess.Compare(b.LastAccess)
	}))
}

// A store of only copies (an origin with no backend) removes nothing: cleanup keeps every blob
// as "only copy", a reservation that needs room fails with ErrFull instead of evicting, and
// garbage collection's DeleteIdle still deletes.
func TestOnlyCopiesNeverEvicts(t *testing.T) {
	clock := newClock()
	s := openStore(t, t.TempDir(), castore.Options{Now: clock.Now, Capacity: 1000, OnlyCopies: true})
	a := ingest(t, s, blobData(1, 600))
	clock.advance(time.Hour)

	rep, err := s.Cleanup(castore.CleanupOptions{Policy: castore.Policy{TTI: time.Minute, TTL: time.Minute, HighWatermark: 50, LowWatermark: 10}})
	require.NoError(t, err)
	require.Empty(t, rep.Removed)
	require.Equal(t, map[digest.Digest]string{a: castore.KeptOnlyCopy}, kept(rep))
	rep, err = s.Cleanup(castore.CleanupOptions{Manual: &castore.Manual{Digests: []digest.Digest{a}}})
	require.NoError(t, err)
	require.Empty(t, rep.Removed)

	data := blobData(2, 600)
	_, err = s.Ingest(t.Context(), digest.FromBytes(data), bytes.NewReader(data))
	require.ErrorIs(t, err, castore.ErrFull)
	require.True(t, present(t, s, a))

	n, err := s.DeleteIdle(a, clock.Now(), false)
	require.NoError(t, err)
	require.Equal(t, int64(600), n)
	require.False(t, present(t, s, a))
}
