package buildindex

import (
	"encoding/json"
	"net/http"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/krakenctl/krakenctl/server/api"
	"github.com/krakenctl/krakenctl/server/client"
	"github.com/krakenctl/krakenctl/server/httpserve"
	"github.com/krakenctl/krakenctl/server/pki"
	"github.com/krakenctl/krakenctl/server/registry/errcode"
	"github.com/krakenctl/krakenctl/tagstore"
)

// TestAuthorizeByCertificate runs a build-index with TLS: every component may read, only the
// proxy (and operators) may write tags and links, only operators may change the Raft group,
// and a client without a cluster certificate gets no connection at all. Refused writes change
// nothing.
func TestAuthorizeByCertificate(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	ca, err := pki.NewCA("test cluster")
	require.NoError(t, err)
	issue := func(name string, groups ...string) pki.Config {
		c, err := ca.IssueFiles(dir, name, pki.Leaf{Name: name, Groups: groups, Hosts: []string{"127.0.0.1"}})
		require.NoError(t, err)
		return c
	}
	load := func(c pki.Config) *pki.Provider {
		p, err := pki.Load(c)
		require.NoError(t, err)
		return p
	}
	nodeTLS := issue("a", pki.GroupBuildIndex)
	store := newFakeStore("a")
	var deps Deps
	deps.TLS = load(nodeTLS)
	n := startFake(t, store, deps, func(c *Config) { c.TLS = nodeTLS })

	as := func(c pki.Config) *client.BuildIndex {
		p := load(c)
		hc := httpserve.NewClient(httpserve.ClientOptions{DialTLS: p.DialTLS})
		t.Cleanup(hc.CloseIdleConnections)
		return client.NewBuildIndex(n.addr, hc)
	}
	agent, proxy, ops := as(issue("agent-1", pki.GroupAgent)), as(issue("proxy-1", pki.GroupProxy)), as(issue("ops", pki.GroupAdmin))
	ctx := t.Context()
	d := dig("manifest")

	_, err = proxy.PutTag(ctx, "team/app", "v1", d)
	require.NoError(t, err, "the proxy writes tags")
	written := store.writeCount()

	got, err := agent.GetTag(ctx, "team/app", "v1", false)
	require.NoError(t, err, "an agent reads tags")
	require.Equal(t, d, got.Digest)

	_, err = agent.PutTag(ctx, "team/app", "v1", dig("forged"))
	re := apiErr(t, err, http.StatusForbidden, errcode.CodeDenied)
	require.Contains(t, re.Message, "agent-1")
	_, err = agent.DeleteTag(ctx, "team/app", "v1")
	requireAPIErr(t, err, http.StatusForbidden, errcode.CodeDenied)
	_, err = agent.PutLink(ctx, "team/app", "blob/"+dig("x").String(), dig("x"))
	requireAPIErr(t, err, http.StatusForbidden, errcode.CodeDenied)
	_, err = proxy.Join(ctx, api.Member{ID: "evil", RaftAddr: "127.0.0.1:1", APIAddr: "127.0.0.1:2"})
	requireAPIErr(t, err, http.StatusForbidden, errcode.CodeDenied)
	_, err = agent.Remove(ctx, "a", false)
	requireAPIErr(t, err, http.StatusForbidden, errcode.CodeDenied)
	require.Equal(t, written, store.writeCount(), "refused writes changed nothing")
	got, err = ops.GetTag(ctx, "team/app", "v1", false)
	require.NoError(t, err)
	require.Equal(t, d, got.Digest, "the tag is as the proxy wrote it")

	// An operator may change the group.
	_, err = ops.Join(ctx, api.Member{ID: "b", RaftAddr: "127.0.0.1:7", APIAddr: "127.0.0.1:8"})
	require.NoError(t, err)
	require.Contains(t, store.Status().Members, tagstore.Member{ID: "b", RaftAddr: "127.0.0.1:7", APIAddr: "127.0.0.1:8"})

	// No certificate: no connection.
	plain := client.NewBuildIndex(n.addr, &http.Client{Timeout: 5 * time.Second})
	_, err = plain.GetTag(ctx, "team/app", "v1", false)
	require.Error(t, err)
}

