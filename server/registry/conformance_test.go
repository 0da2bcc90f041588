package registry_test

import (
	"fmt"
	"net/http/httptest"
	"testing"

	"github.com/opencontainers/go-digest"
	ocispec "github.com/opencontainers/image-spec/specs-go/v1"
	"github.com/stretchr/testify/require"

	"github.com/krakenctl/krakenctl/server/registry"
	"github.com/krakenctl/krakenctl/server/registry/conformance"
	"github.com/krakenctl/krakenctl/server/registry/registrytest"
)

// runConformance runs the suite against the registry at addr with the given OCI_* settings.
func runConformance(t *testing.T, bin, addr string, env ...string) conformance.Result {
	t.Helper()
	res := conformance.Run(t.Context(), bin, t.TempDir(), addr, env...)
	require.NotEmpty(t, res.Status, "the suite printed no result (a configuration error exits 0): %s", res.Report())
	return res
}

// TestConformance runs the OCI distribution-spec conformance suite (1.1 profile: sha512,
// referrers, tag parameters, deletes) against the handler over registrytest, then the
// pull-only profile against a read-only handler, the way an agent serves.
func TestConformance(t *testing.T) {
	if testing.Short() {
		t.Skip("builds and runs the OCI conformance suite")
	}
	bin := conformance.Binary(t)

	// 1.1 is the suite's default profile; dev adds tag parameters on a push by digest, upload
	// cancel and required Docker-Content-Digest headers.
	for _, version := range []string{"1.1", "dev"} {
		t.Run("push-"+version, func(t *testing.T) {
			reg := registrytest.New()
			srv := httptest.NewServer(registry.NewHandler(reg, reg, registry.HandlerOptions{}))
			defer srv.Close()
			res := runConformance(t, bin, srv.Listener.Addr().String(), "OCI_VERSION="+version)
			require.Equal(t, "Pass", res.Status, "suite output:\n%s", res.Output)
			require.Zero(t, res.Counts["FAIL"]+res.Counts["Error"], "suite output:\n%s", res.Output)
			require.Zero(t, res.Counts["Skip"], "suite output:\n%s", res.Output)
			require.Greater(t, res.Counts["Pass"], 800, "suite output:\n%s", res.Output)
			require.Zero(t, reg.Uploads(), "upload sessions left open")
			t.Logf("conformance (push, %s): %d passed, %d failed, %d skipped, %d disabled", version, res.Counts["Pass"], res.Counts["FAIL"]+res.Counts["Error"], res.Counts["Skip"], res.Counts["Disabled"])
		})
	}

	t.Run("pull-only", func(t *testing.T) {
		reg := registrytest.New()
		const repo, tag = "conformance/readonly", "seeded"
		layer := reg.PushBlob(repo, digest.SHA256, []byte("a layer that is not really a tarball"))
		config := reg.PushBlob(repo, digest.SHA256, []byte(`{"architecture":"amd64","os":"linux"}`))
		body := fmt.Sprintf(`{"schemaVersion":2,"mediaType":%q,"config":{"mediaType":%q,"digest":%q,"size":37},"layers":[{"mediaType":%q,"digest":%q,"size":36}]}`,
			ocispec.MediaTypeImageManifest, ocispec.MediaTypeImageConfig, config, ocispec.MediaTypeImageLayer, layer)
		man, err := reg.PushManifest(repo, "", []byte(body), tag)
		require.NoError(t, err)

		srv := httptest.NewServer(registry.NewHandler(reg, nil, registry.HandlerOptions{}))
		defer srv.Close()
		res := runConformance(t, bin, srv.Listener.Addr().String(),
			"OCI_REPO1="+repo,
			"OCI_API_PUSH=false", "OCI_API_TAGS_DELETE=false", "OCI_API_MANIFESTS_DELETE=false", "OCI_API_BLOBS_DELETE=false",
			"OCI_RO_DATA_TAGS="+tag, "OCI_RO_DATA_MANIFESTS="+man.String(),
			"OCI_RO_DATA_BLOBS="+layer.String()+" "+config.String())
		require.Equal(t, "Pass", res.Status, "suite output:\n%s", res.Output)
		require.Zero(t, res.Counts["FAIL"]+res.Counts["Error"], "suite output:\n%s", res.Output)
		require.Positive(t, res.Counts["Pass"])
		t.Logf("conformance (pull-only): %d passed, %d failed, %d skipped", res.Counts["Pass"], res.Counts["FAIL"]+res.Counts["Error"], res.Counts["Skip"])
	})
}
