package agent

import (
	"net/http"
	"testing"

	"github.com/opencontainers/go-digest"
	"github.com/stretchr/testify/require"

	"github.com/krakenctl/krakenctl/server/registry"
	"github.com/krakenctl/krakenctl/server/registry/errcode"
)

// TestNoIndex: without build_index, every read that needs it says so; failover between nodes is
// client.BuildIndexes's (tested there) and TestRegistryBuildIndexFailover's.
func TestNoIndex(t *testing.T) {
	t.Parallel()
	r := newOCIReader(nil, nil, nil)
	check := func(err error) {
		t.Helper()
		e := registry.FromError(err)
		require.Equal(t, http.StatusServiceUnavailable, e.Status)
		require.Equal(t, errcode.CodeUnavailable, e.Code)
		require.Contains(t, e.Message, "no build_index configured")
	}
	_, err := r.Manifest(t.Context(), "r", registry.Reference{Tag: "t"})
	check(err)
	_, _, err = r.Tags(t.Context(), "r", "", 10)
	check(err)
	_, _, err = r.Catalog(t.Context(), "", 10)
	check(err)
	_, err = r.Referrers(t.Context(), "r", digest.FromString("x"))
	check(err)
	_, err = r.Blob(t.Context(), "r", digest.SHA512.FromString("x"))
	check(err)
}
