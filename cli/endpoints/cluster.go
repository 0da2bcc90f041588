package endpoints

import (
	"errors"
	"fmt"
	"io/fs"

	"github.com/spf13/cobra"

	"github.com/krakenctl/krakenctl/cli/cmdutil"
	"github.com/krakenctl/krakenctl/server/api"
)

// ErrNoCluster means neither flags nor an endpoints file named any role to watch.
var ErrNoCluster = errors.New("no cluster to watch")

// ClusterFlags name a whole cluster, for the commands that watch every role (top, swarm).
type ClusterFlags struct {
	File                      string
	Origins, Trackers, Agents []string
}

// AddClusterFlags registers --endpoints-file, --origins, --trackers and --agents on cmd.
func AddClusterFlags(cmd *cobra.Command, f *ClusterFlags) {
	cmd.Flags().StringVar(&f.File, "endpoints-file", "",
		"read the cluster's addresses from this endpoints file (default $XDG_STATE_HOME/krakenctl/dev/"+FileName+")")
	_ = cmd.MarkFlagFilename("endpoints-file", "yaml", "yml", "json")
	cmd.Flags().StringSliceVar(&f.Origins, "origins", nil, "origin addresses (host:port), instead of the endpoints file's")
	cmd.Flags().StringSliceVar(&f.Trackers, "trackers", nil, "tracker addresses (host:port), instead of the endpoints file's")
	cmd.Flags().StringSliceVar(&f.Agents, "agents", nil, "agent API addresses (host:port), instead of the endpoints file's")
}

// Cluster is a resolved cluster: its roles' addresses and where they came from.
type Cluster struct {
	api.Endpoints
	// Source names the endpoints file, or "flags".
	Source string
	// DevFile is the endpoints file the addresses were read from, if any.
	DevFile string
}

// Resolve returns the cluster: the endpoints file given with --endpoints-file, else (when no
// role flag is given) the one dev up writes, with each role flag replacing its list. A
// malformed flag is a usage error naming it; finding no role at all is a usage error wrapping
// ErrNoCluster.
func (f ClusterFlags) Resolve(env Env) (Cluster, error) {
	var c Cluster
	path := f.File
	if path == "" && len(f.Origins)+len(f.Trackers)+len(f.Agents) == 0 {
		p, err := DefaultFile(env)
		if err != nil {
			return c, &cmdutil.FlagError{Err: fmt.Errorf("%w: %w", ErrNoCluster, err)}
		}
		path = p
	}
	if path != "" {
		e, err := api.ReadEndpoints(path)
		switch {
		case errors.Is(err, fs.ErrNotExist) && f.File == "":
			return c, &cmdutil.FlagError{Err: fmt.Errorf("%w (no endpoints file at %s): pass --endpoints-file, or --trackers, --origins and --agents, or start a local cluster with `krakenctl dev up`", ErrNoCluster, path)}
		case err != nil:
			return c, fmt.Errorf("--endpoints-file: %w", err)
		}
		c.Endpoints, c.Source, c.DevFile = e, path, path
	}
	for _, o := range []struct {
		flag string
		val  []string
		dst  *[]string
	}{{"--origins", f.Origins, &c.Origins}, {"--trackers", f.Trackers, &c.Trackers}, {"--agents", f.Agents, &c.Agents}} {
		if len(o.val) == 0 {
			continue
		}
		addrs, err := parseList(o.val)
		if err != nil {
			return c, cmdutil.FlagErrorf("invalid %s: %w", o.flag, err)
		}
		*o.dst = addrs
		if c.Source == "" {
			c.Source = "flags"
		}
	}
	if len(c.Origins)+len(c.Trackers)+len(c.Agents) == 0 {
		return c, &cmdutil.FlagError{Err: fmt.Errorf("%w: %s names no origins, trackers or agents", ErrNoCluster, c.Source)}
	}
	return c, nil
}

// Explain adds a hint to err when the addresses came from an endpoints file that may be stale.
func (c Cluster) Explain(err error) error {
	return explain(err, "roles", append(append(append([]string{}, c.Trackers...), c.Origins...), c.Agents...), c.DevFile)
}
