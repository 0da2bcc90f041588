package cluster

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"syscall"
	"testing"
	"time"

	"github.com/opencontainers/go-digest"
	"github.com/spf13/cobra"
	"github.com/stretchr/testify/require"

	"github.com/krakenctl/krakenctl/cli/cmdutil"
	"github.com/krakenctl/krakenctl/cli/cmdutil/cmdutiltest"
	"github.com/krakenctl/krakenctl/cli/iostreams"
	"github.com/krakenctl/krakenctl/server/buildindex"
	"github.com/krakenctl/krakenctl/server/client"
	"github.com/krakenctl/krakenctl/server/config"
	"github.com/krakenctl/krakenctl/server/role"
	"github.com/krakenctl/krakenctl/tagstore"
)

func Test_NewCmdRecover(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name    string
		args    []string
		wantErr string
		want    RecoverOptions
	}{
		{name: "members", args: []string{"-c", "bi.yaml", "--member", "bi-1=10.0.0.1:15101", "--member", "bi-2=10.0.0.2:15101"},
			want: RecoverOptions{ConfigPath: "bi.yaml", Members: []string{"bi-1=10.0.0.1:15101", "bi-2=10.0.0.2:15101"}, Output: "table"}},
		{name: "drop", args: []string{"--config", "bi.yaml", "--drop", "bi-3", "-o", "json"},
			want: RecoverOptions{ConfigPath: "bi.yaml", Drop: []string{"bi-3"}, Output: "json"}},
		{name: "no config", args: []string{"--drop", "bi-3"}, wantErr: "--config is required"},
		{name: "neither", args: []string{"-c", "bi.yaml"}, wantErr: "give either --member (every survivor) or --drop (every lost node)"},
		{name: "both", args: []string{"-c", "bi.yaml", "--drop", "bi-3", "--member", "bi-1=a:1"}, wantErr: "give either"},
		{name: "member without address", args: []string{"-c", "bi.yaml", "--member", "bi-1"}, wantErr: `invalid --member: "bi-1": want ID=RAFTADDR`},
		{name: "bad address", args: []string{"-c", "bi.yaml", "--member", "bi-1=nowhere"}, wantErr: "invalid --member"},
		{name: "bad drop", args: []string{"-c", "bi.yaml", "--drop", "a/b"}, wantErr: "invalid --drop"},
		{name: "argument", args: []string{"-c", "bi.yaml", "--drop", "bi-3", "bi-4"}, wantErr: "recover takes no arguments"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			var got *RecoverOptions
			err := cmdutiltest.Execute(t, func(f *cmdutil.Factory) *cobra.Command {
				return NewCmdRecover(f, func(_ context.Context, o *RecoverOptions) error { got = o; return nil })
			}, tt.args...)
			if tt.wantErr != "" {
				cmdutiltest.RequireUsageError(t, err, tt.wantErr, got != nil)
				return
			}
			require.NoError(t, err)
			got.IO = nil
			require.Equal(t, tt.want, *got)
		})
	}
}

// fileNode is a build-index node run from a config file, on fixed loopback addresses, so it
// can be stopped and started again on the same state.
type fileNode struct {
	t      *testing.T
	id     string
	path   string
	cfg    buildindex.Config
	cli    *client.BuildIndex
	cancel func()
	errc   chan error
}

// writeNode writes a config file for node id on free loopback ports.
func writeNode(t *testing.T, dir, id string, bootstrap bool, join string) *fileNode {
	t.Helper()
	ports := make([]string, 2)
	for i := range ports {
		ln, err := net.Listen("tcp", "127.0.0.1:0")
		require.NoError(t, err)
		ports[i] = ln.Addr().String()
		require.NoError(t, ln.Close())
	}
	doc := fmt.Sprintf(`listen: %s
raft_listen: %s
admin_listen: 127.0.0.1:0
dir: %s
verify_content: false
raft:
  node_id: %s
  bootstrap: %t
  heartbeat_timeout: 300ms
  election_timeout: 300ms
  leader_lease_timeout: 150ms
  commit_timeout: 5ms
`, ports[0], ports[1], filepath.Join(dir, id), id, bootstrap)
	if join != "" {
		doc += "join: [" + join + "]\n"
	}
	path := filepath.Join(dir, id+".yaml")
	require.NoError(t, os.WriteFile(path, []byte(doc), 0o600))
	n := &fileNode{t: t, id: id, path: path}
	require.NoError(t, config.Load(path, &n.cfg))
	n.cli = client.NewBuildIndex(n.cfg.Listen, testClient(t))
	t.Cleanup(n.stop)
	return n
}

