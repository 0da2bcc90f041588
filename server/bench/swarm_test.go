package bench

import (
	"context"
	"crypto/sha256"
	"encoding/json"
	"io"
	"os"
	"runtime"
	"sync"
	"testing"
	"time"

	"github.com/opencontainers/go-digest"
	"github.com/stretchr/testify/require"
)

func TestSwarmSmall(t *testing.T) {
	t.Parallel()
	var mu sync.Mutex
	var seen []SwarmProgress
	parent := t.TempDir()
	const size = 4 << 20
	res, err := Swarm(t.Context(), SwarmConfig{Agents: 3, Size: size, Rate: 8 << 20, Dir: parent}, SwarmDeps{
		Progress: func(p SwarmProgress) { mu.Lock(); seen = append(seen, p); mu.Unlock() },
	})
	require.NoError(t, err)

	require.Equal(t, 3, res.Agents)
	require.EqualValues(t, size, res.SizeBytes)
	require.EqualValues(t, 8<<20, res.RateBytesPerS)
	require.True(t, res.Verified, "clients verify by default")
	require.False(t, res.NoP2P)
	require.InDelta(t, 0.5, res.IdealS, 1e-9)

	// Every agent's client read the whole blob (pullAll fails otherwise); each agent received
	// the blob's bytes through the swarm, and together they took something from the origin.
	require.Len(t, res.PerAgent, 3)
	var fromOrigin int64
	for i, a := range res.PerAgent {
		require.Equal(t, i+1, a.Agent)
		require.Positive(t, a.TimeS)
		require.LessOrEqual(t, a.FirstByteS, a.TimeS)
		require.InDelta(t, res.IdealS/a.TimeS, a.Efficiency, 1e-9)
		require.GreaterOrEqual(t, a.BytesIn, int64(size), "agent %d received the blob", a.Agent)
		require.LessOrEqual(t, a.BytesInOrigin, a.BytesIn)
		fromOrigin += a.BytesInOrigin
	}
	require.Positive(t, res.OriginBytesOut)
	require.Positive(t, res.OriginCopies)
	require.InDelta(t, float64(res.OriginBytesOut)/size, res.OriginCopies, 1e-9)
	require.GreaterOrEqual(t, res.OriginBytesOut, fromOrigin, "the origin sent at least what agents counted from it")

	require.LessOrEqual(t, res.P50S, res.P90S)
	require.LessOrEqual(t, res.P90S, res.P99S)
	require.LessOrEqual(t, res.P99S, res.MaxS)
	require.InDelta(t, res.IdealS/res.P50S, res.EfficiencyP50, 1e-9)
	require.InDelta(t, res.IdealS/res.P99S, res.EfficiencyP99, 1e-9)
	require.NotNil(t, res.BaselineS)
	require.Positive(t, *res.BaselineS)
	require.InDelta(t, res.P50S / *res.BaselineS, *res.RatioP50, 1e-9)
	require.InDelta(t, res.P99S / *res.BaselineS, *res.RatioP99, 1e-9)
	require.Positive(t, res.GoHeapPeakBytes)
	if runtime.GOOS == "linux" {
		require.Positive(t, res.PeakRSSBytes)
		require.Positive(t, res.CPUS)
	}

	// Phases end in order, each with all its work done.
	var ends []string
	for _, p := range seen {
		require.LessOrEqual(t, p.Done, p.Total)
		if p.Done == p.Total && (len(ends) == 0 || ends[len(ends)-1] != p.Phase) {
			ends = append(ends, p.Phase)
		}
	}
	require.Equal(t, []string{PhaseStart, PhaseSeed, PhaseBaseline, PhaseSwarm}, ends)
	require.Equal(t, SwarmProgress{Phase: PhaseSwarm, Done: 3 * size, Total: 3 * size}, seen[len(seen)-1])

	// The JSON carries the fields the issue names.
	raw, err := json.Marshal(res)
	require.NoError(t, err)
	var m map[string]any
	require.NoError(t, json.Unmarshal(raw, &m))
	for _, k := range []string{"agents", "size_bytes", "rate_bytes_per_s", "p50_s", "p90_s", "p99_s", "max_s",
		"efficiency_p50", "efficiency_p99", "origin_copies", "peak_rss_bytes", "per_agent", "baseline_s", "ratio_p50"} {
		require.Contains(t, m, k)
	}
	require.NotContains(t, m, "dir", "the directory is only named when kept")

	// The stores were removed; the parent directory is the caller's and stays.
	entries, err := os.ReadDir(parent)
	require.NoError(t, err)
	require.Empty(t, entries)
}

