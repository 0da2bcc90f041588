package buildindex

import (
	"bytes"
	"crypto/rand"
	"encoding/json"
	"net/http"
	"testing"

	"github.com/opencontainers/go-digest"
	"github.com/stretchr/testify/require"

	"github.com/krakenctl/krakenctl/server/client"
	"github.com/krakenctl/krakenctl/server/registry"
	"github.com/krakenctl/krakenctl/server/registry/errcode"
	"github.com/krakenctl/krakenctl/tagstore"
)

// push stores b in the origin cluster under ns and returns its descriptor.
func push(t *testing.T, c *client.Cluster, ns, mediaType string, b []byte) descriptor {
	t.Helper()
	d := digest.FromBytes(b)
	_, err := c.Push(t.Context(), ns, d, bytes.NewReader(b), int64(len(b)), client.UploadOptions{})
	require.NoError(t, err)
	return descriptor{MediaType: mediaType, Digest: d, Size: int64(len(b))}
}

func randomBytes(t *testing.T, n int) []byte {
	b := make([]byte, n)
	_, err := rand.Read(b)
	require.NoError(t, err)
	return b
}

func manifestJSON(t *testing.T, v any) []byte {
	b, err := json.Marshal(v)
	require.NoError(t, err)
	return b
}

// TestContentCheck runs against a real in-process origin cluster: a tag is accepted only when
// its manifest and everything the manifest references are there.
func TestContentCheck(t *testing.T) {
	t.Parallel()
	origins := startOrigins(t, 3)
	hc := testHTTPClient(t)
	oc := client.NewCluster(origins, hc)
	store := newFakeStore("a")
	n := startFake(t, store, Deps{}, func(c *Config) {
		v := true
		c.VerifyContent = &v
		c.Origins = origins
		c.MaxManifestSize = 64 << 10
	})
	ctx := t.Context()
	const ns = "team/app"

	cfg := push(t, oc, ns, "application/vnd.oci.image.config.v1+json", []byte(`{"architecture":"amd64","os":"linux"}`))
	layer := push(t, oc, ns, "application/vnd.oci.image.layer.v1.tar+gzip", randomBytes(t, 3000))
	missing := descriptor{MediaType: "application/vnd.oci.image.layer.v1.tar+gzip", Digest: digest.FromString("never pushed"), Size: 12}

	image := func(mediaType string, layers ...descriptor) map[string]any {
		m := map[string]any{"schemaVersion": 2, "config": cfg, "layers": layers}
		if mediaType != "" {
			m["mediaType"] = mediaType
		}
		return m
	}
	good := push(t, oc, ns, mediaTypeOCIManifest, manifestJSON(t, image(mediaTypeOCIManifest, layer)))
	docker := push(t, oc, ns, mediaTypeDockerManifest, manifestJSON(t, image(mediaTypeDockerManifest, layer,
		descriptor{MediaType: "application/vnd.docker.image.rootfs.foreign.diff.tar.gzip", Digest: digest.FromString("windows"), Size: 5, URLs: []string{"https://example.com/l"}})))
	noType := push(t, oc, ns, mediaTypeOCIManifest, manifestJSON(t, image("", layer)))
	broken := push(t, oc, ns, mediaTypeOCIManifest, manifestJSON(t, image(mediaTypeOCIManifest, layer, missing)))
	index := push(t, oc, ns, mediaTypeOCIIndex, manifestJSON(t, map[string]any{
		"schemaVersion": 2, "mediaType": mediaTypeOCIIndex, "manifests": []descriptor{good, docker},
	}))
	brokenIndex := push(t, oc, ns, mediaTypeDockerList, manifestJSON(t, map[string]any{
		"schemaVersion": 2, "mediaType": mediaTypeDockerList, "manifests": []descriptor{good, {MediaType: mediaTypeOCIManifest, Digest: digest.FromString("gone"), Size: 3}},
	}))
	wrongSize := layer
	wrongSize.Size++
	badSize := push(t, oc, ns, mediaTypeOCIManifest, manifestJSON(t, image(mediaTypeOCIManifest, wrongSize)))
	badRef := push(t, oc, ns, mediaTypeOCIManifest, []byte(`{"schemaVersion":2,"mediaType":"`+mediaTypeOCIManifest+`","config":{"digest":"sha256:nothex","size":1},"layers":[]}`))
	artifact := push(t, oc, ns, "", randomBytes(t, 100))
	big := push(t, oc, ns, "", append([]byte(`{"schemaVersion":2,"manifests":[`), randomBytes(t, 70<<10)...))

	for name, d := range map[string]descriptor{
		"oci": good, "docker": docker, "no media type": noType, "index": index,
	} {
		_, err := n.cli.PutTag(ctx, ns, "ok", d.Digest)
		require.NoError(t, err, name)
	}
	written := store.writeCount()

	_, err := n.cli.PutTag(ctx, ns, "bad", digest.FromString("nothing"))
	require.ErrorIs(t, err, client.ErrNotFound)
	requireAPIErr(t, err, http.StatusNotFound, errcode.CodeManifestUnknown)

	// A tag names a manifest: not a layer, not other JSON, not a blob too large to be one.
	for name, d := range map[string]descriptor{"layer": layer, "config": cfg, "artifact": artifact, "larger than a manifest": big} {
		_, err = n.cli.PutTag(ctx, ns, "bad", d.Digest)
		re := apiErr(t, err, http.StatusBadRequest, errcode.CodeManifestInvalid)
		require.Contains(t, re.Message, "not a")
		require.Contains(t, re.Message, d.Digest.String(), name)
	}

	_, err = n.cli.PutTag(ctx, ns, "bad", broken.Digest)
	re := apiErr(t, err, http.StatusBadRequest, errcode.CodeManifestBlobUnknown)
	require.Contains(t, re.Message, missing.Digest.String())
	require.NotContains(t, re.Message, layer.Digest.String())

	_, err = n.cli.PutTag(ctx, ns, "bad", brokenIndex.Digest)
	re = apiErr(t, err, http.StatusBadRequest, errcode.CodeManifestBlobUnknown)
	require.Contains(t, re.Message, digest.FromString("gone").String())

	_, err = n.cli.PutTag(ctx, ns, "bad", badSize.Digest)
	requireAPIErr(t, err, http.StatusBadRequest, errcode.CodeManifestInvalid)
	_, err = n.cli.PutTag(ctx, ns, "bad", badRef.Digest)
	requireAPIErr(t, err, http.StatusBadRequest, errcode.CodeManifestInvalid)
	require.Equal(t, written, store.writeCount(), "refused tags changed nothing")

	// Origins that cannot be reached: 503, nothing written.
	down := startFake(t, newFakeStore("b"), Deps{}, func(c *Config) {
		v := true
		c.VerifyContent = &v
		c.Origins = []string{closedAddr(t)}
	})
	_, err = down.cli.PutTag(ctx, ns, "v1", good.Digest)
	requireAPIErr(t, err, http.StatusServiceUnavailable, errcode.CodeUnavailable)
	require.Zero(t, down.store.writeCount())
}

