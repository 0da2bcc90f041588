package agent

import (
	"context"
	"errors"
	"fmt"
	"io"
	"strings"

	"github.com/spf13/cobra"

	"github.com/krakenctl/krakenctl/cli/cmdutil"
	"github.com/krakenctl/krakenctl/cli/iostreams"
	"github.com/krakenctl/krakenctl/server/api"
	"github.com/krakenctl/krakenctl/server/nodeconfig"
)

// ContainerdOptions are the inputs of `krakenctl agent containerd-config`.
type ContainerdOptions struct {
	IO         *iostreams.IOStreams
	Registries []string
	Dir        string
	Agent      string
	CAFile     string
	CAFrom     string
	Fallback   bool
	DryRun     bool
	Output     string
}

// NewCmdContainerdConfig returns `krakenctl agent containerd-config`. runF replaces the run
// function in tests.
func NewCmdContainerdConfig(f *cmdutil.Factory, runF func(context.Context, *ContainerdOptions) error) *cobra.Command {
	opts := &ContainerdOptions{IO: f.IOStreams}
	var fallback, noFallback bool
	cmd := &cobra.Command{
		Use:   "containerd-config [--registry NAME]... [--dir DIR] [--agent ADDR] [--no-fallback] [--dry-run]",
		Short: "Write containerd hosts.toml files that pull through this node's agent",
		Long: `Write DIR/REGISTRY/hosts.toml for every --registry: containerd then asks the agent first
(as a mirror, with ?ns=REGISTRY) and, unless --no-fallback, the registry itself when the agent
does not have an image or does not answer. The agent may pull and resolve only: pushes go to
the registry. With --ca-file (or an https:// --agent) containerd reaches the agent over TLS and
checks its certificate against that CA. --ca-from SRC first copies the CA bundle at SRC to
--ca-file (for an init container that has the CA in a Secret and the node's certs.d mounted at
the path containerd reads it by).

containerd's CRI plugin reads DIR when its config sets
  [plugins."io.containerd.grpc.v1.cri".registry]
    config_path = "/etc/containerd/certs.d"
and re-reads the files on every pull: no restart is needed. ctr and nerdctl take --hosts-dir DIR.

The registry _default configures every registry without a directory of its own (containerd
1.6.20 and later). Files are written atomically and only when they change; a registry name that
is not host[:port] is a usage error and nothing is written.`,
		Example: `  sudo krakenctl agent containerd-config --registry docker.io --registry ghcr.io
  krakenctl agent containerd-config --registry _default --agent 127.0.0.1:16000 --dry-run
  krakenctl agent containerd-config --registry registry.local:5000 --no-fallback \
      --ca-file /etc/krakenctl/tls/ca.pem -o json`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			if err := cmdutil.CheckOutput(opts.Output); err != nil {
				return err
			}
			if cmd.Flags().Changed("fallback") && fallback && noFallback {
				return cmdutil.FlagErrorf("--fallback and --no-fallback contradict each other")
			}
			opts.Fallback = fallback && !noFallback
			if opts.CAFrom != "" && opts.CAFile == "" {
				return cmdutil.FlagErrorf("--ca-from needs --ca-file: the path to copy the CA to, as containerd reads it")
			}
			for _, r := range opts.Registries {
				if err := nodeconfig.CheckRegistry(r); err != nil {
					return cmdutil.FlagErrorf("invalid --registry: %w", err)
				}
			}
			if runF != nil {
				return runF(cmd.Context(), opts)
			}
			return containerdRun(opts)
		},
	}
	fl := cmd.Flags()
	fl.StringSliceVar(&opts.Registries, "registry", []string{nodeconfig.DefaultRegistry}, "registry (host[:port], or _default) whose pulls go through the agent; repeated or comma-separated")
	fl.StringVar(&opts.Dir, "dir", nodeconfig.DefaultContainerdDir, "containerd's hosts directory (its config_path)")
	fl.StringVar(&opts.Agent, "agent", api.DefaultAgentAddr, "the agent's registry API (host:port, or an http(s) URL)")
	fl.StringVar(&opts.CAFile, "ca-file", "", "the cluster CA (PEM) that containerd checks the agent's certificate against: reach the agent over https")
	fl.StringVar(&opts.CAFrom, "ca-from", "", "copy the CA bundle (PEM) at this path to --ca-file first, atomically and only when it changed")
	fl.BoolVar(&fallback, "fallback", true, "fall back to the registry itself when the agent does not have an image (the default)")
	fl.BoolVar(&noFallback, "no-fallback", false, "pull only through the agent, never from the registry itself")
	fl.BoolVar(&opts.DryRun, "dry-run", false, "print what would be written and write nothing")
	_ = cmd.MarkFlagDirname("dir")
	_ = cmd.MarkFlagFilename("ca-file", "pem", "crt")
	_ = cmd.MarkFlagFilename("ca-from", "pem", "crt")
	cmdutil.AddOutputFlag(cmd, &opts.Output)
	return cmd
}

func containerdRun(opts *ContainerdOptions) error {
	agentURL, err := nodeconfig.AgentURL(opts.Agent, opts.CAFile)
	if err != nil {
		return cmdutil.FlagErrorf("invalid --agent: %w", err)
	}
	var ca []nodeconfig.File
	if opts.CAFrom != "" {
		f, err := nodeconfig.InstallCA(opts.CAFrom, opts.CAFile, opts.DryRun)
		if err != nil {
			return err
		}
		ca = append(ca, f)
	}
	m := nodeconfig.Mirror{Agent: agentURL, CAFile: opts.CAFile, Fallback: opts.Fallback}
	files, err := nodeconfig.WriteHosts(opts.Dir, opts.Registries, m, opts.DryRun)
	files = append(ca, files...)
	if errors.Is(err, nodeconfig.ErrInvalidRegistry) {
		return cmdutil.FlagErrorf("invalid --registry: %w", err)
	}
	// The files written before a failure are reported with it.
	if perr := printFiles(opts, files); perr != nil {
		return errors.Join(err, perr)
	}
	return err
}

func printFiles(opts *ContainerdOptions, files []nodeconfig.File) error {
	if opts.Output == cmdutil.OutputJSON {
		if files == nil {
			files = []nodeconfig.File{}
		}
		return cmdutil.PrintJSON(opts.IO.Out, files)
	}
	var out strings.Builder
	for _, f := range files {
		if opts.DryRun {
			fmt.Fprintf(&out, "# %s (would be %s)\n%s\n", f.Path, f.Action, f.Content)
			continue
		}
		fmt.Fprintf(&out, "%s %s\n", f.Action, f.Path)
	}
	if !opts.DryRun && len(files) > 0 {
		fmt.Fprintf(&out, "containerd reads these with config_path = %q (CRI registry config), or ctr --hosts-dir %s\n", opts.Dir, opts.Dir)
	}
	_, err := io.WriteString(opts.IO.Out, out.String())
	return err
}
