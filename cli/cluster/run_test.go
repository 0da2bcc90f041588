package cluster

import (
	"bytes"
	"encoding/json"
	"net/http"
	"regexp"
	"testing"
	"time"

	"github.com/opencontainers/go-digest"
	"github.com/stretchr/testify/require"

	"github.com/krakenctl/krakenctl/backend/memory"
	"github.com/krakenctl/krakenctl/cli/endpoints"
	"github.com/krakenctl/krakenctl/cli/iostreams"
	"github.com/krakenctl/krakenctl/server/api"
	"github.com/krakenctl/krakenctl/server/buildindex"
	"github.com/krakenctl/krakenctl/server/client"
	"github.com/krakenctl/krakenctl/server/registry/errcode"
)

func realDeps(t *testing.T, addrs ...string) (deps, *bytes.Buffer, *bytes.Buffer) {
	ios, _, out, errOut := iostreams.Test()
	hc := testClient(t)
	return deps{
		IO:         ios,
		HTTPClient: func() *http.Client { return hc },
		Env:        func(string) string { return "" },
		NewAPI:     func(addr string, hc *http.Client) API { return client.NewBuildIndex(addr, hc) },
		BuildIndex: endpoints.BuildIndexFlags{Addrs: addrs},
	}, out, errOut
}

func TestMembershipAgainstACluster(t *testing.T) {
	t.Parallel()
	ctx := t.Context()
	nodes := startCluster(t, 3, nil)
	st := waitMembers(t, nodes, 3)
	follower := nodes[0]
	for _, n := range nodes {
		if n.id != st.LeaderID {
			follower = n
		}
	}

	// Status as a follower sees it: three voters, the leader marked.
	d, out, _ := realDeps(t, follower.apiAddr)
	require.NoError(t, statusRun(ctx, &StatusOptions{deps: d, Output: "table"}))
	table := out.String()
	for _, n := range nodes {
		row := `(?m)^` + n.id
		if n == follower {
			row += ` \(answered\)`
		}
		row += `\s+` + regexp.QuoteMeta(n.raftAddr) + `\s+` + regexp.QuoteMeta(n.apiAddr) + `\s+voter`
		if n.id == st.LeaderID {
			row += `\s+\*$`
		} else {
			row += `\s*$`
		}
		require.Regexp(t, row, table)
	}
	require.Contains(t, table, "Leader:      "+st.LeaderID+" at ")
	require.Regexp(t, `Answered by: `+follower.id+` \(follower\)\n`, table)
	require.Regexp(t, `Term:        [1-9]\d*\n`, table)
	require.Regexp(t, `Indexes:     commit [1-9]\d*, applied [1-9]\d*, last log [1-9]\d*, last snapshot \d+\n`, table)

	// A fourth node, started without bootstrap or join, is added through a follower.
	fourth := startNode(t, "n3", false, "", nil)
	d, out, errOut := realDeps(t, follower.apiAddr)
	require.NoError(t, joinRun(ctx, &JoinOptions{deps: d, Member: api.Member{ID: "n3", RaftAddr: fourth.raftAddr, APIAddr: fourth.apiAddr}, Output: "table"}))
	require.Equal(t, "n3 joined the cluster\n", errOut.String())
	require.Regexp(t, `(?m)^n3\s+`+regexp.QuoteMeta(fourth.raftAddr)+`\s+`+regexp.QuoteMeta(fourth.apiAddr)+`\s+voter`, out.String())
	waitMembers(t, append(nodes, fourth), 4)

	// Joining an ID that is a member at another address is refused, and changes nothing.
	d, out, _ = realDeps(t, follower.apiAddr)
	err := joinRun(ctx, &JoinOptions{deps: d, Member: api.Member{ID: "n3", RaftAddr: "127.0.0.1:1", APIAddr: "127.0.0.1:2"}, Output: "table"})
	var re *errcode.Error
	require.ErrorAs(t, err, &re)
	require.Equal(t, http.StatusConflict, re.Status, "%v", err)
	require.Empty(t, out.String())

	// Remove it again, as JSON.
	d, out, _ = realDeps(t, nodes[0].apiAddr)
	require.NoError(t, removeRun(ctx, &RemoveOptions{deps: d, ID: "n3", Output: "json"}))
	var after api.ClusterStatus
	require.NoError(t, json.Unmarshal(out.Bytes(), &after), out.String())
	require.Len(t, after.Members, 3)
	for _, m := range after.Members {
		require.NotEqual(t, "n3", m.ID)
	}
	d, _, _ = realDeps(t, nodes[0].apiAddr)
	require.ErrorIs(t, removeRun(ctx, &RemoveOptions{deps: d, ID: "n3", Output: "table"}), ErrUnknownMember)

	// Without a storage backend there is nothing to restore from.
	d, out, _ = realDeps(t, nodes[1].apiAddr)
	err = restoreRun(ctx, &RestoreOptions{deps: d, Output: "table"})
	require.ErrorContains(t, err, "no storage backend is configured")
	require.Empty(t, out.String())
}

func TestRestoreFromTheBackend(t *testing.T) {
	t.Parallel()
	ctx := t.Context()
	be := memory.New()
	old := startNode(t, "old", true, "", be)
	waitMembers(t, []*biNode{old}, 1)
	tags := []string{"v1", "v2", "v3"}
	for _, tag := range tags {
		_, err := old.cli.PutTag(ctx, "team/app", tag, digest.FromString(tag))
		require.NoError(t, err)
	}
	require.Eventually(t, func() bool {
		for _, tag := range tags {
			if _, ok := be.Peek(buildindex.DefaultTagsNamespace, buildindex.ObjectName("team/app", tag)); !ok {
				return false
			}
		}
		return true
	}, 30*time.Second, 10*time.Millisecond, "the tags are written back")

	// A new cluster on the same backend starts empty; restore brings the tags back.
	fresh := startNode(t, "fresh", true, "", be)
	waitMembers(t, []*biNode{fresh}, 1)
	d, out, _ := realDeps(t, fresh.apiAddr)
	require.NoError(t, restoreRun(ctx, &RestoreOptions{deps: d, Output: "table"}))
	require.Equal(t, "restored tags from the storage backend: 3 imported, 0 skipped\n", out.String())
	got, err := fresh.cli.GetTag(ctx, "team/app", "v2", false)
	require.NoError(t, err)
	require.Equal(t, digest.FromString("v2"), got.Digest)

	// Again: everything is already there.
	d, out, _ = realDeps(t, fresh.apiAddr)
	require.NoError(t, restoreRun(ctx, &RestoreOptions{deps: d, Output: "json"}))
	require.JSONEq(t, `{"imported":0,"skipped":3}`, out.String())
}
