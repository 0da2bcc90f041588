// Package version implements `krakenctl version`.
package version

import (
	"fmt"
	"runtime"

	"github.com/spf13/cobra"

	"github.com/krakenctl/krakenctl/cli/cmdutil"
)

// Options are the version command's inputs.
type Options struct {
	Output string
}

// Info is what `version -o json` prints.
type Info struct {
	Version string `json:"version"`
	// Commit is the source revision (a git SHA, "-dirty" when built from a modified tree) and
	// BuildDate the build's date (RFC 3339): release builds (goreleaser.yaml, scripts/image.sh)
	// use the commit's time, so that building the same commit twice gives the same binary;
	// both "" when the build did not record them.
	Commit    string `json:"commit"`
	BuildDate string `json:"build_date"`
	GoVersion string `json:"go_version"`
	Platform  string `json:"platform"`
}

// NewCmdVersion returns `krakenctl version`. runF replaces the run function in tests.
func NewCmdVersion(f *cmdutil.Factory, runF func(*Options) error) *cobra.Command {
	opts := &Options{}
	cmd := &cobra.Command{
		Use:   "version",
		Short: "Print the version, commit and build date of krakenctl",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			if err := cmdutil.CheckOutput(opts.Output); err != nil {
				return err
			}
			if runF != nil {
				return runF(opts)
			}
			return run(f, opts)
		},
	}
	cmdutil.AddOutputFlag(cmd, &opts.Output)
	return cmd
}

func run(f *cmdutil.Factory, opts *Options) error {
	info := Info{Version: f.Version, Commit: f.Commit, BuildDate: f.BuildDate, GoVersion: runtime.Version(), Platform: runtime.GOOS + "/" + runtime.GOARCH}
	if opts.Output == cmdutil.OutputJSON {
		return cmdutil.PrintJSON(f.IOStreams.Out, info)
	}
	_, err := fmt.Fprintf(f.IOStreams.Out, "krakenctl %s (commit %s, built %s, %s, %s)\n",
		info.Version, orUnknown(info.Commit), orUnknown(info.BuildDate), info.GoVersion, info.Platform)
	return err
}

func orUnknown(s string) string {
	if s == "" {
		return "unknown"
	}
	return s
}
