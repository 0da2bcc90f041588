package tag

import (
	"bytes"
	"context"
	"fmt"
	"net"
	"net/http"
	"os"
	"slices"
	"sort"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/opencontainers/go-digest"
	"github.com/spf13/cobra"
	"github.com/stretchr/testify/require"
	"go.uber.org/goleak"

	"github.com/krakenctl/krakenctl/tagstore/tagstoretest"

	"github.com/krakenctl/krakenctl/cli/cmdutil"
	"github.com/krakenctl/krakenctl/cli/cmdutil/cmdutiltest"
	"github.com/krakenctl/krakenctl/cli/endpoints"
	"github.com/krakenctl/krakenctl/cli/iostreams"
	"github.com/krakenctl/krakenctl/server/api"
	"github.com/krakenctl/krakenctl/server/client"
)

func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m, tagstoretest.IgnoreLeftovers())
}

const hex64 = "4a5c1e6f0d2b3a4c5d6e7f8091a2b3c4d5e6f708192a3b4c5d6e7f8091a2b3c4"

var dgst = digest.Digest("sha256:" + hex64)

func TestParseRef(t *testing.T) {
	t.Parallel()
	tests := []struct {
		in      string
		want    Ref
		wantErr string
	}{
		{in: "app:v1", want: Ref{Repo: "app", Tag: "v1"}},
		{in: "team/app:prod", want: Ref{Repo: "team/app", Tag: "prod"}},
		{in: "a/b/c/d:1.2.3-rc_1", want: Ref{Repo: "a/b/c/d", Tag: "1.2.3-rc_1"}},
		{in: "registry.example.com/app:latest", want: Ref{Repo: "registry.example.com/app", Tag: "latest"}},
		{in: "a/b:_x", want: Ref{Repo: "a/b", Tag: "_x"}},
		{in: "localhost:5000/team/app:v1", wantErr: `(a registry host is not part of the repository name: drop "localhost:5000/")`},
		{in: "registry.example.com:443/a/b:_x", wantErr: `invalid repository name "registry.example.com:443/a/b"`},
		{in: "my-app.v2__x/sub:V2", want: Ref{Repo: "my-app.v2__x/sub", Tag: "V2"}},
		{in: "a:" + strings.Repeat("t", 128), want: Ref{Repo: "a", Tag: strings.Repeat("t", 128)}},
		{in: "app", wantErr: `"app" has no tag: want REPOSITORY:TAG`},
		{in: "localhost:5000/app", wantErr: `"localhost:5000/app" has no tag`},
		{in: "app@" + dgst.String(), wantErr: "names a digest, not a tag"},
		{in: "app:", wantErr: "invalid tag: empty"},
		{in: ":v1", wantErr: "invalid repository name: empty"},
		{in: "App:v1", wantErr: `invalid repository name "App"`},
		{in: "team//app:v1", wantErr: `invalid repository name "team//app": component 2 ("")`},
		{in: "/app:v1", wantErr: "invalid repository name"},
		{in: "app/:v1", wantErr: "invalid repository name"},
		{in: "a..b:v1", wantErr: "invalid repository name"},
		{in: "a-:v1", wantErr: "invalid repository name"},
		{in: "bad_host:x/app:v1", wantErr: `component 1 ("bad_host:x")`},
		{in: "app:-v1", wantErr: `invalid tag "-v1"`},
		{in: "app:.v1", wantErr: `invalid tag ".v1"`},
		{in: "app:v:1", wantErr: `invalid repository name "app:v"`},
		{in: "app:v/1", wantErr: `"app:v/1" has no tag`},
		{in: "app:a b", wantErr: `invalid tag "a b"`},
		{in: "a:" + strings.Repeat("t", 129), wantErr: "129 characters, the limit is 128"},
		{in: strings.Repeat("a", 256) + ":v1", wantErr: "256 characters, the limit is 255"},
	}
	for _, tt := range tests {
		t.Run(tt.in, func(t *testing.T) {
			t.Parallel()
			got, err := ParseRef(tt.in)
			if tt.wantErr != "" {
				require.ErrorContains(t, err, tt.wantErr)
				require.Zero(t, got)
				return
			}
			require.NoError(t, err)
			require.Equal(t, tt.want, got)
			require.Equal(t, tt.in, got.String(), "a reference prints as it was written")
		})
	}
}

