package tag

import (
	"bytes"
	"crypto/rand"
	"encoding/json"
	"fmt"
	"net"
	"net/http"
	"strings"
	"testing"

	"github.com/opencontainers/go-digest"
	"github.com/stretchr/testify/require"

	"github.com/krakenctl/krakenctl/cli/endpoints"
	"github.com/krakenctl/krakenctl/cli/iostreams"
	"github.com/krakenctl/krakenctl/server/api"
	"github.com/krakenctl/krakenctl/server/client"
	"github.com/krakenctl/krakenctl/server/cluster"
	"github.com/krakenctl/krakenctl/server/registry/errcode"
)

// realDeps returns deps that talk to the build-index nodes at addrs through the real client.
func realDeps(t *testing.T, addrs ...string) (deps, *bytes.Buffer, *bytes.Buffer) {
	ios, _, out, errOut := iostreams.Test()
	tr := &http.Transport{}
	t.Cleanup(tr.CloseIdleConnections)
	hc := &http.Client{Transport: tr}
	return deps{
		IO:         ios,
		HTTPClient: func() *http.Client { return hc },
		Env:        func(string) string { return "" },
		NewAPI:     func(addr string, hc *http.Client) API { return client.NewBuildIndex(addr, hc) },
		BuildIndex: endpoints.BuildIndexFlags{Addrs: addrs},
	}, out, errOut
}

// deadAddr is a loopback address where nothing listens.
func deadAddr(t *testing.T) string {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	addr := ln.Addr().String()
	require.NoError(t, ln.Close())
	return addr
}

func TestTagsAgainstACluster(t *testing.T) {
	t.Parallel()
	ctx := t.Context()
	addrs := startCluster(t, 0, 3).Addrs(cluster.BuildIndex)
	d1 := digest.FromString("one")
	d2 := digest.FromString("two")
	ref := Ref{"team/app", "prod"}

	// Put through one node (a dead address first: it is skipped), then move the tag through
	// another: every node's linearizable read sees the last value at once.
	d, out, _ := realDeps(t, deadAddr(t), addrs[1])
	require.NoError(t, putRun(ctx, &PutOptions{deps: d, Ref: ref, Digest: d1, Output: "table"}))
	require.Regexp(t, `^team/app:prod -> `+d1.String()+` \(index \d+\)\n$`, out.String())
	d, out, _ = realDeps(t, addrs[2])
	require.NoError(t, putRun(ctx, &PutOptions{deps: d, Ref: ref, Digest: d2, Output: "json"}))
	var put api.Tag
	require.NoError(t, json.Unmarshal(out.Bytes(), &put))
	require.Equal(t, d2, put.Digest)
	for _, a := range addrs {
		d, out, _ = realDeps(t, a)
		require.NoError(t, getRun(ctx, &GetOptions{deps: d, Ref: ref, Output: "table"}))
		require.Equal(t, d2.String()+"\n", out.String(), "linearizable read on %s", a)
	}
	d, out, _ = realDeps(t, addrs[0])
	require.NoError(t, getRun(ctx, &GetOptions{deps: d, Ref: ref, Output: "json"}))
	var got api.Tag
	require.NoError(t, json.Unmarshal(out.Bytes(), &got))
	require.Equal(t, put, got, "get -o json is the stored tag")

	// Listing: several pages, and --all follows them.
	for i := range 5 {
		d, _, _ = realDeps(t, addrs[i%3])
		require.NoError(t, putRun(ctx, &PutOptions{deps: d, Ref: Ref{"team/other", fmt.Sprintf("v%d", i)}, Digest: d1, Output: "table"}))
	}
	d, out, errOut := realDeps(t, addrs[1])
	require.NoError(t, listRun(ctx, &ListOptions{deps: d, Repo: "team/other", N: 2, Output: "table"}))
	require.Equal(t, "TAG\nv0\nv1\n", out.String())
	require.Equal(t, "more after v1: add --last v1, or --all\n", errOut.String())
	d, out, _ = realDeps(t, addrs[2])
	require.NoError(t, listRun(ctx, &ListOptions{deps: d, Repo: "team/other", N: 2, Last: "v0", All: true, Output: "json"}))
	require.JSONEq(t, `{"name":"team/other","tags":["v1","v2","v3","v4"]}`, out.String())
	d, out, _ = realDeps(t, addrs[0])
	require.NoError(t, listRun(ctx, &ListOptions{deps: d, All: true, N: 1, Output: "table"}))
	require.Equal(t, "REPOSITORY\nteam/app\nteam/other\n", out.String())

	// Delete, then the tag is gone everywhere.
	d, out, _ = realDeps(t, addrs[2])
	require.NoError(t, deleteRun(ctx, &DeleteOptions{deps: d, Ref: ref, Output: "table"}))
	require.Equal(t, "deleted team/app:prod (was "+d2.String()+")\n", out.String())
	for _, a := range addrs {
		d, out, _ = realDeps(t, a)
		err := getRun(ctx, &GetOptions{deps: d, Ref: ref, Output: "table"})
		require.EqualError(t, err, "tag team/app:prod not found")
		require.Empty(t, out.String())
	}
	d, _, _ = realDeps(t, addrs[0])
	require.EqualError(t, deleteRun(ctx, &DeleteOptions{deps: d, Ref: ref, Output: "table"}), "tag team/app:prod not found")
	d, _, _ = realDeps(t, addrs[0])
	err := listRun(ctx, &ListOptions{deps: d, Repo: "team/app", Output: "table"})
	require.ErrorIs(t, err, client.ErrNotFound)
	require.EqualError(t, err, "repository team/app not found (it has no tags)")
}

