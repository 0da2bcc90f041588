package proxy_test

import (
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/krakenctl/krakenctl/server/auth"
	"github.com/krakenctl/krakenctl/server/proxy"
	"github.com/krakenctl/krakenctl/server/registry/conformance"
)

// TestConformance runs the OCI distribution-spec conformance suite (the version pinned in
// go.mod) against a proxy over real origins and a real build-index, and requires that no
// check fails, errs or is skipped: without auth, and with auth on in both modes (the suite
// logs in with OCI_USERNAME and OCI_PASSWORD, answering the Bearer challenge with the token
// flow, or sending Basic). Every category of the 1.1 profile runs (push, pull, content
// discovery with referrers, content management, sha512), plus the development profile's
// upload cancel, digest headers and tag parameters. It needs the go command to build the
// suite; it is skipped with -short.
func TestConformance(t *testing.T) {
	if testing.Short() {
		t.Skip("the conformance suite takes a while; run without -short")
	}
	bin := conformance.Binary(t)
	st := newStack(t, 3)
	for _, tc := range []struct {
		name  string
		auth  string // mode, "" for none
		extra []string
	}{
		{name: "open"},
		{name: "token", auth: auth.ModeToken, extra: []string{"OCI_USERNAME=pusher", "OCI_PASSWORD=" + pusherPW}},
		{name: "basic", auth: auth.ModeBasic, extra: []string{"OCI_USERNAME=pusher", "OCI_PASSWORD=" + pusherPW}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			p := st.newProxy(func(c *proxy.Config) {
				if tc.auth != "" {
					c.Auth = authConfig(t, tc.auth)
				}
			})
			// 1.1 with the optional categories of the development profile on: upload cancel,
			// digest headers, tag parameters (with sha512). Sparse manifests stay off: the proxy
			// refuses a manifest that references content its repository lacks
			// (MANIFEST_BLOB_UNKNOWN), as registry.Writer requires and the spec allows.
			// Anonymous mounts (?mount= without from=) are off: the proxy starts an upload
			// rather than link a blob of whatever repository holds it, as the spec allows.
			settings := append([]string{"OCI_VERSION=dev", "OCI_API_BLOBS_MOUNT_ANONYMOUS=false"}, tc.extra...)
			r := conformance.Run(t.Context(), bin, t.TempDir(), p.Addr(), settings...)
			require.Equal(t, "Pass", r.Status, r.Report())
			require.NoError(t, r.ExitErr, r.Report())
			passed, skipped := r.Counts["Pass"], r.Counts["Skip"]
			t.Logf("conformance: %d passed, %d failed, %d errors, %d skipped", passed, r.Counts["FAIL"], r.Counts["Error"], skipped)
			require.Zero(t, r.Counts["FAIL"]+r.Counts["Error"], r.Report())
			// Every category ran: 980 checks pass at the pinned version.
			require.GreaterOrEqual(t, passed, 950, "fewer checks ran than the profile holds: %s", r.Report())
			require.Zero(t, skipped, "checks were skipped: %s", r.Report())
		})
	}
}
