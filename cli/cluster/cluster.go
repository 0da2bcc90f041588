// Package cluster implements `krakenctl cluster status|join|remove|restore|recover`, which show
// and change the build-index's Raft group through server/client: its members and leader, its
// term and log indexes, who is in it, and rebuilding the tags from the storage backend; and,
// offline on a stopped node's state, bringing back a group that lost its quorum.
package cluster

import (
	"context"
	"net/http"
	"os"

	"github.com/spf13/cobra"

	"github.com/krakenctl/krakenctl/cli/cmdutil"
	"github.com/krakenctl/krakenctl/cli/endpoints"
	"github.com/krakenctl/krakenctl/cli/iostreams"
	"github.com/krakenctl/krakenctl/server/api"
	"github.com/krakenctl/krakenctl/server/client"
)

// API is the part of the build-index client that the cluster commands call. *client.BuildIndex
// implements it; tests may pass fakes. Removing an unknown member wraps client.ErrNotFound;
// unless force is set, a removal that would leave no quorum of live voters is refused with an
// *errcode.Error of code QUORUM_AT_RISK.
type API interface {
	ClusterStatus(ctx context.Context) (api.ClusterStatus, error)
	Join(ctx context.Context, m api.Member) (api.ClusterStatus, error)
	Remove(ctx context.Context, id string, force bool) (api.ClusterStatus, error)
	Restore(ctx context.Context) (api.RestoreResult, error)
}

// deps are what the cluster commands take from the Factory; tests fill them directly.
type deps struct {
	IO         *iostreams.IOStreams
	HTTPClient func() *http.Client
	// Env looks up environment variables (build-index address resolution).
	Env endpoints.Env
	// NewAPI returns the client of the node at addr; the default is client.NewBuildIndex.
	NewAPI func(addr string, hc *http.Client) API

	BuildIndex endpoints.BuildIndexFlags
}

func depsOf(f *cmdutil.Factory) deps {
	return deps{
		IO:         f.IOStreams,
		HTTPClient: f.HTTPClient,
		Env:        os.Getenv,
		NewAPI:     func(addr string, hc *http.Client) API { return client.NewBuildIndex(addr, hc) },
	}
}

// call resolves the build-index nodes and runs fn against the first that can be reached (see
// endpoints.BuildIndex.Try); it returns the address that answered.
func (d *deps) call(ctx context.Context, fn func(ctx context.Context, c API) error) (string, error) {
	nodes, err := d.BuildIndex.Resolve(d.Env)
	if err != nil {
		return "", err
	}
	hc := d.HTTPClient()
	return nodes.Try(ctx, func(ctx context.Context, addr string) error {
		return fn(ctx, d.NewAPI(addr, hc))
	})
}

// NewCmdCluster returns `krakenctl cluster` with its sub-commands.
func NewCmdCluster(f *cmdutil.Factory) *cobra.Command {
	cmd := &cobra.Command{
		Use:   "cluster <command>",
		Short: "Show and change the build-index's Raft membership",
		Long: `Show the build-index's Raft group (members, leader, term and log indexes), add and remove
members, rebuild the tags from the storage backend, and bring back a group that lost its
quorum from the surviving nodes (recover, offline).

Build-index nodes come from --build-index, else --endpoints-file, else $KRAKENCTL_BUILD_INDEX,
else the endpoints file written by ` + "`krakenctl dev up`" + `. They are tried in order; any node
serves any request (membership changes are forwarded to the leader).`,
		Args: cobra.NoArgs,
	}
	cmd.AddCommand(NewCmdStatus(f, nil), NewCmdJoin(f, nil), NewCmdRemove(f, nil), NewCmdRestore(f, nil), NewCmdRecover(f, nil))
	return cmd
}

// argsFunc is a positional-argument check that fails with a usage error (exit code 2) and a
// message that says what the command wants.
func argsFunc(n int, want string) cobra.PositionalArgs {
	return func(cmd *cobra.Command, args []string) error {
		if len(args) != n {
			return cmdutil.FlagErrorf("%s, got %d arguments", want, len(args))
		}
		return nil
	}
}
