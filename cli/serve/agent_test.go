package serve

import (
	"bytes"
	"context"
	"crypto/rand"
	"fmt"
	"net/http"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/opencontainers/go-digest"
	"github.com/spf13/cobra"
	"github.com/stretchr/testify/require"

	"github.com/krakenctl/krakenctl/backend/fs"
	"github.com/krakenctl/krakenctl/cli/cmdutil"
	"github.com/krakenctl/krakenctl/cli/cmdutil/cmdutiltest"
	"github.com/krakenctl/krakenctl/server/client"
	"github.com/krakenctl/krakenctl/server/config"
	"github.com/krakenctl/krakenctl/server/roles"
)

func TestNewCmdAgent(t *testing.T) {
	t.Parallel()
	agentRole, err := roles.Lookup("agent")
	require.NoError(t, err)
	for _, tc := range []struct {
		args    []string
		want    []config.Override
		wantErr string
	}{
		{args: []string{"--config", "a.yaml"}},
		{args: []string{"-c", "a.yaml", "--listen", "127.0.0.1:1", "--peer-listen", "0.0.0.0:2", "--peer-advertise", "h:2",
			"--tracker", "t1:3,t2:3", "--tracker", "t3:3", "--build-index", "b1:4,b2:4", "--store-dir", "/d", "--log-level", "debug",
			"--admin-listen", "127.0.0.1:9"},
			want: []config.Override{
				set("listen", "listen", "127.0.0.1:1"), set("admin-listen", "admin_listen", "127.0.0.1:9"),
				set("peer-listen", "peer_listen", "0.0.0.0:2"), set("peer-advertise", "peer_advertise", "h:2"),
				list("tracker", "trackers", "t1:3", "t2:3", "t3:3"), list("build-index", "build_index", "b1:4", "b2:4"),
				set("store-dir", "store_dir", "/d"),
			}},
		{args: []string{"--tracker", "t:1"}, wantErr: "--config is required"},
		{args: []string{"-c", "a.yaml", "extra"}, wantErr: "unknown command"},
		{args: []string{"-c", "a.yaml", "--origins", "x:1"}, wantErr: "unknown flag"},
	} {
		var got *Options
		err := cmdutiltest.Execute(t, func(f *cmdutil.Factory) *cobra.Command {
			return NewCmdRole(f, agentRole, func(_ context.Context, o *Options) error { got = o; return nil })
		}, tc.args...)
		if tc.wantErr != "" {
			require.ErrorContains(t, err, tc.wantErr)
			require.Nil(t, got, "run must not be called on bad input")
			continue
		}
		require.NoError(t, err, tc.args)
		require.Equal(t, "a.yaml", got.ConfigPath)
		require.Equal(t, "agent", got.Role.Name)
		require.Equal(t, tc.want, got.Overrides)
	}
}

// TestRunAgentBadConfig: a malformed config, or one the flags leave incomplete, is refused
// with the file and the key named, before anything listens or touches the store.
func TestRunAgentBadConfig(t *testing.T) {
	t.Parallel()
	store := filepath.Join(t.TempDir(), "store")
	for _, tc := range []struct {
		doc     string
		opts    []config.Override
		want    string
		notWant string
	}{
		{doc: "trackers: [127.0.0.1:1]\nstore_dir: " + store + "\nseed_tme: 1m\n", want: "field seed_tme not found"},
		{doc: "store_dir: " + store + "\n", want: "trackers: required"},
		{doc: "trackers: [127.0.0.1:1]\n", want: "store_dir: required"},
		{doc: "", opts: []config.Override{list("tracker", "trackers", "127.0.0.1:1")}, want: "store_dir: required"},
		{doc: "", opts: []config.Override{list("tracker", "trackers", "127.0.0.1:1"), set("store-dir", "store_dir", store), set("peer-listen", "peer_listen", "0.0.0.0:0")}, want: "peer_advertise: required"},
		{doc: "trackers: [127.0.0.1:1]\nstore_dir: " + store + "\n", opts: []config.Override{set("listen", "listen", "nope")}, want: `--listen: listen: "nope" is not host:port`},
		{doc: "capacity: lots\n", want: `size "lots"`},
		// The file's problem with a key is the file's, even when a flag overrides the key.
		{doc: "listen: [a]\ntrackers: [127.0.0.1:1]\nstore_dir: " + store + "\n", opts: []config.Override{set("listen", "listen", "127.0.0.1:0")},
			want: "listen: line 1: cannot unmarshal !!seq into string", notWant: "--listen"},
		// A flag's value is not expanded again: the shell did that.
		{doc: "", opts: []config.Override{list("tracker", "trackers", "127.0.0.1:1"), set("store-dir", "store_dir", store+"/${KRAKENCTL_UNSET}"), set("peer-listen", "peer_listen", "0.0.0.0:0")},
			want: "peer_advertise: required", notWant: "KRAKENCTL_UNSET"},
		// A flag that fails is named once, without a line or a repeat of it from Validate.
		{doc: "store_dir: " + store + "\n", opts: []config.Override{{Flag: "tracker", Key: "trackers", Values: []string{"127.0.0.1:1"}}},
			want: "invalid config: --tracker: trackers: cannot unmarshal !!str `127.0.0...` into []string", notWant: "trackers: required"},
		// --build-index replaces the file's build_index.
		{doc: "trackers: [127.0.0.1:1]\nstore_dir: " + store + "\nbuild_index: [127.0.0.1:2]\n",
			opts: []config.Override{list("build-index", "build_index", "127.0.0.1:3", "127.0.0.1:3")}, want: "--build-index: build_index: 127.0.0.1:3 listed twice"},
	} {
		path := filepath.Join(t.TempDir(), "agent.yaml")
		require.NoError(t, os.WriteFile(path, []byte(tc.doc), 0o600))
		err := run(t.Context(), t, "agent", path, tc.opts...)
		require.Error(t, err, tc.doc)
		require.ErrorContains(t, err, tc.want)
		if tc.notWant != "" {
			require.NotContains(t, err.Error(), tc.notWant)
		}
		require.ErrorContains(t, err, path)
		require.ErrorIs(t, err, config.ErrInvalid)
	}
	_, err := os.Stat(store)
	require.True(t, os.IsNotExist(err), "nothing was created: %v", err)

	err = Run(t.Context(), factory(), &Options{Role: agentRole(t), ConfigPath: "x", LogLevel: "loud"})
	require.Equal(t, cmdutil.ExitUsage, cmdutil.ExitCode(err))
	err = run(t.Context(), t, "agent", filepath.Join(t.TempDir(), "missing.yaml"))
	require.ErrorContains(t, err, "missing.yaml")
}

