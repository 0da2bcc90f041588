package buildindex

import (
	"io"
	"log"
	"net/http"
	"net/http/httptest"
	"regexp"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/google/go-containerregistry/pkg/name"
	ggcrregistry "github.com/google/go-containerregistry/pkg/registry"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/random"
	"github.com/google/go-containerregistry/pkg/v1/remote"
	"github.com/prometheus/client_golang/prometheus"
	dto "github.com/prometheus/client_model/go"
	"github.com/stretchr/testify/require"

	"github.com/krakenctl/krakenctl/backend"
	"github.com/krakenctl/krakenctl/backend/fs"
	"github.com/krakenctl/krakenctl/backend/memory"
	"github.com/krakenctl/krakenctl/backend/registry"
	"github.com/krakenctl/krakenctl/server/backends"
	"github.com/krakenctl/krakenctl/server/registry/errcode"
	"github.com/krakenctl/krakenctl/tagstore"
)

// upstream is go-containerregistry's registry behind a switch that makes it misbehave.
type upstream struct {
	addr      string
	mode      atomic.Value // "", "down", "garbage", "unauthorized"
	manifests atomic.Int64 // manifest requests that reached the registry
	tr        *http.Transport
	image     v1.Image // the last image pushed
}

func newUpstream(t *testing.T) *upstream {
	u := &upstream{}
	u.mode.Store("")
	next := ggcrregistry.New(ggcrregistry.Logger(log.New(io.Discard, "", 0)))
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		switch u.mode.Load() {
		case "down":
			http.Error(w, "upstream down for maintenance", http.StatusServiceUnavailable)
			return
		case "garbage":
			w.Header().Set("Docker-Content-Digest", "sha256:not-a-digest")
			w.WriteHeader(http.StatusOK)
			return
		case "unauthorized":
			w.Header().Set("WWW-Authenticate", `Basic realm="upstream"`)
			http.Error(w, `{"errors":[{"code":"UNAUTHORIZED","message":"authentication required"}]}`, http.StatusUnauthorized)
			return
		}
		if strings.Contains(r.URL.Path, "/manifests/") && r.Method != http.MethodPut {
			u.manifests.Add(1)
		}
		next.ServeHTTP(w, r)
	}))
	t.Cleanup(srv.Close)
	u.addr = strings.TrimPrefix(srv.URL, "http://")
	u.tr = http.DefaultTransport.(*http.Transport).Clone()
	t.Cleanup(u.tr.CloseIdleConnections)
	return u
}

// push writes a random image as repo:tag and returns its manifest digest.
func (u *upstream) push(t *testing.T, repo, tag string) v1.Hash {
	t.Helper()
	img, err := random.Image(100, 1)
	require.NoError(t, err)
	ref, err := name.NewTag(u.addr+"/"+repo+":"+tag, name.Insecure)
	require.NoError(t, err)
	require.NoError(t, remote.Write(ref, img, remote.WithTransport(u.tr), remote.WithContext(t.Context())))
	d, err := img.Digest()
	require.NoError(t, err)
	u.image = img
	return d
}

// router routes mirror/... to the upstream registry and everything else to memory.
func (u *upstream) router(t *testing.T) backend.Backend {
	reg, err := registry.New(registry.Config{Address: u.addr, Insecure: true}, registry.Deps{})
	require.NoError(t, err)
	t.Cleanup(reg.CloseIdleConnections)
	return backend.NewRouter(
		backend.Route{Pattern: regexp.MustCompile(`mirror/.*`), Name: "hub", Backend: reg},
		backend.Route{Pattern: regexp.MustCompile(`.*`), Name: "mem", Backend: memory.New()},
	)
}

// counterOf reads a counter's value.
func counterOf(t *testing.T, c prometheus.Counter) float64 {
	t.Helper()
	var m dto.Metric
	require.NoError(t, c.Write(&m))
	return m.GetCounter().GetValue()
}