func TestReferences(t *testing.T) {
	t.Parallel()
	d1, d2 := digest.FromString("1"), digest.FromString("2")
	for _, tc := range []struct {
		doc     string
		want    []digest.Digest
		wantErr string
	}{
		{doc: `not json`, wantErr: "not an image manifest"},
		{doc: `{"layers":[]}`, wantErr: "not an image manifest"},
		{doc: `{"mediaType":"application/vnd.oci.image.config.v1+json"}`, wantErr: "not an image manifest or index: media type"},
		{doc: `{"schemaVersion":1,"fsLayers":[]}`},
		{doc: `{"mediaType":"application/vnd.oci.artifact.manifest.v1+json"}`},
		{doc: `{"mediaType":"` + mediaTypeOCIManifest + `","config":{"digest":"` + d1.String() + `"},"layers":[{"digest":"` + d2.String() + `"},{"digest":"` + d1.String() + `"}]}`, want: []digest.Digest{d1, d2}},
		{doc: `{"mediaType":"` + mediaTypeOCIManifest + `","layers":[]}`, wantErr: "without config"},
		{doc: `{"mediaType":"` + mediaTypeOCIIndex + `","manifests":[{"digest":"` + d2.String() + `"}]}`, want: []digest.Digest{d2}},
		{doc: `{"schemaVersion":2,"manifests":[]}`},
		{doc: `{"mediaType":"` + mediaTypeOCIIndex + `","manifests":[{"digest":"sha512:` + digest.SHA512.FromString("x").Encoded() + `"}]}`, want: []digest.Digest{digest.SHA512.FromString("x")}},
		{doc: `{"mediaType":"` + mediaTypeOCIIndex + `","manifests":[{"digest":"sha384:` + digest.SHA384.FromString("x").Encoded() + `"}]}`, wantErr: "not supported"},
		{doc: `{"mediaType":"` + mediaTypeDockerList + `","manifests":[{"digest":""}]}`, wantErr: "reference"},
	} {
		refs, err := references([]byte(tc.doc))
		if tc.wantErr != "" {
			require.ErrorContains(t, err, tc.wantErr, tc.doc)
			continue
		}
		require.NoError(t, err, tc.doc)
		var got []digest.Digest
		for _, r := range refs {
			got = append(got, r.Digest)
		}
		require.Equal(t, tc.want, got, tc.doc)
	}
}

