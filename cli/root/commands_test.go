package root_test

import (
	"strings"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/krakenctl/krakenctl/cli/root"
)

func TestBuildIndexCommandsAreWired(t *testing.T) {
	t.Parallel()
	f, _, _ := testFactory()
	cmd := root.NewCmdRoot(f)
	for path, group := range map[string]string{
		"tag get": "cluster", "tag put": "cluster", "tag delete": "cluster", "tag list": "cluster",
		"cluster status": "cluster", "cluster join": "cluster", "cluster remove": "cluster", "cluster restore": "cluster",
	} {
		c, _, err := cmd.Find(strings.Fields(path))
		require.NoError(t, err, path)
		require.Equal(t, "krakenctl "+path, c.CommandPath())
		require.Equal(t, group, c.Parent().GroupID, "%s is listed under the Cluster group", path)
		require.NotNil(t, c.Flags().Lookup("build-index"), "%s takes --build-index", path)
	}
}
