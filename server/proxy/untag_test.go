package proxy_test

import (
	"fmt"
	"net/http"
	"net/http/httptest"
	"net/http/httputil"
	"net/url"
	"strings"
	"sync"
	"sync/atomic"
	"testing"

	"github.com/opencontainers/go-digest"
	"github.com/stretchr/testify/require"

	"github.com/krakenctl/krakenctl/server/api"
	"github.com/krakenctl/krakenctl/server/proxy"
	"github.com/krakenctl/krakenctl/server/registry"
)

// indexSpy stands between a proxy and the build-index: it notes every request, and with old
// set it answers as a build-index that predates the tag lookup by digest (the query is dropped,
// so the whole list comes back).
type indexSpy struct {
	mu   sync.Mutex
	seen []string
	old  atomic.Bool
}

func (s *indexSpy) start(t *testing.T, target string) string {
	t.Helper()
	u, err := url.Parse("http://" + target)
	require.NoError(t, err)
	rp := httputil.NewSingleHostReverseProxy(u)
	var self string
	rp.ModifyResponse = func(resp *http.Response) error {
		if resp.Header.Get(api.HeaderLeader) != "" {
			resp.Header.Set(api.HeaderLeader, self) // keep the proxy's requests coming here
		}
		return nil
	}
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if s.old.Load() {
			q := r.URL.Query()
			q.Del(api.QueryDigest)
			r.URL.RawQuery = q.Encode()
		}
		s.mu.Lock()
		s.seen = append(s.seen, r.Method+" "+r.URL.RequestURI())
		s.mu.Unlock()
		rp.ServeHTTP(w, r)
	}))
	t.Cleanup(srv.Close)
	self = strings.TrimPrefix(srv.URL, "http://")
	return self
}

// reset forgets what was seen and returns it.
func (s *indexSpy) reset() []string {
	s.mu.Lock()
	defer s.mu.Unlock()
	seen := s.seen
	s.seen = nil
	return seen
}

// tagReads counts the requests in seen that read one tag or list a repository's tags.
func tagReads(seen []string, repo string) (gets, lists, byDigest int) {
	tags := api.TagsPath(repo)
	for _, s := range seen {
		switch {
		case strings.HasPrefix(s, "GET "+tags+"/"):
			gets++
		case strings.HasPrefix(s, "GET "+tags+"?") && strings.Contains(s, api.QueryDigest+"="):
			byDigest++
		case strings.HasPrefix(s, "GET "+tags):
			lists++
		}
	}
	return gets, lists, byDigest
}

// A manifest delete finds the tags pointing at the manifest through the build-index's reverse
// index: it reads none of the repository's other tags, deletes exactly its own, and leaves the
// others. Against a build-index that predates the lookup it falls back to reading every tag,
// with the same result.
func TestDeleteManifestReadsOnlyItsTags(t *testing.T) {
	t.Parallel()
	st := newStack(t, 1)
	var spy indexSpy
	addr := spy.start(t, st.index)
	p := st.newProxy(func(c *proxy.Config) { c.BuildIndex = []string{addr} })
	r := p.Registry()
	ctx := t.Context()
	const repo = "r/many"

	keep := newImage(t, digest.SHA256, 1, nil, "")
	keep.push(t, r, repo, "keep")
	bi := st.buildIndex()
	var others []string
	for i := range 40 {
		tag := fmt.Sprintf("other-%02d", i)
		_, err := bi.PutTag(ctx, repo, tag, keep.manifest.Digest)
		require.NoError(t, err)
		others = append(others, tag)
	}
	others = append(others, "keep")

	for _, mode := range []string{"reverse index", "old build-index"} {
		spy.old.Store(mode == "old build-index")
		gone := newImage(t, digest.SHA256, 1, nil, "")
		gone.push(t, r, repo, "a-"+mode[:3], "z-"+mode[:3])
		spy.reset()

		require.NoError(t, r.DeleteManifest(ctx, repo, gone.manifest.Digest), mode)
		gets, lists, byDigest := tagReads(spy.reset(), repo)
		if mode == "reverse index" {
			require.Zero(t, gets, "no tag is read one by one")
			require.Zero(t, lists, "the repository's tags are not listed")
			require.Equal(t, 1, byDigest, "one lookup by digest")
		} else {
			require.GreaterOrEqual(t, gets, len(others)+2, "the fallback reads every tag")
		}

		for _, tag := range []string{"a-" + mode[:3], "z-" + mode[:3]} {
			_, err := r.Manifest(ctx, repo, registry.Reference{Tag: tag})
			require.ErrorIs(t, err, registry.ErrManifestUnknown, "%s: %s is untagged", mode, tag)
		}
		tags, _, err := r.Tags(ctx, repo, "", 1000)
		require.NoError(t, err)
		require.ElementsMatch(t, others, tags, "%s: the other tags stay", mode)
	}
}
