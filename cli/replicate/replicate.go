// Package replicate implements `krakenctl replicate`: `run` copies one tag and every blob of its
// manifest graph from the cluster of --endpoints-file to another cluster (server/replicate does
// the work); `status` shows the build-index's replication queues, per node and per remote; and
// `retry` queues parked items again. This package turns flags into those calls and draws their
// progress and tables.
package replicate

import (
	"fmt"
	"log/slog"
	"net/http"
	"strings"

	"github.com/spf13/cobra"

	"github.com/krakenctl/krakenctl/cli/cmdutil"
	"github.com/krakenctl/krakenctl/cli/endpoints"
	"github.com/krakenctl/krakenctl/cli/iostreams"
	"github.com/krakenctl/krakenctl/server/registry"
	"github.com/krakenctl/krakenctl/server/replicate"
)

// maxErrorWidth is how much of an error a table cell shows; -o json has all of it.
const maxErrorWidth = 60

// NewCmdReplicate returns `krakenctl replicate` with its sub-commands.
func NewCmdReplicate(f *cmdutil.Factory) *cobra.Command {
	cmd := &cobra.Command{
		Use:   "replicate <command>",
		Short: "Copy tags and their blobs to other clusters; show and retry the replication queues",
		Args:  cobra.NoArgs,
	}
	cmd.AddCommand(NewCmdRun(f, nil), NewCmdStatus(f, nil), NewCmdRetry(f, nil))
	return cmd
}

// deps are what every sub-command takes from the Factory.
type deps struct {
	IO         *iostreams.IOStreams
	HTTPClient func() *http.Client
	Logger     func() *slog.Logger
	Env        endpoints.Env
}

// ParseTarget parses REPOSITORY[:TAG] (tag "latest" when none is given).
func ParseTarget(arg string) (replicate.Target, error) {
	repo, tag := arg, "latest"
	if i := strings.LastIndexByte(arg, ':'); i > strings.LastIndexByte(arg, '/') {
		repo, tag = arg[:i], arg[i+1:]
	}
	if strings.Contains(repo, "@") {
		return replicate.Target{}, fmt.Errorf("replicate copies tags: name REPOSITORY:TAG, not a digest")
	}
	if err := registry.ValidateName(repo); err != nil {
		return replicate.Target{}, fmt.Errorf("repository: %w", err)
	}
	if err := registry.ValidateTag(tag); err != nil {
		return replicate.Target{}, fmt.Errorf("tag: %w", err)
	}
	return replicate.Target{Repo: repo, Tag: tag}, nil
}
