package cluster

import (
	"context"
	"fmt"

	"github.com/spf13/cobra"

	"github.com/krakenctl/krakenctl/cli/cmdutil"
	"github.com/krakenctl/krakenctl/cli/endpoints"
	"github.com/krakenctl/krakenctl/server/api"
)

// RestoreOptions are the inputs of `krakenctl cluster restore`.
type RestoreOptions struct {
	deps
	Output string
}

// NewCmdRestore returns `krakenctl cluster restore`. runF replaces the run function in tests.
func NewCmdRestore(f *cmdutil.Factory, runF func(context.Context, *RestoreOptions) error) *cobra.Command {
	opts := &RestoreOptions{deps: depsOf(f)}
	cmd := &cobra.Command{
		Use:   "restore",
		Short: "Rebuild the tags from the storage backend",
		Long: `Rebuild the build-index's tags from the copies it writes to the storage backend: every tag
found there is imported through Raft, unless the cluster already holds that tag with a value at
least as new (those are skipped). Use it to repopulate a fresh cluster after losing every node's
disk. It is safe to run more than once.`,
		Example: `  krakenctl cluster restore --build-index 127.0.0.1:15100`,
		Args:    argsFunc(0, "restore takes no arguments"),
		RunE: func(cmd *cobra.Command, args []string) error {
			if err := cmdutil.CheckOutput(opts.Output); err != nil {
				return err
			}
			if runF != nil {
				return runF(cmd.Context(), opts)
			}
			return restoreRun(cmd.Context(), opts)
		},
	}
	endpoints.AddBuildIndexFlags(cmd, &opts.BuildIndex)
	cmdutil.AddOutputFlag(cmd, &opts.Output)
	return cmd
}

func restoreRun(ctx context.Context, opts *RestoreOptions) error {
	var rr api.RestoreResult
	_, err := opts.call(ctx, func(ctx context.Context, c API) error {
		var err error
		rr, err = c.Restore(ctx)
		return err
	})
	if err != nil {
		return err
	}
	if opts.Output == cmdutil.OutputJSON {
		return cmdutil.PrintJSON(opts.IO.Out, rr)
	}
	_, err = fmt.Fprintf(opts.IO.Out, "restored tags from the storage backend: %d imported, %d skipped\n", rr.Imported, rr.Skipped)
	return err
}
