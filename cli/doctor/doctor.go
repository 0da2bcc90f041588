// Package doctor implements `krakenctl doctor`, which checks from a node what breaks image
// pulls through its agent (server/doctor runs the checks) and prints one line per check.
package doctor

import (
	"context"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"net"
	"net/http"
	"os"
	"strings"

	"github.com/spf13/cobra"

	"github.com/krakenctl/krakenctl/cli/cmdutil"
	"github.com/krakenctl/krakenctl/cli/endpoints"
	"github.com/krakenctl/krakenctl/cli/iostreams"
	"github.com/krakenctl/krakenctl/server/agent"
	"github.com/krakenctl/krakenctl/server/api"
	"github.com/krakenctl/krakenctl/server/config"
	"github.com/krakenctl/krakenctl/server/doctor"
	"github.com/krakenctl/krakenctl/server/nodeconfig"
	"github.com/krakenctl/krakenctl/server/pki"
)

// DefaultAgentConfig is where a node's agent config is looked for when --agent-config is not
// given: the path `krakenctl serve agent --config` takes in the image and the chart.
const DefaultAgentConfig = "/etc/krakenctl/agent.yaml"

// Options are the inputs of `krakenctl doctor`.
type Options struct {
	IO         *iostreams.IOStreams
	HTTPClient func() *http.Client
	Env        endpoints.Env
	// Deps gives the checks their view of the world from the client to use.
	Deps func(*http.Client) doctor.Deps
	// DefaultAgentConfig is looked for when AgentConfig is empty.
	DefaultAgentConfig string

	Agent         string
	AgentAdmin    string
	AgentConfig   string
	EndpointsFile string
	ContainerdDir string
	StoreDir      string
	Output        string
}

// Report is what -o json prints.
type Report struct {
	OK     bool            `json:"ok"`
	Checks []doctor.Result `json:"checks"`
}

// NewCmdDoctor returns `krakenctl doctor`. runF replaces the run function in tests.
func NewCmdDoctor(f *cmdutil.Factory, runF func(context.Context, *Options) error) *cobra.Command {
	opts := &Options{IO: f.IOStreams, HTTPClient: f.HTTPClient, Env: os.Getenv, Deps: doctor.DefaultDeps, DefaultAgentConfig: DefaultAgentConfig}
	cmd := &cobra.Command{
		Use:   "doctor [--agent ADDR] [--agent-config FILE] [--endpoints-file FILE] [--containerd-dir DIR]",
		Short: "Check what breaks image pulls on this node",
		Long: `Check, from this node, everything an image pull through the agent needs, one line per check:
ok, warn or FAIL, what was found and how to fix it.

  agent         the agent answers /health at its registry API
  agent ready   its /readyz (on the admin listener when known): it reaches trackers and build-index
  dns           every dns:///NAME:PORT entry resolves (the names of Kubernetes Services)
  trackers      every tracker answers /health (FAIL when none does, warn when some do not)
  origins       likewise the origins (from the endpoints file: the agent learns them from trackers)
  build-index   likewise the build-index nodes
  clock         this node's clock against the origins' Date headers (warn > 5s, FAIL > 1m)
  disk          free space and cache size of the agent's store_dir (statfs)
  containerd    a hosts.toml in --containerd-dir sends pulls to the agent
  tls           the agent's certificate verifies against the cluster CA

Addresses come from the agent's config (--agent-config, else /etc/krakenctl/agent.yaml when it
exists), then the endpoints file (--endpoints-file, else the one of ` + "`krakenctl dev up`" + ` when there is
no agent config); --agent and $KRAKENCTL_AGENT override the agent's address. The checks only read.

Exit status: 0 when nothing FAILs (warnings included), 1 when a check FAILs, 2 on a usage error.`,
		Example: `  krakenctl doctor
  krakenctl doctor --agent-config /etc/krakenctl/agent.yaml --endpoints-file endpoints.yaml
  krakenctl doctor --agent 127.0.0.1:16000 --containerd-dir /etc/containerd/certs.d -o json`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			if err := cmdutil.CheckOutput(opts.Output); err != nil {
				return err
			}
			if runF != nil {
				return runF(cmd.Context(), opts)
			}
			return run(cmd.Context(), opts)
		},
	}
	fl := cmd.Flags()
	fl.StringVar(&opts.Agent, "agent", "", "the agent's registry API (host:port or http(s) URL); default $"+endpoints.EnvAgent+", else the agent config's listen, else "+api.DefaultAgentAddr)
	fl.StringVar(&opts.AgentAdmin, "agent-admin", "", "the agent's admin listener, whose /readyz is checked (default the agent config's admin_listen)")
	fl.StringVar(&opts.AgentConfig, "agent-config", "", "the agent's config file (default "+DefaultAgentConfig+" when it exists)")
	fl.StringVar(&opts.EndpointsFile, "endpoints-file", "", "an endpoints file naming trackers, origins and build-index (default the one of dev up, without an agent config)")
	fl.StringVar(&opts.ContainerdDir, "containerd-dir", nodeconfig.DefaultContainerdDir, "containerd's hosts directory (its config_path)")
	fl.StringVar(&opts.StoreDir, "store-dir", "", "the agent's store directory (default the agent config's store_dir)")
	_ = cmd.MarkFlagFilename("agent-config", "yaml", "yml")
	_ = cmd.MarkFlagFilename("endpoints-file", "yaml", "yml", "json")
	_ = cmd.MarkFlagDirname("containerd-dir")
	_ = cmd.MarkFlagDirname("store-dir")
	cmdutil.AddOutputFlag(cmd, &opts.Output)
	return cmd
}

