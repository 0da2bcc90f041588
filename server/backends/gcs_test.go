package backends_test

import (
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/krakenctl/krakenctl/backend/gcs"
	"github.com/krakenctl/krakenctl/server/backends"
	"github.com/krakenctl/krakenctl/server/config"
)

// TestGCSRoute: a route with `gcs:` decodes strictly (an inline key is refused, not ignored),
// is validated with the gcs config's own rules, and builds a router without contacting GCS.
func TestGCSRoute(t *testing.T) {
	t.Parallel()
	type roleConfig struct {
		Backends []backends.Config `yaml:"backends"`
	}
	var cfg roleConfig
	require.NoError(t, config.Unmarshal([]byte(`
backends:
  - namespace: "library/.*"
    gcs:
      bucket: images
      prefix: prod
      endpoint: http://127.0.0.1:4443
`), &cfg))
	require.Len(t, cfg.Backends, 1)
	require.NoError(t, cfg.Backends[0].Validate())
	require.Equal(t, gcs.DefaultChunkSize, cfg.Backends[0].GCS.ChunkSize, "Validate applied the defaults")
	r, err := backends.Build(t.Context(), cfg.Backends)
	require.NoError(t, err)
	require.NotNil(t, r)

	var bad roleConfig
	err = config.Unmarshal([]byte(`
backends:
  - namespace: ".*"
    gcs: {bucket: images, private_key: "-----BEGIN PRIVATE KEY-----"}
`), &bad)
	require.ErrorContains(t, err, "backends[0].gcs.private_key: line 4: field private_key not found")

	missing := backends.Config{Namespace: ".*", GCS: &gcs.Config{}}
	require.ErrorContains(t, missing.Validate(), "gcs: bucket: must be set")
}
