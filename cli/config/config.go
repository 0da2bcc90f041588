// Package config implements `krakenctl config validate ROLE FILE` and `krakenctl config
// example ROLE`: the role's config goes through the same pipeline `serve` uses
// (server/config), without starting the role.
package config

import (
	"fmt"
	"strings"

	"github.com/spf13/cobra"

	"github.com/krakenctl/krakenctl/cli/cmdutil"
	"github.com/krakenctl/krakenctl/cli/iostreams"
	roleconfig "github.com/krakenctl/krakenctl/server/config"
	"github.com/krakenctl/krakenctl/server/roles"
)

// NewCmdConfig returns `krakenctl config` with its sub-commands.
func NewCmdConfig(f *cmdutil.Factory) *cobra.Command {
	cmd := &cobra.Command{
		Use:   "config <command>",
		Short: "Check a role's config file or print a complete example",
		Long: `Check a server role's YAML config file, or print a complete, commented one.

Roles: ` + strings.Join(roles.Names(), ", ") + `.`,
		Args: cobra.NoArgs,
	}
	cmd.AddCommand(NewCmdValidate(f, nil))
	cmd.AddCommand(NewCmdExample(f, nil))
	return cmd
}

// ValidateOptions are the inputs of `krakenctl config validate`.
type ValidateOptions struct {
	IO   *iostreams.IOStreams
	Role roles.Role
	File string
}

// NewCmdValidate returns `krakenctl config validate ROLE FILE`. runF replaces the run function
// in tests.
func NewCmdValidate(f *cmdutil.Factory, runF func(*ValidateOptions) error) *cobra.Command {
	opts := &ValidateOptions{IO: f.IOStreams}
	cmd := &cobra.Command{
		Use:   "validate ROLE FILE",
		Short: "Check a role's config file without starting the role",
		Long: `Check a role's config file as 'krakenctl serve ROLE' reads it: ${ENV} references expanded,
secrets read from their <key>_file files, keys and types checked strictly, defaults applied,
values validated and listen addresses checked for collisions. The role is not started.

Exits 0 and prints one line when the file is valid. Otherwise exits 2 and lists every problem,
one per line, each naming its key path.`,
		Example: `  krakenctl config validate origin /etc/krakenctl/origin.yaml
  krakenctl config example agent > agent.yaml && krakenctl config validate agent agent.yaml`,
		Args: func(cmd *cobra.Command, args []string) error {
			if len(args) != 2 {
				return cmdutil.FlagErrorf("validate takes ROLE and FILE, got %d arguments", len(args))
			}
			return nil
		},
		ValidArgsFunction: completeRole(cobra.ShellCompDirectiveDefault),
		RunE: func(cmd *cobra.Command, args []string) error {
			r, err := roles.Lookup(args[0])
			if err != nil {
				return &cmdutil.FlagError{Err: err}
			}
			opts.Role, opts.File = r, args[1]
			if runF != nil {
				return runF(opts)
			}
			return validateRun(opts)
		},
	}
	return cmd
}

func validateRun(opts *ValidateOptions) error {
	if err := roleconfig.Load(opts.File, opts.Role.NewConfig()); err != nil {
		return err
	}
	_, err := fmt.Fprintf(opts.IO.Out, "%s: valid %s config\n", opts.File, opts.Role.Name)
	return err
}

// ExampleOptions are the inputs of `krakenctl config example`.
type ExampleOptions struct {
	IO   *iostreams.IOStreams
	Role roles.Role
}

// NewCmdExample returns `krakenctl config example ROLE`. runF replaces the run function in
// tests.
func NewCmdExample(f *cmdutil.Factory, runF func(*ExampleOptions) error) *cobra.Command {
	opts := &ExampleOptions{IO: f.IOStreams}
	cmd := &cobra.Command{
		Use:   "example ROLE",
		Short: "Print a complete, commented config file for a role",
		Long: `Print a complete, commented config file for a role: every key, with its default or a
realistic value and what it does. It passes 'krakenctl config validate'; edit the addresses
and paths to your cluster's.`,
		Example: `  krakenctl config example build-index > /etc/krakenctl/build-index.yaml`,
		Args: func(cmd *cobra.Command, args []string) error {
			if len(args) != 1 {
				return cmdutil.FlagErrorf("example takes ROLE, got %d arguments", len(args))
			}
			return nil
		},
		ValidArgsFunction: completeRole(cobra.ShellCompDirectiveNoFileComp),
		RunE: func(cmd *cobra.Command, args []string) error {
			r, err := roles.Lookup(args[0])
			if err != nil {
				return &cmdutil.FlagError{Err: err}
			}
			opts.Role = r
			if runF != nil {
				return runF(opts)
			}
			return exampleRun(opts)
		},
	}
	return cmd
}

func exampleRun(opts *ExampleOptions) error {
	_, err := fmt.Fprint(opts.IO.Out, opts.Role.Example)
	return err
}

// completeRole completes the ROLE argument with the roles' names, and the arguments after it
// as after says (file names for validate's FILE, nothing for example).
func completeRole(after cobra.ShellCompDirective) cobra.CompletionFunc {
	return func(cmd *cobra.Command, args []string, _ string) ([]string, cobra.ShellCompDirective) {
		if len(args) == 0 {
			return roles.Names(), cobra.ShellCompDirectiveNoFileComp
		}
		return nil, after
	}
}
