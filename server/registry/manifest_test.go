package registry_test

import (
	"context"
	"crypto/sha512"
	"encoding/hex"
	"errors"
	"fmt"
	"net/http"
	"strings"
	"testing"

	"github.com/opencontainers/go-digest"
	ocispec "github.com/opencontainers/image-spec/specs-go/v1"
	"github.com/stretchr/testify/require"

	"github.com/krakenctl/krakenctl/server/registry"
	"github.com/krakenctl/krakenctl/server/registry/errcode"
)

var (
	dConfig = digest.FromString("config")
	dLayer  = digest.FromString("layer")
	dChild  = digest.FromString("child")
)

func desc(mt string, d digest.Digest, size int64) string {
	return fmt.Sprintf(`{"mediaType":%q,"digest":%q,"size":%d}`, mt, d, size)
}

func TestParseManifestTypes(t *testing.T) {
	t.Parallel()
	foreign := desc(registry.MediaTypeDockerForeignLayer, digest.FromString("f"), 9)
	nondist := desc(ocispec.MediaTypeImageLayerNonDistributableGzip, digest.FromString("n"), 9) //nolint:staticcheck // SA1019: deprecated for new images; old ones still carry it
	subject := desc(ocispec.MediaTypeImageManifest, dChild, 100)
	for _, tc := range []struct {
		name, ct, body string
		wantType       string
		wantBlobs      []digest.Digest
		wantManifests  []digest.Digest
		wantArtifact   string // Descriptor().ArtifactType
		wantSubject    bool
	}{
		{
			name:      "oci manifest by content type",
			ct:        ocispec.MediaTypeImageManifest,
			body:      `{"schemaVersion":2,"config":` + desc(ocispec.MediaTypeImageConfig, dConfig, 2) + `,"layers":[` + desc(ocispec.MediaTypeImageLayerGzip, dLayer, 5) + `]}`,
			wantType:  ocispec.MediaTypeImageManifest,
			wantBlobs: []digest.Digest{dConfig, dLayer}, wantArtifact: ocispec.MediaTypeImageConfig,
		},
		{
			name:      "detected manifest without mediaType, with parameters ignored",
			ct:        "",
			body:      `{"schemaVersion":2,"config":` + desc(ocispec.MediaTypeImageConfig, dConfig, 2) + `,"layers":[]}`,
			wantType:  ocispec.MediaTypeImageManifest,
			wantBlobs: []digest.Digest{dConfig}, wantArtifact: ocispec.MediaTypeImageConfig,
		},
		{
			name:          "detected index",
			body:          `{"schemaVersion":2,"manifests":[` + desc(ocispec.MediaTypeImageManifest, dChild, 10) + `]}`,
			wantType:      ocispec.MediaTypeImageIndex,
			wantManifests: []digest.Digest{dChild},
		},
		{
			name:     "detected by mediaType field",
			ct:       "application/vnd.docker.distribution.manifest.v2+json; charset=utf-8",
			body:     `{"schemaVersion":2,"mediaType":"` + registry.MediaTypeDockerManifest + `","config":` + desc("application/vnd.docker.container.image.v1+json", dConfig, 2) + `,"layers":[` + foreign + `,` + desc("application/vnd.docker.image.rootfs.diff.tar.gzip", dLayer, 5) + `]}`,
			wantType: registry.MediaTypeDockerManifest, wantBlobs: []digest.Digest{dConfig, dLayer},
			wantArtifact: "application/vnd.docker.container.image.v1+json",
		},
		{
			name:          "docker list",
			body:          `{"schemaVersion":2,"mediaType":"` + registry.MediaTypeDockerList + `","manifests":[` + desc(registry.MediaTypeDockerManifest, dChild, 10) + `]}`,
			wantType:      registry.MediaTypeDockerList,
			wantManifests: []digest.Digest{dChild},
		},
		{
			name:         "artifact with subject and non-distributable layer",
			ct:           ocispec.MediaTypeImageManifest,
			body:         `{"schemaVersion":2,"mediaType":"` + ocispec.MediaTypeImageManifest + `","artifactType":"application/vnd.example.sbom","config":` + desc(ocispec.MediaTypeEmptyJSON, dConfig, 2) + `,"layers":[` + nondist + `],"subject":` + subject + `,"annotations":{"a":"b"},"custom":[1,2]}`,
			wantType:     ocispec.MediaTypeImageManifest,
			wantBlobs:    []digest.Digest{dConfig},
			wantArtifact: "application/vnd.example.sbom",
			wantSubject:  true,
		},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			m, err := registry.ParseManifest(tc.ct, []byte(tc.body))
			require.NoError(t, err)
			require.Equal(t, tc.wantType, m.MediaType)
			require.Equal(t, digest.FromString(tc.body), m.Digest)
			require.Equal(t, tc.wantBlobs, digests(m.Blobs))
			require.Equal(t, tc.wantManifests, digests(m.Manifests))
			require.Equal(t, tc.wantSubject, m.Subject != nil)
			d := m.Descriptor()
			require.Equal(t, tc.wantArtifact, d.ArtifactType)
			require.Equal(t, m.Digest, d.Digest)
			require.Equal(t, int64(len(tc.body)), d.Size)
			require.Equal(t, tc.wantType, d.MediaType)
			require.Equal(t, m.Annotations, d.Annotations)
		})
	}
}

