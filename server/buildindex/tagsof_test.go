package buildindex

import (
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/krakenctl/krakenctl/server/api"
	"github.com/krakenctl/krakenctl/server/registry/errcode"
)

// A tag list by digest answers the tags pointing at the digest, in pages whose Link keeps the
// filter, marks its answer with the digest (how a client tells it from an older server's whole
// list), answers none as an empty list, and refuses a digest that does not parse.
func TestListTagsByDigest(t *testing.T) {
	t.Parallel()
	n := startFake(t, newFakeStore("a"), Deps{}, nil)
	ctx := t.Context()
	var want []string
	for i := range 12 {
		tag := fmt.Sprintf("v%02d", i)
		d := dig("other")
		if i%2 == 0 {
			d = dig("target")
			want = append(want, tag)
		}
		_, err := n.cli.PutTag(ctx, "team/app", tag, d)
		require.NoError(t, err)
	}

	var got []string
	last, pages := "", 0
	for {
		tags, next, err := n.cli.TagsOf(ctx, "team/app", dig("target"), last, 4)
		require.NoError(t, err)
		got = append(got, tags...)
		pages++
		if next == "" {
			break
		}
		last = next
	}
	require.Equal(t, want, got)
	require.Equal(t, 2, pages)

	tags, next, err := n.cli.TagsOf(ctx, "team/app", dig("nothing"), "", 0)
	require.NoError(t, err)
	require.Empty(t, tags)
	require.Empty(t, next)
	tags, _, err = n.cli.TagsOf(ctx, "no/such", dig("target"), "", 0)
	require.NoError(t, err)
	require.Empty(t, tags, "a repository without tags has none pointing anywhere")

	q := "?" + api.QueryDigest + "=" + url.QueryEscape(dig("target").String()) + "&n=2"
	resp := httpGet(t, "http://"+n.addr+api.TagsPath("team/app")+q)
	var tl api.TagList
	require.NoError(t, json.NewDecoder(resp.Body).Decode(&tl))
	require.NoError(t, resp.Body.Close())
	require.Equal(t, api.TagList{Name: "team/app", Tags: []string{"v00", "v02"}, Digest: dig("target")}, tl)
	require.Equal(t, `</repositories/team%2Fapp/tags?digest=`+url.QueryEscape(dig("target").String())+`&last=v02&n=2>; rel="next"`,
		resp.Header.Get("Link"))

	resp = httpGet(t, "http://"+n.addr+api.TagsPath("team/app")+"?"+api.QueryDigest+"=sha256:nope")
	b, _ := io.ReadAll(resp.Body)
	require.NoError(t, resp.Body.Close())
	require.Equal(t, http.StatusBadRequest, resp.StatusCode)
	require.Contains(t, string(b), string(errcode.CodeDigestInvalid))
}
