package buildindex

import (
	"context"
	"io"
	"net/http"
	"strings"
	"testing"

	"github.com/opencontainers/go-digest"
	"github.com/stretchr/testify/require"

	"github.com/krakenctl/krakenctl/server/api"
	"github.com/krakenctl/krakenctl/server/client"
	"github.com/krakenctl/krakenctl/server/registry"
	"github.com/krakenctl/krakenctl/server/registry/errcode"
	"github.com/krakenctl/krakenctl/tagstore"
)

func sha512Of(s string) digest.Digest { return digest.SHA512.FromString(s) }

func TestLinks(t *testing.T) {
	t.Parallel()
	store := newFakeStore("a")
	n := startFake(t, store, Deps{}, nil)
	ctx := t.Context()
	const repo = "team/app"
	b, m, r := dig("blob"), dig("manifest"), dig("referrer")

	l, err := n.cli.PutLink(ctx, repo, registry.BlobLink(b), b)
	require.NoError(t, err)
	require.Equal(t, api.Link{Repo: repo, Name: registry.BlobLink(b), Digest: b, Index: 1}, l)
	_, err = n.cli.PutLink(ctx, repo, registry.ManifestLink(m), m)
	require.NoError(t, err)
	_, err = n.cli.PutLink(ctx, repo, registry.ReferrerLink(m, r), r)
	require.NoError(t, err)
	// A sha512 key: the value is the sha256 digest the content is stored under.
	_, err = n.cli.PutLink(ctx, repo, registry.BlobLink(sha512Of("big")), dig("big"))
	require.NoError(t, err)
	_, err = n.cli.PutTag(ctx, repo, "v1", m)
	require.NoError(t, err)

	for _, stale := range []bool{false, true} {
		got, err := n.cli.GetLink(ctx, repo, registry.ReferrerLink(m, r), stale)
		require.NoError(t, err)
		require.Equal(t, r, got.Digest)
	}
	list, err := n.cli.ListLinks(ctx, repo, "blob/", false)
	require.NoError(t, err)
	require.Len(t, list, 2)
	require.Equal(t, registry.BlobLink(b), list[0].Name)
	require.Equal(t, registry.BlobLink(sha512Of("big")), list[1].Name)
	list, err = n.cli.ListLinks(ctx, repo, "referrer/"+m.String()+"/", true)
	require.NoError(t, err)
	require.Equal(t, []api.Link{{Repo: repo, Name: registry.ReferrerLink(m, r), Digest: r, Index: 3}}, list)
	list, err = n.cli.ListLinks(ctx, repo, "referrer/"+b.String()+"/", false)
	require.NoError(t, err)
	require.Empty(t, list)
	list, err = n.cli.ListLinks(ctx, "other", "manifest/", false)
	require.NoError(t, err)
	require.Empty(t, list)

	// Links are not tags.
	tags, _, err := n.cli.ListTags(ctx, repo, "", 0)
	require.NoError(t, err)
	require.Equal(t, []string{"v1"}, tags)
	_, err = n.cli.PutLink(ctx, "only/links", registry.BlobLink(b), b)
	require.NoError(t, err)
	_, _, err = n.cli.ListTags(ctx, "only/links", "", 0)
	requireAPIErr(t, err, http.StatusNotFound, errcode.CodeNameUnknown)
	repos, _, err := n.cli.ListRepositories(ctx, "", 0)
	require.NoError(t, err)
	require.Equal(t, []string{"only/links", repo}, repos)

	// Missing links: 404 with the code of their kind.
	_, err = n.cli.GetLink(ctx, repo, registry.BlobLink(dig("none")), false)
	require.ErrorIs(t, err, client.ErrNotFound)
	requireAPIErr(t, err, http.StatusNotFound, errcode.CodeBlobUnknown)
	_, err = n.cli.GetLink(ctx, repo, registry.ManifestLink(dig("none")), true)
	requireAPIErr(t, err, http.StatusNotFound, errcode.CodeManifestUnknown)
	_, err = n.cli.GetLink(ctx, repo, registry.ReferrerLink(m, dig("none")), false)
	requireAPIErr(t, err, http.StatusNotFound, errcode.CodeManifestUnknown)

	del, err := n.cli.DeleteLink(ctx, repo, registry.BlobLink(b))
	require.NoError(t, err)
	require.Equal(t, b, del.Digest)
	_, err = n.cli.DeleteLink(ctx, repo, registry.BlobLink(b))
	require.ErrorIs(t, err, client.ErrNotFound)
	requireAPIErr(t, err, http.StatusNotFound, errcode.CodeBlobUnknown)
	_, err = n.cli.GetLink(ctx, repo, registry.BlobLink(b), false)
	require.ErrorIs(t, err, client.ErrNotFound)

	// Slashes left unescaped, as curl users write them; a repository component may be
	// called "links" or "tags".
	raw := func(method, path, body string) (int, []byte) {
		req, err := http.NewRequestWithContext(ctx, method, "http://"+n.addr+path, strings.NewReader(body))
		require.NoError(t, err)
		resp, err := http.DefaultClient.Do(req)
		require.NoError(t, err)
		defer func() { _ = resp.Body.Close() }()
		b, err := io.ReadAll(resp.Body)
		require.NoError(t, err)
		return resp.StatusCode, b
	}
	code, body := raw(http.MethodPut, "/repositories/x/links/links/"+registry.BlobLink(b), `{"digest":"`+b.String()+`"}`)
	require.Equal(t, http.StatusOK, code, "%s", body)
	got, err := store.GetLink(ctx, "x/links", registry.BlobLink(b), tagstore.Stale)
	require.NoError(t, err)
	require.Equal(t, b, got.Digest)
	code, body = raw(http.MethodGet, "/repositories/team/app/links?prefix=referrer/", "")
	require.Equal(t, http.StatusOK, code, "%s", body)
	require.Contains(t, string(body), registry.ReferrerLink(m, r))
	code, body = raw(http.MethodPut, "/repositories/a/tags/b/links/"+registry.BlobLink(b), `{"digest":"`+b.String()+`"}`)
	require.Equal(t, http.StatusOK, code, "%s", body)
	_, err = store.GetLink(ctx, "a/tags/b", registry.BlobLink(b), tagstore.Stale)
	require.NoError(t, err)
	code, _ = raw(http.MethodDelete, "/repositories/x/links/links/"+registry.BlobLink(b), "")
	require.Equal(t, http.StatusOK, code)
	code, _ = raw(http.MethodGet, "/repositories/x/links/links/"+registry.BlobLink(b), "")
	require.Equal(t, http.StatusNotFound, code)
	code, _ = raw(http.MethodPost, "/repositories/x/links/links/"+registry.BlobLink(b), "")
	require.Equal(t, http.StatusMethodNotAllowed, code)
	code, _ = raw(http.MethodPut, "/repositories/x/links", "")
	require.Equal(t, http.StatusMethodNotAllowed, code)
	// A tag called "links" is still a tag.
	code, _ = raw(http.MethodPut, "/repositories/x/tags/links", `{"digest":"`+b.String()+`"}`)
	require.Equal(t, http.StatusOK, code)
	_, err = store.Get(ctx, "x", "links", tagstore.Stale)
	require.NoError(t, err)
}

