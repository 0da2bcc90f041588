// Package cmdutil holds what every command shares: the Factory of dependencies, the error types
// that pick an exit code, the table/JSON output printer, and the parsing of arguments that
// several commands take (ParseDigest).
package cmdutil

import (
	"errors"
	"fmt"
	"log/slog"
	"net/http"

	"github.com/krakenctl/krakenctl/cli/iostreams"
	"github.com/krakenctl/krakenctl/server/config"
	"github.com/krakenctl/krakenctl/server/httpserve"
)

// Factory gives commands their dependencies, so tests can replace each one.
type Factory struct {
	IOStreams *iostreams.IOStreams
	// HTTPClient returns the client used to talk to krakenctl servers.
	HTTPClient func() *http.Client
	// Logger returns the logger for operator commands (text, to ErrOut).
	Logger func() *slog.Logger
	// Version is the build's version string.
	Version string
}

// New returns the Factory for a real process.
func New(version string) *Factory {
	ios := iostreams.System()
	return &Factory{
		IOStreams: ios,
		HTTPClient: func() *http.Client {
			// The same client the servers use between them: no overall timeout (blobs can be
			// large), but dials, handshakes and response headers are bounded.
			return httpserve.NewClient(httpserve.ClientOptions{})
		},
		Logger: func() *slog.Logger {
			return slog.New(slog.NewTextHandler(ios.ErrOut, &slog.HandlerOptions{Level: slog.LevelWarn}))
		},
		Version: version,
	}
}

// Exit codes. Errors map to them in one place: ExitCode.
const (
	ExitOK     = 0
	ExitError  = 1
	ExitUsage  = 2
	ExitCancel = 130
)

// FlagError is a usage mistake: a bad flag or argument. It exits with ExitUsage.
type FlagError struct{ Err error }

func (e *FlagError) Error() string { return e.Err.Error() }
func (e *FlagError) Unwrap() error { return e.Err }

// FlagErrorf returns a FlagError with a formatted message.
func FlagErrorf(format string, a ...any) error {
	return &FlagError{Err: fmt.Errorf(format, a...)}
}

// ErrSilent exits non-zero without printing: the command already explained itself.
var ErrSilent = errors.New("silent error")

// ErrCancel is returned when the user interrupted the command.
var ErrCancel = errors.New("cancelled")

// ExitCode maps an error returned by a command to the process exit code. A config file that
// fails to load (config.ErrInvalid) is a usage error, like a bad flag: the operator must fix
// the input, and retrying will not help.
func ExitCode(err error) int {
	var fe *FlagError
	switch {
	case err == nil:
		return ExitOK
	case errors.Is(err, ErrCancel):
		return ExitCancel
	case errors.As(err, &fe), errors.Is(err, config.ErrInvalid):
		return ExitUsage
	default:
		return ExitError
	}
}
