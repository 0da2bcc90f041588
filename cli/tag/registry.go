package tag

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"slices"

	"github.com/google/go-containerregistry/pkg/name"
	"github.com/google/go-containerregistry/pkg/v1/remote"
	"github.com/google/go-containerregistry/pkg/v1/remote/transport"
	"github.com/opencontainers/go-digest"

	"github.com/krakenctl/krakenctl/cli/cmdutil"
	"github.com/krakenctl/krakenctl/server/api"
	"github.com/krakenctl/krakenctl/server/client"
)

// defaultCatalogPage is the page size asked of a registry's catalog when --n is not given.
const defaultCatalogPage = 1000

// registryAPI is API over a registry's distribution API (the proxy's), with the credentials of
// reg: tags are manifests addressed by tag, so a put reads the manifest by digest and puts it
// back under the tag, and the registry checks that the repository holds everything it
// references. Tags read this way carry no Raft index.
type registryAPI struct {
	reg *cmdutil.Registry
	hc  *http.Client
}

func (a *registryAPI) repo(repo string) (name.Repository, error) {
	r, err := a.reg.Repository(repo)
	if err != nil {
		return name.Repository{}, fmt.Errorf("repository %q on %s: %w", repo, a.reg.Name.RegistryStr(), err)
	}
	return r, nil
}

// PutTag points repo:tag at manifest d of repo.
func (a *registryAPI) PutTag(ctx context.Context, repo, tag string, d digest.Digest) (api.Tag, error) {
	r, err := a.repo(repo)
	if err != nil {
		return api.Tag{}, err
	}
	desc, err := remote.Get(r.Digest(d.String()), a.reg.Options(ctx, a.hc)...)
	if err != nil {
		return api.Tag{}, a.explain(fmt.Errorf("read manifest %s of %s: %w", d, repo, err))
	}
	if err := remote.Tag(r.Tag(tag), desc, a.reg.Options(ctx, a.hc)...); err != nil {
		return api.Tag{}, a.explain(fmt.Errorf("tag %s:%s: %w", repo, tag, err))
	}
	return api.Tag{Repo: repo, Tag: tag, Digest: d}, nil
}

// GetTag returns the digest repo:tag points at. stale has no meaning for a registry.
func (a *registryAPI) GetTag(ctx context.Context, repo, tag string, _ bool) (api.Tag, error) {
	r, err := a.repo(repo)
	if err != nil {
		return api.Tag{}, err
	}
	desc, err := remote.Head(r.Tag(tag), a.reg.Options(ctx, a.hc)...)
	if err != nil {
		return api.Tag{}, a.explain(fmt.Errorf("read tag %s:%s: %w", repo, tag, err))
	}
	return api.Tag{Repo: repo, Tag: tag, Digest: digest.Digest(desc.Digest.String())}, nil
}

// DeleteTag removes repo:tag (not its manifest) and returns the digest it pointed at.
func (a *registryAPI) DeleteTag(ctx context.Context, repo, tag string) (api.Tag, error) {
	t, err := a.GetTag(ctx, repo, tag, false)
	if err != nil {
		return api.Tag{}, err
	}
	r, err := a.repo(repo)
	if err != nil {
		return api.Tag{}, err
	}
	if err := remote.Delete(r.Tag(tag), a.reg.Options(ctx, a.hc)...); err != nil {
		return api.Tag{}, a.explain(fmt.Errorf("delete tag %s:%s: %w", repo, tag, err))
	}
	return t, nil
}

// ListTags returns repo's tags after last, at most n (all with n = 0). The registry's whole
// list is read (go-containerregistry follows its pages) and cut here.
func (a *registryAPI) ListTags(ctx context.Context, repo, last string, n int) ([]string, string, error) {
	r, err := a.repo(repo)
	if err != nil {
		return nil, "", err
	}
	tags, err := remote.List(r, a.reg.Options(ctx, a.hc)...)
	if err != nil {
		return nil, "", a.explain(fmt.Errorf("list tags of %s: %w", repo, err))
	}
	slices.Sort(tags)
	i, _ := slices.BinarySearch(tags, last)
	if i < len(tags) && tags[i] == last {
		i++
	}
	tags = tags[i:]
	if n > 0 && len(tags) > n {
		return tags[:n], tags[n-1], nil
	}
	return tags, "", nil
}

// ListRepositories returns one page of the registry's catalog (which lists only what the
// caller may pull, behind auth).
func (a *registryAPI) ListRepositories(ctx context.Context, last string, n int) ([]string, string, error) {
	if n <= 0 {
		n = defaultCatalogPage
	}
	repos, err := remote.CatalogPage(a.reg.Name, last, n, a.reg.Options(ctx, a.hc)...)
	if err != nil {
		return nil, "", a.explain(fmt.Errorf("list repositories: %w", err))
	}
	if len(repos) == n {
		return repos, repos[n-1], nil
	}
	return repos, "", nil
}

// explain maps a registry's 404 to client.ErrNotFound, as the build-index client does, and
// adds advice to authentication failures.
func (a *registryAPI) explain(err error) error {
	var te *transport.Error
	if errors.As(err, &te) && te.StatusCode == http.StatusNotFound {
		return fmt.Errorf("%w: %w", client.ErrNotFound, err)
	}
	return a.reg.Explain(err)
}

// Interface guards
var _ API = (*registryAPI)(nil)