// Joins and removals take an admin (attacks X5 and X6 needed nothing). A build-index node may
// ask to add itself, and a request forwarded by a member is taken on that member's word (it
// checked the request first); a build-index certificate alone adds or removes nobody else.
func TestMembershipNeedsAnAdminOverTLS(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	ca, err := pki.NewCA("test cluster")
	require.NoError(t, err)
	issue := func(name string, groups ...string) pki.Config {
		c, err := ca.IssueFiles(dir, name, pki.Leaf{Name: name, Groups: groups, Hosts: []string{"127.0.0.1"}})
		require.NoError(t, err)
		return c
	}
	nodeTLS := issue("n1", pki.GroupBuildIndex)
	store := newFakeStore("n1")
	var deps Deps
	deps.TLS, err = pki.Load(nodeTLS)
	require.NoError(t, err)
	n := startFake(t, store, deps, func(c *Config) { c.TLS = nodeTLS })
	as := func(name string, groups ...string) *http.Client {
		p, err := pki.Load(issue(name, groups...))
		require.NoError(t, err)
		hc := httpserve.NewClient(httpserve.ClientOptions{DialTLS: p.DialTLS})
		t.Cleanup(hc.CloseIdleConnections)
		return hc
	}
	members := func() int { return len(store.Status().Members) }
	member := func(id string) api.Member {
		return api.Member{ID: id, RaftAddr: "127.0.0.1:" + id[1:], APIAddr: "127.0.0.1:1" + id[1:]}
	}
	ctx := t.Context()

	for name, hc := range map[string]*http.Client{
		"an agent":                   as("agent-1", pki.GroupAgent),
		"a proxy":                    as("proxy-1", pki.GroupProxy),
		"a build-index node for n3":  as("n3", pki.GroupBuildIndex),
		"admin name, no admin group": as("admin", pki.GroupOrigin),
	} {
		_, err := client.NewBuildIndex(n.addr, hc).Join(ctx, member("n2"))
		requireAPIErr(t, err, http.StatusForbidden, errcode.CodeDenied)
		_, err = client.NewBuildIndex(n.addr, hc).Remove(ctx, "n1", true)
		requireAPIErr(t, err, http.StatusForbidden, errcode.CodeDenied)
		require.Equal(t, 1, members(), name)
	}
	ops := client.NewBuildIndex(n.addr, as("ops", pki.GroupAdmin))
	_, err = ops.Join(ctx, member("n2"))
	require.NoError(t, err)
	require.Equal(t, 2, members())

	// A node joins itself, but nobody else.
	n3 := as("n3", pki.GroupBuildIndex)
	_, err = client.NewBuildIndex(n.addr, n3).Join(ctx, member("n3"))
	require.NoError(t, err)
	require.Equal(t, 3, members())
	_, err = client.NewBuildIndex(n.addr, n3).Join(ctx, member("n4"))
	re := apiErr(t, err, http.StatusForbidden, errcode.CodeDenied)
	require.Equal(t, `n3 (groups [build-index]) may not add member n4: that needs a certificate of group "admin"`, re.Message)

	// Removals: a node removes nobody on its own authority; forwarded by that node, the
	// request is one it checked. An admin removes.
	remove := func(hc *http.Client, id, forwardedBy string) int {
		req, err := http.NewRequestWithContext(ctx, http.MethodDelete, "http://"+n.addr+api.ClusterMemberPath(id), nil)
		require.NoError(t, err)
		if forwardedBy != "" {
			req.Header.Set(HeaderForwardedBy, forwardedBy)
		}
		resp, err := hc.Do(req)
		require.NoError(t, err)
		require.NoError(t, resp.Body.Close())
		return resp.StatusCode
	}
	require.Equal(t, http.StatusForbidden, remove(n3, "n2", ""))
	require.Equal(t, http.StatusForbidden, remove(n3, "n2", "n1"), "the header names another node than the certificate")
	n9 := as("n9", pki.GroupBuildIndex)
	require.Equal(t, http.StatusForbidden, remove(n9, "n2", "n9"), "a build-index certificate of no member does not forward")
	require.Equal(t, 3, members())
	require.Equal(t, http.StatusOK, remove(n3, "n2", "n3"))
	_, err = ops.Remove(ctx, "n3", false)
	require.NoError(t, err)
	require.Equal(t, 1, members())
}

// Without TLS the membership API is open, as before TLS existed: the network is trusted by
// construction.
func TestMembershipWithoutTLS(t *testing.T) {
	t.Parallel()
	n := startFake(t, newFakeStore("n1"), Deps{}, nil)
	_, err := n.cli.Join(t.Context(), api.Member{ID: "n2", RaftAddr: "127.0.0.1:2", APIAddr: "127.0.0.1:12"})
	require.NoError(t, err)
	_, err = n.cli.Remove(t.Context(), "n2", false)
	require.NoError(t, err)
}

// A removal that would leave no quorum is refused with 409 QUORUM_AT_RISK naming why, unless
// forced.
func TestRemoveQuorumAtRisk(t *testing.T) {
	t.Parallel()
	store := newFakeStore("n1")
	for _, id := range []string{"n2", "n3"} {
		store.members = append(store.members, tagstore.Member{ID: id, RaftAddr: "127.0.0.1:" + id[1:], Suffrage: tagstore.SuffrageVoter})
	}
	store.quorumAtRisk = true
	n := startFake(t, store, Deps{}, nil)
	ctx := t.Context()

	_, err := n.cli.Remove(ctx, "n2", false)
	re := apiErr(t, err, http.StatusConflict, errcode.CodeQuorumAtRisk)
	require.Equal(t, "refused to remove n2: would leave no quorum: the 2 voters left (a, b) need 2 live for a quorum, "+
		"but only 1 answer (b do not) (force=true removes it anyway)", re.Message)
	require.Len(t, store.Status().Members, 3)

	st, err := n.cli.Remove(ctx, "n2", true)
	require.NoError(t, err)
	require.Len(t, st.Members, 2)

	req, err := http.NewRequestWithContext(ctx, http.MethodDelete, "http://"+n.addr+api.ClusterMemberPath("n3")+"?force=maybe", nil)
	require.NoError(t, err)
	resp, err := http.DefaultClient.Do(req)
	require.NoError(t, err)
	var eb errcode.Body
	require.NoError(t, json.NewDecoder(resp.Body).Decode(&eb))
	require.NoError(t, resp.Body.Close())
	require.Equal(t, http.StatusBadRequest, resp.StatusCode)
	require.Equal(t, `invalid force="maybe": want true or false`, eb.Errors[0].Message)
	require.Len(t, store.Status().Members, 2)
}
