// Package cmdutiltest helps test cobra commands the way the root command runs them.
package cmdutiltest

import (
	"bytes"
	"log/slog"
	"net/http"
	"testing"

	"github.com/spf13/cobra"
	"github.com/stretchr/testify/require"

	"github.com/krakenctl/krakenctl/cli/cmdutil"
	"github.com/krakenctl/krakenctl/cli/iostreams"
)

// Execute parses args with the command mk builds, as the root command would (flag errors are
// usage errors), on test streams, and returns the error.
func Execute(t *testing.T, mk func(*cmdutil.Factory) *cobra.Command, args ...string) error {
	t.Helper()
	ios, _, _, _ := iostreams.Test()
	f := &cmdutil.Factory{
		IOStreams:  ios,
		HTTPClient: func() *http.Client { return &http.Client{} },
		Logger:     func() *slog.Logger { return slog.New(slog.DiscardHandler) },
	}
	cmd := mk(f)
	cmd.SetArgs(args)
	cmd.SetOut(&bytes.Buffer{})
	cmd.SetErr(&bytes.Buffer{})
	cmd.SilenceErrors, cmd.SilenceUsage = true, true
	cmd.SetFlagErrorFunc(func(c *cobra.Command, err error) error { return &cmdutil.FlagError{Err: err} })
	return cmd.ExecuteContext(t.Context())
}

// RequireUsageError asserts a parse failure: the message, a usage exit code, and that the run
// function was not called (ran is false).
func RequireUsageError(t *testing.T, err error, want string, ran bool) {
	t.Helper()
	require.ErrorContains(t, err, want)
	require.False(t, ran, "run must not be called on bad input")
	require.Equal(t, cmdutil.ExitUsage, cmdutil.ExitCode(err), "%v", err)
}
