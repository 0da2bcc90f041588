package tagstore_test

import (
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/opencontainers/go-digest"
	"github.com/stretchr/testify/require"

	"github.com/krakenctl/krakenctl/tagstore"
	"github.com/krakenctl/krakenctl/tagstore/tagstoretest"
)

func blob(d digest.Digest) string     { return tagstore.LinkKindBlob + "/" + d.String() }
func manifest(d digest.Digest) string { return tagstore.LinkKindManifest + "/" + d.String() }
func referrer(subject, d digest.Digest) string {
	return tagstore.LinkKindReferrer + "/" + subject.String() + "/" + d.String()
}

func TestLinks(t *testing.T) {
	t.Parallel()
	sn := newSingle(t, nil)
	s := sn.s
	ctx := t.Context()
	m, r1, r2 := dg("m"), dg("r1"), dg("r2")
	big := digest.SHA512.FromString("big")

	_, err := s.GetLink(ctx, "app", blob(dg("b")), tagstore.Linearizable)
	require.ErrorIs(t, err, tagstore.ErrNotFound)

	l, err := s.PutLink(ctx, "app", blob(dg("b")), dg("b"))
	require.NoError(t, err)
	require.Equal(t, "app", l.Repo)
	require.Equal(t, blob(dg("b")), l.Name)
	require.Equal(t, dg("b"), l.Digest)
	require.NotZero(t, l.Index)
	require.False(t, l.Updated.IsZero())
	for _, c := range []tagstore.Consistency{tagstore.Linearizable, tagstore.Stale} {
		got, err := s.GetLink(ctx, "app", blob(dg("b")), c)
		require.NoError(t, err, c.String())
		require.Equal(t, l, got, c.String())
	}
	for _, name := range []string{manifest(m), referrer(m, r2), referrer(m, r1), referrer(dg("other"), r1), blob(big)} {
		_, err := s.PutLink(ctx, "app", name, dg(name))
		require.NoError(t, err, name)
	}
	_, err = s.Put(ctx, "app", "v1", m)
	require.NoError(t, err)
	_, err = s.Put(ctx, "app", "zzz", m)
	require.NoError(t, err)

	names := func(prefix string) []string {
		t.Helper()
		links, err := s.Links(ctx, "app", prefix, tagstore.Linearizable)
		require.NoError(t, err)
		require.NotNil(t, links)
		out := []string{}
		for _, l := range links {
			out = append(out, l.Name)
		}
		return out
	}
	require.Equal(t, []string{referrer(m, r1), referrer(m, r2)}, names("referrer/"+m.String()+"/"), "in order of name")
	require.Equal(t, []string{blob(dg("b")), blob(big)}, names("blob/"))
	require.Equal(t, []string{blob(big)}, names("blob/sha512"))
	require.Equal(t, []string{manifest(m)}, names("manifest/"))
	require.Empty(t, names("referrer/"+r1.String()+"/"))
	stale, err := s.Links(ctx, "nothing", "blob/", tagstore.Stale)
	require.NoError(t, err)
	require.Empty(t, stale)

	// Links never show up as tags, whatever the page boundaries.
	tags, err := s.Tags(ctx, "app", "", 0, tagstore.Linearizable)
	require.NoError(t, err)
	require.Equal(t, []string{"v1", "zzz"}, tags)
	tags, err = s.Tags(ctx, "app", "zzz", 0, tagstore.Stale)
	require.NoError(t, err)
	require.Empty(t, tags)
	tags, err = s.Tags(ctx, "app", "~", 0, tagstore.Stale)
	require.NoError(t, err)
	require.Empty(t, tags)
	// Tag calls cannot reach a link by its stored name.
	_, err = s.Get(ctx, "app", tagstore.LinkKey(blob(dg("b"))), tagstore.Stale)
	require.ErrorIs(t, err, tagstore.ErrInvalid)
	_, err = s.Put(ctx, "app", tagstore.LinkKey(blob(dg("b"))), dg("x"))
	require.ErrorIs(t, err, tagstore.ErrInvalid)

	// A repository with only links is in the catalog but has no tags.
	_, err = s.PutLink(ctx, "links/only", blob(dg("b")), dg("b"))
	require.NoError(t, err)
	repos, err := s.Repositories(ctx, "", 0, tagstore.Linearizable)
	require.NoError(t, err)
	require.Equal(t, []string{"app", "links/only"}, repos)
	_, err = s.Tags(ctx, "links/only", "", 0, tagstore.Linearizable)
	require.ErrorIs(t, err, tagstore.ErrNotFound)
	// Until its last link goes.
	old, err := s.DeleteLink(ctx, "links/only", blob(dg("b")))
	require.NoError(t, err)
	require.Equal(t, dg("b"), old.Digest)
	_, err = s.DeleteLink(ctx, "links/only", blob(dg("b")))
	require.ErrorIs(t, err, tagstore.ErrNotFound)
	repos, err = s.Repositories(ctx, "", 0, tagstore.Stale)
	require.NoError(t, err)
	require.Equal(t, []string{"app"}, repos)
	// A repository's tags going does not take its links (nor its catalog entry) with them.
	for _, tag := range []string{"v1", "zzz"} {
		_, err = s.Delete(ctx, "app", tag)
		require.NoError(t, err)
	}
	repos, err = s.Repositories(ctx, "", 0, tagstore.Stale)
	require.NoError(t, err)
	require.Equal(t, []string{"app"}, repos)
	require.Len(t, names("blob/"), 2)

	// A put replaces; the index grows.
	l2, err := s.PutLink(ctx, "app", blob(dg("b")), dg("b2"))
	require.NoError(t, err)
	require.Greater(t, l2.Index, l.Index)

	// Tags and links are counted apart.
	families, err := sn.reg.Gather()
	require.NoError(t, err)
	gauges := map[string]float64{}
	for _, f := range families {
		if m := f.GetMetric(); len(m) == 1 && m[0].Gauge != nil {
			gauges[f.GetName()] = m[0].Gauge.GetValue()
		}
	}
	require.Equal(t, 0.0, gauges["krakenctl_tagstore_tags"])
	require.Equal(t, 6.0, gauges["krakenctl_tagstore_links"])
}