func TestPutChecksContent(t *testing.T) {
	t.Parallel()
	ctx := t.Context()
	c := startCluster(t, 1, 1)
	origins, addrs := c.Addrs(cluster.Origin), c.Addrs(cluster.BuildIndex)

	// A digest the origins do not hold is refused, and nothing is stored.
	missing := digest.FromString("not pushed")
	d, out, _ := realDeps(t, addrs[0])
	err := putRun(ctx, &PutOptions{deps: d, Ref: Ref{"team/app", "v1"}, Digest: missing, Output: "table"})
	var re *errcode.Error
	require.ErrorAs(t, err, &re, "%v", err)
	require.Equal(t, http.StatusNotFound, re.Status, "%v", err)
	require.ErrorContains(t, err, "put tag team/app:v1")
	require.ErrorContains(t, err, `is not in the origin cluster under namespace "team/app"`)
	require.Empty(t, out.String())
	d, _, _ = realDeps(t, addrs[0])
	require.ErrorIs(t, getRun(ctx, &GetOptions{deps: d, Ref: Ref{"team/app", "v1"}}), client.ErrNotFound)

	// A manifest pushed to the origins under the repository's namespace is accepted.
	nonce := make([]byte, 16)
	_, err = rand.Read(nonce)
	require.NoError(t, err)
	data := fmt.Appendf(nil, `{"schemaVersion":2,"mediaType":"application/vnd.oci.image.index.v1+json","manifests":[],"annotations":{"nonce":"%x"}}`, nonce)
	held := digest.FromBytes(data)
	tr := &http.Transport{}
	t.Cleanup(tr.CloseIdleConnections)
	_, err = client.NewCluster(origins, &http.Client{Transport: tr}).Push(ctx, "team/app", held, bytes.NewReader(data), int64(len(data)), client.UploadOptions{})
	require.NoError(t, err)
	d, out, _ = realDeps(t, addrs[0])
	require.NoError(t, putRun(ctx, &PutOptions{deps: d, Ref: Ref{"team/app", "v1"}, Digest: held, Output: "table"}))
	require.True(t, strings.HasPrefix(out.String(), "team/app:v1 -> "+held.String()), out.String())
}
