package cmdutil

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strings"

	"github.com/google/go-containerregistry/pkg/authn"
	"github.com/google/go-containerregistry/pkg/name"
	"github.com/google/go-containerregistry/pkg/v1/remote"
	"github.com/google/go-containerregistry/pkg/v1/remote/transport"
	"github.com/spf13/cobra"
)

// EnvRegistry names the registry (a proxy) that push, pull and tag talk to with the
// distribution API when --registry is not given.
const EnvRegistry = "KRAKENCTL_REGISTRY"

// maxPassword bounds what --password-stdin reads.
const maxPassword = 4 << 10

// RegistryFlags are the flags of commands that can talk the distribution API to a registry
// (the proxy, which authenticates its clients) instead of krakenctl's internal APIs: where,
// and as whom.
type RegistryFlags struct {
	// Addr is the registry's host[:port], or an http(s) URL to force the scheme.
	Addr string
	// Username and PasswordStdin are credentials for it; without them, Docker's config.json
	// (and its credential helpers) are asked.
	Username      string
	PasswordStdin bool
}

// AddRegistryFlags adds --registry, --username and --password-stdin; what names the commands
// talk the registry API about ("the blob", "the tag").
func AddRegistryFlags(cmd *cobra.Command, f *RegistryFlags, what string) {
	cmd.Flags().StringVar(&f.Addr, "registry", "",
		"talk the distribution API to this registry (the proxy, host:port or http(s) URL) about "+what+" instead of krakenctl's internal APIs; default $"+EnvRegistry)
	cmd.Flags().StringVar(&f.Username, "username", "", "user name for --registry (default: the credentials docker login stored for it)")
	cmd.Flags().BoolVar(&f.PasswordStdin, "password-stdin", false, "read the password of --username from stdin")
}

// Registry is a registry to talk the distribution API to, with the credentials for it.
type Registry struct {
	Name name.Registry
	// Source says where the address came from: --registry or $KRAKENCTL_REGISTRY.
	Source string
	// user is the user of --username, "" when Docker's config supplies the credentials.
	user string
	auth authn.Authenticator
}

// Resolve returns the registry the flags (or $KRAKENCTL_REGISTRY) name, or nil when none is
// named: the command then talks krakenctl's internal APIs, and credentials are a usage error.
// The password of --username is read from stdin, less its trailing newline; stdinInUse says
// the command reads its data from stdin, which then cannot carry a password too.
func (f RegistryFlags) Resolve(env func(string) string, stdin io.Reader, stdinInUse bool) (*Registry, error) {
	addr, source := strings.TrimSpace(f.Addr), "--registry"
	if addr == "" {
		addr, source = strings.TrimSpace(env(EnvRegistry)), "$"+EnvRegistry
	}
	switch {
	case addr == "" && (f.Username != "" || f.PasswordStdin):
		return nil, FlagErrorf("--username and --password-stdin are credentials for --registry (or $%s), which is not set", EnvRegistry)
	case addr == "":
		return nil, nil //nolint:nilnil // no registry is not an error: the command talks the internal APIs
	case f.PasswordStdin && f.Username == "":
		return nil, FlagErrorf("--password-stdin needs --username")
	case f.Username != "" && !f.PasswordStdin:
		return nil, FlagErrorf("--username needs --password-stdin: the password is read from stdin, never from a flag")
	case f.PasswordStdin && stdinInUse:
		return nil, FlagErrorf("--password-stdin cannot share stdin with the data read from -")
	}
	reg, err := parseRegistry(addr)
	if err != nil {
		if source == "--registry" {
			return nil, FlagErrorf("invalid --registry: %w", err)
		}
		return nil, fmt.Errorf("invalid $%s: %w", EnvRegistry, err)
	}
	r := &Registry{Name: reg, Source: source}
	if f.Username != "" {
		pw, err := io.ReadAll(io.LimitReader(stdin, maxPassword+1))
		if err != nil {
			return nil, fmt.Errorf("read the password from stdin: %w", err)
		}
		if len(pw) > maxPassword {
			return nil, FlagErrorf("--password-stdin: the password is over %d bytes", maxPassword)
		}
		password := strings.TrimSuffix(strings.TrimSuffix(string(pw), "\n"), "\r")
		if password == "" {
			return nil, FlagErrorf("--password-stdin: stdin holds no password")
		}
		r.user, r.auth = f.Username, &authn.Basic{Username: f.Username, Password: password}
	}
	return r, nil
}

// parseRegistry parses host[:port] or an http(s) URL with no path. http:// allows plain HTTP;
// a bare address is tried over HTTPS, and over HTTP too for loopback and private addresses, as
// docker does.
func parseRegistry(s string) (name.Registry, error) {
	var opts []name.Option
	host := s
	if strings.Contains(s, "://") {
		u, err := url.Parse(s)
		if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" ||
			strings.Trim(u.Path, "/") != "" || u.RawQuery != "" || u.Fragment != "" || u.User != nil {
			return name.Registry{}, fmt.Errorf("%q is neither host[:port] nor an http(s) URL of a registry", s)
		}
		host = u.Host
		if u.Scheme == "http" {
			opts = append(opts, name.Insecure)
		}
	}
	reg, err := name.NewRegistry(host, append(opts, name.StrictValidation)...)
	if err != nil {
		return name.Registry{}, fmt.Errorf("%q: %w", s, err)
	}
	return reg, nil
}

// Repository names repo on r.
func (r *Registry) Repository(repo string) (name.Repository, error) {
	return name.NewRepository(r.Name.Name()+"/"+repo, name.StrictValidation, r.insecure())
}

// insecure keeps the scheme choice of r for names built on it.
func (r *Registry) insecure() name.Option {
	if r.Name.Scheme() == "http" {
		return name.Insecure
	}
	return name.WeakValidation
}

// Options are go-containerregistry's options to reach r through hc's transport (its TLS
// settings included), answering r's challenges with the credentials: Basic, or the token
// flow for a Bearer challenge.
func (r *Registry) Options(ctx context.Context, hc *http.Client) []remote.Option {
	opts := []remote.Option{remote.WithContext(ctx)}
	if hc != nil && hc.Transport != nil {
		opts = append(opts, remote.WithTransport(hc.Transport))
	}
	if r.auth != nil {
		return append(opts, remote.WithAuth(r.auth))
	}
	return append(opts, remote.WithAuthFromKeychain(authn.DefaultKeychain))
}

// Explain adds to an error of the registry what to do about it: log in on 401, ask for access
// on 403.
func (r *Registry) Explain(err error) error {
	var te *transport.Error
	if !errors.As(err, &te) {
		return err
	}
	host := r.Name.RegistryStr()
	switch te.StatusCode {
	case http.StatusUnauthorized:
		if r.user != "" {
			return fmt.Errorf("%w\n(the registry at %s refused user %s: check the password)", err, host, r.user)
		}
		return fmt.Errorf("%w\n(the registry at %s wants credentials: `docker login %s`, or pass --username and --password-stdin)", err, host, host)
	case http.StatusForbidden:
		return fmt.Errorf("%w\n(the registry at %s does not allow this user to do that: ask its operator for a rule that does)", err, host)
	}
	return err
}