func TestLinkValidation(t *testing.T) {
	t.Parallel()
	s := newSingle(t, nil).s
	ctx := t.Context()
	d, d512 := dg("x"), digest.SHA512.FromString("x")
	before, err := s.ReadIndex(ctx) // after the new leader's own first entry
	require.NoError(t, err)

	for _, name := range []string{
		"", "blob", "blob/", "layer/" + d.String(), "Blob/" + d.String(), "blob/" + d.String() + "/",
		"blob/" + d.String() + "/" + d.String(), "referrer/" + d.String(), "referrer/" + d.String() + "/",
		"referrer/" + d.String() + "/" + d.String() + "/" + d.String(), "blob/sha256:abc", "blob/md5:" + strings.Repeat("0", 32),
		"blob/" + strings.Repeat("a", 64), "manifest/sha256:" + strings.Repeat("A", 64), "blob/" + d.String() + " ",
		"blob/sha384:" + strings.Repeat("a", 96),
	} {
		require.ErrorIs(t, tagstore.ValidateLinkName(name), tagstore.ErrInvalid, name)
		_, err := s.PutLink(ctx, "app", name, d)
		require.ErrorIs(t, err, tagstore.ErrInvalid, name)
		_, err = s.GetLink(ctx, "app", name, tagstore.Stale)
		require.ErrorIs(t, err, tagstore.ErrInvalid, name)
		_, err = s.DeleteLink(ctx, "app", name)
		require.ErrorIs(t, err, tagstore.ErrInvalid, name)
	}
	for _, name := range []string{blob(d), blob(d512), manifest(d512), referrer(d512, d), referrer(d512, d512)} {
		require.NoError(t, tagstore.ValidateLinkName(name), name)
		kind, keys, err := tagstore.ParseLinkName(name)
		require.NoError(t, err)
		require.Equal(t, name, kind+"/"+strings.Join(func() []string {
			var s []string
			for _, k := range keys {
				s = append(s, k.String())
			}
			return s
		}(), "/"))
	}
	_, err = s.PutLink(ctx, "App", blob(d), d)
	require.ErrorIs(t, err, tagstore.ErrInvalid)
	_, err = s.PutLink(ctx, "app", blob(d), "sha256:nothex")
	require.ErrorIs(t, err, tagstore.ErrInvalid)

	for _, p := range []string{"", "b", "blob", "tag/", "blob/" + d.String() + "/", "blob/x", "blob/sha256:g",
		"blob/sha256:" + d.Encoded() + "0", "blob/sha1:", "referrer/sha256:ab/", "referrer/" + d.String() + "/" + d.String() + "/",
		"manifest/SHA256:"} {
		require.ErrorIs(t, tagstore.ValidateLinkPrefix(p), tagstore.ErrInvalid, p)
		_, err := s.Links(ctx, "app", p, tagstore.Stale)
		require.ErrorIs(t, err, tagstore.ErrInvalid, p)
	}
	for _, p := range []string{"blob/", "blob/s", "blob/sha", "blob/sha5", "blob/sha256:", "blob/" + d.String(), "manifest/sha512:" + d512.Encoded()[:10],
		"referrer/", "referrer/" + d.String(), "referrer/" + d.String() + "/", "referrer/" + d.String() + "/sha256:0"} {
		require.NoError(t, tagstore.ValidateLinkPrefix(p), p)
	}
	require.Equal(t, before, s.AppliedIndex(), "nothing invalid reached the log")
}