func FuzzParseRef(f *testing.F) {
	for _, s := range []string{"app:v1", "localhost:5000/a/b:c", "a.b/c:d", "a:b:c", "@", "a/b"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		r, err := ParseRef(s)
		if err != nil {
			return
		}
		require.Equal(t, s, r.String())
		require.NoError(t, CheckRepository(r.Repo))
		require.NoError(t, CheckTag(r.Tag))
		require.NotContains(t, r.Tag, ":")
		require.NotContains(t, r.Tag, "/")
	})
}

func Test_NewCmdGet(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name    string
		args    []string
		want    GetOptions
		wantErr string
	}{
		{name: "plain", args: []string{"team/app:prod"}, want: GetOptions{Ref: Ref{"team/app", "prod"}, Output: "table"}},
		{name: "stale json nodes", args: []string{"example.com/app:v1", "--stale", "-o", "json", "--build-index", "a:1,b:2", "--endpoints-file", "e.yaml"},
			want: GetOptions{Ref: Ref{"example.com/app", "v1"}, Stale: true, Output: "json", deps: deps{BuildIndex: endpoints.BuildIndexFlags{Addrs: []string{"a:1", "b:2"}, File: "e.yaml"}}}},
		{name: "no argument", wantErr: "get takes one REPOSITORY:TAG argument, got 0 arguments"},
		{name: "two arguments", args: []string{"a:1", "b:2"}, wantErr: "got 2 arguments"},
		{name: "no tag", args: []string{"team/app"}, wantErr: `invalid REPOSITORY:TAG: "team/app" has no tag`},
		{name: "bad output", args: []string{"a:b", "-o", "yaml"}, wantErr: `invalid --output "yaml"`},
		{name: "unknown flag", args: []string{"a:b", "--nope"}, wantErr: "unknown flag: --nope"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			var got *GetOptions
			err := cmdutiltest.Execute(t, func(f *cmdutil.Factory) *cobra.Command {
				return NewCmdGet(f, func(_ context.Context, o *GetOptions) error { got = o; return nil })
			}, tt.args...)
			if tt.wantErr != "" {
				cmdutiltest.RequireUsageError(t, err, tt.wantErr, got != nil)
				return
			}
			require.NoError(t, err)
			require.Equal(t, tt.want.Ref, got.Ref)
			require.Equal(t, tt.want.Stale, got.Stale)
			require.Equal(t, tt.want.Output, got.Output)
			require.Equal(t, tt.want.BuildIndex, got.BuildIndex)
			require.NotNil(t, got.NewAPI)
			require.NotNil(t, got.Env)
		})
	}
}

