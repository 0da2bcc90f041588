// Package tag implements `krakenctl tag get|put|delete|list`, which read and move the tags the
// build-index keeps (repository:tag → manifest digest) through server/client. Tags are
// linearizable: once `tag put` returns, every `tag get` on any node sees the new digest, unless
// it asks for a --stale local read.
package tag

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"os"
	"strings"

	"github.com/opencontainers/go-digest"
	"github.com/spf13/cobra"

	"github.com/krakenctl/krakenctl/cli/cmdutil"
	"github.com/krakenctl/krakenctl/cli/endpoints"
	"github.com/krakenctl/krakenctl/cli/iostreams"
	"github.com/krakenctl/krakenctl/server/api"
	"github.com/krakenctl/krakenctl/server/client"
	"github.com/krakenctl/krakenctl/tagstore"
)

// API is the part of the build-index client that the tag commands call. *client.BuildIndex
// implements it; tests may pass fakes. Errors for a missing tag or repository wrap
// client.ErrNotFound.
type API interface {
	PutTag(ctx context.Context, repo, tag string, d digest.Digest) (api.Tag, error)
	GetTag(ctx context.Context, repo, tag string, stale bool) (api.Tag, error)
	DeleteTag(ctx context.Context, repo, tag string) (api.Tag, error)
	// ListTags returns one page of repo's tags after last, at most n (0: the server's default),
	// and the value of last for the next page ("" on the last page).
	ListTags(ctx context.Context, repo, last string, n int) (tags []string, next string, err error)
	// ListRepositories is ListTags for the catalog of repositories.
	ListRepositories(ctx context.Context, last string, n int) (repos []string, next string, err error)
}

// deps are what the tag commands take from the Factory; tests fill them directly.
type deps struct {
	IO         *iostreams.IOStreams
	HTTPClient func() *http.Client
	// Env looks up environment variables (build-index address resolution).
	Env endpoints.Env
	// NewAPI returns the client of the node at addr; the default is client.NewBuildIndex.
	NewAPI func(addr string, hc *http.Client) API

	BuildIndex endpoints.BuildIndexFlags
	// Registry, when it names one, sends the commands to that registry (a proxy) over the
	// distribution API instead of to the build-index.
	Registry cmdutil.RegistryFlags

	reg *cmdutil.Registry
}

func depsOf(f *cmdutil.Factory) deps {
	return deps{
		IO:         f.IOStreams,
		HTTPClient: f.HTTPClient,
		Env:        os.Getenv,
		NewAPI:     func(addr string, hc *http.Client) API { return client.NewBuildIndex(addr, hc) },
	}
}

// useRegistry resolves --registry (or $KRAKENCTL_REGISTRY) and its credentials; the commands
// call it after parsing their arguments.
func (d *deps) useRegistry() error {
	reg, err := d.Registry.Resolve(d.Env, d.IO.In, false)
	if err != nil {
		return err
	}
	if reg != nil && (len(d.BuildIndex.Addrs) > 0 || d.BuildIndex.File != "") {
		return cmdutil.FlagErrorf("%s talks to a registry; --build-index and --endpoints-file talk to the build-index: pass one or the other", reg.Source)
	}
	d.reg = reg
	return nil
}

// call runs fn against the registry when one is named, else resolves the build-index nodes
// and runs fn against the first that can be reached (see endpoints.BuildIndex.Try).
func (d *deps) call(ctx context.Context, fn func(ctx context.Context, c API) error) error {
	if d.reg != nil {
		return fn(ctx, &registryAPI{reg: d.reg, hc: d.HTTPClient()})
	}
	nodes, err := d.BuildIndex.Resolve(d.Env)
	if err != nil {
		return err
	}
	hc := d.HTTPClient()
	_, err = nodes.Try(ctx, func(ctx context.Context, addr string) error {
		return fn(ctx, d.NewAPI(addr, hc))
	})
	return err
}