// TestUpstreamTags: a tag the store lacks, of a repository routed to a registry, resolves
// there and is cached for the TTL without entering the store; a tag pushed here wins; what the
// upstream lacks is MANIFEST_UNKNOWN; a failing or lying upstream is a 424 that says so and
// leaves nothing behind in the cache.
func TestUpstreamTags(t *testing.T) {
	t.Parallel()
	ctx := t.Context()
	up := newUpstream(t)
	v1d := up.push(t, "mirror/app", "v1")
	store := newFakeStore("a")
	n := startFake(t, store, Deps{Backend: up.router(t)}, nil)
	var mu sync.Mutex
	now := time.Now()
	n.srv.upstream.now = func() time.Time { mu.Lock(); defer mu.Unlock(); return now }
	advance := func() { mu.Lock(); now = now.Add(DefaultUpstreamTagTTL + time.Second); mu.Unlock() }
	count := func(result string) float64 { return counterOf(t, n.srv.metrics.upstreamTags.WithLabelValues(result)) }

	got, err := n.cli.GetTag(ctx, "mirror/app", "v1", false)
	require.NoError(t, err)
	require.Equal(t, v1d.String(), got.Digest.String())
	require.Equal(t, 1.0, count("ok"))
	before := up.manifests.Load()
	got, err = n.cli.GetTag(ctx, "mirror/app", "v1", false)
	require.NoError(t, err)
	require.Equal(t, v1d.String(), got.Digest.String())
	require.Equal(t, before, up.manifests.Load(), "a second read within the TTL must come from the cache")
	require.Equal(t, 1.0, counterOf(t, n.srv.metrics.upstreamCacheHits))
	_, err = store.Get(ctx, "mirror/app", "v1", 0)
	require.Error(t, err, "an upstream tag must not be written into the store")

	resp := httpGet(t, "http://"+n.addr+"/repositories/mirror/app/tags/v1")
	_ = resp.Body.Close() // read side
	require.Equal(t, http.StatusOK, resp.StatusCode)
	require.Equal(t, "upstream hub", resp.Header.Get(HeaderTagSource))

	// The upstream's content is linked in its repository (agents serve only linked content),
	// and only there.
	l, err := n.cli.GetLink(ctx, "mirror/app", tagstore.LinkKindManifest+"/"+v1d.String(), false)
	require.NoError(t, err)
	require.Equal(t, v1d.String(), l.Digest.String())
	layers, err := up.image.Layers()
	require.NoError(t, err)
	ld, err := layers[0].Digest()
	require.NoError(t, err)
	_, err = n.cli.GetLink(ctx, "mirror/app", tagstore.LinkKindBlob+"/"+ld.String(), false)
	require.NoError(t, err)
	_, err = n.cli.GetLink(ctx, "mirror/app", tagstore.LinkKindBlob+"/"+dig("nowhere").String(), false)
	_ = apiErr(t, err, http.StatusNotFound, errcode.CodeBlobUnknown)
	_, err = n.cli.GetLink(ctx, "local/app", tagstore.LinkKindBlob+"/"+ld.String(), false)
	_ = apiErr(t, err, http.StatusNotFound, errcode.CodeBlobUnknown)

	// The tag list merges the upstream's tags with those here, page by page.
	up.push(t, "mirror/app", "v0")
	_, err = n.cli.PutTag(ctx, "mirror/app", "v0.5", dig("local"))
	require.NoError(t, err)
	all, next, err := n.cli.ListTags(ctx, "mirror/app", "", 0)
	require.NoError(t, err)
	require.Equal(t, []string{"v0", "v0.5", "v1"}, all)
	require.Empty(t, next)
	page, next, err := n.cli.ListTags(ctx, "mirror/app", "v0", 1)
	require.NoError(t, err)
	require.Equal(t, []string{"v0.5"}, page)
	require.Equal(t, "v0.5", next)
	page, next, err = n.cli.ListTags(ctx, "mirror/app", "v0.5", 0)
	require.NoError(t, err)
	require.Equal(t, []string{"v1"}, page)
	require.Empty(t, next)
	_, _, err = n.cli.ListTags(ctx, "mirror/none", "", 0)
	_ = apiErr(t, err, http.StatusNotFound, errcode.CodeNameUnknown)

	// Unknown upstream: MANIFEST_UNKNOWN, naming the upstream.
	_, err = n.cli.GetTag(ctx, "mirror/app", "nope", false)
	e := apiErr(t, err, http.StatusNotFound, errcode.CodeManifestUnknown)
	require.Contains(t, e.Message, "upstream registry")
	require.Equal(t, 3.0, count("not_found"), "the unknown blob link, the unknown repository's tag list and the unknown tag")
	// Not routed to a registry: the store's answer, and nobody asked upstream.
	before = up.manifests.Load()
	_, err = n.cli.GetTag(ctx, "local/app", "v1", false)
	_ = apiErr(t, err, http.StatusNotFound, errcode.CodeManifestUnknown)
	require.Equal(t, before, up.manifests.Load())

	// A tag pushed here wins over the upstream's.
	mine := dig("pushed here")
	_, err = n.cli.PutTag(ctx, "mirror/app", "v1", mine)
	require.NoError(t, err)
	got, err = n.cli.GetTag(ctx, "mirror/app", "v1", false)
	require.NoError(t, err)
	require.Equal(t, mine, got.Digest)

	// Garbage upstream: a 424 naming the problem, and the cache keeps nothing of it.
	v2d := up.push(t, "mirror/app", "v2")
	up.mode.Store("garbage")
	_, err = n.cli.GetTag(ctx, "mirror/app", "v2", false)
	e = apiErr(t, err, http.StatusFailedDependency, errcode.CodeUnknown)
	require.Contains(t, e.Message, "invalid response")
	require.Equal(t, 1.0, count("invalid"))
	up.mode.Store("")
	got, err = n.cli.GetTag(ctx, "mirror/app", "v2", false)
	require.NoError(t, err)
	require.Equal(t, v2d.String(), got.Digest.String())

	// Down and refusing upstreams, once the cached answers expired: clear 424s.
	advance()
	up.mode.Store("down")
	_, err = n.cli.GetTag(ctx, "mirror/app", "v2", false)
	e = apiErr(t, err, http.StatusFailedDependency, errcode.CodeUnavailable)
	require.Contains(t, e.Message, "upstream registry (backend hub)")
	require.Contains(t, e.Message, "503")
	up.mode.Store("unauthorized")
	_, err = n.cli.GetTag(ctx, "mirror/app", "v2", false)
	e = apiErr(t, err, http.StatusFailedDependency, errcode.CodeDenied)
	require.Contains(t, e.Message, "credentials")
	require.Equal(t, 1.0, count("unauthorized"))
	require.Equal(t, 1.0, count("error"))
	// A link is unknown, not a failure, while the upstream is down: a client pushing into the
	// repository checks its blobs first and must go on to upload them.
	_, err = n.cli.GetLink(ctx, "mirror/app", tagstore.LinkKindBlob+"/"+dig("to be pushed").String(), false)
	e = apiErr(t, err, http.StatusNotFound, errcode.CodeBlobUnknown)
	require.Contains(t, e.Message, "could not be asked")
	// ... while the tag pushed here still resolves.
	got, err = n.cli.GetTag(ctx, "mirror/app", "v1", false)
	require.NoError(t, err)
	require.Equal(t, mine, got.Digest)
}

