package endpoints

import (
	"fmt"
	"net/url"
	"strings"

	"github.com/spf13/cobra"

	"github.com/krakenctl/krakenctl/cli/cmdutil"
	"github.com/krakenctl/krakenctl/ring"
	"github.com/krakenctl/krakenctl/server/api"
)

// EnvAgent names the environment variable holding the address of the agent that `pull` goes
// through.
const EnvAgent = "KRAKENCTL_AGENT"

// DefaultAgent is the agent address used when neither --agent nor $KRAKENCTL_AGENT names one:
// the agent of this host, on its default port.
const DefaultAgent = api.DefaultAgentAddr

// AgentFlags are the flags that name an agent.
type AgentFlags struct {
	Addr string
}

// AddAgentFlags registers --agent on cmd.
func AddAgentFlags(cmd *cobra.Command, f *AgentFlags) {
	cmd.Flags().StringVar(&f.Addr, "agent", "",
		"agent address (host:port or http(s) URL); default $"+EnvAgent+", else "+DefaultAgent)
}

// Agent is a resolved agent address and where it came from.
type Agent struct {
	Addr string
	// Source names where Addr came from: "--agent", "$KRAKENCTL_AGENT" or "default".
	Source string
}

// Resolve returns the agent to talk to: --agent, else $KRAKENCTL_AGENT, else DefaultAgent. A
// malformed --agent is a usage error (*cmdutil.FlagError) naming the flag.
func (f AgentFlags) Resolve(env Env) (Agent, error) {
	if a := strings.TrimSpace(f.Addr); a != "" {
		if err := checkAgent(a); err != nil {
			return Agent{}, cmdutil.FlagErrorf("invalid --agent: %w", err)
		}
		return Agent{Addr: a, Source: "--agent"}, nil
	}
	if a := strings.TrimSpace(env(EnvAgent)); a != "" {
		if err := checkAgent(a); err != nil {
			return Agent{}, fmt.Errorf("invalid $%s: %w", EnvAgent, err)
		}
		return Agent{Addr: a, Source: "$" + EnvAgent}, nil
	}
	return Agent{Addr: DefaultAgent, Source: "default"}, nil
}

// checkAgent accepts host:port or an http(s) URL with a host.
func checkAgent(a string) error {
	if !strings.Contains(a, "://") {
		return ring.CheckMember(a)
	}
	u, err := url.Parse(a)
	if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" || u.RawQuery != "" || u.Fragment != "" {
		return fmt.Errorf("%q is neither host:port nor an http(s) URL", a)
	}
	return nil
}

// Explain adds a hint to err when the agent could not be reached at all.
func (a Agent) Explain(err error) error {
	if err == nil || !Unreachable(err) {
		return err
	}
	return fmt.Errorf("%w\n(no agent answers at %s, from %s: start one with `krakenctl serve agent`, point --agent or $%s at one, or pull from the origins with --from-origins)",
		err, a.Addr, a.Source, EnvAgent)
}