func Test_NewCmdPut(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name    string
		args    []string
		want    PutOptions
		wantErr string
	}{
		{name: "full digest", args: []string{"team/app:prod", dgst.String()}, want: PutOptions{Ref: Ref{"team/app", "prod"}, Digest: dgst, Output: "table"}},
		{name: "hex only and json", args: []string{"app:v1", hex64, "-o", "json"}, want: PutOptions{Ref: Ref{"app", "v1"}, Digest: dgst, Output: "json"}},
		{name: "missing digest", args: []string{"app:v1"}, wantErr: "put takes REPOSITORY:TAG and DIGEST arguments, got 1 arguments"},
		{name: "bad digest", args: []string{"app:v1", "sha256:abc"}, wantErr: `invalid DIGEST argument: "sha256:abc" is not a sha256 digest`},
		{name: "upper-case digest", args: []string{"app:v1", strings.ToUpper(hex64)}, wantErr: "invalid DIGEST argument"},
		{name: "bad tag", args: []string{"app:-x", hex64}, wantErr: `invalid REPOSITORY:TAG: invalid tag "-x"`},
		{name: "arguments swapped", args: []string{hex64, "app:v1"}, wantErr: "invalid REPOSITORY:TAG"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			var got *PutOptions
			err := cmdutiltest.Execute(t, func(f *cmdutil.Factory) *cobra.Command {
				return NewCmdPut(f, func(_ context.Context, o *PutOptions) error { got = o; return nil })
			}, tt.args...)
			if tt.wantErr != "" {
				cmdutiltest.RequireUsageError(t, err, tt.wantErr, got != nil)
				return
			}
			require.NoError(t, err)
			require.Equal(t, tt.want.Ref, got.Ref)
			require.Equal(t, tt.want.Digest, got.Digest)
			require.Equal(t, tt.want.Output, got.Output)
		})
	}
}

func Test_NewCmdDelete(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name    string
		args    []string
		want    Ref
		wantErr string
	}{
		{name: "plain", args: []string{"team/app:pr-1"}, want: Ref{"team/app", "pr-1"}},
		{name: "none", wantErr: "delete takes one REPOSITORY:TAG argument, got 0 arguments"},
		{name: "repository only", args: []string{"team/app"}, wantErr: "has no tag"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			var got *DeleteOptions
			err := cmdutiltest.Execute(t, func(f *cmdutil.Factory) *cobra.Command {
				return NewCmdDelete(f, func(_ context.Context, o *DeleteOptions) error { got = o; return nil })
			}, tt.args...)
			if tt.wantErr != "" {
				cmdutiltest.RequireUsageError(t, err, tt.wantErr, got != nil)
				return
			}
			require.NoError(t, err)
			require.Equal(t, tt.want, got.Ref)
			require.Equal(t, "table", got.Output)
		})
	}
}

func Test_NewCmdList(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name    string
		args    []string
		want    ListOptions
		wantErr string
	}{
		{name: "catalog", want: ListOptions{Output: "table"}},
		{name: "tags all", args: []string{"team/app", "--all", "--n", "50"}, want: ListOptions{Repo: "team/app", All: true, N: 50, Output: "table"}},
		{name: "page after", args: []string{"example.com/app", "--last", "v1", "-o", "json"}, want: ListOptions{Repo: "example.com/app", Last: "v1", Output: "json"}},
		{name: "two repositories", args: []string{"a", "b"}, wantErr: "list takes at most one REPOSITORY argument, got 2 arguments"},
		{name: "repository with tag", args: []string{"team/app:v1"}, wantErr: `invalid REPOSITORY: invalid repository name "team/app:v1"`},
		{name: "negative n", args: []string{"--n", "-1"}, wantErr: "invalid --n -1"},
		{name: "non-numeric n", args: []string{"--n", "many"}, wantErr: `invalid argument "many" for "--n"`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			var got *ListOptions
			err := cmdutiltest.Execute(t, func(f *cmdutil.Factory) *cobra.Command {
				return NewCmdList(f, func(_ context.Context, o *ListOptions) error { got = o; return nil })
			}, tt.args...)
			if tt.wantErr != "" {
				cmdutiltest.RequireUsageError(t, err, tt.wantErr, got != nil)
				return
			}
			require.NoError(t, err)
			require.Equal(t, tt.want.Repo, got.Repo)
			require.Equal(t, tt.want.N, got.N)
			require.Equal(t, tt.want.Last, got.Last)
			require.Equal(t, tt.want.All, got.All)
			require.Equal(t, tt.want.Output, got.Output)
		})
	}
}