// TestUpstreamTagsDisabled: upstream_tags.disabled keeps tag reads in the store.
func TestUpstreamTagsDisabled(t *testing.T) {
	t.Parallel()
	up := newUpstream(t)
	up.push(t, "mirror/app", "v1")
	n := startFake(t, newFakeStore("a"), Deps{Backend: up.router(t)}, func(c *Config) { c.UpstreamTags.Disabled = true })
	before := up.manifests.Load()
	_, err := n.cli.GetTag(t.Context(), "mirror/app", "v1", false)
	_ = apiErr(t, err, http.StatusNotFound, errcode.CodeManifestUnknown)
	require.Equal(t, before, up.manifests.Load(), "nobody may ask upstream")
}

func TestUpstreamTagsConfig(t *testing.T) {
	t.Parallel()
	valid := func(edit func(*Config)) error {
		c := Config{Dir: t.TempDir()}
		noVerify(&c)
		edit(&c)
		c.Defaults()
		return c.Validate()
	}
	require.NoError(t, valid(func(c *Config) {}))
	require.ErrorContains(t, valid(func(c *Config) { c.UpstreamTags.TTL = -time.Second }), "upstream_tags.ttl")
	reg := &registry.Config{Address: "127.0.0.1:5000", Insecure: true}
	err := valid(func(c *Config) { c.Backends = []backends.Config{{Namespace: ".*", Registry: reg}} })
	require.ErrorContains(t, err, "backends[0]: routes tags_namespace")
	require.NoError(t, valid(func(c *Config) {
		c.Backends = []backends.Config{
			{Namespace: "krakenctl-.*", FS: &fs.Config{Root: t.TempDir()}},
			{Namespace: ".*", Registry: reg},
		}
	}))
}