func run(ctx context.Context, opts *Options) error {
	cfg, client, err := gather(opts)
	if err != nil {
		return err
	}
	results := doctor.Run(ctx, cfg, opts.Deps(client))
	failed := doctor.Failed(results)
	if opts.Output == cmdutil.OutputJSON {
		if err := cmdutil.PrintJSON(opts.IO.Out, Report{OK: !failed, Checks: results}); err != nil {
			return err
		}
	} else if err := printResults(opts.IO.Out, results); err != nil {
		return err
	}
	if failed {
		// The report said what failed; the exit status says that something did.
		return cmdutil.ErrSilent
	}
	return nil
}

// gather finds what to check: the agent's config, then the endpoints file, then the flags.
func gather(opts *Options) (doctor.Config, *http.Client, error) {
	cfg := doctor.Config{ContainerdDir: opts.ContainerdDir, Capacity: -1}
	var sources []string

	var ac *agent.Config
	path := opts.AgentConfig
	if path == "" {
		if _, err := os.Stat(opts.DefaultAgentConfig); err == nil {
			path = opts.DefaultAgentConfig
		}
	}
	if path != "" {
		ac = &agent.Config{}
		if err := config.Load(path, ac); err != nil {
			return cfg, nil, fmt.Errorf("the agent config: %w", err)
		}
		sources = append(sources, "agent config "+path)
		cfg.Agent = reachable(ac.Listen)
		cfg.AgentAdmin = reachable(ac.AdminListen)
		cfg.Trackers, cfg.BuildIndex = ac.Trackers, ac.BuildIndex
		cfg.StoreDir, cfg.Capacity = ac.StoreDir, int64(ac.Capacity)
		cfg.CAFile = ac.TLS.CAFile
	}

	var ep api.Endpoints
	file := opts.EndpointsFile
	if file == "" && ac == nil {
		if def, err := endpoints.DefaultFile(opts.Env); err == nil {
			if _, err := os.Stat(def); err == nil {
				file = def
			}
		}
	}
	if file != "" {
		var err error
		if ep, err = api.ReadEndpoints(file); err != nil && !errors.Is(err, api.ErrNoEndpoints) {
			if errors.Is(err, fs.ErrNotExist) && opts.EndpointsFile != "" {
				return cfg, nil, cmdutil.FlagErrorf("invalid --endpoints-file: %w", err)
			}
			return cfg, nil, fmt.Errorf("%s: %w", file, err)
		}
		sources = append(sources, "endpoints file "+file)
		if len(cfg.Trackers) == 0 {
			cfg.Trackers = ep.Trackers
		}
		if len(cfg.BuildIndex) == 0 {
			cfg.BuildIndex = ep.BuildIndex
		}
		cfg.Origins = ep.Origins
		if cfg.CAFile == "" && ep.TLS != nil {
			cfg.CAFile = ep.TLS.CAFile
		}
	}
	cfg.Sources = strings.Join(sources, " and ")

	switch agentFlag := strings.TrimSpace(opts.Agent); {
	case agentFlag != "":
		cfg.Agent = agentFlag
	case opts.Env(endpoints.EnvAgent) != "":
		cfg.Agent = strings.TrimSpace(opts.Env(endpoints.EnvAgent))
	case cfg.Agent == "" && len(ep.Agents) > 0:
		cfg.Agent = ep.Agents[0]
	case cfg.Agent == "":
		cfg.Agent = api.DefaultAgentAddr
	}
	if opts.AgentAdmin != "" {
		cfg.AgentAdmin = opts.AgentAdmin
	} else if ac == nil && ep.Admin != nil {
		// The endpoints file lists admin listeners in the order of the agents.
		for i, a := range ep.Agents {
			if a == cfg.Agent && i < len(ep.Admin.Agents) {
				cfg.AgentAdmin = ep.Admin.Agents[i]
			}
		}
	}
	if opts.StoreDir != "" {
		cfg.StoreDir = opts.StoreDir
	}
	if cfg.CAFile == "" {
		cfg.CAFile = opts.Env(endpoints.EnvTLSCAFile)
	}

	// On a node with a TLS agent config, the components are asked as the agent asks them:
	// with its certificate.
	client := opts.HTTPClient()
	if ac != nil && ac.TLS.Enabled() {
		p, err := pki.Load(ac.TLS)
		if err != nil {
			return cfg, nil, fmt.Errorf("the agent config's tls: %w", err)
		}
		client = cmdutil.NewHTTPClient(p)
	}
	return cfg, client, nil
}

