package registry_test

import (
	"bytes"
	"fmt"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"testing"

	"github.com/opencontainers/go-digest"
	ocispec "github.com/opencontainers/image-spec/specs-go/v1"
	"github.com/stretchr/testify/require"

	"github.com/krakenctl/krakenctl/server/registry"
	"github.com/krakenctl/krakenctl/server/registry/registrytest"
)

// conformancePkg is the OCI distribution-spec conformance suite, pinned in go.mod as a tool.
const conformancePkg = "github.com/opencontainers/distribution-spec/conformance"

// conformanceBinary returns the path of the conformance suite: $OCI_CONFORMANCE_BIN when set,
// else the pinned version built into a temporary directory (cached by the go build cache).
func conformanceBinary(t *testing.T) string {
	t.Helper()
	if bin := os.Getenv("OCI_CONFORMANCE_BIN"); bin != "" {
		return bin
	}
	gobin, err := exec.LookPath("go")
	if err != nil {
		const msg = "the OCI conformance suite needs the go command to build it (or set OCI_CONFORMANCE_BIN): go is not on PATH"
		if os.Getenv("KRAKENCTL_REQUIRE_REAL_SERVERS") == "1" {
			t.Fatal(msg)
		}
		t.Skip(msg)
	}
	bin := filepath.Join(t.TempDir(), "conformance")
	cmd := exec.CommandContext(t.Context(), gobin, "build", "-o", bin, conformancePkg)
	out, err := cmd.CombinedOutput()
	require.NoError(t, err, "go build %s:\n%s", conformancePkg, out)
	return bin
}

// conformanceResult is what a run of the suite reported.
type conformanceResult struct {
	status                                    string
	passed, failed, errors, skipped, disabled int
	output                                    string
}

var countRE = regexp.MustCompile(`(?m)^\s+(Pass|FAIL|Error|Skip|Disabled)\.*:\s+(\d+)$`)

// runConformance runs the suite against the registry at addr with the given OCI_* settings.
func runConformance(t *testing.T, bin, addr string, env ...string) conformanceResult {
	t.Helper()
	results := t.TempDir()
	cmd := exec.CommandContext(t.Context(), bin)
	cmd.Dir = results
	for _, kv := range os.Environ() {
		if !strings.HasPrefix(kv, "OCI_") {
			cmd.Env = append(cmd.Env, kv)
		}
	}
	cmd.Env = append(cmd.Env, "OCI_REGISTRY="+addr, "OCI_TLS=disabled", "OCI_RESULTS_DIR="+results)
	cmd.Env = append(cmd.Env, env...)
	var out bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &out
	err := cmd.Run()
	res := conformanceResult{output: out.String()}
	m := regexp.MustCompile(`OCI Conformance Result: (\w+)`).FindStringSubmatch(res.output)
	require.NotNil(t, m, "the suite printed no result (a configuration error exits 0); err %v, output:\n%s", err, res.output)
	res.status = m[1]
	for _, c := range countRE.FindAllStringSubmatch(res.output, -1) {
		n, _ := strconv.Atoi(c[2])
		switch c[1] {
		case "Pass":
			res.passed = n
		case "FAIL":
			res.failed = n
		case "Error":
			res.errors = n
		case "Skip":
			res.skipped = n
		case "Disabled":
			res.disabled = n
		}
	}
	return res
}

// TestConformance runs the OCI distribution-spec conformance suite (1.1 profile: sha512,
// referrers, tag parameters, deletes) against the handler over registrytest, then the
// pull-only profile against a read-only handler, the way an agent serves.
func TestConformance(t *testing.T) {
	if testing.Short() {
		t.Skip("builds and runs the OCI conformance suite")
	}
	bin := conformanceBinary(t)

	// 1.1 is the suite's default profile; dev adds tag parameters on a push by digest, upload
	// cancel and required Docker-Content-Digest headers.
	for _, version := range []string{"1.1", "dev"} {
		t.Run("push-"+version, func(t *testing.T) {
			reg := registrytest.New()
			srv := httptest.NewServer(registry.NewHandler(reg, reg, registry.HandlerOptions{}))
			defer srv.Close()
			res := runConformance(t, bin, srv.Listener.Addr().String(), "OCI_VERSION="+version)
			require.Equal(t, "Pass", res.status, "suite output:\n%s", res.output)
			require.Zero(t, res.failed+res.errors, "suite output:\n%s", res.output)
			require.Zero(t, res.skipped, "suite output:\n%s", res.output)
			require.Greater(t, res.passed, 800, "suite output:\n%s", res.output)
			require.Zero(t, reg.Uploads(), "upload sessions left open")
			t.Logf("conformance (push, %s): %d passed, %d failed, %d skipped, %d disabled", version, res.passed, res.failed+res.errors, res.skipped, res.disabled)
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
		require.Equal(t, "Pass", res.status, "suite output:\n%s", res.output)
		require.Zero(t, res.failed+res.errors, "suite output:\n%s", res.output)
		require.Positive(t, res.passed)
		t.Logf("conformance (pull-only): %d passed, %d failed, %d skipped", res.passed, res.failed+res.errors, res.skipped)
	})
}
