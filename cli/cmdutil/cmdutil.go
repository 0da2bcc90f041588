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
	"github.com/krakenctl/krakenctl/server/pki"
)

// Factory gives commands their dependencies, so tests can replace each one.
type Factory struct {
	IOStreams *iostreams.IOStreams
	// HTTPClient returns the client used to talk to krakenctl servers.
	HTTPClient func() *http.Client
	// TLS returns the certificate and CA that HTTPClient presents and trusts, nil for plain
	// text; nil itself means plain text. The root command sets it from its --tls-* flags.
	TLS func() (*pki.Provider, error)
	// Logger returns the logger for operator commands (text, to ErrOut).
	Logger func() *slog.Logger
	// Version is the build's version string.
	Version string
	// Commit and BuildDate name the source revision and when the binary was built (RFC 3339);
	// empty when unknown.
	Commit, BuildDate string
}

// New returns the Factory for a real process.
func New(version string) *Factory {
	ios := iostreams.System()
	f := &Factory{
		IOStreams: ios,
		Logger: func() *slog.Logger {
			return slog.New(slog.NewTextHandler(ios.ErrOut, &slog.HandlerOptions{Level: slog.LevelWarn}))
		},
		Version: version,
	}
	f.HTTPClient = func() *http.Client {
		var p *pki.Provider
		if f.TLS != nil {
			var err error
			if p, err = f.TLS(); err != nil {
				// The commands take a client, not an error: the first request reports it.
				return &http.Client{Transport: failing{err}}
			}
		}
		return NewHTTPClient(p)
	}
	return f
}

// NewHTTPClient returns the client of commands that talk to components: the one the servers
// use between them (no overall timeout, since blobs can be large, but dials, handshakes and
// response headers bounded), speaking TLS with p's certificate to every component when p is
// set, http:// URLs included.
func NewHTTPClient(p *pki.Provider) *http.Client {
	var o httpserve.ClientOptions
	if p != nil {
		o.DialTLS = p.DialTLS
	}
	return httpserve.NewClient(o)
}

// failing fails every request with err.
type failing struct{ err error }

func (f failing) RoundTrip(*http.Request) (*http.Response, error) { return nil, f.err }

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