func TestLinkBadInput(t *testing.T) {
	t.Parallel()
	store := newFakeStore("a")
	n := startFake(t, store, Deps{}, nil)
	ctx := t.Context()
	d, d512 := dig("x"), sha512Of("x")

	for _, tc := range []struct {
		repo, name string
		code       errcode.Code
	}{
		{"Team/app", registry.BlobLink(d), errcode.CodeNameInvalid},
		{"app", "", errcode.CodeNameInvalid},
		{"app", "layer/" + d.String(), errcode.CodeNameInvalid},
		{"app", "blob", errcode.CodeNameInvalid},
		{"app", "blob/" + d.String() + "/" + d.String(), errcode.CodeNameInvalid},
		{"app", "referrer/" + d.String(), errcode.CodeNameInvalid},
		{"app", "blob/sha256:abc", errcode.CodeDigestInvalid},
		{"app", "blob/" + strings.Repeat("a", 64), errcode.CodeDigestInvalid},
		{"app", "manifest/md5:0123", errcode.CodeDigestInvalid},
		{"app", "referrer/" + d.String() + "/sha256:XYZ", errcode.CodeDigestInvalid},
		{"app", "blob/" + d.String() + strings.Repeat("0", 300), errcode.CodeNameInvalid},
	} {
		_, err := n.cli.PutLink(ctx, tc.repo, tc.name, d)
		requireAPIErr(t, err, http.StatusBadRequest, tc.code)
		_, err = n.cli.GetLink(ctx, tc.repo, tc.name, false)
		requireAPIErr(t, err, http.StatusBadRequest, tc.code)
		_, err = n.cli.DeleteLink(ctx, tc.repo, tc.name)
		requireAPIErr(t, err, http.StatusBadRequest, tc.code)
	}

	// Values the registry contract forbids.
	for _, tc := range []struct {
		name  string
		value digest.Digest
	}{
		{registry.BlobLink(d), ""},
		{registry.BlobLink(d), "sha256:abc"},
		{registry.BlobLink(d), dig("other")},     // a sha256 key is stored under itself
		{registry.BlobLink(d512), d512},          // stored under a sha256 digest
		{registry.ManifestLink(d512), d512},      // the same for manifests
		{registry.ManifestLink(d), dig("other")}, // a sha256 key is stored under itself
		{registry.ReferrerLink(d, d512), d},      // a referrer's value is its own digest
		{registry.ReferrerLink(d512, d), d512},   // (the last part, not the subject)
		{registry.ManifestLink(d), "sha384:" + digest.Digest(strings.Repeat("a", 96))},
	} {
		_, err := n.cli.PutLink(ctx, "app", tc.name, tc.value)
		requireAPIErr(t, err, http.StatusBadRequest, errcode.CodeDigestInvalid)
	}

	for prefix, code := range map[string]errcode.Code{
		"":                                 errcode.CodeNameInvalid,
		"bl":                               errcode.CodeNameInvalid,
		"blob":                             errcode.CodeNameInvalid,
		"tag/":                             errcode.CodeNameInvalid,
		"blob/" + d.String() + "/":         errcode.CodeNameInvalid,
		"blob/zz":                          errcode.CodeDigestInvalid,
		"blob/sha256:ABC":                  errcode.CodeDigestInvalid,
		"blob/sha256:" + d.Encoded() + "0": errcode.CodeDigestInvalid,
		"referrer/sha256:ab/":              errcode.CodeDigestInvalid,
	} {
		_, err := n.cli.ListLinks(ctx, "app", prefix, false)
		requireAPIErr(t, err, http.StatusBadRequest, code)
	}
	for _, prefix := range []string{"blob/", "blob/s", "blob/sha512", "blob/sha256:", "blob/sha256:0a", "referrer/" + d.String(), "referrer/" + d.String() + "/sha5"} {
		_, err := n.cli.ListLinks(ctx, "app", prefix, false)
		require.NoError(t, err, prefix)
	}
	_, err := n.cli.ListLinks(ctx, "App", "blob/", false)
	requireAPIErr(t, err, http.StatusBadRequest, errcode.CodeNameInvalid)
	resp := httpGet(t, "http://"+n.addr+api.LinksPath("app")+"?prefix=blob/&stale=maybe")
	require.NoError(t, resp.Body.Close())
	require.Equal(t, http.StatusBadRequest, resp.StatusCode)

	require.Zero(t, store.writeCount(), "no bad request changed the store")
}