// TestLinksExportImport: Export carries links in stored form next to the tags, and Import
// takes them back (with the same skip rule as tags).
func TestLinksExportImport(t *testing.T) {
	t.Parallel()
	src := newSingle(t, nil).s
	ctx := t.Context()
	_, err := src.Put(ctx, "app", "v1", dg("m"))
	require.NoError(t, err)
	_, err = src.PutLink(ctx, "app", manifest(dg("m")), dg("m"))
	require.NoError(t, err)
	_, err = src.PutLink(ctx, "app", referrer(dg("m"), dg("r")), dg("r"))
	require.NoError(t, err)
	_, err = src.PutLink(ctx, "blobs/only", blob(dg("b")), dg("b"))
	require.NoError(t, err)

	all, _, err := src.Export(ctx, tagstore.Linearizable)
	require.NoError(t, err)
	var got []string
	for _, e := range all {
		got = append(got, fmt.Sprintf("%s %s %v", e.Repo, e.Name, e.IsLink()))
	}
	require.Equal(t, []string{
		"app v1 false",
		"app ~" + manifest(dg("m")) + " true",
		"app ~" + referrer(dg("m"), dg("r")) + " true",
		"blobs/only ~" + blob(dg("b")) + " true",
	}, got, "a repository's links follow its tags")
	name, ok := tagstore.LinkName(all[1].Name)
	require.True(t, ok)
	require.Equal(t, manifest(dg("m")), name)
	require.Equal(t, manifest(dg("m")), all[1].AsLink().Name)

	dst := newSingle(t, nil).s
	imported, skipped, err := dst.Import(ctx, all)
	require.NoError(t, err)
	require.Equal(t, 4, imported)
	require.Zero(t, skipped)
	l, err := dst.GetLink(ctx, "app", referrer(dg("m"), dg("r")), tagstore.Linearizable)
	require.NoError(t, err)
	require.Equal(t, dg("r"), l.Digest)
	require.True(t, l.Updated.Equal(all[2].Updated), "imported links keep their time")
	tags, err := dst.Tags(ctx, "app", "", 0, tagstore.Linearizable)
	require.NoError(t, err)
	require.Equal(t, []string{"v1"}, tags)
	imported, skipped, err = dst.Import(ctx, all)
	require.NoError(t, err)
	require.Zero(t, imported)
	require.Equal(t, 4, skipped)

	// A bad link entry fails the whole import before anything is written.
	before := dst.AppliedIndex()
	_, _, err = dst.Import(ctx, []tagstore.Tag{
		{Repo: "app", Name: tagstore.LinkKey(blob(dg("ok"))), Digest: dg("ok"), Updated: time.Now()},
		{Repo: "app", Name: tagstore.LinkKey("blob/nope"), Digest: dg("x"), Updated: time.Now()},
	})
	require.ErrorIs(t, err, tagstore.ErrInvalid)
	require.Equal(t, before, dst.AppliedIndex())
}

