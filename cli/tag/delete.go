package tag

import (
	"context"
	"fmt"

	"github.com/spf13/cobra"

	"github.com/krakenctl/krakenctl/cli/cmdutil"
	"github.com/krakenctl/krakenctl/cli/endpoints"
	"github.com/krakenctl/krakenctl/server/api"
)

// DeleteOptions are the inputs of `krakenctl tag delete`.
type DeleteOptions struct {
	deps
	Ref    Ref
	Output string
}

// NewCmdDelete returns `krakenctl tag delete`. runF replaces the run function in tests.
func NewCmdDelete(f *cmdutil.Factory, runF func(context.Context, *DeleteOptions) error) *cobra.Command {
	opts := &DeleteOptions{deps: depsOf(f)}
	cmd := &cobra.Command{
		Use:   "delete REPOSITORY:TAG",
		Short: "Delete a tag",
		Long: `Delete REPOSITORY:TAG and print the digest it pointed at. The manifest and its blobs stay
in the origins; only the name goes. Deleting a tag that does not exist is an error.`,
		Example: `  krakenctl tag delete team/app:pr-1234`,
		Args:    argsFunc(1, 1, "delete takes one REPOSITORY:TAG argument"),
		RunE: func(cmd *cobra.Command, args []string) error {
			ref, err := parseRefArg(args[0])
			if err != nil {
				return err
			}
			opts.Ref = ref
			if err := cmdutil.CheckOutput(opts.Output); err != nil {
				return err
			}
			if err := opts.useRegistry(); err != nil {
				return err
			}
			if runF != nil {
				return runF(cmd.Context(), opts)
			}
			return deleteRun(cmd.Context(), opts)
		},
	}
	endpoints.AddBuildIndexFlags(cmd, &opts.BuildIndex)
	cmdutil.AddRegistryFlags(cmd, &opts.Registry, "the tags")
	cmdutil.AddOutputFlag(cmd, &opts.Output)
	return cmd
}

func deleteRun(ctx context.Context, opts *DeleteOptions) error {
	var t api.Tag
	err := opts.call(ctx, func(ctx context.Context, c API) error {
		var err error
		t, err = c.DeleteTag(ctx, opts.Ref.Repo, opts.Ref.Tag)
		return err
	})
	if err != nil {
		return notFound(opts.Ref, err)
	}
	if opts.Output == cmdutil.OutputJSON {
		return cmdutil.PrintJSON(opts.IO.Out, t)
	}
	_, err = fmt.Fprintf(opts.IO.Out, "deleted %s (was %s)\n", opts.Ref, t.Digest)
	return err
}