// fakeIndex is an in-memory build-index that pages at pageSize names (or n when smaller).
type fakeIndex struct {
	mu       sync.Mutex
	tags     map[Ref]api.Tag
	index    uint64
	pageSize int
	calls    []string
	// stuck makes listings answer next = last forever.
	stuck bool
}

func newFakeIndex() *fakeIndex { return &fakeIndex{tags: map[Ref]api.Tag{}, pageSize: 2} }

func (f *fakeIndex) record(s string) { f.calls = append(f.calls, s) }

func (f *fakeIndex) PutTag(_ context.Context, repo, tag string, d digest.Digest) (api.Tag, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.record("put " + repo + ":" + tag)
	f.index++
	t := api.Tag{Repo: repo, Tag: tag, Digest: d, Index: f.index, Updated: time.Date(2026, 11, 27, 12, 0, 0, 0, time.UTC)}
	f.tags[Ref{repo, tag}] = t
	return t, nil
}

func (f *fakeIndex) GetTag(_ context.Context, repo, tag string, stale bool) (api.Tag, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.record(fmt.Sprintf("get %s:%s stale=%v", repo, tag, stale))
	t, ok := f.tags[Ref{repo, tag}]
	if !ok {
		return api.Tag{}, fmt.Errorf("get tag %s:%s: %w: 404 MANIFEST_UNKNOWN", repo, tag, client.ErrNotFound)
	}
	return t, nil
}

func (f *fakeIndex) DeleteTag(_ context.Context, repo, tag string) (api.Tag, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.record("delete " + repo + ":" + tag)
	t, ok := f.tags[Ref{repo, tag}]
	if !ok {
		return api.Tag{}, fmt.Errorf("delete tag %s:%s: %w", repo, tag, client.ErrNotFound)
	}
	delete(f.tags, Ref{repo, tag})
	return t, nil
}

func (f *fakeIndex) page(names []string, last string, n int) ([]string, string) {
	sort.Strings(names)
	names = slices.Compact(names)
	i, _ := slices.BinarySearch(names, last)
	if i < len(names) && names[i] == last {
		i++
	}
	size := f.pageSize
	if n > 0 && n < size {
		size = n
	}
	page := names[i:min(i+size, len(names))]
	if f.stuck {
		return page, last
	}
	if i+size < len(names) {
		return page, page[len(page)-1]
	}
	return page, ""
}

func (f *fakeIndex) ListTags(_ context.Context, repo, last string, n int) ([]string, string, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.record(fmt.Sprintf("tags %s last=%q n=%d", repo, last, n))
	var names []string
	for r := range f.tags {
		if r.Repo == repo {
			names = append(names, r.Tag)
		}
	}
	if len(names) == 0 {
		return nil, "", fmt.Errorf("list tags of %s: %w", repo, client.ErrNotFound)
	}
	p, next := f.page(names, last, n)
	return p, next, nil
}

func (f *fakeIndex) ListRepositories(_ context.Context, last string, n int) ([]string, string, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.record(fmt.Sprintf("repos last=%q n=%d", last, n))
	names := []string{}
	for r := range f.tags {
		names = append(names, r.Repo)
	}
	p, next := f.page(names, last, n)
	return p, next, nil
}

// down is a node that cannot be reached.
type down struct{ addr string }

func (d down) err() error {
	return fmt.Errorf("GET %s: %w", d.addr, &net.OpError{Op: "dial", Net: "tcp", Err: os.NewSyscallError("connect", syscall.ECONNREFUSED)})
}
func (d down) PutTag(context.Context, string, string, digest.Digest) (api.Tag, error) {
	return api.Tag{}, d.err()
}
func (d down) GetTag(context.Context, string, string, bool) (api.Tag, error) {
	return api.Tag{}, d.err()
}
func (d down) DeleteTag(context.Context, string, string) (api.Tag, error) { return api.Tag{}, d.err() }
func (d down) ListTags(context.Context, string, string, int) ([]string, string, error) {
	return nil, "", d.err()
}
func (d down) ListRepositories(context.Context, string, int) ([]string, string, error) {
	return nil, "", d.err()
}

