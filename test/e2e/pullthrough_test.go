package e2e

import (
	"net/http"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/opencontainers/go-digest"
	"github.com/stretchr/testify/require"

	"github.com/krakenctl/krakenctl/server/client"
)

// TestOriginPullThroughKilledAtEachCommitStep kills an origin (SIGKILL, from inside, at a named
// step of the commit: a binary built with the krakenctl_faults tag) while it commits a blob it
// pulls through from its storage backend for a GET, then restarts it. Up to the rename the blob
// must be absent; from the rename on it must be complete: its metainfo and namespace on disk
// with it (the GC listing names the namespace) and served whole. A pull-through used to commit
// the blob first and write both after, so a crash just after the rename left a blob no
// listing or repair could attribute to a namespace.
func TestOriginPullThroughKilledAtEachCommitStep(t *testing.T) {
	if testing.Short() {
		t.Skip("starts processes")
	}
	steps := []struct {
		step    string
		present bool
	}{
		{"write", false}, {"sync", false}, {"prepare", false}, {"meta", false},
		{"meta-rename", false}, {"rename", false}, {"renamed", true},
	}
	for _, tc := range steps {
		t.Run(tc.step, func(t *testing.T) {
			data := randomBlob(t, 3<<20)
			d := digest.FromBytes(data)
			backend := &putServer{objects: map[string][]byte{"/store/test/_objects/" + d.Encoded(): data}, addr: freeAddr(t)}
			backend.up(t)
			t.Cleanup(backend.down)
			o := newCapOrigin(t, filepath.Join(t.TempDir(), "origin"), 0, backend.addr)
			o.p.env = []string{"KRAKENCTL_FAULT_CRASH_AT=" + tc.step}
			o.p.start()
			req, err := http.NewRequestWithContext(t.Context(), http.MethodGet, "http://"+o.addr+blobPath(d), nil)
			require.NoError(t, err)
			if resp, err := capClient.Do(req); err == nil {
				_ = resp.Body.Close()
				t.Fatalf("the origin answered %s; it should have died at %s", resp.Status, tc.step)
			}
			select {
			case <-o.p.exited:
			case <-time.After(30 * time.Second):
				t.Fatal("the origin did not die at the step")
			}
			require.Equal(t, -1, o.p.cmd.ProcessState.ExitCode(), "killed by a signal")
			o.p.cmd = nil

			o.p.env = nil
			o.p.start()
			page, err := client.NewOrigin(o.addr, capClient).GCBlobs(t.Context(), "", 10)
			require.NoError(t, err)
			if !tc.present {
				o.requireAbsent(d)
				require.Empty(t, page.Blobs)
				o.requireComplete(data) // and a GET fetches it again
				return
			}
			require.Len(t, page.Blobs, 1)
			require.Equal(t, d, page.Blobs[0].Digest)
			require.Equal(t, []string{"test"}, page.Blobs[0].Namespaces, "the namespace came with the blob")
			_, err = os.Stat(filepath.Join(o.dir, "blobs", "meta", "sha256", d.Encoded(), "metainfo"))
			require.NoError(t, err, "the metainfo came with the blob (read before any request could generate it)")
			o.requireComplete(data)
		})
	}
}
