// Package blob implements `krakenctl push` and `krakenctl pull`, which move one blob through
// server/client: push to the origin cluster, pull through an agent (the swarm) or from the
// origins directly. Progress bars are drawn on stderr when it is a terminal; stdout carries
// only the result, so both commands work in pipelines.
package blob

import (
	"net/http"
	"os"

	"github.com/spf13/cobra"
	"github.com/spf13/pflag"

	"github.com/krakenctl/krakenctl/backend"
	"github.com/krakenctl/krakenctl/cli/cmdutil"
	"github.com/krakenctl/krakenctl/cli/endpoints"
	"github.com/krakenctl/krakenctl/cli/iostreams"
	"github.com/krakenctl/krakenctl/server/config"
)

// DefaultNamespace is the namespace blobs are pushed to and pulled from unless --namespace says
// otherwise. Origins route namespaces to storage backends.
const DefaultNamespace = "krakenctl"

// deps are what push and pull take from the Factory; tests fill them directly.
type deps struct {
	IO         *iostreams.IOStreams
	HTTPClient func() *http.Client
	// Env looks up environment variables (origin resolution).
	Env endpoints.Env
}

func depsOf(f *cmdutil.Factory) deps {
	return deps{IO: f.IOStreams, HTTPClient: f.HTTPClient, Env: os.Getenv}
}

// checkNamespace validates --namespace.
func checkNamespace(ns string) error {
	if err := backend.CheckNamespace(ns); err != nil {
		return cmdutil.FlagErrorf("invalid --namespace %q: %w", ns, err)
	}
	return nil
}

// exactArgs is cobra.ExactArgs as a usage error (exit code 2) with a message that says what
// the command wants.
func exactArgs(n int, want string) cobra.PositionalArgs {
	return func(cmd *cobra.Command, args []string) error {
		if len(args) != n {
			return cmdutil.FlagErrorf("%s, got %d arguments", want, len(args))
		}
		return nil
	}
}

// sizeFlag is a byte size flag that accepts units ("32MiB", "1GB"), as config files do.
type sizeFlag int64

func (s *sizeFlag) String() string { return config.ByteSize(*s).String() }
func (s *sizeFlag) Type() string   { return "size" }

func (s *sizeFlag) Set(v string) error {
	n, err := config.ParseByteSize(v)
	if err != nil {
		return err
	}
	*s = sizeFlag(n)
	return nil
}

// Interface guards
var _ pflag.Value = (*sizeFlag)(nil)
