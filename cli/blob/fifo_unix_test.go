//go:build unix

package blob

import (
	"crypto/rand"
	"errors"
	"os"
	"path/filepath"
	"syscall"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/krakenctl/krakenctl/cli/cmdutil"
	"github.com/krakenctl/krakenctl/cli/endpoints"
	"github.com/krakenctl/krakenctl/server/dev/devtest"
)

// A named pipe (as from `krakenctl push <(cmd)`) cannot be read twice, so it is spooled like
// stdin.
func TestPushNamedPipe(t *testing.T) {
	t.Parallel()
	c := devtest.Start(t, 1)
	fifo := filepath.Join(t.TempDir(), "pipe")
	require.NoError(t, syscall.Mkfifo(fifo, 0o600))
	data := make([]byte, 1<<20+3)
	_, err := rand.Read(data)
	require.NoError(t, err)
	werr := make(chan error, 1)
	go func() {
		f, err := os.OpenFile(fifo, os.O_WRONLY, 0)
		if err != nil {
			werr <- err
			return
		}
		_, err = f.Write(data)
		werr <- errors.Join(err, f.Close())
	}()

	d, _, out, _ := testDeps(t)
	err = pushRun(t.Context(), &PushOptions{deps: d, Endpoints: endpoints.Flags{Origins: c.Endpoints()}, Path: fifo, Namespace: DefaultNamespace, ChunkSize: 256 << 10, Output: cmdutil.OutputTable})
	require.NoError(t, err)
	require.NoError(t, <-werr)
	require.Equal(t, sha(data)+"\n", out.String())
}