// TestLinkForwarding: a follower relays link writes and linearizable link reads to the leader.
func TestLinkForwarding(t *testing.T) {
	t.Parallel()
	ctx := t.Context()
	leader := startFake(t, newFakeStore("L"), Deps{}, nil)
	fstore := newFakeStore("F")
	fstore.followerOf("L", leader.addr)
	follower := startFake(t, fstore, Deps{}, nil)
	d := dig("one")

	put, err := follower.cli.PutLink(ctx, "app", registry.BlobLink(d), d)
	require.NoError(t, err)
	got, err := leader.store.GetLink(ctx, "app", registry.BlobLink(d), tagstore.Stale)
	require.NoError(t, err)
	require.Equal(t, put.Index, got.Index)

	l, err := follower.cli.GetLink(ctx, "app", registry.BlobLink(d), false)
	require.NoError(t, err)
	require.Equal(t, d, l.Digest)
	list, err := follower.cli.ListLinks(ctx, "app", "blob/", false)
	require.NoError(t, err)
	require.Len(t, list, 1)
	// Stale reads are the follower's own (it has nothing).
	_, err = follower.cli.GetLink(ctx, "app", registry.BlobLink(d), true)
	require.ErrorIs(t, err, client.ErrNotFound)
	list, err = follower.cli.ListLinks(ctx, "app", "blob/", true)
	require.NoError(t, err)
	require.Empty(t, list)

	_, err = follower.cli.DeleteLink(ctx, "app", registry.BlobLink(d))
	require.NoError(t, err)
	_, err = follower.cli.DeleteLink(ctx, "app", registry.BlobLink(d))
	requireAPIErr(t, err, http.StatusNotFound, errcode.CodeBlobUnknown)
	require.Zero(t, fstore.writeCount())
}

