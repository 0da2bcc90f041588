// Package endpoints finds the servers an operator command talks to, in one place for every
// command. Origins come from the --origins flag, else the --endpoints-file flag, else
// $KRAKENCTL_ORIGINS, else the endpoints file that `krakenctl dev up` writes at its default path;
// build-index nodes likewise from --build-index, --endpoints-file, $KRAKENCTL_BUILD_INDEX and the
// same file's build_index list; the agent from --agent, else $KRAKENCTL_AGENT, else this host's
// agent on its default port.
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
	"github.com/krakenctl/krakenctl/server/api"
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
	addrs, source, devFile, err := originList.resolve(f.Origins, f.File, env)
	return Origins{Addrs: addrs, Source: source, DevFile: devFile}, err
}

// originList and buildIndexList say where each kind of address is looked for.
var (
	originList = list{
		flag: "--origins", env: EnvOrigins, fileKey: "origins", sentinel: ErrNoOrigins,
		pick: func(e api.Endpoints) []string { return e.Origins },
		hint: "or start a local cluster with `krakenctl dev up`",
	}
	buildIndexList = list{
		flag: "--build-index", env: EnvBuildIndex, fileKey: "build-index nodes (build_index)", sentinel: ErrNoBuildIndex,
		pick: func(e api.Endpoints) []string { return e.BuildIndex },
	}
)

// list is one kind of server address the endpoints can name.
type list struct {
	flag, env string
	// fileKey names the entries in an endpoints file, in messages.
	fileKey  string
	sentinel error
	pick     func(api.Endpoints) []string
	// hint is added to the no-addresses message after the flag and the variable.
	hint string
}

// resolve looks in the flag, then the explicit file, then the variable, then the default
// endpoints file, and returns the addresses and where they came from.
func (l list) resolve(flagAddrs []string, file string, env Env) (addrs []string, source, devFile string, err error) {
	if len(flagAddrs) > 0 {
		addrs, err := parseList(flagAddrs)
		if err != nil {
			return nil, "", "", cmdutil.FlagErrorf("invalid %s: %w", l.flag, err)
		}
		return addrs, l.flag, "", nil
	}
	if file != "" {
		addrs, err := l.readFile(file)
		if err != nil {
			return nil, "", "", fmt.Errorf("--endpoints-file: %w", err)
		}
		return addrs, file, file, nil
	}
	if v := strings.TrimSpace(env(l.env)); v != "" {
		addrs, err := parseList([]string{v})
		if err != nil {
			return nil, "", "", fmt.Errorf("invalid $%s: %w", l.env, err)
		}
		return addrs, "$" + l.env, "", nil
	}
	path, err := DefaultFile(env)
	if err != nil {
		return nil, "", "", l.none("")
	}
	e, err := api.ReadEndpoints(path)
	switch {
	case errors.Is(err, fs.ErrNotExist):
		return nil, "", "", l.none(fmt.Sprintf(" (no endpoints file at %s)", path))
	case err != nil:
		return nil, "", "", err
	case len(l.pick(e)) == 0:
		return nil, "", "", l.none(fmt.Sprintf(" (the endpoints file %s lists none)", path))
	}
	addrs, err = parseList(l.pick(e))
	if err != nil {
		return nil, "", "", fmt.Errorf("endpoints file %s: %s: %w", path, l.fileKey, err)
	}
	return addrs, path, path, nil
}

// none is the usage error for finding no addresses; where says what was looked at.
func (l list) none(where string) error {
	msg := fmt.Sprintf("pass %s host:port,... or set $%s", l.flag, l.env)
	if l.hint != "" {
		msg += ", " + l.hint
	}
	return &cmdutil.FlagError{Err: fmt.Errorf("%w%s: %s", l.sentinel, where, msg)}
}

// readFile reads the addresses of an endpoints file named explicitly.
func (l list) readFile(path string) ([]string, error) {
	e, err := api.ReadEndpoints(path)
	if err != nil {
		return nil, err
	}
	if len(l.pick(e)) == 0 {
		return nil, fmt.Errorf("endpoints file %s lists no %s", path, l.fileKey)
	}
	addrs, err := parseList(l.pick(e))
	if err != nil {
		return nil, fmt.Errorf("endpoints file %s: %s: %w", path, l.fileKey, err)
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
