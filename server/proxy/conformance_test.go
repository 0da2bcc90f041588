package proxy_test

import (
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/krakenctl/krakenctl/server/registry/conformance"
)

// TestConformance runs the OCI distribution-spec conformance suite (the version pinned in
// go.mod) against a proxy over real origins and a real build-index, and
// requires that no check fails or errs. Every category of the 1.1 profile runs (push, pull,
// content discovery with referrers, content management, sha512), plus the development
// profile's upload cancel, digest headers and tag parameters. It needs the go command to build
// the suite; it is skipped with -short.
func TestConformance(t *testing.T) {
	if testing.Short() {
		t.Skip("the conformance suite takes a while; run without -short")
	}
	bin := conformance.Binary(t)
	st := newStack(t, 3)
	p := st.newProxy(nil)
	// 1.1 with the optional categories of the development profile on: upload cancel, digest
	// headers, tag parameters (with sha512). Sparse manifests stay off: the proxy refuses a
	// manifest that references content its repository lacks (MANIFEST_BLOB_UNKNOWN), as
	// registry.Writer requires and the spec allows.
	r := conformance.Run(t.Context(), bin, t.TempDir(), p.Addr(), "OCI_VERSION=dev")
	require.Equal(t, "Pass", r.Status, r.Report())
	require.NoError(t, r.ExitErr, r.Report())
	passed, skipped := r.Counts["Pass"], r.Counts["Skip"]
	t.Logf("conformance: %d passed, %d failed, %d errors, %d skipped", passed, r.Counts["FAIL"], r.Counts["Error"], skipped)
	require.Zero(t, r.Counts["FAIL"]+r.Counts["Error"], r.Report())
	// Every category ran: 983 checks pass at the pinned version. One check is skipped by the
	// suite itself: a mount without from= of a sha512 blob, which the proxy answers with 202
	// (start an upload), as the spec allows.
	require.GreaterOrEqual(t, passed, 950, "fewer checks ran than the profile holds: %s", r.Report())
	require.LessOrEqual(t, skipped, 1, "checks were skipped: %s", r.Report())
}
