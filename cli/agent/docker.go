package agent

import (
	"context"
	"fmt"

	"github.com/spf13/cobra"

	"github.com/krakenctl/krakenctl/cli/cmdutil"
	"github.com/krakenctl/krakenctl/cli/iostreams"
	"github.com/krakenctl/krakenctl/server/api"
	"github.com/krakenctl/krakenctl/server/nodeconfig"
)

// DockerOptions are the inputs of `krakenctl agent docker-config`.
type DockerOptions struct {
	IO     *iostreams.IOStreams
	File   string
	Agent  string
	DryRun bool
	Output string
}

// NewCmdDockerConfig returns `krakenctl agent docker-config`. runF replaces the run function
// in tests.
func NewCmdDockerConfig(f *cmdutil.Factory, runF func(context.Context, *DockerOptions) error) *cobra.Command {
	opts := &DockerOptions{IO: f.IOStreams}
	cmd := &cobra.Command{
		Use:   "docker-config [--file FILE] [--agent ADDR] [--dry-run]",
		Short: "Add this node's agent to Docker's registry-mirrors",
		Long: `Put the agent first in the registry-mirrors of dockerd's daemon.json, keeping every other
key and mirror; a missing file is created. dockerd uses mirrors for docker.io images only: for
other registries pull through the agent by name (docker pull 127.0.0.1:16000/team/app:1), or
use containerd (krakenctl agent containerd-config). dockerd trusts a plain-text mirror on
127.0.0.0/8; reload it afterwards (systemctl reload docker, or SIGHUP).

A file that is not a JSON object, or whose registry-mirrors is not a list of strings, is
refused and left as it is. The file is written atomically, keeping its mode, and only when it
changes.`,
		Example: `  sudo krakenctl agent docker-config && sudo systemctl reload docker
  krakenctl agent docker-config --file ./daemon.json --agent 127.0.0.1:16000 --dry-run`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			if err := cmdutil.CheckOutput(opts.Output); err != nil {
				return err
			}
			if runF != nil {
				return runF(cmd.Context(), opts)
			}
			return dockerRun(opts)
		},
	}
	fl := cmd.Flags()
	fl.StringVar(&opts.File, "file", nodeconfig.DefaultDockerConfig, "dockerd's daemon.json")
	fl.StringVar(&opts.Agent, "agent", api.DefaultAgentAddr, "the agent's registry API (host:port, or an http(s) URL)")
	fl.BoolVar(&opts.DryRun, "dry-run", false, "print the file as it would be written and write nothing")
	_ = cmd.MarkFlagFilename("file", "json")
	cmdutil.AddOutputFlag(cmd, &opts.Output)
	return cmd
}

func dockerRun(opts *DockerOptions) error {
	agentURL, err := nodeconfig.AgentURL(opts.Agent, "")
	if err != nil {
		return cmdutil.FlagErrorf("invalid --agent: %w", err)
	}
	res, err := nodeconfig.MergeDockerMirror(opts.File, agentURL, opts.DryRun)
	if err != nil {
		return err
	}
	if opts.Output == cmdutil.OutputJSON {
		return cmdutil.PrintJSON(opts.IO.Out, res)
	}
	if opts.DryRun {
		_, err = fmt.Fprintf(opts.IO.Out, "# %s (would be %s)\n%s", res.Path, res.Action, res.Content)
		return err
	}
	hint := ""
	if res.Action != nodeconfig.Unchanged {
		hint = "; reload dockerd: systemctl reload docker"
	}
	_, err = fmt.Fprintf(opts.IO.Out, "%s %s: registry-mirrors %v%s\n", res.Action, res.Path, res.Mirrors, hint)
	return err
}
