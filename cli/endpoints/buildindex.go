package endpoints

import (
	"context"
	"errors"
	"fmt"

	"github.com/spf13/cobra"
)

// EnvBuildIndex names the environment variable holding a comma-separated list of build-index
// node addresses.
const EnvBuildIndex = "KRAKENCTL_BUILD_INDEX"

// ErrNoBuildIndex means no build-index address was found anywhere.
var ErrNoBuildIndex = errors.New("no build-index nodes to talk to")

// BuildIndexFlags are the flags that name build-index nodes.
type BuildIndexFlags struct {
	Addrs []string
	File  string
}

// AddBuildIndexFlags registers --build-index and --endpoints-file on cmd.
func AddBuildIndexFlags(cmd *cobra.Command, f *BuildIndexFlags) {
	cmd.Flags().StringSliceVar(&f.Addrs, "build-index", nil,
		"build-index node addresses (host:port), comma-separated or repeated, tried in order; default $"+EnvBuildIndex+", else the endpoints file of dev up")
	cmd.Flags().StringVar(&f.File, "endpoints-file", "",
		"read build-index addresses from this endpoints file (default $XDG_STATE_HOME/krakenctl/dev/"+FileName+")")
	_ = cmd.MarkFlagFilename("endpoints-file", "yaml", "yml")
}

// BuildIndex are resolved build-index node addresses and where they came from. Every node
// serves every request (followers forward writes to the leader), so they are tried in order.
type BuildIndex struct {
	Addrs []string
	// Source names where Addrs came from: "--build-index", "$KRAKENCTL_BUILD_INDEX" or the file.
	Source string
	// DevFile is the endpoints file Addrs were read from, if any.
	DevFile string
}

// Resolve returns the build-index nodes to talk to: --build-index, else --endpoints-file, else
// $KRAKENCTL_BUILD_INDEX, else the build_index list of the default endpoints file. A malformed
// --build-index is a usage error (*cmdutil.FlagError) naming the flag; finding no nodes at all
// is a usage error wrapping ErrNoBuildIndex that says how to fix it.
func (f BuildIndexFlags) Resolve(env Env) (BuildIndex, error) {
	addrs, source, devFile, err := buildIndexList.resolve(f.Addrs, f.File, env)
	return BuildIndex{Addrs: addrs, Source: source, DevFile: devFile}, err
}

// Explain adds a hint to err when no node could be reached and the addresses came from an
// endpoints file, which may be stale (left behind by a `dev up` that was killed).
func (b BuildIndex) Explain(err error) error {
	return explain(err, "build-index nodes", b.Addrs, b.DevFile)
}

// Try calls fn with each address in order until one answers, and returns the address that
// answered (or the last one tried) with fn's error. It moves on to the next address only when
// fn's error is Unreachable, so a request that reached a node is never sent to a second one:
// that is safe for writes as well as reads. When every node is unreachable the error names
// them all and carries Explain's hint. Try stops early when ctx is done.
func (b BuildIndex) Try(ctx context.Context, fn func(ctx context.Context, addr string) error) (string, error) {
	if len(b.Addrs) == 0 {
		return "", ErrNoBuildIndex
	}
	var errs []error
	for _, addr := range b.Addrs {
		err := fn(ctx, addr)
		if err == nil || !Unreachable(err) || ctx.Err() != nil {
			return addr, err
		}
		errs = append(errs, err)
	}
	last := b.Addrs[len(b.Addrs)-1]
	if len(errs) == 1 {
		return last, b.Explain(errs[0])
	}
	return last, b.Explain(fmt.Errorf("no build-index node answered:\n%w", errors.Join(errs...)))
}