// reachable turns a listen address into one to dial: an unspecified host (every interface) is
// reached on loopback.
func reachable(listen string) string {
	host, port, err := net.SplitHostPort(listen)
	if err != nil {
		return listen
	}
	if ip := net.ParseIP(host); host == "" || (ip != nil && ip.IsUnspecified()) {
		return net.JoinHostPort("127.0.0.1", port)
	}
	return listen
}

func printResults(w io.Writer, results []doctor.Result) error {
	var out strings.Builder
	width := 0
	for _, r := range results {
		width = max(width, len(r.Check))
	}
	var fails, warns int
	for _, r := range results {
		fmt.Fprintf(&out, "%-4s  %-*s  %s", r.Status, width, r.Check, r.Found)
		if r.Fix != "" {
			fmt.Fprintf(&out, " — fix: %s", r.Fix)
		}
		out.WriteByte('\n')
		switch r.Status {
		case doctor.Fail:
			fails++
		case doctor.Warn:
			warns++
		}
	}
	switch {
	case fails > 0:
		fmt.Fprintf(&out, "\n%s, %s: pulls through this node will fail.\n", cmdutil.Plural(fails, "check")+" failed", cmdutil.Plural(warns, "warning"))
	case warns > 0:
		fmt.Fprintf(&out, "\nNo check failed; %s.\n", cmdutil.Plural(warns, "warning"))
	default:
		fmt.Fprintf(&out, "\nAll %d checks ok.\n", len(results))
	}
	_, err := io.WriteString(w, out.String())
	return err
}
