// Package man implements the hidden `krakenctl man` command, which writes a man page for every
// command (scripts/gen-docs.sh uses it to produce man/).
package man

import (
	"fmt"
	"os"

	"github.com/spf13/cobra"
	"github.com/spf13/cobra/doc"

	"github.com/krakenctl/krakenctl/cli/cmdutil"
)

// Options are the man command's inputs.
type Options struct {
	Dir string
}

// NewCmdMan returns the hidden `krakenctl man --dir DIR`.
func NewCmdMan(f *cmdutil.Factory, runF func(*Options) error) *cobra.Command {
	opts := &Options{}
	cmd := &cobra.Command{
		Use:    "man",
		Short:  "Write man pages for every command",
		Hidden: true,
		Args:   cobra.NoArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			if opts.Dir == "" {
				return cmdutil.FlagErrorf("--dir is required")
			}
			if runF != nil {
				return runF(opts)
			}
			return run(cmd.Root(), f, opts)
		},
	}
	cmd.Flags().StringVar(&opts.Dir, "dir", "", "directory to write the man pages into")
	return cmd
}

func run(root *cobra.Command, f *cmdutil.Factory, opts *Options) error {
	if err := os.MkdirAll(opts.Dir, 0o755); err != nil {
		return fmt.Errorf("create man dir: %w", err)
	}
	root.DisableAutoGenTag = true // keep generated pages stable so CI can diff them
	hdr := &doc.GenManHeader{Title: "KRAKENCTL", Section: "1", Source: "krakenctl", Manual: "krakenctl manual"}
	if err := doc.GenManTree(root, hdr, opts.Dir); err != nil {
		return fmt.Errorf("generate man pages: %w", err)
	}
	_, err := fmt.Fprintf(f.IOStreams.ErrOut, "wrote man pages to %s\n", opts.Dir)
	return err
}
