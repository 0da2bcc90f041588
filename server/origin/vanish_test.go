package origin_test

import (
	"bytes"
	"net/http"
	"os"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/krakenctl/krakenctl/backend/memory"
	"github.com/krakenctl/krakenctl/server/origin"
)

// storeDirs returns a tweak for newCluster that records each origin's store.dir.
func storeDirs() (func(*origin.Config), func() []string) {
	var (
		mu   sync.Mutex
		dirs []string
	)
	return func(cfg *origin.Config) {
			mu.Lock()
			defer mu.Unlock()
			dirs = append(dirs, cfg.Store.Dir)
		}, func() []string {
			mu.Lock()
			defer mu.Unlock()
			return dirs
		}
}

// removeBlobFile deletes d's file from every recorded store, as an operator's rm would.
func removeBlobFile(t *testing.T, dirs []string, hex string) {
	t.Helper()
	removed := 0
	for _, dir := range dirs {
		err := os.Remove(filepath.Join(dir, "blobs", "blobs", "sha256", hex))
		if err == nil {
			removed++
		} else {
			require.ErrorIs(t, err, os.ErrNotExist)
		}
	}
	require.Positive(t, removed, "the blob was stored somewhere")
}

// A blob file removed under a running origin: HEAD and GET both notice (the store forgets the
// entry) and answer from storage (pull-through), or 404 when nothing else has it; never HEAD
// 200 with GET 500, which is what the store's stale index gave.
func TestBlobFileRemovedUnderRunningOrigin(t *testing.T) {
	t.Parallel()
	t.Run("pulled through again", func(t *testing.T) {
		t.Parallel()
		be := memory.New()
		tweak, dirs := storeDirs()
		c := newCluster(t, 1, 1, be, tweak)
		o := c.origin(c.nodes[0].addr)
		data, d := randomBlob(t, 300<<10)
		require.NoError(t, o.Upload(t.Context(), "team/app", d, bytes.NewReader(data), int64(len(data))))
		require.Eventually(t, func() bool { _, ok := be.Peek("team/app", d.Encoded()); return ok }, 10*time.Second, 10*time.Millisecond)
		downloads := be.Calls(memory.OpDownload)
		removeBlobFile(t, dirs(), d.Encoded())

		url := "http://" + c.nodes[0].addr + "/namespace/team%2Fapp/blobs/" + d.String()
		resp := do(t, c.hc, http.MethodHead, url, nil, nil)
		require.Equal(t, http.StatusOK, resp.status, "HEAD answers from storage")
		require.Equal(t, data, readAll(t, o, "team/app", d), "GET pulls it through again")
		require.Equal(t, downloads+1, be.Calls(memory.OpDownload))
	})
	t.Run("gone everywhere", func(t *testing.T) {
		t.Parallel()
		tweak, dirs := storeDirs()
		c := newCluster(t, 1, 1, nil, tweak)
		o := c.origin(c.nodes[0].addr)
		data, d := randomBlob(t, 1000)
		require.NoError(t, o.Upload(t.Context(), "team/app", d, bytes.NewReader(data), int64(len(data))))
		removeBlobFile(t, dirs(), d.Encoded())
		url := "http://" + c.nodes[0].addr + "/namespace/team%2Fapp/blobs/" + d.String()
		for _, m := range []string{http.MethodHead, http.MethodGet, http.MethodGet} {
			resp := do(t, c.hc, m, url, nil, nil)
			require.Equal(t, http.StatusNotFound, resp.status, m)
		}
		resp := do(t, c.hc, http.MethodGet, "http://"+c.nodes[0].addr+"/internal/blobs/"+d.String(), nil, nil)
		require.Equal(t, http.StatusNotFound, resp.status)
	})
}
