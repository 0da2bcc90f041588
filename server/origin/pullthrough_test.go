package origin_test

import (
	"bytes"
	"context"
	"io"
	"net/http"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/krakenctl/krakenctl/backend"
	"github.com/krakenctl/krakenctl/backend/memory"
	"github.com/krakenctl/krakenctl/server/client"
	"github.com/krakenctl/krakenctl/server/origin"
)

// liar is a memory backend whose Stat announces a size off by delta from the object's.
type liar struct {
	*memory.Backend
	delta int64
}

func (l *liar) Stat(ctx context.Context, ns, name string) (backend.Info, error) {
	info, err := l.Backend.Stat(ctx, ns, name)
	info.Size += l.delta
	return info, err
}

// A pull-through reserves the size the backend's Stat announces before the first byte
// arrives (it used to reserve 1 MiB at a time as bytes came), and commits the blob with its
// metainfo and namespace already in place (staged before the rename, not written after it).
func TestPullThroughReservesAndCommitsWithMetadata(t *testing.T) {
	be := memory.New()
	data, d := randomBlob(t, 3<<20+17)
	require.NoError(t, be.Upload(t.Context(), "mirror/base", d.Encoded(), bytes.NewReader(data), int64(len(data))))
	c := newCluster(t, 1, 1, be, nil)
	o := c.origin(c.nodes[0].addr)
	srv := c.nodes[0].srv()

	started, release := make(chan struct{}), make(chan struct{})
	be.SetFault(func(op memory.Op, _, _ string) error {
		if op == memory.OpDownload {
			close(started)
			<-release
		}
		return nil
	})
	type answer struct {
		body []byte
		err  error
	}
	got := make(chan answer, 1)
	go func() {
		body, _, err := o.Open(t.Context(), "mirror/base", d, 0)
		if err != nil {
			got <- answer{err: err}
			return
		}
		defer func() { _ = body.Close() }() // read side
		b, err := io.ReadAll(body)
		got <- answer{b, err}
	}()
	<-started
	require.EqualValues(t, len(data), srv.StoreReserved(), "the whole size, before any byte arrived")
	close(release)
	a := <-got
	require.NoError(t, a.err)
	require.Equal(t, data, a.body)
	require.Zero(t, srv.StoreReserved(), "the reservation became the blob")

	ns, err := srv.StoreMeta(d, "namespace")
	require.NoError(t, err)
	require.Equal(t, "mirror/base", string(ns))
	mi, err := srv.StoreMeta(d, "metainfo")
	require.NoError(t, err)
	require.Contains(t, string(mi), d.String())
}

// A backend whose Stat announces another size than the bytes it sends (even bytes with the
// right digest) fails the pull with 502 and a message saying so; nothing is stored, nothing
// stays reserved, and the origin answers the same way the next time rather than serving a
// blob of the wrong length.
func TestPullThroughSizeMismatch(t *testing.T) {
	for _, delta := range []int64{+1, -1} {
		be := &liar{Backend: memory.New(), delta: delta}
		data, d := randomBlob(t, 100_000)
		require.NoError(t, be.Upload(t.Context(), "mirror/base", d.Encoded(), bytes.NewReader(data), int64(len(data))))
		c := newCluster(t, 1, 1, be, nil)
		o := c.origin(c.nodes[0].addr)
		for range 2 {
			_, _, err := o.Open(t.Context(), "mirror/base", d, 0)
			require.Error(t, err, "delta %d", delta)
			require.Equal(t, http.StatusBadGateway, status(err), "delta %d: %v", delta, err)
			require.Contains(t, err.Error(), "announced")
			require.Contains(t, err.Error(), "nothing was stored")
			_, err = o.StatLocal(t.Context(), "mirror/base", d)
			require.True(t, client.IsNotFound(err), "delta %d: nothing stored: %v", delta, err)
		}
		require.Eventually(t, func() bool { return c.nodes[0].srv().StoreReserved() == 0 }, time.Minute, 5*time.Millisecond)
	}
}

// A blob the store has no room for, by the size the backend announces, is refused with 507
// before anything is downloaded (it used to be downloaded until the store filled).
func TestPullThroughTooLargeDownloadsNothing(t *testing.T) {
	be := memory.New()
	data, d := randomBlob(t, 2<<20)
	require.NoError(t, be.Upload(t.Context(), "mirror/base", d.Encoded(), bytes.NewReader(data), int64(len(data))))
	c := newCluster(t, 1, 1, be, func(cfg *origin.Config) { cfg.Store.Capacity = 1 << 20 })
	_, _, err := c.origin(c.nodes[0].addr).Open(t.Context(), "mirror/base", d, 0)
	require.Equal(t, http.StatusInsufficientStorage, status(err), "%v", err)
	require.Zero(t, be.Calls(memory.OpDownload))
	require.Zero(t, c.nodes[0].srv().StoreReserved())
}