// NewCmdTag returns `krakenctl tag` with its sub-commands.
func NewCmdTag(f *cmdutil.Factory) *cobra.Command {
	cmd := &cobra.Command{
		Use:   "tag <command>",
		Short: "Get, move, delete and list image tags in the build-index",
		Long: `Read and change the build-index's tags: each maps REPOSITORY:TAG to a manifest digest.

Tags are linearizable: once ` + "`tag put`" + ` returns, every read on every node sees the new
digest. The build-index only accepts a tag whose manifest (and the blobs it references) the
origins hold.

Build-index nodes come from --build-index, else --endpoints-file, else $KRAKENCTL_BUILD_INDEX,
else the endpoints file written by ` + "`krakenctl dev up`" + `. They are tried in order; any node
serves any request.

With --registry (or $KRAKENCTL_REGISTRY) the commands talk to a registry, the proxy, with the
distribution API instead, as docker and crane do: the proxy authenticates them and checks
them against its rules. Credentials are --username with the password on stdin
(--password-stdin), else those ` + "`docker login`" + ` stored for the registry in Docker's config.json
(credential helpers included).`,
		Args: cobra.NoArgs,
	}
	cmd.AddCommand(NewCmdGet(f, nil), NewCmdPut(f, nil), NewCmdDelete(f, nil), NewCmdList(f, nil))
	return cmd
}

// Ref names one tag of one repository.
type Ref struct {
	Repo string
	Tag  string
}

func (r Ref) String() string { return r.Repo + ":" + r.Tag }

// ParseRef splits "REPOSITORY:TAG" at the last ':' after the last '/' (so a registry host's
// port, as in "localhost:5000/app:v1", is never taken for the tag) and checks both halves
// against the OCI grammar. Errors say what is wrong; callers wrap them in a usage error.
func ParseRef(s string) (Ref, error) {
	if strings.Contains(s, "@") {
		return Ref{}, fmt.Errorf("%q names a digest, not a tag: want REPOSITORY:TAG", s)
	}
	slash := strings.LastIndexByte(s, '/')
	colon := strings.LastIndexByte(s[slash+1:], ':')
	if colon < 0 {
		return Ref{}, fmt.Errorf("%q has no tag: want REPOSITORY:TAG, such as team/app:v1", s)
	}
	colon += slash + 1
	r := Ref{Repo: s[:colon], Tag: s[colon+1:]}
	if err := CheckRepository(r.Repo); err != nil {
		return Ref{}, err
	}
	if err := CheckTag(r.Tag); err != nil {
		return Ref{}, err
	}
	return r, nil
}

// CheckRepository checks a repository name against the OCI grammar, as the build-index does
// (tagstore.ValidateRepository). A registry host is not part of a build-index repository name;
// the error says so when the name starts with one.
func CheckRepository(repo string) error {
	err := tagstore.ValidateRepository(repo)
	if err == nil {
		return nil
	}
	if host, rest, ok := strings.Cut(repo, "/"); ok && strings.Contains(host, ":") && tagstore.ValidateRepository(rest) == nil {
		return fmt.Errorf("%w (a registry host is not part of the repository name: drop %q)", err, host+"/")
	}
	return err
}

// CheckTag checks a tag against the OCI grammar, as the build-index does (tagstore.ValidateTag):
// up to 128 letters, digits, '_', '.' and '-', not starting with '.' or '-'.
func CheckTag(tag string) error { return tagstore.ValidateTag(tag) }

// NotFoundError says that the build-index has no such tag (or repository).
type NotFoundError struct {
	Ref Ref
}

func (e *NotFoundError) Error() string { return fmt.Sprintf("tag %s not found", e.Ref) }

// Unwrap lets errors.Is(err, client.ErrNotFound) see through.
func (e *NotFoundError) Unwrap() error { return client.ErrNotFound }

// notFound turns a client error for ref into a NotFoundError when the tag does not exist.
func notFound(ref Ref, err error) error {
	if errors.Is(err, client.ErrNotFound) {
		return &NotFoundError{Ref: ref}
	}
	return err
}

// argsFunc is a positional-argument check that fails with a usage error (exit code 2) and a
// message that says what the command wants.
func argsFunc(minN, maxN int, want string) cobra.PositionalArgs {
	return func(cmd *cobra.Command, args []string) error {
		if len(args) < minN || len(args) > maxN {
			return cmdutil.FlagErrorf("%s, got %d arguments", want, len(args))
		}
		return nil
	}
}

// parseRefArg parses a REPOSITORY:TAG argument as a usage error.
func parseRefArg(s string) (Ref, error) {
	r, err := ParseRef(s)
	if err != nil {
		return Ref{}, cmdutil.FlagErrorf("invalid REPOSITORY:TAG: %w", err)
	}
	return r, nil
}
