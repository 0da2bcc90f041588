package bandwidth

import (
	"bytes"
	"context"
	"io"
	"testing"

	"github.com/stretchr/testify/require"
)

func TestNewRejectsNegativeRates(t *testing.T) {
	_, err := New(-1, 0)
	require.Error(t, err)
	_, err = New(0, -5)
	require.Error(t, err)
}

func TestUnlimitedDirectionsPassEverything(t *testing.T) {
	var nilL *Limiter
	require.NoError(t, nilL.WaitEgress(t.Context(), 1<<40))
	l, err := New(0, 0)
	require.NoError(t, err)
	require.NoError(t, l.WaitIngress(t.Context(), 1<<40))
	e, i := l.Limited()
	require.False(t, e)
	require.False(t, i)
	r := bytes.NewReader(nil)
	require.Same(t, io.Reader(r), l.Reader(t.Context(), r), "no ingress limit: the reader is returned as is")
}

// Tokens are taken from the shared bucket: after a burst's worth the bucket is empty, and a
// caller that cannot wait long enough gets an error instead of sending.
func TestWaitTakesTokensFromTheSharedBucket(t *testing.T) {
	l, err := New(1<<20, 1<<20) // 1 MiB/s: burst = max(64 KiB, 102 KiB)
	require.NoError(t, err)
	burst := l.egress.Burst()
	require.Equal(t, (1<<20)/10, burst)
	require.NoError(t, l.WaitEgress(t.Context(), burst))
	require.Less(t, l.egress.Tokens(), 1.0*float64(Chunk), "the burst is spent")
	ctx, cancel := context.WithCancel(t.Context())
	cancel()
	require.Error(t, l.WaitEgress(ctx, burst), "a cancelled wait does not send")
	require.InDelta(t, float64(burst), l.ingress.Tokens(), 1, "egress and ingress are separate buckets")
}

// The limited reader hands out at most one chunk per Read and pays for what it read.
func TestReaderCapsReadsAndPays(t *testing.T) {
	l, err := New(0, 10<<20)
	require.NoError(t, err)
	src := bytes.NewReader(make([]byte, 3*Chunk))
	r := l.Reader(t.Context(), src)
	buf := make([]byte, 3*Chunk)
	n, err := r.Read(buf)
	require.NoError(t, err)
	require.Equal(t, Chunk, n)
	before := l.ingress.Tokens()
	n, err = r.Read(buf)
	require.NoError(t, err)
	require.Equal(t, Chunk, n)
	require.Less(t, l.ingress.Tokens(), before-float64(Chunk)/2, "the read was paid for")
	rest, err := io.ReadAll(r)
	require.NoError(t, err)
	require.Len(t, rest, Chunk)
}