func digests(ds []ocispec.Descriptor) []digest.Digest {
	if len(ds) == 0 {
		return nil
	}
	out := make([]digest.Digest, len(ds))
	for i, d := range ds {
		out[i] = d.Digest
	}
	return out
}

func TestParseManifestInvalid(t *testing.T) {
	t.Parallel()
	cfg := desc(ocispec.MediaTypeImageConfig, dConfig, 2)
	for name, tc := range map[string]struct {
		ct, body, want string
	}{
		"not json":          {"", `{"schemaVersion":2,`, "not a valid JSON"},
		"array":             {"", `[1]`, "want a JSON object"},
		"null":              {"", `null`, "JSON null"},
		"trailing garbage":  {"", `{"schemaVersion":2,"config":` + cfg + `} x`, "not a valid JSON"},
		"no schemaVersion":  {"", `{"config":` + cfg + `}`, "no schemaVersion"},
		"schemaVersion 1":   {"", `{"schemaVersion":1,"config":` + cfg + `}`, "schemaVersion is 1"},
		"bad size type":     {"", `{"schemaVersion":2,"config":{"mediaType":"a/b","digest":"` + dConfig.String() + `","size":"2"}}`, "config.size"},
		"mediaType differs": {ocispec.MediaTypeImageIndex, `{"schemaVersion":2,"mediaType":"` + ocispec.MediaTypeImageManifest + `","config":` + cfg + `}`, "does not match the Content-Type"},
		"unsupported type":  {"application/vnd.docker.distribution.manifest.v1+json", `{"schemaVersion":2}`, "unsupported manifest media type"},
		"bad content type":  {"a/b;;", `{"schemaVersion":2}`, "invalid Content-Type"},
		"no config":         {ocispec.MediaTypeImageManifest, `{"schemaVersion":2,"layers":[]}`, "no config"},
		"index with config": {ocispec.MediaTypeImageIndex, `{"schemaVersion":2,"manifests":[],"config":` + cfg + `}`, "an index lists only manifests"},
		"manifest w/ list":  {ocispec.MediaTypeImageManifest, `{"schemaVersion":2,"manifests":[],"config":` + cfg + `}`, "only an index has one"},
		"missing digest":    {"", `{"schemaVersion":2,"config":{"mediaType":"a/b","size":2}}`, "config: missing digest"},
		"bad digest":        {"", `{"schemaVersion":2,"config":{"mediaType":"a/b","digest":"sha256:abc","size":2}}`, "config: invalid digest"},
		"bad algorithm":     {"", `{"schemaVersion":2,"config":{"mediaType":"a/b","digest":"md5:abc","size":2}}`, "config: invalid digest"},
		"negative size":     {"", `{"schemaVersion":2,"config":{"mediaType":"a/b","digest":"` + dConfig.String() + `","size":-1}}`, "config: negative size"},
		"missing mediaType": {"", `{"schemaVersion":2,"config":{"digest":"` + dConfig.String() + `","size":1}}`, "config: missing mediaType"},
		"bad layer":         {"", `{"schemaVersion":2,"config":` + cfg + `,"layers":[` + cfg + `,{"mediaType":"a/b","digest":"x","size":1}]}`, "layers[1]: invalid digest"},
		"bad child":         {"", `{"schemaVersion":2,"manifests":[{"mediaType":"a/b","digest":"` + dChild.String() + `","size":-5}]}`, "manifests[0]: negative size"},
		"bad subject":       {"", `{"schemaVersion":2,"config":` + cfg + `,"subject":{"mediaType":"a/b","size":1}}`, "subject: missing digest"},
		"bad artifactType":  {"", `{"schemaVersion":2,"artifactType":"nope","config":` + cfg + `}`, "artifactType"},
		"data mismatch":     {"", `{"schemaVersion":2,"config":{"mediaType":"a/b","digest":"` + dConfig.String() + `","size":2,"data":"e30="}}`, "data does not match"},
		"data size":         {"", `{"schemaVersion":2,"config":{"mediaType":"a/b","digest":"` + dConfig.String() + `","size":3,"data":"e30="}}`, "data is 2 bytes"},
	} {
		t.Run(name, func(t *testing.T) {
			t.Parallel()
			_, err := registry.ParseManifest(tc.ct, []byte(tc.body))
			var e *errcode.Error
			require.ErrorAs(t, err, &e)
			require.Equal(t, errcode.CodeManifestInvalid, e.Code)
			require.Equal(t, http.StatusBadRequest, e.Status)
			require.Contains(t, e.Message, tc.want)
		})
	}
}

