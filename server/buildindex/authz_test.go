package buildindex

import (
	"context"
	"net"
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
		hc := httpserve.NewClient(httpserve.ClientOptions{DialTLS: func(d *net.Dialer) func(context.Context, string, string) (net.Conn, error) {
			return p.Dialer(d).DialContext
		}})
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
	_, err = agent.Remove(ctx, "a")
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