func listenRetry(t *testing.T, addr string) net.Listener {
	t.Helper()
	deadline := time.Now().Add(30 * time.Second)
	for {
		ln, err := net.Listen("tcp", addr)
		if err == nil {
			return ln
		}
		if !errors.Is(err, syscall.EADDRINUSE) || time.Now().After(deadline) {
			t.Fatalf("listen on %s: %v", addr, err)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

func (n *fileNode) start() {
	n.t.Helper()
	var cfg buildindex.Config
	require.NoError(n.t, config.Load(n.path, &cfg))
	hl, rl := listenRetry(n.t, cfg.Listen), listenRetry(n.t, cfg.RaftListen)
	srv, err := buildindex.New(cfg, buildindex.Deps{Deps: role.Deps{Listener: hl, HTTPClient: testClient(n.t)}, RaftListener: rl})
	require.NoError(n.t, err)
	ctx, cancel := context.WithCancel(context.Background())
	n.cancel, n.errc = cancel, make(chan error, 1)
	go func() { n.errc <- srv.Run(ctx) }()
}

func (n *fileNode) stop() {
	if n.cancel == nil {
		return
	}
	n.cancel()
	require.NoError(n.t, <-n.errc)
	n.cancel = nil
}

// The peers.json procedure as a command: a cluster of three loses two nodes for good; the
// survivor, stopped, is recovered from its config file with the lost ones dropped, started
// again, elects itself and serves every acknowledged tag.
func TestRecoverFromTheSurvivor(t *testing.T) {
	t.Parallel()
	ctx := t.Context()
	dir := t.TempDir()
	n0 := writeNode(t, dir, "n0", true, "")
	n0.start()
	nodes := []*fileNode{n0, writeNode(t, dir, "n1", false, n0.cfg.Listen), writeNode(t, dir, "n2", false, n0.cfg.Listen)}
	nodes[1].start()
	nodes[2].start()
	require.Eventually(t, func() bool {
		st, err := n0.cli.ClusterStatus(ctx)
		return err == nil && len(st.Members) == 3 && st.LeaderID != ""
	}, 60*time.Second, 20*time.Millisecond)

	acked := map[string]digest.Digest{}
	for i := range 10 {
		tag := fmt.Sprintf("v%d", i)
		require.Eventually(t, func() bool {
			got, err := nodes[i%3].cli.PutTag(ctx, "team/app", tag, digest.FromString(tag))
			acked[tag] = got.Digest
			return err == nil
		}, 30*time.Second, 20*time.Millisecond)
	}
	for _, n := range nodes {
		n.stop()
	}

	ios, _, out, _ := iostreams.Test()
	err := recoverRun(ctx, &RecoverOptions{IO: ios, ConfigPath: n0.path, Drop: []string{"n9"}, Output: "table"})
	require.ErrorIs(t, err, tagstore.ErrInvalid)
	require.ErrorContains(t, err, "n9 is not in the stored configuration")
	require.Empty(t, out.String())

	ios, _, out, _ = iostreams.Test()
	require.NoError(t, recoverRun(ctx, &RecoverOptions{IO: ios, ConfigPath: n0.path, Drop: []string{"n1", "n2"}, Output: "json"}))
	var res recoverResult
	require.NoError(t, json.Unmarshal(out.Bytes(), &res), out.String())
	require.Equal(t, "n0", res.NodeID)
	require.Equal(t, len(acked), res.Tags)
	require.Len(t, res.Before, 3)
	require.Len(t, res.Members, 1)
	require.Equal(t, n0.cfg.RaftListen, res.Members[0].RaftAddr)

	// Naming the members instead gives the same configuration; the table shows the change.
	ios, _, out, _ = iostreams.Test()
	require.NoError(t, recoverRun(ctx, &RecoverOptions{IO: ios, ConfigPath: n0.path, Members: []string{"n0=" + n0.cfg.RaftListen}, Output: "table"}))
	require.Contains(t, out.String(), fmt.Sprintf("Recovered n0 (%s): %d tags and 0 links at log index ", n0.cfg.Raft.Dir, len(acked)))
	require.Regexp(t, `(?m)^ID\s+RAFT ADDR\s+SUFFRAGE\s+BEFORE\s+NOW$`, out.String())
	require.Regexp(t, `(?m)^n0\s+`+n0.cfg.RaftListen+`\s+voter\s+yes\s+yes$`, out.String())
	require.Contains(t, out.String(), "Recover every other survivor with the same membership before starting any of them")

	n0.start()
	require.Eventually(t, func() bool {
		st, err := n0.cli.ClusterStatus(ctx)
		return err == nil && st.LeaderID == "n0" && len(st.Members) == 1
	}, 60*time.Second, 20*time.Millisecond, "the survivor leads alone")
	for tag, want := range acked {
		got, err := n0.cli.GetTag(ctx, "team/app", tag, false)
		require.NoError(t, err, tag)
		require.Equal(t, want, got.Digest, tag)
	}
	_, err = n0.cli.PutTag(ctx, "team/app", "after", digest.FromString("after"))
	require.NoError(t, err)

	// Running, it cannot be recovered.
	ios, _, _, _ = iostreams.Test()
	err = recoverRun(ctx, &RecoverOptions{IO: ios, ConfigPath: n0.path, Members: []string{"n0=" + n0.cfg.RaftListen}, Output: "table"})
	require.ErrorContains(t, err, "stop the node first")
}