// TestLinkContentCheck: with verify_content, a blob/ or manifest/ link's value must be on the
// origins under the repository's namespace, a referrer/ link needs the referrer's manifest/
// link, and content addressed by sha512 (tags, index children, configs and layers) is found
// through the repository's links.
func TestLinkContentCheck(t *testing.T) {
	t.Parallel()
	origins := startOrigins(t, 1)
	oc := client.NewCluster(origins, testHTTPClient(t))
	store := newFakeStore("a")
	n := startFake(t, store, Deps{}, func(c *Config) {
		v := true
		c.VerifyContent = &v
		c.Origins = origins
		c.MaxManifestSize = 64 << 10
	})
	ctx := t.Context()
	const ns = "team/app"

	layerBytes := randomBytes(t, 2000)
	layer := push(t, oc, ns, "application/vnd.oci.image.layer.v1.tar", layerBytes)
	cfg := push(t, oc, ns, "application/vnd.oci.image.config.v1+json", []byte(`{"os":"linux"}`))
	missing := digest.FromString("never pushed")

	// blob/ and manifest/ links: the value must exist under the repository's namespace.
	_, err := n.cli.PutLink(ctx, ns, registry.BlobLink(layer.Digest), layer.Digest)
	require.NoError(t, err)
	_, err = n.cli.PutLink(ctx, ns, registry.BlobLink(missing), missing)
	re := apiErr(t, err, http.StatusBadRequest, errcode.CodeBlobUnknown)
	require.Equal(t, map[string]any{"digest": missing.String()}, re.Detail)
	_, err = n.cli.PutLink(ctx, ns, registry.ManifestLink(missing), missing)
	re = apiErr(t, err, http.StatusBadRequest, errcode.CodeManifestBlobUnknown)
	require.Equal(t, map[string]any{"digest": missing.String()}, re.Detail)

	// An image whose layer is addressed by sha512, stored on the origins by its sha256.
	layer512 := digest.SHA512.FromBytes(layerBytes)
	image := push(t, oc, ns, mediaTypeOCIManifest, manifestJSON(t, map[string]any{
		"schemaVersion": 2, "mediaType": mediaTypeOCIManifest, "config": cfg,
		"layers": []descriptor{{MediaType: layer.MediaType, Digest: layer512, Size: layer.Size}},
	}))
	image512 := digest.SHA512.FromBytes(manifestJSON(t, map[string]any{"x": 1})) // any sha512 key will do
	_, err = n.cli.PutTag(ctx, ns, "v1", image.Digest)
	re = apiErr(t, err, http.StatusBadRequest, errcode.CodeManifestBlobUnknown)
	require.Contains(t, re.Message, layer512.String(), "a sha512 layer without its blob/ link")
	_, err = n.cli.PutLink(ctx, ns, registry.BlobLink(layer512), layer.Digest)
	require.NoError(t, err)
	_, err = n.cli.PutTag(ctx, ns, "v1", image.Digest)
	require.NoError(t, err)

	// A tag on a sha512 manifest: through its manifest/ link.
	_, err = n.cli.PutTag(ctx, ns, "v512", image512)
	requireAPIErr(t, err, http.StatusNotFound, errcode.CodeManifestUnknown)
	_, err = n.cli.PutLink(ctx, ns, registry.ManifestLink(image512), image.Digest)
	require.NoError(t, err)
	_, err = n.cli.PutTag(ctx, ns, "v512", image512)
	require.NoError(t, err)
	// A link to content that is gone from the origins is as good as none.
	ghost512 := digest.SHA512.FromString("ghost")
	store.mu.Lock()
	store.index++
	store.tags[[2]string{ns, tagstore.LinkKey(registry.ManifestLink(ghost512))}] = tagstore.Tag{Repo: ns, Name: tagstore.LinkKey(registry.ManifestLink(ghost512)), Digest: missing, Index: store.index}
	store.mu.Unlock()
	_, err = n.cli.PutTag(ctx, ns, "ghost", ghost512)
	requireAPIErr(t, err, http.StatusNotFound, errcode.CodeManifestUnknown)

	// An index whose child is addressed by sha512 needs the child's manifest/ link.
	child512 := digest.SHA512.FromString("child")
	index := push(t, oc, ns, mediaTypeOCIIndex, manifestJSON(t, map[string]any{
		"schemaVersion": 2, "mediaType": mediaTypeOCIIndex,
		"manifests": []descriptor{{MediaType: mediaTypeOCIManifest, Digest: child512, Size: image.Size}},
	}))
	_, err = n.cli.PutTag(ctx, ns, "multi", index.Digest)
	re = apiErr(t, err, http.StatusBadRequest, errcode.CodeManifestBlobUnknown)
	require.Contains(t, re.Message, child512.String())
	// A blob/ link does not stand in for a manifest/ one.
	_, err = n.cli.PutLink(ctx, ns, registry.BlobLink(child512), image.Digest)
	require.NoError(t, err)
	_, err = n.cli.PutTag(ctx, ns, "multi", index.Digest)
	requireAPIErr(t, err, http.StatusBadRequest, errcode.CodeManifestBlobUnknown)
	_, err = n.cli.PutLink(ctx, ns, registry.ManifestLink(child512), image.Digest)
	require.NoError(t, err)
	_, err = n.cli.PutTag(ctx, ns, "multi", index.Digest)
	require.NoError(t, err)

	// referrer/ links: the referrer must be a manifest of the repository.
	sig512 := digest.SHA512.FromString("signature")
	_, err = n.cli.PutLink(ctx, ns, registry.ReferrerLink(image.Digest, sig512), sig512)
	re = apiErr(t, err, http.StatusBadRequest, errcode.CodeManifestUnknown)
	require.Equal(t, map[string]any{"digest": sig512.String()}, re.Detail)
	_, err = n.cli.PutLink(ctx, ns, registry.ManifestLink(sig512), cfg.Digest)
	require.NoError(t, err)
	_, err = n.cli.PutLink(ctx, ns, registry.ReferrerLink(image.Digest, sig512), sig512)
	require.NoError(t, err)
	_, err = n.cli.PutLink(ctx, ns, registry.ReferrerLink(image.Digest, image.Digest), image.Digest)
	requireAPIErr(t, err, http.StatusBadRequest, errcode.CodeManifestUnknown)

	// Origins that cannot be reached: 503, nothing written.
	down := startFake(t, newFakeStore("b"), Deps{}, func(c *Config) {
		v := true
		c.VerifyContent = &v
		c.Origins = []string{closedAddr(t)}
	})
	_, err = down.cli.PutLink(ctx, ns, registry.BlobLink(layer.Digest), layer.Digest)
	requireAPIErr(t, err, http.StatusServiceUnavailable, errcode.CodeUnavailable)
	require.Zero(t, down.store.writeCount())
}