// TestRunAgentWithTrackerAndOrigin runs `serve origin` (seeding, with a filesystem backend),
// `serve tracker` and `serve agent` from config files, the agent's trackers and store given by
// flags, and pulls a blob through the agent: the agent finds the origin through the real
// tracker (announce.Client) and downloads the blob over the swarm.
func TestRunAgentWithTrackerAndOrigin(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	originAddr, originPeer, trackerAddr, agentAddr, agentPeer := freePort(t), freePort(t), freePort(t), freePort(t), freePort(t)
	root := filepath.Join(dir, "backend")
	originCfg := filepath.Join(dir, "origin.yaml")
	require.NoError(t, os.WriteFile(originCfg, []byte(fmt.Sprintf(`listen: %s
store: {dir: %s}
peer: {listen: %s}
backends:
  - namespace: ".*"
    fs: {root: %s}
admin_listen: 127.0.0.1:0
`, originAddr, filepath.Join(dir, "origin"), originPeer, root)), 0o600))
	trackerCfg := filepath.Join(dir, "tracker.yaml")
	require.NoError(t, os.WriteFile(trackerCfg, []byte(fmt.Sprintf("listen: %s\norigins: [%s]\nannounce_interval: 1s\nannounce: {allow_loopback: true}\n"+adminAny, trackerAddr, originAddr)), 0o600))
	agentCfg := filepath.Join(dir, "agent.yaml")
	require.NoError(t, os.WriteFile(agentCfg, []byte(fmt.Sprintf("listen: %s\npeer_listen: %s\nseed_time: 1m\n"+adminAny, agentAddr, agentPeer)), 0o600))

	be, err := fs.New(fs.Config{Root: root})
	require.NoError(t, err)
	data := make([]byte, 3<<20+77)
	_, err = rand.Read(data)
	require.NoError(t, err)
	d := digest.FromBytes(data)
	require.NoError(t, be.Upload(t.Context(), "library/app", d.Encoded(), bytes.NewReader(data), int64(len(data))))

	tr := &http.Transport{}
	defer tr.CloseIdleConnections()
	hc := &http.Client{Transport: tr}
	ctx, cancel := context.WithCancel(t.Context())
	defer cancel()
	originDone, trackerDone, agentDone := make(chan error, 1), make(chan error, 1), make(chan error, 1)
	go func() { originDone <- run(ctx, t, "origin", originCfg) }()
	go func() { trackerDone <- run(ctx, t, "tracker", trackerCfg) }()
	go func() {
		agentDone <- run(ctx, t, "agent", agentCfg, list("tracker", "trackers", trackerAddr), set("store-dir", "store_dir", filepath.Join(dir, "agent")))
	}()
	ready := func(addr string) bool {
		return httpStatus(t.Context(), t, hc, "http://"+addr+"/readyz") == http.StatusOK
	}
	require.Eventually(t, func() bool { return ready(originAddr) && ready(trackerAddr) && ready(agentAddr) }, 30*time.Second, 20*time.Millisecond)

	ac := client.NewAgent(agentAddr, hc)
	pctx, pcancel := context.WithTimeout(ctx, time.Minute)
	defer pcancel()
	size, err := ac.Stat(pctx, "library/app", d)
	require.NoError(t, err)
	require.Equal(t, int64(len(data)), size)
	var got bytes.Buffer
	n, err := ac.Pull(pctx, "library/app", d, &got, nil)
	require.NoError(t, err)
	require.Equal(t, int64(len(data)), n)
	require.True(t, bytes.Equal(data, got.Bytes()))

	stats, err := ac.Torrents(pctx, d)
	require.NoError(t, err)
	require.Len(t, stats, 1)
	require.Equal(t, int64(len(data)), stats[0].BytesInOrigin, "the blob came from the origin over the swarm")

	_, err = ac.Pull(pctx, "library/app", digest.FromString("nobody has this"), &got, nil)
	require.ErrorIs(t, err, client.ErrNotFound)

	cancel()
	require.NoError(t, <-agentDone)
	require.NoError(t, <-trackerDone)
	require.NoError(t, <-originDone)
}

func agentRole(t *testing.T) roles.Role {
	r, err := roles.Lookup("agent")
	require.NoError(t, err)
	return r
}