// TestLinksSurviveSnapshotAndFeed: links are in snapshots (restart from one) and on the
// change feed.
func TestLinksSurviveSnapshotAndFeed(t *testing.T) {
	t.Parallel()
	sn := newSingle(t, func(c *tagstore.Config) { c.TrailingLogs = 1 })
	ctx := t.Context()
	ch, cancel := sn.s.Changes(sn.s.AppliedIndex())
	put, err := sn.s.PutLink(ctx, "app", blob(dg("b")), dg("b"))
	require.NoError(t, err)
	_, err = sn.s.Put(ctx, "app", "v1", dg("m"))
	require.NoError(t, err)
	del, err := sn.s.DeleteLink(ctx, "app", blob(dg("b")))
	require.NoError(t, err)
	_, err = sn.s.PutLink(ctx, "app", manifest(dg("m")), dg("m"))
	require.NoError(t, err)

	c, ok := next(t, ch)
	require.True(t, ok)
	require.Equal(t, tagstore.OpPut, c.Op)
	require.True(t, c.Tag.IsLink())
	require.Equal(t, put, c.Tag.AsLink())
	c, _ = next(t, ch)
	require.Equal(t, "v1", c.Tag.Name)
	c, _ = next(t, ch)
	require.Equal(t, tagstore.OpDelete, c.Op)
	require.Equal(t, blob(dg("b")), c.Tag.AsLink().Name)
	require.Equal(t, dg("b"), c.Tag.Digest, "a delete names the value it removed")
	require.Greater(t, c.Index, del.Index)
	cancel()

	require.NoError(t, sn.s.Snapshot(ctx))
	want, _, err := sn.s.Export(ctx, tagstore.Linearizable)
	require.NoError(t, err)
	sn.restart()
	got, _, err := sn.s.Export(ctx, tagstore.Linearizable)
	require.NoError(t, err)
	require.Equal(t, want, got)
	l, err := sn.s.GetLink(ctx, "app", manifest(dg("m")), tagstore.Linearizable)
	require.NoError(t, err)
	require.Equal(t, dg("m"), l.Digest)
	links, err := sn.s.Links(ctx, "app", "blob/", tagstore.Linearizable)
	require.NoError(t, err)
	require.Empty(t, links)
}

// TestLinksReplicate: a three-node cluster over loopback TCP. A link written on the leader is
// read linearizably there and stale on every node once applied; a follower refuses writes and
// linearizable reads with the leader's name.
func TestLinksReplicate(t *testing.T) {
	t.Parallel()
	c := tagstoretest.Start(t, tagstoretest.Options{})
	ctx := t.Context()
	leader := c.Leader()
	l, err := leader.Store().PutLink(ctx, "app", blob(dg("b")), dg("b"))
	require.NoError(t, err)
	got, err := leader.Store().GetLink(ctx, "app", blob(dg("b")), tagstore.Linearizable)
	require.NoError(t, err)
	require.Equal(t, l, got)
	c.WaitConverged()
	for _, f := range c.Followers() {
		got, err := f.Store().GetLink(ctx, "app", blob(dg("b")), tagstore.Stale)
		require.NoError(t, err, f.ID)
		require.Equal(t, l, got, f.ID)
		links, err := f.Store().Links(ctx, "app", "blob/", tagstore.Stale)
		require.NoError(t, err)
		require.Equal(t, []tagstore.Link{l}, links)

		_, err = f.Store().PutLink(ctx, "app", blob(dg("c")), dg("c"))
		var nle *tagstore.NotLeaderError
		require.ErrorAs(t, err, &nle)
		require.Equal(t, leader.ID, nle.LeaderID)
		_, err = f.Store().DeleteLink(ctx, "app", blob(dg("b")))
		require.ErrorIs(t, err, tagstore.ErrNotLeader)
		_, err = f.Store().GetLink(ctx, "app", blob(dg("b")), tagstore.Linearizable)
		require.ErrorIs(t, err, tagstore.ErrNotLeader)
		_, err = f.Store().Links(ctx, "app", "blob/", tagstore.Linearizable)
		require.ErrorIs(t, err, tagstore.ErrNotLeader)
		_, err = f.Store().Tags(ctx, "app", "", 0, tagstore.Stale)
		require.ErrorIs(t, err, tagstore.ErrNotFound, "links are not tags on followers either")
	}
	_, err = leader.Store().GetLink(ctx, "app", blob(dg("c")), tagstore.Linearizable)
	require.ErrorIs(t, err, tagstore.ErrNotFound, "writes refused by followers changed nothing")
}
