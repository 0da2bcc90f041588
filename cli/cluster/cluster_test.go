package cluster

import (
	"bytes"
	"context"
	"fmt"
	"net"
	"net/http"
	"os"
	"strings"
	"syscall"
	"testing"

	"github.com/spf13/cobra"
	"github.com/stretchr/testify/require"
	"go.uber.org/goleak"

	"github.com/krakenctl/krakenctl/tagstore/tagstoretest"

	"github.com/krakenctl/krakenctl/cli/cmdutil"
	"github.com/krakenctl/krakenctl/cli/cmdutil/cmdutiltest"
	"github.com/krakenctl/krakenctl/cli/endpoints"
	"github.com/krakenctl/krakenctl/cli/iostreams"
	"github.com/krakenctl/krakenctl/server/api"
	"github.com/krakenctl/krakenctl/server/client"
	"github.com/krakenctl/krakenctl/server/registry/errcode"
)

func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m, tagstoretest.IgnoreLeftovers())
}

func Test_NewCmdStatus(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name      string
		args      []string
		wantOut   string
		wantNodes endpoints.BuildIndexFlags
		wantErr   string
	}{
		{name: "defaults", wantOut: "table"},
		{name: "json and nodes", args: []string{"-o", "json", "--build-index", "a:1", "--build-index", "b:2"}, wantOut: "json",
			wantNodes: endpoints.BuildIndexFlags{Addrs: []string{"a:1", "b:2"}}},
		{name: "argument", args: []string{"x"}, wantErr: "status takes no arguments, got 1 arguments"},
		{name: "bad output", args: []string{"-o", "wide"}, wantErr: `invalid --output "wide"`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			var got *StatusOptions
			err := cmdutiltest.Execute(t, func(f *cmdutil.Factory) *cobra.Command {
				return NewCmdStatus(f, func(_ context.Context, o *StatusOptions) error { got = o; return nil })
			}, tt.args...)
			if tt.wantErr != "" {
				cmdutiltest.RequireUsageError(t, err, tt.wantErr, got != nil)
				return
			}
			require.NoError(t, err)
			require.Equal(t, tt.wantOut, got.Output)
			require.Equal(t, tt.wantNodes, got.BuildIndex)
			require.NotNil(t, got.NewAPI)
		})
	}
}

func Test_NewCmdJoin(t *testing.T) {
	t.Parallel()
	ok := []string{"--id", "bi-4", "--raft-addr", "10.0.0.4:7000", "--api-addr", "10.0.0.4:15100"}
	with := func(extra ...string) []string { return append(append([]string(nil), ok...), extra...) }
	tests := []struct {
		name    string
		args    []string
		want    api.Member
		wantErr string
	}{
		{name: "all flags", args: ok, want: api.Member{ID: "bi-4", RaftAddr: "10.0.0.4:7000", APIAddr: "10.0.0.4:15100"}},
		{name: "missing id", args: []string{"--raft-addr", "a:1", "--api-addr", "b:2"}, wantErr: "invalid --id: invalid node ID: empty"},
		{name: "id with space", args: []string{"--id", "bi 4", "--raft-addr", "a:1", "--api-addr", "b:2"}, wantErr: `invalid --id: invalid node ID "bi 4"`},
		{name: "missing raft addr", args: []string{"--id", "x", "--api-addr", "b:2"}, wantErr: "invalid --raft-addr"},
		{name: "raft addr without port", args: []string{"--id", "x", "--raft-addr", "a", "--api-addr", "b:2"}, wantErr: "invalid --raft-addr"},
		{name: "api addr is a URL", args: []string{"--id", "x", "--raft-addr", "a:1", "--api-addr", "http://b:2"}, wantErr: "invalid --api-addr"},
		{name: "positional", args: with("extra"), wantErr: "join takes no arguments"},
		{name: "bad output", args: with("-o", "x"), wantErr: "invalid --output"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			var got *JoinOptions
			err := cmdutiltest.Execute(t, func(f *cmdutil.Factory) *cobra.Command {
				return NewCmdJoin(f, func(_ context.Context, o *JoinOptions) error { got = o; return nil })
			}, tt.args...)
			if tt.wantErr != "" {
				cmdutiltest.RequireUsageError(t, err, tt.wantErr, got != nil)
				return
			}
			require.NoError(t, err)
			require.Equal(t, tt.want, got.Member)
		})
	}
}

func Test_NewCmdRemove(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name      string
		args      []string
		wantErr   string
		wantForce bool
	}{
		{name: "id", args: []string{"bi-3"}},
		{name: "forced", args: []string{"bi-3", "--force"}, wantForce: true},
		{name: "none", wantErr: "remove takes one node ID argument, got 0 arguments"},
		{name: "slash", args: []string{"a/b"}, wantErr: "invalid ID"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			var got *RemoveOptions
			err := cmdutiltest.Execute(t, func(f *cmdutil.Factory) *cobra.Command {
				return NewCmdRemove(f, func(_ context.Context, o *RemoveOptions) error { got = o; return nil })
			}, tt.args...)
			if tt.wantErr != "" {
				cmdutiltest.RequireUsageError(t, err, tt.wantErr, got != nil)
				return
			}
			require.NoError(t, err)
			require.Equal(t, tt.args[0], got.ID)
			require.Equal(t, tt.wantForce, got.Force)
		})
	}
}

