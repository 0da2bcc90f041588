// Package root assembles krakenctl's command tree and turns a command's error into the process
// exit code.
package root

import (
	"context"
	"errors"
	"fmt"
	"os"
	"os/signal"
	"runtime/debug"
	"strings"
	"syscall"

	"github.com/spf13/cobra"

	"github.com/krakenctl/krakenctl/cli/cmdutil"
	"github.com/krakenctl/krakenctl/cli/endpoints"
	"github.com/krakenctl/krakenctl/cli/man"
	"github.com/krakenctl/krakenctl/cli/serve"
	"github.com/krakenctl/krakenctl/cli/version"
	"github.com/krakenctl/krakenctl/server/pki"
)

// Set at link time by goreleaser and scripts/image.sh (-X .../cli/root.buildVersion=v1.2.3,
// buildCommit=<git sha>, buildDate=<RFC 3339>). A build without them falls back to what the Go
// toolchain recorded (the module version, vcs.revision and vcs.time), so `go build` from a
// checkout still names its commit. TestReleaseLdflagsNameTheseVariables keeps the -X paths of
// both build scripts pointing here.
var (
	buildVersion = ""
	buildCommit  = ""
	buildDate    = ""
)

// buildInfo returns the version, commit and build date of this binary: the link-time values,
// else those the Go toolchain embedded, else "(devel)" and empty strings.
func buildInfo() (ver, commit, date string) {
	ver, commit, date = buildVersion, buildCommit, buildDate
	bi, ok := debug.ReadBuildInfo()
	if !ok {
		if ver == "" {
			ver = "(devel)"
		}
		return ver, commit, date
	}
	if ver == "" {
		ver = "(devel)"
		if bi.Main.Version != "" {
			ver = bi.Main.Version
		}
	}
	var modified bool
	var rev, vtime string
	for _, s := range bi.Settings {
		switch s.Key {
		case "vcs.revision":
			rev = s.Value
		case "vcs.time":
			vtime = s.Value
		case "vcs.modified":
			modified = s.Value == "true"
		}
	}
	if commit == "" && rev != "" {
		commit = rev
		if modified {
			commit += "-dirty"
		}
	}
	if date == "" {
		date = vtime
	}
	return ver, commit, date
}

// Command groups shown in help.
const (
	groupServers = "servers"
	groupBlobs   = "blobs"
	groupCluster = "cluster"
)

// NewCmdRoot returns the krakenctl command tree wired to f.
func NewCmdRoot(f *cmdutil.Factory) *cobra.Command {
	cmd := &cobra.Command{
		Use:   "krakenctl",
		Short: "Peer-to-peer distribution of container images and large blobs",
		Long: `krakenctl distributes container images and large blobs to thousands of hosts through a
peer-to-peer swarm. One binary runs every server role (agent, origin, tracker, proxy and
build-index) and carries the operator commands.`,
		SilenceUsage:  true,
		SilenceErrors: true,
		Version:       f.Version,
	}
	cmd.SetOut(f.IOStreams.Out)
	cmd.SetErr(f.IOStreams.ErrOut)
	cmd.SetIn(f.IOStreams.In)
	cmd.AddGroup(
		&cobra.Group{ID: groupServers, Title: "Server roles:"},
		&cobra.Group{ID: groupBlobs, Title: "Blobs:"},
		&cobra.Group{ID: groupCluster, Title: "Cluster:"},
	)
	cmd.SetFlagErrorFunc(func(c *cobra.Command, err error) error {
		return &cmdutil.FlagError{Err: err}
	})
	tlsFlags := &endpoints.TLSFlags{}
	endpoints.AddTLSFlags(cmd.PersistentFlags(), tlsFlags)
	cmd.PersistentPreRun = func(c *cobra.Command, _ []string) {
		// A command that reads its addresses from a named endpoints file reaches them as that
		// file says, not as the default one does.
		if fl := c.Flags().Lookup("endpoints-file"); fl != nil && fl.Changed {
			tlsFlags.EndpointsFile = fl.Value.String()
		}
	}
	if f.TLS == nil {
		f.TLS = func() (*pki.Provider, error) { return tlsFlags.Resolve(os.Getenv) }
	}

	add := func(group string, c *cobra.Command) {
		c.GroupID = group
		cmd.AddCommand(c)
	}
	add(groupServers, serve.NewCmdServe(f))
	for _, c := range serverCommands(f) {
		add(groupServers, c)
	}
	for _, c := range blobCommands(f) {
		add(groupBlobs, c)
	}
	for _, c := range clusterCommands(f) {
		add(groupCluster, c)
	}
	cmd.AddCommand(version.NewCmdVersion(f, nil))
	cmd.AddCommand(man.NewCmdMan(f, nil))
	argsAreUsage(cmd)
	return cmd
}

// argsAreUsage makes every positional-argument check of c and its subcommands a usage error
// (exit status 2, with the hint to --help), as a bad flag is: cobra's own checks (NoArgs,
// ExactArgs ...) return plain errors, which would exit 1 like a failed operation.
func argsAreUsage(c *cobra.Command) {
	if c.HasParent() && c.HasSubCommands() && !c.Runnable() {
		// A group of commands (`krakenctl agent`): cobra would print its help and exit 0 for
		// any word after it, a typo of a subcommand included.
		c.Args = cobra.ArbitraryArgs
		c.RunE = func(c *cobra.Command, args []string) error {
			if len(args) > 0 {
				return cmdutil.FlagErrorf("unknown command %q for %q", args[0], c.CommandPath())
			}
			return c.Help()
		}
	}
	if check := c.Args; check != nil {
		c.Args = func(c *cobra.Command, args []string) error {
			err := check(c, args)
			var fe *cmdutil.FlagError
			if err == nil || errors.As(err, &fe) {
				return err
			}
			return &cmdutil.FlagError{Err: err}
		}
	}
	for _, sub := range c.Commands() {
		argsAreUsage(sub)
	}
}

// Main runs krakenctl with the process's arguments and returns the exit code.
func Main() int {
	v, commit, date := buildInfo()
	f := cmdutil.New(v)
	f.Commit, f.BuildDate = commit, date
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	cmd := NewCmdRoot(f)
	err := cmd.ExecuteContext(ctx)
	var fe *cmdutil.FlagError
	if err != nil && !errors.As(err, &fe) && strings.HasPrefix(err.Error(), "unknown command ") {
		// cobra's own message for a word that is no subcommand, before any Args check runs:
		// a usage error like any other.
		err = &cmdutil.FlagError{Err: err}
	}
	if err != nil && !errors.Is(err, cmdutil.ErrSilent) {
		if ctx.Err() != nil && !errors.Is(err, cmdutil.ErrCancel) {
			err = fmt.Errorf("%w: %w", cmdutil.ErrCancel, err)
		}
		_, _ = fmt.Fprintf(f.IOStreams.ErrOut, "krakenctl: %v\n", err)
		if errors.As(err, &fe) {
			_, _ = fmt.Fprintf(f.IOStreams.ErrOut, "Run '%s --help' for usage.\n", commandPath(cmd))
		}
	}
	return cmdutil.ExitCode(err)
}

func commandPath(root *cobra.Command) string {
	c, _, err := root.Find(os.Args[1:])
	if err != nil || c == nil {
		return root.CommandPath()
	}
	return c.CommandPath()
}