// TestChangesSkipLinks: the HTTP change feed carries tag changes only (api.TagChange describes
// tags); the store's own feed, which the write-back follows, carries links too.
func TestChangesSkipLinks(t *testing.T) {
	t.Parallel()
	store := newFakeStore("a")
	n := startFake(t, store, Deps{}, nil)
	ctx, cancel := context.WithCancel(t.Context())
	defer cancel()
	_, err := n.cli.PutLink(ctx, "app", registry.BlobLink(dig("b")), dig("b"))
	require.NoError(t, err)
	_, err = n.cli.PutTag(ctx, "app", "v1", dig("m"))
	require.NoError(t, err)
	_, err = n.cli.DeleteLink(ctx, "app", registry.BlobLink(dig("b")))
	require.NoError(t, err)
	_, err = n.cli.PutTag(ctx, "app", "v2", dig("m"))
	require.NoError(t, err)

	var seen []api.TagChange
	err = n.cli.Changes(ctx, 0, func(c api.TagChange) error {
		seen = append(seen, c)
		if len(seen) == 2 {
			cancel()
		}
		return nil
	})
	require.ErrorIs(t, err, context.Canceled)
	require.Len(t, seen, 2)
	require.Equal(t, "v1", seen[0].Tag.Tag)
	require.Equal(t, uint64(2), seen[0].Index)
	require.Equal(t, "v2", seen[1].Tag.Tag)
	require.Equal(t, uint64(4), seen[1].Index)

	ch, stop := store.Changes(0)
	defer stop()
	first := <-ch
	require.True(t, first.Tag.IsLink())
	require.Equal(t, tagstore.Link{Repo: "app", Name: registry.BlobLink(dig("b")), Digest: dig("b"), Index: 1, Updated: first.Tag.Updated}, first.Tag.AsLink())
}

// TestLinkRecords: a link's backend object is a Record whose Tag is the link's stored name;
// restore checks such records as strictly as tag records.
func TestLinkRecords(t *testing.T) {
	t.Parallel()
	d := dig("b")
	key := tagstore.LinkKey(registry.BlobLink(d))
	require.NotEqual(t, ObjectName("app", key), ObjectName("app", registry.BlobLink(d)))
	good := Record{Repo: "app", Tag: key, Digest: d, Index: 3}
	require.NoError(t, checkRecord(ObjectName("app", key), good))
	for name, rec := range map[string]Record{
		"bad link name": {Repo: "app", Tag: tagstore.LinkKey("blob/nope"), Digest: d, Index: 3},
		"bad kind":      {Repo: "app", Tag: tagstore.LinkKey("tag/" + d.String()), Digest: d, Index: 3},
		"bad repo":      {Repo: "App", Tag: key, Digest: d, Index: 3},
		"bad digest":    {Repo: "app", Tag: key, Digest: "sha256:x", Index: 3},
		"no index":      {Repo: "app", Tag: key, Digest: d},
	} {
		require.Error(t, checkRecord(ObjectName(rec.Repo, rec.Tag), rec), name)
	}
	require.Error(t, checkRecord(ObjectName("app", "other"), good), "a record under another object's name")
}