func Test_NewCmdRestore(t *testing.T) {
	t.Parallel()
	var got *RestoreOptions
	err := cmdutiltest.Execute(t, func(f *cmdutil.Factory) *cobra.Command {
		return NewCmdRestore(f, func(_ context.Context, o *RestoreOptions) error { got = o; return nil })
	}, "-o", "json", "--build-index", "a:1")
	require.NoError(t, err)
	require.Equal(t, "json", got.Output)
	require.Equal(t, []string{"a:1"}, got.BuildIndex.Addrs)

	got = nil
	err = cmdutiltest.Execute(t, func(f *cmdutil.Factory) *cobra.Command {
		return NewCmdRestore(f, func(_ context.Context, o *RestoreOptions) error { got = o; return nil })
	}, "now")
	cmdutiltest.RequireUsageError(t, err, "restore takes no arguments", got != nil)
}

// fakeNode answers with fixed values and records what it was asked.
type fakeNode struct {
	st     api.ClusterStatus
	rr     api.RestoreResult
	joined []api.Member
	err    error
	// quorumAtRisk makes a removal that is not forced fail as the build-index refuses one.
	quorumAtRisk bool
}

func (f *fakeNode) ClusterStatus(context.Context) (api.ClusterStatus, error) { return f.st, f.err }
func (f *fakeNode) Join(_ context.Context, m api.Member) (api.ClusterStatus, error) {
	if f.err != nil {
		return api.ClusterStatus{}, f.err
	}
	f.joined = append(f.joined, m)
	m.Suffrage = "voter"
	f.st.Members = append(f.st.Members, m)
	return f.st, nil
}
func (f *fakeNode) Remove(_ context.Context, id string, force bool) (api.ClusterStatus, error) {
	if f.quorumAtRisk && !force {
		return api.ClusterStatus{}, fmt.Errorf("remove member %s: %w", id, &errcode.Error{Status: http.StatusConflict,
			Code: errcode.CodeQuorumAtRisk, Message: "refused to remove " + id + ": would leave no quorum"})
	}
	for i, m := range f.st.Members {
		if m.ID == id {
			f.st.Members = append(f.st.Members[:i], f.st.Members[i+1:]...)
			return f.st, nil
		}
	}
	return api.ClusterStatus{}, fmt.Errorf("remove member %s: %w", id, client.ErrNotFound)
}
func (f *fakeNode) Restore(context.Context) (api.RestoreResult, error) { return f.rr, f.err }

type downNode struct{}

func (downNode) err() error {
	return &net.OpError{Op: "dial", Net: "tcp", Err: os.NewSyscallError("connect", syscall.ECONNREFUSED)}
}
func (d downNode) ClusterStatus(context.Context) (api.ClusterStatus, error) {
	return api.ClusterStatus{}, d.err()
}
func (d downNode) Join(context.Context, api.Member) (api.ClusterStatus, error) {
	return api.ClusterStatus{}, d.err()
}
func (d downNode) Remove(context.Context, string, bool) (api.ClusterStatus, error) {
	return api.ClusterStatus{}, d.err()
}
func (d downNode) Restore(context.Context) (api.RestoreResult, error) {
	return api.RestoreResult{}, d.err()
}

func fakeDeps(node API) (deps, *bytes.Buffer, *bytes.Buffer) {
	ios, _, out, errOut := iostreams.Test()
	return deps{
		IO:         ios,
		HTTPClient: func() *http.Client { return &http.Client{} },
		Env:        func(string) string { return "" },
		NewAPI: func(addr string, _ *http.Client) API {
			if addr == "up:1" {
				return node
			}
			return downNode{}
		},
		BuildIndex: endpoints.BuildIndexFlags{Addrs: []string{"down:1", "up:1"}},
	}, out, errOut
}

func threeNodes() api.ClusterStatus {
	return api.ClusterStatus{
		ID: "bi-2", State: "follower", LeaderID: "bi-1", LeaderAPIAddr: "127.0.0.1:15100",
		Term: 7, CommitIndex: 120, AppliedIndex: 119, LastLogIndex: 121, LastSnapshotIndex: 100,
		Members: []api.Member{
			{ID: "bi-1", RaftAddr: "127.0.0.1:7000", APIAddr: "127.0.0.1:15100", Suffrage: "voter", Leader: true},
			{ID: "bi-2", RaftAddr: "127.0.0.1:7001", APIAddr: "127.0.0.1:15101", Suffrage: "voter"},
			{ID: "bi-3", RaftAddr: "127.0.0.1:7002", Suffrage: "nonvoter"},
		},
	}
}

