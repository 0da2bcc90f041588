package serve

import (
	"context"
	"fmt"
	"net/http"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/opencontainers/go-digest"
	"github.com/stretchr/testify/require"

	"github.com/krakenctl/krakenctl/cli/cmdutil"
	"github.com/krakenctl/krakenctl/server/api"
	"github.com/krakenctl/krakenctl/server/client"
	"github.com/krakenctl/krakenctl/server/config"
	"github.com/krakenctl/krakenctl/server/roles"
)

// TestRunBuildIndexBadConfig: a malformed config is refused with the file and the key named,
// before anything listens or touches the state directory.
func TestRunBuildIndexBadConfig(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	for _, tc := range []struct{ doc, want string }{
		{"dir: " + dir + "\norigins: [127.0.0.1:1]\nraft:\n  node_id: a\n  bootstrapp: true\n", "field bootstrapp not found"},
		{"origins: [127.0.0.1:1]\n", "dir: required"},
		{"dir: " + dir + "\n", "origins: required"},
		{"dir: " + dir + "\nverify_content: false\nmax_body: lots\n", `size "lots"`},
		{"dir: " + dir + "\nverify_content: false\nraft:\n  heartbeat_timeout: 1ms\n", "raft: heartbeat_timeout"},
		{"dir: " + dir + "\nverify_content: false\njoin: [nope]\n", "join[0]"},
		{"dir: " + dir + "\nverify_content: false\nbackends:\n  - namespace: '.*'\n", "backends[0]: no backend configured"},
		{"dir: " + dir + "\nverify_content: false\ntags_namespace: Tags\n", "tags_namespace"},
	} {
		path := filepath.Join(t.TempDir(), "build-index.yaml")
		require.NoError(t, os.WriteFile(path, []byte(tc.doc), 0o600))
		err := run(t.Context(), t, "build-index", path)
		require.Error(t, err, tc.doc)
		require.ErrorContains(t, err, tc.want)
		require.ErrorContains(t, err, path)
		require.ErrorIs(t, err, config.ErrInvalid)
	}
	entries, err := os.ReadDir(dir)
	require.NoError(t, err)
	require.Empty(t, entries, "nothing was created in the state dir")

	r, err := roles.Lookup("build-index")
	require.NoError(t, err)
	err = Run(t.Context(), factory(), &Options{Role: r, ConfigPath: "x", LogLevel: "loud"})
	require.Equal(t, cmdutil.ExitUsage, cmdutil.ExitCode(err))
}

// TestRunBuildIndex starts a one-node cluster from a config file with --listen overriding the
// address, puts a tag, and stops it.
func TestRunBuildIndex(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	listen, raft := freePort(t), freePort(t)
	path := filepath.Join(dir, "build-index.yaml")
	doc := fmt.Sprintf("listen: 127.0.0.1:1\nraft_listen: %s\ndir: %s\nverify_content: false\nraft:\n  bootstrap: true\n"+adminAny, raft, filepath.Join(dir, "state"))
	require.NoError(t, os.WriteFile(path, []byte(doc), 0o600))
	ctx, cancel := context.WithCancel(t.Context())
	errc := make(chan error, 1)
	go func() { errc <- run(ctx, t, "build-index", path, set("listen", "listen", listen)) }()
	tr := &http.Transport{}
	defer tr.CloseIdleConnections()
	c := client.NewBuildIndex(listen, &http.Client{Transport: tr, Timeout: 5 * time.Second})
	require.Eventually(t, func() bool { return c.Ready(ctx) == nil }, 30*time.Second, 20*time.Millisecond)
	var st api.ClusterStatus
	require.Eventually(t, func() bool {
		var err error
		st, err = c.ClusterStatus(ctx)
		return err == nil && st.LeaderAPIAddr != "" // recorded through the log once it leads
	}, 30*time.Second, 20*time.Millisecond)
	require.Equal(t, "127.0.0.1-"+listen[len("127.0.0.1:"):], st.ID, "the node ID follows --listen")
	require.Equal(t, listen, st.LeaderAPIAddr)
	_, err := c.PutTag(ctx, "app", "v1", digest.FromString("v1"))
	require.NoError(t, err)
	cancel()
	require.NoError(t, <-errc)
}