// fakeDeps returns deps that talk to idx at "up:1" and to a dead node at "down:1", with the
// nodes named by addrs.
func fakeDeps(idx *fakeIndex, addrs ...string) (deps, *bytes.Buffer, *bytes.Buffer) {
	ios, _, out, errOut := iostreams.Test()
	return deps{
		IO:         ios,
		HTTPClient: func() *http.Client { return &http.Client{} },
		Env:        func(string) string { return "" },
		NewAPI: func(addr string, _ *http.Client) API {
			if addr == "up:1" {
				return idx
			}
			return down{addr}
		},
		BuildIndex: endpoints.BuildIndexFlags{Addrs: addrs},
	}, out, errOut
}

func TestPutGetDelete(t *testing.T) {
	t.Parallel()
	idx := newFakeIndex()
	ref := Ref{"team/app", "prod"}

	d, out, _ := fakeDeps(idx, "down:1", "up:1")
	require.NoError(t, putRun(t.Context(), &PutOptions{deps: d, Ref: ref, Digest: dgst, Output: "table"}))
	require.Equal(t, "team/app:prod -> "+dgst.String()+" (index 1)\n", out.String())

	d, out, _ = fakeDeps(idx, "down:1", "up:1")
	require.NoError(t, getRun(t.Context(), &GetOptions{deps: d, Ref: ref, Output: "table"}))
	require.Equal(t, dgst.String()+"\n", out.String(), "get prints the digest alone, for scripts")

	d, out, _ = fakeDeps(idx, "up:1")
	require.NoError(t, getRun(t.Context(), &GetOptions{deps: d, Ref: ref, Stale: true, Output: "json"}))
	require.JSONEq(t, `{"repo":"team/app","tag":"prod","digest":"`+dgst.String()+`","index":1,"updated":"2026-11-27T12:00:00Z"}`, out.String())
	require.Contains(t, idx.calls, "get team/app:prod stale=true")

	d, out, _ = fakeDeps(idx, "up:1")
	require.NoError(t, deleteRun(t.Context(), &DeleteOptions{deps: d, Ref: ref, Output: "table"}))
	require.Equal(t, "deleted team/app:prod (was "+dgst.String()+")\n", out.String())

	d, out, _ = fakeDeps(idx, "up:1")
	err := getRun(t.Context(), &GetOptions{deps: d, Ref: ref, Output: "table"})
	require.EqualError(t, err, "tag team/app:prod not found")
	require.ErrorIs(t, err, client.ErrNotFound)
	require.Equal(t, cmdutil.ExitError, cmdutil.ExitCode(err))
	require.Empty(t, out.String())

	d, _, _ = fakeDeps(idx, "up:1")
	err = deleteRun(t.Context(), &DeleteOptions{deps: d, Ref: ref, Output: "json"})
	require.EqualError(t, err, "tag team/app:prod not found")
}

func TestNoNodeAnswers(t *testing.T) {
	t.Parallel()
	idx := newFakeIndex()
	d, out, _ := fakeDeps(idx, "down:1", "down:2")
	err := putRun(t.Context(), &PutOptions{deps: d, Ref: Ref{"a", "b"}, Digest: dgst, Output: "table"})
	require.ErrorContains(t, err, "no build-index node answered")
	require.ErrorContains(t, err, "down:2")
	require.ErrorIs(t, err, syscall.ECONNREFUSED)
	require.Empty(t, out.String())
	require.Empty(t, idx.calls)

	// No node configured anywhere is a usage error.
	d, _, _ = fakeDeps(idx)
	d.Env = func(k string) string {
		if k == "HOME" {
			return t.TempDir()
		}
		return ""
	}
	err = getRun(t.Context(), &GetOptions{deps: d, Ref: Ref{"a", "b"}})
	require.ErrorIs(t, err, endpoints.ErrNoBuildIndex)
	require.Equal(t, cmdutil.ExitUsage, cmdutil.ExitCode(err))
}

