package tag

import (
	"context"
	"fmt"

	"github.com/spf13/cobra"

	"github.com/krakenctl/krakenctl/cli/cmdutil"
	"github.com/krakenctl/krakenctl/cli/endpoints"
	"github.com/krakenctl/krakenctl/server/api"
)

// GetOptions are the inputs of `krakenctl tag get`.
type GetOptions struct {
	deps
	Ref    Ref
	Stale  bool
	Output string
}

// NewCmdGet returns `krakenctl tag get`. runF replaces the run function in tests.
func NewCmdGet(f *cmdutil.Factory, runF func(context.Context, *GetOptions) error) *cobra.Command {
	opts := &GetOptions{deps: depsOf(f)}
	cmd := &cobra.Command{
		Use:   "get REPOSITORY:TAG",
		Short: "Print the digest a tag points at",
		Long: `Print the manifest digest that REPOSITORY:TAG points at.

The read is linearizable: it reflects every tag change acknowledged before it started, whichever
node answers. With --stale the answering node reads its own copy without asking the leader,
which is faster and still works when the cluster has no leader, but may miss recent changes.

With -o json the whole tag is printed: repository, tag, digest, the Raft index of the change
that set it, and when that was.`,
		Example: `  krakenctl tag get team/app:prod
  krakenctl tag get localhost:5000/team/app:v1.2 --stale -o json`,
		Args: argsFunc(1, 1, "get takes one REPOSITORY:TAG argument"),
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
			if opts.reg != nil && opts.Stale {
				return cmdutil.FlagErrorf("--stale reads a build-index node's own copy; it has no meaning with %s", opts.reg.Source)
			}
			if runF != nil {
				return runF(cmd.Context(), opts)
			}
			return getRun(cmd.Context(), opts)
		},
	}
	endpoints.AddBuildIndexFlags(cmd, &opts.BuildIndex)
	cmdutil.AddRegistryFlags(cmd, &opts.Registry, "the tags")
	cmd.Flags().BoolVar(&opts.Stale, "stale", false, "read the answering node's copy without asking the leader (may miss recent changes)")
	cmdutil.AddOutputFlag(cmd, &opts.Output)
	return cmd
}

func getRun(ctx context.Context, opts *GetOptions) error {
	var t api.Tag
	err := opts.call(ctx, func(ctx context.Context, c API) error {
		var err error
		t, err = c.GetTag(ctx, opts.Ref.Repo, opts.Ref.Tag, opts.Stale)
		return err
	})
	if err != nil {
		return notFound(opts.Ref, err)
	}
	if opts.Output == cmdutil.OutputJSON {
		return cmdutil.PrintJSON(opts.IO.Out, t)
	}
	_, err = fmt.Fprintln(opts.IO.Out, t.Digest)
	return err
}