func TestSwarmNoP2PKeepWithoutVerifyOrBaseline(t *testing.T) {
	t.Parallel()
	parent := t.TempDir()
	const size = 1 << 20
	res, err := Swarm(t.Context(), SwarmConfig{Agents: 2, Size: size, Rate: 16 << 20, Dir: parent,
		NoP2P: true, SkipVerify: true, SkipBaseline: true, Keep: true}, SwarmDeps{})
	require.NoError(t, err)
	require.True(t, res.NoP2P)
	require.False(t, res.Verified)
	require.Nil(t, res.BaselineS)
	require.Nil(t, res.RatioP50)

	// Without P2P, every byte came from the origin: two whole copies.
	require.GreaterOrEqual(t, res.OriginBytesOut, int64(2*size))
	for _, a := range res.PerAgent {
		require.Equal(t, a.BytesIn, a.BytesInOrigin, "agent %d got everything from the origin", a.Agent)
		require.Zero(t, a.BytesOut, "agent %d sent nothing to another agent", a.Agent)
	}

	// Kept: each agent's store holds the blob, with the right bytes.
	require.NotEmpty(t, res.Dir)
	h := sha256.New()
	_, err = io.Copy(h, blobReader(0, size))
	require.NoError(t, err)
	d := digest.NewDigest(digest.SHA256, h)
	for _, a := range []string{"agent-001", "agent-002"} {
		path := res.Dir + "/" + a + "/blobs"
		var found bool
		require.NoError(t, walkFiles(path, func(p string, fi os.FileInfo) {
			if fi.Size() != size {
				return
			}
			b, err := os.ReadFile(p)
			require.NoError(t, err)
			if digest.FromBytes(b) == d {
				found = true
			}
		}))
		require.True(t, found, "%s holds the blob", a)
	}
}

// walkFiles calls fn for every regular file under root.
func walkFiles(root string, fn func(string, os.FileInfo)) error {
	entries, err := os.ReadDir(root)
	if err != nil {
		return err
	}
	for _, e := range entries {
		p := root + "/" + e.Name()
		if e.IsDir() {
			if err := walkFiles(p, fn); err != nil {
				return err
			}
			continue
		}
		if fi, err := e.Info(); err == nil && fi.Mode().IsRegular() {
			fn(p, fi)
		}
	}
	return nil
}

func TestSwarmTimesOut(t *testing.T) {
	t.Parallel()
	// 8 MiB at 1 MiB/s cannot arrive in 200 ms.
	_, err := Swarm(t.Context(), SwarmConfig{Agents: 2, Size: 8 << 20, Rate: 1 << 20, Timeout: 200 * time.Millisecond,
		SkipBaseline: true, Dir: t.TempDir()}, SwarmDeps{})
	require.ErrorIs(t, err, errTimeout)
	require.ErrorContains(t, err, "0 of 2 pulls finished, having read ")
	require.ErrorContains(t, err, " of 16.0 MiB: timed out")
}

func TestSwarmStopsWithItsContext(t *testing.T) {
	t.Parallel()
	ctx, cancel := context.WithCancel(t.Context())
	defer cancel()
	_, err := Swarm(ctx, SwarmConfig{Agents: 2, Size: 8 << 20, Rate: 1 << 20, SkipBaseline: true, Dir: t.TempDir()}, SwarmDeps{
		Progress: func(p SwarmProgress) {
			if p.Phase == PhaseSwarm {
				cancel()
			}
		},
	})
	require.ErrorIs(t, err, context.Canceled)
}