func TestParseManifestDataField(t *testing.T) {
	t.Parallel()
	body := `{"schemaVersion":2,"config":{"mediaType":"` + ocispec.MediaTypeEmptyJSON + `","digest":"` + digest.FromString("{}").String() + `","size":2,"data":"e30="}}`
	m, err := registry.ParseManifest("", []byte(body))
	require.NoError(t, err)
	require.Equal(t, []byte("{}"), m.Config.Data)
}

func TestParseManifestTooLarge(t *testing.T) {
	t.Parallel()
	body := `{"schemaVersion":2,"config":` + desc("a/b", dConfig, 1) + `,"annotations":{"x":"` + strings.Repeat("a", registry.MaxManifestSize) + `"}}`
	_, err := registry.ParseManifest("", []byte(body))
	e := registry.FromError(err)
	require.Equal(t, http.StatusRequestEntityTooLarge, e.Status)
	require.Equal(t, errcode.CodeManifestInvalid, e.Code)
}

func TestParseOCIDigest(t *testing.T) {
	t.Parallel()
	h256 := strings.Repeat("a1", 32)
	sum := sha512.Sum512([]byte("x"))
	h512 := hex.EncodeToString(sum[:])
	for _, in := range []string{"sha256:" + h256, "sha512:" + h512} {
		d, err := registry.ParseOCIDigest(in)
		require.NoError(t, err, in)
		require.Equal(t, in, d.String())
	}
	for in, code := range map[string]errcode.Code{
		"":                                errcode.CodeDigestInvalid,
		h256:                              errcode.CodeDigestInvalid,
		"sha256:abc":                      errcode.CodeDigestInvalid,
		"sha512:" + h256:                  errcode.CodeDigestInvalid,
		"sha256:" + strings.ToUpper(h256): errcode.CodeDigestInvalid,
		"sha384:" + h512[:96]:             errcode.CodeUnsupported,
		"blake3:" + h256:                  errcode.CodeUnsupported,
		"Sha256:" + h256:                  errcode.CodeDigestInvalid,
		"../../etc/passwd":                errcode.CodeDigestInvalid,
		"sha256:" + h256 + "/x":           errcode.CodeDigestInvalid,
	} {
		_, err := registry.ParseOCIDigest(in)
		var e *errcode.Error
		require.ErrorAs(t, err, &e, in)
		require.Equal(t, code, e.Code, in)
		require.Equal(t, http.StatusBadRequest, e.Status, in)
	}
}

// DescribeReferrers keeps the links' order, leaves out a referrer that is gone, and stops at
// any other error.
func TestDescribeReferrers(t *testing.T) {
	t.Parallel()
	manifests := map[digest.Digest]*registry.Manifest{}
	var refs []digest.Digest
	for _, at := range []string{"a/one", "a/two", "a/three"} {
		body := `{"schemaVersion":2,"mediaType":"` + ocispec.MediaTypeImageManifest + `","artifactType":"` + at +
			`","config":` + desc(ocispec.MediaTypeEmptyJSON, digest.FromString("{}"), 2) + `,"layers":[]}`
		m, err := registry.ParseManifest("", []byte(body))
		require.NoError(t, err)
		manifests[m.Digest] = m
		refs = append(refs, m.Digest)
	}
	gone := digest.FromString("gone")
	fetch := func(_ context.Context, d digest.Digest) (*registry.Manifest, error) {
		if m, ok := manifests[d]; ok {
			return m, nil
		}
		if d == gone {
			return nil, registry.ErrManifestUnknown
		}
		return nil, errors.New("origin down")
	}
	got, err := registry.DescribeReferrers(t.Context(), []digest.Digest{refs[0], gone, refs[1], refs[2]}, 2, fetch)
	require.NoError(t, err)
	require.Len(t, got, 3)
	for i, d := range refs {
		require.Equal(t, d, got[i].Digest)
		require.Equal(t, manifests[d].Descriptor(), got[i])
	}
	_, err = registry.DescribeReferrers(t.Context(), append(refs, digest.FromString("other")), 2, fetch)
	require.ErrorContains(t, err, "origin down")
}
