// Package endpoints finds the servers an operator command talks to, in one place for every
// command. Origins come from the --origins flag, else the --endpoints-file flag, else
// $KRAKENCTL_ORIGINS, else the endpoints file that `krakenctl dev up` writes at its default path;
// build-index nodes likewise from --build-index, --endpoints-file, $KRAKENCTL_BUILD_INDEX and the
// same file's build_index list.
package endpoints

import (
	"errors"
	"fmt"
	"io/fs"
	"net"
	"path/filepath"
	"slices"
	"strings"
	"syscall"

	"github.com/spf13/cobra"

	"github.com/krakenctl/krakenctl/cli/cmdutil"
	"github.com/krakenctl/krakenctl/ring"
	"github.com/krakenctl/krakenctl/server/dev"
)

// EnvOrigins names the environment variable holding a comma-separated origin list.
const EnvOrigins = "KRAKENCTL_ORIGINS"

// FileName is the endpoints file's name inside the default dev directory.
const FileName = "endpoints.yaml"

// ErrNoOrigins means no origin address was found anywhere.
var ErrNoOrigins = errors.New("no origins to talk to")

// Env looks up an environment variable: os.Getenv in commands, a map in tests.
type Env func(key string) string

// Flags are the flags that name origins.
type Flags struct {
	Origins []string
	File    string
}

// AddFlags registers --origins and --endpoints-file on cmd.
func AddFlags(cmd *cobra.Command, f *Flags) {
	cmd.Flags().StringSliceVar(&f.Origins, "origins", nil,
		"origin addresses (host:port), comma-separated or repeated; default $"+EnvOrigins+", else the endpoints file of dev up")
	cmd.Flags().StringVar(&f.File, "endpoints-file", "",
		"read origin addresses from this endpoints file (default $XDG_STATE_HOME/krakenctl/dev/"+FileName+")")
	_ = cmd.MarkFlagFilename("endpoints-file", "yaml", "yml")
}

// Origins are resolved origin addresses and where they came from.
type Origins struct {
	Addrs []string
	// Source names where Addrs came from: "--origins", "$KRAKENCTL_ORIGINS" or the file.
	Source string
	// DevFile is the endpoints file Addrs were read from, if any.
	DevFile string
}

// Resolve returns the origins to talk to. A malformed --origins is a usage error
// (*cmdutil.FlagError) naming the flag; finding no origins at all is a usage error wrapping
// ErrNoOrigins that says how to fix it.
func (f Flags) Resolve(env Env) (Origins, error) {
	if len(f.Origins) > 0 {
		addrs, err := parseList(f.Origins)
		if err != nil {
			return Origins{}, cmdutil.FlagErrorf("invalid --origins: %w", err)
		}
		return Origins{Addrs: addrs, Source: "--origins"}, nil
	}
	if f.File != "" {
		addrs, err := readFile(f.File)
		if err != nil {
			return Origins{}, fmt.Errorf("--endpoints-file: %w", err)
		}
		return Origins{Addrs: addrs, Source: f.File, DevFile: f.File}, nil
	}
	if v := strings.TrimSpace(env(EnvOrigins)); v != "" {
		addrs, err := parseList([]string{v})
		if err != nil {
			return Origins{}, fmt.Errorf("invalid $%s: %w", EnvOrigins, err)
		}
		return Origins{Addrs: addrs, Source: "$" + EnvOrigins}, nil
	}
	path, err := DefaultFile(env)
	if err != nil {
		return Origins{}, noOrigins("")
	}
	addrs, err := readFile(path)
	if errors.Is(err, fs.ErrNotExist) {
		return Origins{}, noOrigins(path)
	}
	if err != nil {
		return Origins{}, err
	}
	return Origins{Addrs: addrs, Source: path, DevFile: path}, nil
}

func noOrigins(looked string) error {
	where := ""
	if looked != "" {
		where = fmt.Sprintf(" (no endpoints file at %s)", looked)
	}
	return &cmdutil.FlagError{Err: fmt.Errorf("%w%s: pass --origins host:port,... or set $%s, or start a local cluster with `krakenctl dev up`",
		ErrNoOrigins, where, EnvOrigins)}
}

func readFile(path string) ([]string, error) {
	e, err := dev.ReadEndpoints(path)
	if err != nil {
		return nil, err
	}
	if len(e.Origins) == 0 {
		return nil, fmt.Errorf("endpoints file %s lists no origins", path)
	}
	addrs, err := parseList(e.Origins)
	if err != nil {
		return nil, fmt.Errorf("endpoints file %s: %w", path, err)
	}
	return addrs, nil
}

// parseList splits comma-separated entries, drops empty ones and duplicates, and checks that
// each is host:port.
func parseList(entries []string) ([]string, error) {
	var out []string
	for _, e := range entries {
		for a := range strings.SplitSeq(e, ",") {
			a = strings.TrimSpace(a)
			if a == "" || slices.Contains(out, a) {
				continue
			}
			if err := ring.CheckMember(a); err != nil {
				return nil, err
			}
			out = append(out, a)
		}
	}
	if len(out) == 0 {
		return nil, errors.New("no addresses given")
	}
	return out, nil
}

// DefaultDevDir is where `krakenctl dev up` keeps its state: $XDG_STATE_HOME/krakenctl/dev, or
// $HOME/.local/state/krakenctl/dev when XDG_STATE_HOME is unset or not absolute (as the XDG
// base directory specification says).
func DefaultDevDir(env Env) (string, error) {
	if d := env("XDG_STATE_HOME"); filepath.IsAbs(d) {
		return filepath.Join(d, "krakenctl", "dev"), nil
	}
	home := env("HOME")
	if !filepath.IsAbs(home) {
		return "", errors.New("find state directory: neither $XDG_STATE_HOME nor $HOME is an absolute path")
	}
	return filepath.Join(home, ".local", "state", "krakenctl", "dev"), nil
}

// DefaultFile is the endpoints file's default path, in DefaultDevDir.
func DefaultFile(env Env) (string, error) {
	d, err := DefaultDevDir(env)
	if err != nil {
		return "", err
	}
	return filepath.Join(d, FileName), nil
}

// Explain adds a hint to err when no origin could be reached and the addresses came from an
// endpoints file, which may be stale (left behind by a `dev up` that was killed).
func (o Origins) Explain(err error) error {
	return explain(err, "origins", o.Addrs, o.DevFile)
}

func explain(err error, what string, addrs []string, devFile string) error {
	if err == nil || devFile == "" || !Unreachable(err) {
		return err
	}
	return fmt.Errorf("%w\n(the %s %v came from %s: is `krakenctl dev up` still running?)", err, what, addrs, devFile)
}

// Unreachable reports whether err says that a server could not be reached at all: the
// connection was refused or could not be dialled, so no request reached it and the same request
// may safely be sent to another server.
func Unreachable(err error) bool {
	var opErr *net.OpError
	return errors.Is(err, syscall.ECONNREFUSED) || (errors.As(err, &opErr) && opErr.Op == "dial")
}