func TestStatus(t *testing.T) {
	t.Parallel()
	d, out, _ := fakeDeps(&fakeNode{st: threeNodes()})
	require.NoError(t, statusRun(t.Context(), &StatusOptions{deps: d, Output: "table"}))
	lines := strings.Split(out.String(), "\n")
	require.Regexp(t, `^ID\s+RAFT ADDR\s+API ADDR\s+SUFFRAGE\s+LEADER$`, lines[0])
	require.Regexp(t, `^bi-1\s+127.0.0.1:7000\s+127.0.0.1:15100\s+voter\s+\*$`, lines[1])
	require.Regexp(t, `^bi-2 \(answered\)\s+127.0.0.1:7001\s+127.0.0.1:15101\s+voter\s*$`, lines[2])
	require.Regexp(t, `^bi-3\s+127.0.0.1:7002\s+-\s+nonvoter\s*$`, lines[3])
	require.Contains(t, out.String(), "\nAnswered by: bi-2 (follower)\nLeader:      bi-1 at 127.0.0.1:15100\nTerm:        7\n"+
		"Indexes:     commit 120, applied 119, last log 121, last snapshot 100\n")

	// Without a leader.
	st := threeNodes()
	st.LeaderID, st.LeaderAPIAddr, st.State = "", "", "candidate"
	st.Members[0].Leader = false
	d, out, _ = fakeDeps(&fakeNode{st: st})
	require.NoError(t, statusRun(t.Context(), &StatusOptions{deps: d, Output: "table"}))
	require.NotContains(t, out.String(), "*")
	require.Contains(t, out.String(), "Leader:      none (no quorum, or an election is running)\n")

	// JSON is the API document.
	d, out, _ = fakeDeps(&fakeNode{st: threeNodes()})
	require.NoError(t, statusRun(t.Context(), &StatusOptions{deps: d, Output: "json"}))
	require.Contains(t, out.String(), `"last_snapshot_index": 100`)
	require.Contains(t, out.String(), `"leader_id": "bi-1"`)
}

func TestJoinRemoveRestore(t *testing.T) {
	t.Parallel()
	node := &fakeNode{st: threeNodes(), rr: api.RestoreResult{Imported: 12, Skipped: 3}}
	m := api.Member{ID: "bi-4", RaftAddr: "127.0.0.1:7003", APIAddr: "127.0.0.1:15103"}

	d, out, errOut := fakeDeps(node)
	require.NoError(t, joinRun(t.Context(), &JoinOptions{deps: d, Member: m, Output: "table"}))
	require.Equal(t, []api.Member{m}, node.joined)
	require.Equal(t, "bi-4 joined the cluster\n", errOut.String())
	require.Regexp(t, `(?m)^bi-4\s+127.0.0.1:7003\s+127.0.0.1:15103\s+voter\s*$`, out.String())

	d, out, errOut = fakeDeps(node)
	require.NoError(t, removeRun(t.Context(), &RemoveOptions{deps: d, ID: "bi-3", Output: "json"}))
	require.Empty(t, errOut.String(), "json output says nothing else")
	require.NotContains(t, out.String(), `"bi-3"`)
	require.Contains(t, out.String(), `"bi-4"`)

	d, out, _ = fakeDeps(node)
	err := removeRun(t.Context(), &RemoveOptions{deps: d, ID: "bi-9", Output: "table"})
	require.ErrorIs(t, err, ErrUnknownMember)
	require.EqualError(t, err, "remove bi-9: no such member in the cluster (see `krakenctl cluster status`)")
	require.Empty(t, out.String())

	d, out, _ = fakeDeps(node)
	require.NoError(t, restoreRun(t.Context(), &RestoreOptions{deps: d, Output: "table"}))
	require.Equal(t, "restored tags from the storage backend: 12 imported, 3 skipped\n", out.String())
	d, out, _ = fakeDeps(node)
	require.NoError(t, restoreRun(t.Context(), &RestoreOptions{deps: d, Output: "json"}))
	require.JSONEq(t, `{"imported":12,"skipped":3}`, out.String())

	// A removal that would lose the quorum is refused, and the message says how to force it.
	risky := &fakeNode{st: threeNodes(), quorumAtRisk: true}
	d, out, _ = fakeDeps(risky)
	err = removeRun(t.Context(), &RemoveOptions{deps: d, ID: "bi-2", Output: "table"})
	require.ErrorContains(t, err, "would leave no quorum\nRemove the nodes that are down first, or bring them back; --force removes bi-2 anyway")
	require.Empty(t, out.String())
	require.Len(t, risky.st.Members, 3)
	d, out, _ = fakeDeps(risky)
	require.NoError(t, removeRun(t.Context(), &RemoveOptions{deps: d, ID: "bi-2", Force: true, Output: "table"}))
	require.NotRegexp(t, `(?m)^bi-2\s`, out.String())
	require.Len(t, risky.st.Members, 2)

	// A refusal from the node that answered is the command's error, and no other node is asked.
	refused := &fakeNode{err: fmt.Errorf("join member bi-1: 409 conflict: already a member")}
	d, out, _ = fakeDeps(refused)
	err = joinRun(t.Context(), &JoinOptions{deps: d, Member: m, Output: "table"})
	require.ErrorContains(t, err, "409 conflict")
	require.Empty(t, out.String())
}
