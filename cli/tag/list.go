package tag

import (
	"context"
	"errors"
	"fmt"

	"github.com/spf13/cobra"

	"github.com/krakenctl/krakenctl/cli/cmdutil"
	"github.com/krakenctl/krakenctl/cli/endpoints"
	"github.com/krakenctl/krakenctl/server/api"
	"github.com/krakenctl/krakenctl/server/client"
)

// ListOptions are the inputs of `krakenctl tag list`.
type ListOptions struct {
	deps
	// Repo is the repository whose tags are listed; "" lists the repositories.
	Repo string
	// N is the page size; 0 lets the server choose.
	N int
	// Last starts the listing after this name.
	Last string
	// All follows pagination to the end.
	All    bool
	Output string
}

// TagPage is what `tag list REPOSITORY -o json` prints: the OCI tag list, plus the value of
// --last that continues it when there is more.
type TagPage struct {
	api.TagList
	Next string `json:"next,omitempty"`
}

// CatalogPage is what `tag list -o json` prints: the OCI catalog, plus the value of --last that
// continues it when there is more.
type CatalogPage struct {
	api.Catalog
	Next string `json:"next,omitempty"`
}

// NewCmdList returns `krakenctl tag list`. runF replaces the run function in tests.
func NewCmdList(f *cmdutil.Factory, runF func(context.Context, *ListOptions) error) *cobra.Command {
	opts := &ListOptions{deps: depsOf(f)}
	cmd := &cobra.Command{
		Use:   "list [REPOSITORY]",
		Short: "List repositories, or the tags of a repository",
		Long: `Without an argument, list the repositories that have tags; with REPOSITORY, list its tags.
Both are in lexical order and paginated as the OCI distribution API paginates: --n names how
many to return (the server caps it), --last where to start (after that name). When there is
more, the command says how to continue on stderr (or in "next" with -o json). --all follows the
pages to the end.

Listings are linearizable reads, like ` + "`tag get`" + `.`,
		Example: `  krakenctl tag list
  krakenctl tag list team/app --all
  krakenctl tag list team/app --n 100 --last v1.9 -o json`,
		Args: argsFunc(0, 1, "list takes at most one REPOSITORY argument"),
		RunE: func(cmd *cobra.Command, args []string) error {
			if len(args) == 1 {
				if err := CheckRepository(args[0]); err != nil {
					return cmdutil.FlagErrorf("invalid REPOSITORY: %w", err)
				}
				opts.Repo = args[0]
			}
			if opts.N < 0 {
				return cmdutil.FlagErrorf("invalid --n %d: must be 0 (the server's default) or more", opts.N)
			}
			if err := cmdutil.CheckOutput(opts.Output); err != nil {
				return err
			}
			if err := opts.useRegistry(); err != nil {
				return err
			}
			if runF != nil {
				return runF(cmd.Context(), opts)
			}
			return listRun(cmd.Context(), opts)
		},
	}
	endpoints.AddBuildIndexFlags(cmd, &opts.BuildIndex)
	cmdutil.AddRegistryFlags(cmd, &opts.Registry, "the tags")
	cmd.Flags().IntVar(&opts.N, "n", 0, "at most this many names per page (0: the server's default)")
	cmd.Flags().StringVar(&opts.Last, "last", "", "start after this name")
	cmd.Flags().BoolVar(&opts.All, "all", false, "follow pagination and list everything")
	cmdutil.AddOutputFlag(cmd, &opts.Output)
	return cmd
}

// errNoProgress means a server answered a page that does not move past the previous one.
var errNoProgress = errors.New("list: the server's next page does not advance")

func listRun(ctx context.Context, opts *ListOptions) error {
	names, next, err := listNames(ctx, opts)
	if err != nil {
		return err
	}
	if opts.Output == cmdutil.OutputJSON {
		if opts.Repo != "" {
			return cmdutil.PrintJSON(opts.IO.Out, TagPage{TagList: api.TagList{Name: opts.Repo, Tags: names}, Next: next})
		}
		return cmdutil.PrintJSON(opts.IO.Out, CatalogPage{Catalog: api.Catalog{Repositories: names}, Next: next})
	}
	header := "repository"
	if opts.Repo != "" {
		header = "tag"
	}
	if len(names) == 0 {
		if opts.Repo != "" {
			_, _ = fmt.Fprintf(opts.IO.ErrOut, "no tags in %s\n", opts.Repo)
		} else {
			_, _ = fmt.Fprintln(opts.IO.ErrOut, "no repositories")
		}
		return nil
	}
	t := cmdutil.NewTable(opts.IO.Out, header)
	for _, n := range names {
		t.Row(n)
	}
	if err := t.Flush(); err != nil {
		return err
	}
	if next != "" {
		_, _ = fmt.Fprintf(opts.IO.ErrOut, "more after %s: add --last %s, or --all\n", next, next)
	}
	return nil
}

// listNames fetches one page, or every page from opts.Last on with opts.All, and returns the
// names with the --last value that continues the listing ("" at the end). Each page goes to the
// first reachable node.
func listNames(ctx context.Context, opts *ListOptions) ([]string, string, error) {
	page := func(last string) (names []string, next string, err error) {
		err = opts.call(ctx, func(ctx context.Context, c API) error {
			if opts.Repo != "" {
				names, next, err = c.ListTags(ctx, opts.Repo, last, opts.N)
			} else {
				names, next, err = c.ListRepositories(ctx, last, opts.N)
			}
			return err
		})
		if errors.Is(err, client.ErrNotFound) && opts.Repo != "" {
			return nil, "", &RepositoryNotFoundError{Repo: opts.Repo}
		}
		return names, next, err
	}
	all := []string{}
	last := opts.Last
	for {
		names, next, err := page(last)
		if err != nil {
			return nil, "", err
		}
		all = append(all, names...)
		if !opts.All || next == "" {
			return all, next, nil
		}
		if next <= last || len(names) == 0 {
			return nil, "", fmt.Errorf("%w (after %q it says continue after %q)", errNoProgress, last, next)
		}
		last = next
	}
}

// RepositoryNotFoundError says that a repository has no tags in the build-index.
type RepositoryNotFoundError struct {
	Repo string
}

func (e *RepositoryNotFoundError) Error() string {
	return fmt.Sprintf("repository %s not found (it has no tags)", e.Repo)
}

// Unwrap lets errors.Is(err, client.ErrNotFound) see through.
func (e *RepositoryNotFoundError) Unwrap() error { return client.ErrNotFound }
