package tag

import (
	"context"
	"fmt"

	"github.com/opencontainers/go-digest"
	"github.com/spf13/cobra"

	"github.com/krakenctl/krakenctl/cli/cmdutil"
	"github.com/krakenctl/krakenctl/cli/endpoints"
	"github.com/krakenctl/krakenctl/server/api"
)

// PutOptions are the inputs of `krakenctl tag put`.
type PutOptions struct {
	deps
	Ref    Ref
	Digest digest.Digest
	Output string
}

// NewCmdPut returns `krakenctl tag put`. runF replaces the run function in tests.
func NewCmdPut(f *cmdutil.Factory, runF func(context.Context, *PutOptions) error) *cobra.Command {
	opts := &PutOptions{deps: depsOf(f)}
	cmd := &cobra.Command{
		Use:   "put REPOSITORY:TAG DIGEST",
		Short: "Point a tag at a manifest digest",
		Long: `Create REPOSITORY:TAG or move it to DIGEST (sha256:<hex> or the hex alone).

The build-index accepts the tag only when the origins hold the manifest DIGEST names (and, when
it can parse the manifest, every blob it references), so a tag never points at missing content.
When the command returns the change is committed: every node's reads see it.`,
		Example: `  krakenctl tag put team/app:prod sha256:4a5c...e1
  krakenctl tag put team/app:v1.2 "$(krakenctl push manifest.json)"`,
		Args: argsFunc(2, 2, "put takes REPOSITORY:TAG and DIGEST arguments"),
		RunE: func(cmd *cobra.Command, args []string) error {
			ref, err := parseRefArg(args[0])
			if err != nil {
				return err
			}
			d, err := cmdutil.ParseDigest(args[1])
			if err != nil {
				return cmdutil.FlagErrorf("invalid DIGEST argument: %w", err)
			}
			opts.Ref, opts.Digest = ref, d
			if err := cmdutil.CheckOutput(opts.Output); err != nil {
				return err
			}
			if err := opts.useRegistry(); err != nil {
				return err
			}
			if runF != nil {
				return runF(cmd.Context(), opts)
			}
			return putRun(cmd.Context(), opts)
		},
	}
	endpoints.AddBuildIndexFlags(cmd, &opts.BuildIndex)
	cmdutil.AddRegistryFlags(cmd, &opts.Registry, "the tags")
	cmdutil.AddOutputFlag(cmd, &opts.Output)
	return cmd
}

func putRun(ctx context.Context, opts *PutOptions) error {
	var t api.Tag
	err := opts.call(ctx, func(ctx context.Context, c API) error {
		var err error
		t, err = c.PutTag(ctx, opts.Ref.Repo, opts.Ref.Tag, opts.Digest)
		return err
	})
	if err != nil {
		return err
	}
	if opts.Output == cmdutil.OutputJSON {
		return cmdutil.PrintJSON(opts.IO.Out, t)
	}
	if opts.reg != nil {
		// A registry does not say at which Raft index the tag changed.
		_, err = fmt.Fprintf(opts.IO.Out, "%s:%s -> %s\n", t.Repo, t.Tag, t.Digest)
		return err
	}
	_, err = fmt.Fprintf(opts.IO.Out, "%s:%s -> %s (index %d)\n", t.Repo, t.Tag, t.Digest, t.Index)
	return err
}