func TestSwarmRejects(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		name string
		cfg  SwarmConfig
		want string
	}{
		{"too many agents", SwarmConfig{Agents: MaxSwarmAgents + 1}, "agents: want 1..256, got 257"},
		{"negative agents", SwarmConfig{Agents: -1}, "agents: want 1..256"},
		{"negative size", SwarmConfig{Size: -5}, "size: want at least 1 byte, got -5"},
		{"negative rate", SwarmConfig{Rate: -1}, "rate: want at least 1 byte/s"},
		{"negative timeout", SwarmConfig{Timeout: -1}, "timeout: want 0"},
		{"peer plain without tls", SwarmConfig{PeerPlain: true}, "peer plain: only with tls"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			_, err := Swarm(t.Context(), tc.cfg, SwarmDeps{})
			require.ErrorIs(t, err, ErrInvalidConfig)
			require.ErrorContains(t, err, tc.want)
		})
	}
}

func TestSwarmRefusesWithoutSpace(t *testing.T) {
	t.Parallel()
	if runtime.GOOS != "linux" && runtime.GOOS != "darwin" {
		t.Skip("free space is only checked on Linux and macOS")
	}
	parent := t.TempDir()
	_, err := Swarm(t.Context(), SwarmConfig{Agents: 200, Size: 1 << 50, Dir: parent}, SwarmDeps{})
	require.ErrorIs(t, err, ErrNoSpace)
	require.ErrorContains(t, err, "stores 202 copies of 1024TiB")
	entries, err := os.ReadDir(parent)
	require.NoError(t, err)
	require.Empty(t, entries, "nothing was written")
}

func TestPercentile(t *testing.T) {
	t.Parallel()
	require.Zero(t, percentile(nil, 50))
	one := []float64{7}
	for _, p := range []float64{0, 50, 99, 100} {
		require.Equal(t, 7.0, percentile(one, p))
	}
	// Nearest rank over 1..16: p50 is the 8th value, p90 the 15th (ceil(14.4)), p99 the 16th.
	s := make([]float64, 16)
	for i := range s {
		s[i] = float64(i + 1)
	}
	require.Equal(t, 1.0, percentile(s, 0))
	require.Equal(t, 8.0, percentile(s, 50))
	require.Equal(t, 15.0, percentile(s, 90))
	require.Equal(t, 16.0, percentile(s, 99))
	require.Equal(t, 16.0, percentile(s, 100))
	// Over 1..100, p99 is the 99th value and p50 the 50th.
	s = make([]float64, 100)
	for i := range s {
		s[i] = float64(i + 1)
	}
	require.Equal(t, 50.0, percentile(s, 50))
	require.Equal(t, 90.0, percentile(s, 90))
	require.Equal(t, 99.0, percentile(s, 99))
}

func TestBlobReaderIsDeterministic(t *testing.T) {
	t.Parallel()
	a, err := io.ReadAll(blobReader(0, 1000))
	require.NoError(t, err)
	b, err := io.ReadAll(blobReader(0, 1000))
	require.NoError(t, err)
	c, err := io.ReadAll(blobReader(1, 1000))
	require.NoError(t, err)
	require.Len(t, a, 1000)
	require.Equal(t, a, b, "the same blob every time")
	require.NotEqual(t, a, c, "the baseline blob differs")
}

func TestPeakRSS(t *testing.T) {
	t.Parallel()
	if runtime.GOOS != "linux" {
		require.Zero(t, peakRSS())
		return
	}
	require.Positive(t, peakRSS())
}

func TestHumanBytes(t *testing.T) {
	t.Parallel()
	require.Equal(t, "512 B", humanBytes(512))
	require.Equal(t, "1.5 KiB", humanBytes(1536))
	require.Equal(t, "9.0 GiB", humanBytes(9<<30))
}
