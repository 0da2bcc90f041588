package endpoints_test

import (
	"path/filepath"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/krakenctl/krakenctl/cli/cmdutil"
	"github.com/krakenctl/krakenctl/cli/endpoints"
	"github.com/krakenctl/krakenctl/server/api"
)

func TestClusterResolve(t *testing.T) {
	t.Parallel()
	state := t.TempDir()
	defaultFile := filepath.Join(state, "krakenctl", "dev", "endpoints.yaml")
	require.NoError(t, api.WriteEndpoints(defaultFile, api.Endpoints{
		Origins: []string{"127.0.0.1:15000"}, Trackers: []string{"127.0.0.1:15300"}, Agents: []string{"127.0.0.1:16000"},
	}))
	custom := filepath.Join(t.TempDir(), "custom.json")
	require.NoError(t, api.WriteEndpoints(custom, api.Endpoints{Origins: []string{"127.0.0.2:80"}}))
	env := envOf(map[string]string{"XDG_STATE_HOME": state})

	c, err := endpoints.ClusterFlags{}.Resolve(env)
	require.NoError(t, err)
	require.Equal(t, defaultFile, c.Source)
	require.Equal(t, []string{"127.0.0.1:15300"}, c.Trackers)
	require.Equal(t, []string{"127.0.0.1:16000"}, c.Agents)

	c, err = endpoints.ClusterFlags{File: custom, Agents: []string{"127.0.0.3:1,127.0.0.4:1"}}.Resolve(env)
	require.NoError(t, err)
	require.Equal(t, []string{"127.0.0.2:80"}, c.Origins)
	require.Equal(t, []string{"127.0.0.3:1", "127.0.0.4:1"}, c.Agents, "a flag replaces the file's list")
	require.Empty(t, c.Trackers)

	c, err = endpoints.ClusterFlags{Trackers: []string{"127.0.0.5:1"}}.Resolve(env)
	require.NoError(t, err)
	require.Equal(t, "flags", c.Source, "role flags alone do not read the default file")
	require.Empty(t, c.Origins)

	_, err = endpoints.ClusterFlags{}.Resolve(envOf(map[string]string{"XDG_STATE_HOME": t.TempDir()}))
	require.ErrorIs(t, err, endpoints.ErrNoCluster)
	require.ErrorContains(t, err, "krakenctl dev up")
	require.Equal(t, cmdutil.ExitUsage, cmdutil.ExitCode(err))

	_, err = endpoints.ClusterFlags{Agents: []string{"http://x:1"}}.Resolve(env)
	require.ErrorContains(t, err, "invalid --agents")
	require.Equal(t, cmdutil.ExitUsage, cmdutil.ExitCode(err))

	_, err = endpoints.ClusterFlags{File: filepath.Join(state, "nope.yaml")}.Resolve(env)
	require.ErrorContains(t, err, "--endpoints-file")

	empty := filepath.Join(t.TempDir(), "empty.yaml")
	require.NoError(t, api.WriteEndpoints(empty, api.Endpoints{BuildIndex: []string{"127.0.0.1:1"}}))
	_, err = endpoints.ClusterFlags{File: empty}.Resolve(env)
	require.ErrorIs(t, err, endpoints.ErrNoCluster)
}