func fill(t *testing.T, idx *fakeIndex, refs ...string) {
	for _, s := range refs {
		r, err := ParseRef(s)
		require.NoError(t, err)
		_, err = idx.PutTag(t.Context(), r.Repo, r.Tag, dgst)
		require.NoError(t, err)
	}
}

func TestList(t *testing.T) {
	t.Parallel()
	idx := newFakeIndex()
	fill(t, idx, "a/x:1", "a/x:2", "a/x:3", "a/x:4", "a/x:5", "b:1", "c:1")

	// One page (the server's size): a table, and a hint on stderr.
	d, out, errOut := fakeDeps(idx, "down:1", "up:1")
	require.NoError(t, listRun(t.Context(), &ListOptions{deps: d, Repo: "a/x", Output: "table"}))
	require.Equal(t, "TAG\n1\n2\n", out.String())
	require.Equal(t, "more after 2: add --last 2, or --all\n", errOut.String())

	// --all follows pagination from --last.
	d, out, errOut = fakeDeps(idx, "up:1")
	require.NoError(t, listRun(t.Context(), &ListOptions{deps: d, Repo: "a/x", Last: "1", All: true, N: 1, Output: "table"}))
	require.Equal(t, "TAG\n2\n3\n4\n5\n", out.String())
	require.Empty(t, errOut.String())
	require.Contains(t, idx.calls, `tags a/x last="3" n=1`)

	// JSON: the OCI document plus next.
	d, out, _ = fakeDeps(idx, "up:1")
	require.NoError(t, listRun(t.Context(), &ListOptions{deps: d, Repo: "a/x", Last: "2", Output: "json"}))
	require.JSONEq(t, `{"name":"a/x","tags":["3","4"],"next":"4"}`, out.String())

	d, out, _ = fakeDeps(idx, "up:1")
	require.NoError(t, listRun(t.Context(), &ListOptions{deps: d, All: true, Output: "json"}))
	require.JSONEq(t, `{"repositories":["a/x","b","c"]}`, out.String())

	d, out, _ = fakeDeps(idx, "up:1")
	require.NoError(t, listRun(t.Context(), &ListOptions{deps: d, Output: "table"}))
	require.Equal(t, "REPOSITORY\na/x\nb\n", out.String())

	// The end of a listing: no hint; an empty page says so on stderr.
	d, out, errOut = fakeDeps(idx, "up:1")
	require.NoError(t, listRun(t.Context(), &ListOptions{deps: d, Last: "c", Output: "table"}))
	require.Empty(t, out.String())
	require.Equal(t, "no repositories\n", errOut.String())

	d, out, _ = fakeDeps(idx, "up:1")
	require.NoError(t, listRun(t.Context(), &ListOptions{deps: d, Last: "c", Output: "json"}))
	require.JSONEq(t, `{"repositories":[]}`, out.String(), "an empty page is an empty list, not null")

	// An unknown repository.
	d, out, _ = fakeDeps(idx, "up:1")
	err := listRun(t.Context(), &ListOptions{deps: d, Repo: "nope", Output: "table"})
	require.EqualError(t, err, "repository nope not found (it has no tags)")
	require.ErrorIs(t, err, client.ErrNotFound)
	require.Empty(t, out.String())
}

func TestListStopsOnAServerThatDoesNotAdvance(t *testing.T) {
	t.Parallel()
	idx := newFakeIndex()
	fill(t, idx, "a:1", "a:2", "a:3")
	idx.stuck = true
	d, out, _ := fakeDeps(idx, "up:1")
	err := listRun(t.Context(), &ListOptions{deps: d, Repo: "a", Last: "1", All: true, Output: "table"})
	require.ErrorIs(t, err, errNoProgress)
	require.Empty(t, out.String())
}
