package registry_test

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log"
	"net/http"
	"net/http/httptest"
	"net/url"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/google/go-containerregistry/pkg/authn"
	"github.com/google/go-containerregistry/pkg/name"
	ggcrregistry "github.com/google/go-containerregistry/pkg/registry"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/random"
	"github.com/google/go-containerregistry/pkg/v1/remote"
	"github.com/google/go-containerregistry/pkg/v1/static"
	"github.com/google/go-containerregistry/pkg/v1/types"
	"github.com/stretchr/testify/require"
	"go.uber.org/goleak"

	"github.com/krakenctl/krakenctl/backend"
	"github.com/krakenctl/krakenctl/backend/backendtest"
	"github.com/krakenctl/krakenctl/backend/registry"
)

func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m)
}

// repoBlobs is an in-memory blob store for go-containerregistry's registry that, like a
// real distribution registry, keeps each repository's blobs apart.
type repoBlobs struct {
	mu sync.Mutex
	m  map[string][]byte // repo + "@" + digest
}

func newRepoBlobs() *repoBlobs { return &repoBlobs{m: map[string][]byte{}} }

func (s *repoBlobs) key(repo string, h v1.Hash) string { return repo + "@" + h.String() }

func (s *repoBlobs) Stat(_ context.Context, repo string, h v1.Hash) (int64, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	b, ok := s.m[s.key(repo, h)]
	if !ok {
		return 0, ggcrregistry.ErrNotFound
	}
	return int64(len(b)), nil
}

func (s *repoBlobs) Get(_ context.Context, repo string, h v1.Hash) (io.ReadCloser, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	b, ok := s.m[s.key(repo, h)]
	if !ok {
		return nil, ggcrregistry.ErrNotFound
	}
	return io.NopCloser(bytes.NewReader(b)), nil
}

func (s *repoBlobs) Put(_ context.Context, repo string, h v1.Hash, rc io.ReadCloser) error {
	defer func() { _ = rc.Close() }() // read side
	data, err := io.ReadAll(rc)
	if err != nil {
		return err
	}
	// go-containerregistry names the repository of a chunked upload "<repo>/blobs".
	s.put(strings.TrimSuffix(repo, "/blobs"), h.String(), data)
	return nil
}

// put stores data directly, bypassing the HTTP API.
func (s *repoBlobs) put(repo, digest string, data []byte) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.m[repo+"@"+digest] = data
}

func hexDigest(data []byte) string {
	sum := sha256.Sum256(data)
	return hex.EncodeToString(sum[:])
}

// newRegistryHandler returns go-containerregistry's in-memory registry over blobs.
func newRegistryHandler(blobs *repoBlobs) http.Handler {
	return ggcrregistry.New(ggcrregistry.Logger(log.New(io.Discard, "", 0)), ggcrregistry.WithBlobHandler(blobs))
}

// newBackend returns a Backend for cfg whose connections are closed when t ends.
func newBackend(t *testing.T, cfg registry.Config) *registry.Backend {
	t.Helper()
	b, err := registry.New(cfg, registry.Deps{})
	require.NoError(t, err)
	t.Cleanup(b.CloseIdleConnections)
	return b
}

// pusher writes to a registry with go-containerregistry's client, as `crane push` would.
type pusher struct {
	addr string
	auth authn.Authenticator
	tr   *http.Transport
}

func newPusher(t *testing.T, addr string, auth authn.Authenticator) *pusher {
	tr := http.DefaultTransport.(*http.Transport).Clone()
	t.Cleanup(tr.CloseIdleConnections)
	if auth == nil {
		auth = authn.Anonymous
	}
	return &pusher{addr: addr, auth: auth, tr: tr}
}

func (p *pusher) options(ctx context.Context) []remote.Option {
	return []remote.Option{remote.WithAuth(p.auth), remote.WithTransport(p.tr), remote.WithContext(ctx)}
}

// blob pushes data as a blob of repo.
func (p *pusher) blob(t *testing.T, repo string, data []byte) {
	t.Helper()
	r, err := name.NewRepository(p.addr+"/"+repo, name.Insecure)
	require.NoError(t, err)
	require.NoError(t, remote.WriteLayer(r, static.NewLayer(data, types.OCILayer), p.options(t.Context())...), "push blob to %s", repo)
}

// image pushes a random image as repo:tag and returns it.
func (p *pusher) image(t *testing.T, repo, tag string) v1.Image {
	t.Helper()
	img, err := random.Image(3000, 2)
	require.NoError(t, err)
	ref, err := name.NewTag(p.addr+"/"+repo+":"+tag, name.Insecure)
	require.NoError(t, err)
	require.NoError(t, remote.Write(ref, img, p.options(t.Context())...), "push image %s", ref)
	return img
}

func (p *pusher) seed(t *testing.T, namespace, name string, data []byte) {
	t.Helper()
	require.Equal(t, hexDigest(data), name, "seeded names are digests")
	p.blob(t, namespace, data)
}

// TestConformance runs the read-only suite against go-containerregistry's registry.
func TestConformance(t *testing.T) {
	srv := httptest.NewServer(newRegistryHandler(newRepoBlobs()))
	t.Cleanup(srv.Close)
	addr := strings.TrimPrefix(srv.URL, "http://")
	p := newPusher(t, addr, nil)
	backendtest.RunReadOnly(t, func(t *testing.T) backend.Backend {
		return newBackend(t, registry.Config{Address: addr, Insecure: true})
	}, p.seed)
}

// bearerGuard puts a registry behind the distribution token flow: requests need a bearer
// token for their repository from issue, the token endpoint, which wants basic credentials
// when user is set. Tokens live expiresIn seconds (the default 60 when zero).
type bearerGuard struct {
	next      http.Handler
	realm     string
	user      string
	pass      string
	expiresIn int

	mu       sync.Mutex
	serial   int
	grants   map[string]grant // token → grant
	fetches  map[string]int   // scope → tokens issued
	rejected int              // requests refused although they carried a token
}

type grant struct {
	scope   string
	expires time.Time
}

func newBearerGuard(next http.Handler, realm string) *bearerGuard {
	return &bearerGuard{next: next, realm: realm, grants: map[string]grant{}, fetches: map[string]int{}}
}

func (g *bearerGuard) issue(w http.ResponseWriter, r *http.Request) {
	if g.user != "" {
		if u, p, ok := r.BasicAuth(); !ok || u != g.user || p != g.pass {
			http.Error(w, `{"details":"incorrect username or password"}`, http.StatusUnauthorized)
			return
		}
	}
	scope := r.URL.Query().Get("scope")
	if r.URL.Query().Get("service") != "registry.test" || !strings.HasPrefix(scope, "repository:") {
		http.Error(w, "bad token request", http.StatusBadRequest)
		return
	}
	g.mu.Lock()
	g.serial++
	tok := "tok-" + strconv.Itoa(g.serial)
	life := g.expiresIn
	if life == 0 {
		life = 60
	}
	g.grants[tok] = grant{scope: scope, expires: time.Now().Add(time.Duration(life) * time.Second)}
	g.fetches[scope]++
	g.mu.Unlock()
	resp := map[string]any{"token": tok, "issued_at": time.Now().UTC().Format(time.RFC3339)}
	if g.expiresIn != 0 {
		resp["expires_in"] = g.expiresIn
	}
	w.Header().Set("Content-Type", "application/json")
	_ = json.NewEncoder(w).Encode(resp)
}

// repoOf extracts the repository from /v2/<repo>/{blobs,manifests,tags}/...
func repoOf(p string) string {
	p = strings.TrimPrefix(p, "/v2/")
	for _, kind := range []string{"/blobs/", "/manifests/", "/tags/"} {
		if i := strings.LastIndex(p, kind); i > 0 {
			return p[:i]
		}
	}
	return ""
}

func (g *bearerGuard) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	scope := "repository:" + repoOf(r.URL.Path) + ":pull"
	tok, hasToken := strings.CutPrefix(r.Header.Get("Authorization"), "Bearer ")
	g.mu.Lock()
	gr, ok := g.grants[tok]
	valid := hasToken && ok && gr.scope == scope && time.Now().Before(gr.expires)
	if hasToken && !valid {
		g.rejected++
	}
	g.mu.Unlock()
	if !valid {
		w.Header().Set("WWW-Authenticate", fmt.Sprintf(`Bearer realm=%q,service="registry.test",scope=%q`, g.realm, scope))
		w.Header().Set("Content-Type", "application/json")
		w.WriteHeader(http.StatusUnauthorized)
		_, _ = w.Write([]byte(`{"errors":[{"code":"UNAUTHORIZED","message":"authentication required"}]}`))
		return
	}
	g.next.ServeHTTP(w, r)
}

func (g *bearerGuard) revokeAll() {
	g.mu.Lock()
	defer g.mu.Unlock()
	clear(g.grants)
}

func (g *bearerGuard) stats() (fetches map[string]int, rejected int) {
	g.mu.Lock()
	defer g.mu.Unlock()
	f := make(map[string]int, len(g.fetches))
	for k, v := range g.fetches {
		f[k] = v
	}
	return f, g.rejected
}

// TestConformanceBearer runs the suite through the token flow over real connections and
// checks that every repository's token was fetched exactly once.
func TestConformanceBearer(t *testing.T) {
	blobs := newRepoBlobs()
	mux := http.NewServeMux()
	srv := httptest.NewServer(mux)
	t.Cleanup(srv.Close)
	guard := newBearerGuard(newRegistryHandler(blobs), srv.URL+"/token")
	guard.user, guard.pass, guard.expiresIn = "alice", "s3cret", 3600
	mux.HandleFunc("/token", guard.issue)
	mux.Handle("/v2/", guard)
	addr := strings.TrimPrefix(srv.URL, "http://")

	t.Run("suite", func(t *testing.T) {
		backendtest.RunReadOnly(t, func(t *testing.T) backend.Backend {
			return newBackend(t, registry.Config{Address: addr, Insecure: true, Username: "alice", Password: "s3cret"})
		}, func(t *testing.T, namespace, name string, data []byte) {
			blobs.put(namespace, "sha256:"+name, data)
		})
	})
	fetches, rejected := guard.stats()
	require.NotEmpty(t, fetches)
	for scope, n := range fetches {
		// Each subtest has its own Backend, hence its own cache; no subtest reads one
		// repository from two Backends, so one token per scope.
		require.Equal(t, 1, n, "tokens fetched for %s", scope)
	}
	require.Zero(t, rejected, "a cached token was rejected")

	// Wrong or missing credentials fail at the token endpoint.
	d := hexDigest([]byte("x"))
	blobs.put("repo", "sha256:"+d, []byte("x"))
	for _, cfg := range []registry.Config{
		{Address: addr, Insecure: true, Username: "alice", Password: "wrong"},
		{Address: addr, Insecure: true},
	} {
		_, err := newBackend(t, cfg).Stat(t.Context(), "repo", d)
		require.ErrorIs(t, err, registry.ErrUnauthorized)
		require.NotErrorIs(t, err, backend.ErrNotFound)
	}
	// An http realm is refused unless the config is insecure: the credentials would travel in
	// clear text. (The registry itself is reached in the clear here, through the transport.)
	tr := &rewriteTransport{to: srv.URL}
	t.Cleanup(tr.CloseIdleConnections)
	secure, err := registry.New(registry.Config{Address: "registry.test", Username: "alice", Password: "s3cret"}, registry.Deps{Transport: tr})
	require.NoError(t, err)
	_, err = secure.Stat(t.Context(), "repo", d)
	require.ErrorIs(t, err, registry.ErrUnauthorized)
	require.ErrorContains(t, err, "realm")
	fetchesAfter, _ := guard.stats()
	require.Zero(t, fetchesAfter["repository:repo:pull"], "credentials were sent to an http realm")
}

// rewriteTransport sends every request to the server at to, whatever its URL says.
type rewriteTransport struct {
	to string
	http.Transport
}

func (rt *rewriteTransport) RoundTrip(req *http.Request) (*http.Response, error) {
	u, err := url.Parse(rt.to)
	if err != nil {
		return nil, err
	}
	req = req.Clone(req.Context())
	req.URL.Scheme, req.URL.Host = u.Scheme, u.Host
	return rt.Transport.RoundTrip(req)
}

// basicGuard demands HTTP basic authentication from every request.
type basicGuard struct {
	next       http.Handler
	user, pass string

	mu         sync.Mutex
	challenged int
}

func (g *basicGuard) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	if u, p, ok := r.BasicAuth(); ok && u == g.user && p == g.pass {
		g.next.ServeHTTP(w, r)
		return
	}
	g.mu.Lock()
	g.challenged++
	g.mu.Unlock()
	w.Header().Set("WWW-Authenticate", `Basic realm="Registry Realm"`)
	http.Error(w, `{"errors":[{"code":"UNAUTHORIZED","message":"authentication required"}]}`, http.StatusUnauthorized)
}

func TestBasicAuth(t *testing.T) {
	t.Parallel()
	blobs := newRepoBlobs()
	guard := &basicGuard{next: newRegistryHandler(blobs), user: "bob", pass: "hunter2"}
	srv := httptest.NewServer(guard)
	t.Cleanup(srv.Close)
	addr := strings.TrimPrefix(srv.URL, "http://")
	data := []byte("layer bytes")
	d := hexDigest(data)
	blobs.put("team/app", "sha256:"+d, data)

	b := newBackend(t, registry.Config{Address: addr, Insecure: true, Username: "bob", Password: "hunter2"})
	for range 3 {
		info, err := b.Stat(t.Context(), "team/app", d)
		require.NoError(t, err)
		require.Equal(t, int64(len(data)), info.Size)
		var buf bytes.Buffer
		require.NoError(t, b.Download(t.Context(), "team/app", d, &buf))
		require.Equal(t, data, buf.Bytes())
	}
	guard.mu.Lock()
	require.Equal(t, 1, guard.challenged, "credentials must be sent up front once the registry asked for them")
	guard.mu.Unlock()

	for _, cfg := range []registry.Config{
		{Address: addr, Insecure: true, Username: "bob", Password: "wrong"},
		{Address: addr, Insecure: true},
	} {
		_, err := newBackend(t, cfg).Stat(t.Context(), "team/app", d)
		require.ErrorIs(t, err, registry.ErrUnauthorized)
	}
}

func TestStaticToken(t *testing.T) {
	t.Parallel()
	blobs := newRepoBlobs()
	data := []byte("layer bytes")
	d := hexDigest(data)
	blobs.put("app", "sha256:"+d, data)
	next := newRegistryHandler(blobs)
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.Header.Get("Authorization") != "Bearer long-lived" {
			w.Header().Set("WWW-Authenticate", `Bearer realm="http://127.0.0.1:1/token",service="x"`)
			w.WriteHeader(http.StatusUnauthorized)
			return
		}
		next.ServeHTTP(w, r)
	}))
	t.Cleanup(srv.Close)
	addr := strings.TrimPrefix(srv.URL, "http://")
	info, err := newBackend(t, registry.Config{Address: addr, Insecure: true, Token: "long-lived"}).Stat(t.Context(), "app", d)
	require.NoError(t, err)
	require.Equal(t, int64(len(data)), info.Size)
	_, err = newBackend(t, registry.Config{Address: addr, Insecure: true, Token: "stale"}).Stat(t.Context(), "app", d)
	require.ErrorIs(t, err, registry.ErrUnauthorized)
	require.ErrorContains(t, err, "configured token")
}

// TestManifestsAndTags reads an image pushed with go-containerregistry: its manifest and
// config by digest (through the manifest fallback) and its layers, and lists the tags.
func TestManifestsAndTags(t *testing.T) {
	t.Parallel()
	srv := httptest.NewServer(newRegistryHandler(newRepoBlobs()))
	t.Cleanup(srv.Close)
	addr := strings.TrimPrefix(srv.URL, "http://")
	p := newPusher(t, addr, nil)
	img := p.image(t, "library/app", "v2")
	p.image(t, "library/app", "latest")
	p.image(t, "library/app", "v10")
	requireImage(t, newBackend(t, registry.Config{Address: addr, Insecure: true}), "library/app", img)

	b := newBackend(t, registry.Config{Address: addr, Insecure: true})
	tags, err := b.Tags(t.Context(), "library/app")
	require.NoError(t, err)
	require.Equal(t, []string{"latest", "v10", "v2"}, tags)
	_, err = b.Tags(t.Context(), "library/none")
	require.ErrorIs(t, err, backend.ErrNotFound)
	_, err = b.Tags(t.Context(), "../x")
	require.ErrorIs(t, err, backend.ErrInvalidKey)
}

// requireImage checks that b serves img's manifest, config and layers from repo.
func requireImage(t *testing.T, b *registry.Backend, repo string, img v1.Image) {
	t.Helper()
	manifest, err := img.RawManifest()
	require.NoError(t, err)
	config, err := img.RawConfigFile()
	require.NoError(t, err)
	objects := [][]byte{manifest, config}
	layers, err := img.Layers()
	require.NoError(t, err)
	for _, l := range layers {
		rc, err := l.Compressed()
		require.NoError(t, err)
		data, err := io.ReadAll(rc)
		require.NoError(t, err)
		require.NoError(t, rc.Close())
		objects = append(objects, data)
	}
	for _, want := range objects {
		d := hexDigest(want)
		info, err := b.Stat(t.Context(), repo, d)
		require.NoError(t, err)
		require.Equal(t, int64(len(want)), info.Size)
		var buf bytes.Buffer
		require.NoError(t, b.Download(t.Context(), repo, d, &buf))
		require.Equal(t, want, buf.Bytes())
	}
}

func TestTagsPagination(t *testing.T) {
	t.Parallel()
	pages := map[string]struct {
		tags []string
		link string
	}{
		"":  {[]string{"c", "a"}, `</v2/app/tags/list?last=c&n=2>; rel="next"`},
		"c": {[]string{"e", "d"}, `</v2/app/tags/list?last=e&n=2>; rel="next"`},
		"e": {[]string{"f"}, ""},
		// A Link leading to another host is refused.
		"evil": {[]string{"x"}, `<http://elsewhere.test/v2/app/tags/list?last=x>; rel="next"`},
	}
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		last := r.URL.Query().Get("last")
		if strings.HasPrefix(r.URL.Path, "/v2/evil/") {
			last = "evil"
		}
		page, ok := pages[last]
		if !ok {
			http.NotFound(w, r)
			return
		}
		if page.link != "" {
			w.Header().Set("Link", page.link)
		}
		_ = json.NewEncoder(w).Encode(map[string]any{"name": "app", "tags": page.tags})
	}))
	t.Cleanup(srv.Close)
	b := newBackend(t, registry.Config{Address: strings.TrimPrefix(srv.URL, "http://"), Insecure: true})
	tags, err := b.Tags(t.Context(), "app")
	require.NoError(t, err)
	require.Equal(t, []string{"a", "c", "d", "e", "f"}, tags)
	_, err = b.Tags(t.Context(), "evil")
	require.ErrorContains(t, err, "leaves the registry")
}

// tamper lets a test rewrite the registry's answers to GETs of one blob.
func tamper(next http.Handler, digest string, edit func(h http.Header, body []byte) []byte) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.Method != http.MethodGet || !strings.HasSuffix(r.URL.Path, "/blobs/sha256:"+digest) {
			next.ServeHTTP(w, r)
			return
		}
		rec := httptest.NewRecorder()
		next.ServeHTTP(rec, r)
		body := edit(rec.Header(), rec.Body.Bytes())
		for k, v := range rec.Header() {
			w.Header()[k] = v
		}
		w.WriteHeader(rec.Code)
		_, _ = w.Write(body)
	})
}

func TestDownloadVerifiesContent(t *testing.T) {
	t.Parallel()
	data := bytes.Repeat([]byte("0123456789abcdef"), 10<<10) // 160 KiB: several chunks
	d := hexDigest(data)
	for name, edit := range map[string]func(h http.Header, body []byte) []byte{
		"flipped last byte": func(_ http.Header, body []byte) []byte {
			body[len(body)-1] ^= 1
			return body
		},
		"flipped first byte": func(_ http.Header, body []byte) []byte {
			body[0] ^= 1
			return body
		},
		"wrong digest header": func(h http.Header, body []byte) []byte {
			h.Set("Docker-Content-Digest", "sha256:"+hexDigest([]byte("other")))
			return body
		},
		"short body": func(h http.Header, body []byte) []byte {
			return body[:len(body)-10]
		},
		"no length, short body": func(h http.Header, body []byte) []byte {
			h.Del("Content-Length")
			return body[:len(body)-10]
		},
	} {
		t.Run(name, func(t *testing.T) {
			t.Parallel()
			blobs := newRepoBlobs()
			blobs.put("app", "sha256:"+d, data)
			srv := httptest.NewServer(tamper(newRegistryHandler(blobs), d, edit))
			t.Cleanup(srv.Close)
			b := newBackend(t, registry.Config{Address: strings.TrimPrefix(srv.URL, "http://"), Insecure: true})
			var buf bytes.Buffer
			err := b.Download(t.Context(), "app", d, &buf)
			require.Error(t, err)
			require.NotErrorIs(t, err, backend.ErrNotFound)
			require.Less(t, buf.Len(), len(data), "the writer received a whole object of the wrong content")
		})
	}
}

func TestNamesThatAreNotDigests(t *testing.T) {
	t.Parallel()
	var requests int
	var mu sync.Mutex
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		mu.Lock()
		requests++
		mu.Unlock()
		http.NotFound(w, r)
	}))
	t.Cleanup(srv.Close)
	b := newBackend(t, registry.Config{Address: strings.TrimPrefix(srv.URL, "http://"), Insecure: true})
	for _, n := range []string{"latest", strings.Repeat("A", 64), strings.Repeat("a", 63), strings.Repeat("g", 64)} {
		_, err := b.Stat(t.Context(), "app", n)
		require.ErrorIs(t, err, backend.ErrNotFound, n)
	}
	mu.Lock()
	require.Zero(t, requests, "names that cannot be digests need no request")
	mu.Unlock()
	// A sha512 digest is looked up as such.
	_, err := b.Stat(t.Context(), "app", strings.Repeat("ab", 64))
	require.ErrorIs(t, err, backend.ErrNotFound)
	mu.Lock()
	require.Equal(t, 2, requests, "blob then manifest")
	mu.Unlock()
}

func TestErrorsAndTimeout(t *testing.T) {
	t.Parallel()
	release := make(chan struct{})
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		switch {
		case strings.HasPrefix(r.URL.Path, "/v2/slow/"):
			select {
			case <-release:
			case <-r.Context().Done():
			}
		case strings.HasPrefix(r.URL.Path, "/v2/denied/"):
			w.Header().Set("Content-Type", "application/json")
			w.WriteHeader(http.StatusForbidden)
			_, _ = w.Write([]byte(`{"errors":[{"code":"DENIED","message":"requested access to the resource is denied"}]}`))
		case strings.HasPrefix(r.URL.Path, "/v2/nochallenge/"):
			w.WriteHeader(http.StatusUnauthorized)
		}
	}))
	t.Cleanup(srv.Close)
	t.Cleanup(func() { close(release) })
	// The timeout is short only where it is the subject: a loaded machine can take longer than
	// 10 ms to answer the other requests too.
	fast := newBackend(t, registry.Config{Address: strings.TrimPrefix(srv.URL, "http://"), Insecure: true, Timeout: 10 * time.Millisecond})
	b := newBackend(t, registry.Config{Address: strings.TrimPrefix(srv.URL, "http://"), Insecure: true, Timeout: 30 * time.Second})
	d := hexDigest([]byte("x"))

	_, err := fast.Stat(t.Context(), "slow", d)
	require.ErrorIs(t, err, registry.ErrTimeout)
	require.ErrorIs(t, err, context.DeadlineExceeded)
	var buf bytes.Buffer
	err = b.Download(t.Context(), "denied", d, &buf)
	require.ErrorContains(t, err, "403")
	require.ErrorContains(t, err, "DENIED requested access to the resource is denied")
	require.NotErrorIs(t, err, backend.ErrNotFound)
	_, err = b.Stat(t.Context(), "nochallenge", d)
	require.ErrorIs(t, err, registry.ErrUnauthorized)

	err = b.Upload(t.Context(), "app", d, strings.NewReader("x"), 1)
	require.ErrorIs(t, err, backend.ErrReadOnly)
	_, err = b.List(t.Context(), "app", "")
	require.ErrorIs(t, err, registry.ErrListUnsupported)
	require.ErrorIs(t, err, errors.ErrUnsupported)
}

// A registry that pages on without end is cut off at MaxTags, not followed until memory runs
// out.
func TestTagsEndlessPagesAreBounded(t *testing.T) {
	t.Parallel()
	const perPage = 10_000
	page := make([]string, perPage)
	for i := range page {
		page[i] = fmt.Sprintf("t%05d", i)
	}
	body, err := json.Marshal(map[string]any{"name": "app", "tags": page})
	require.NoError(t, err)
	var served atomic.Int64
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		n := served.Add(1)
		w.Header().Set("Link", fmt.Sprintf(`</v2/app/tags/list?last=p%d&n=%d>; rel="next"`, n, perPage))
		_, _ = w.Write(body)
	}))
	t.Cleanup(srv.Close)
	b := newBackend(t, registry.Config{Address: strings.TrimPrefix(srv.URL, "http://"), Insecure: true})
	_, err = b.Tags(t.Context(), "app")
	require.ErrorContains(t, err, fmt.Sprintf("more than %d tags", registry.MaxTags))
	require.LessOrEqual(t, served.Load(), int64(registry.MaxTags/perPage+1), "it stopped asking")
}

// 429 (Docker Hub's pull rate limit) and 503 answers are *backend.Throttled with the
// registry's Retry-After, for blobs, tags and the token service; a 403 is not.
func TestThrottled(t *testing.T) {
	t.Parallel()
	var srv *httptest.Server
	srv = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		switch {
		case strings.HasPrefix(r.URL.Path, "/v2/limited/"):
			w.Header().Set("Retry-After", "60")
			w.Header().Set("Content-Type", "application/json")
			w.WriteHeader(http.StatusTooManyRequests)
			_, _ = w.Write([]byte(`{"errors":[{"code":"TOOMANYREQUESTS","message":"You have reached your pull rate limit."}]}`))
		case strings.HasPrefix(r.URL.Path, "/v2/busy/"):
			w.WriteHeader(http.StatusServiceUnavailable)
		case strings.HasPrefix(r.URL.Path, "/v2/auth/"):
			w.Header().Set("WWW-Authenticate", `Bearer realm="`+srv.URL+`/token",service="test"`)
			w.WriteHeader(http.StatusUnauthorized)
		case r.URL.Path == "/token":
			w.Header().Set("Retry-After", "5")
			w.WriteHeader(http.StatusTooManyRequests)
		}
	}))
	t.Cleanup(srv.Close)
	b := newBackend(t, registry.Config{Address: strings.TrimPrefix(srv.URL, "http://"), Insecure: true})
	d := hexDigest([]byte("x"))
	var th *backend.Throttled

	var buf bytes.Buffer
	err := b.Download(t.Context(), "limited", d, &buf)
	require.ErrorAs(t, err, &th)
	require.Equal(t, time.Minute, th.RetryAfter)
	require.ErrorContains(t, err, "limited/"+d)
	require.ErrorContains(t, err, "TOOMANYREQUESTS")
	require.Zero(t, buf.Len())
	_, err = b.Tags(t.Context(), "limited")
	require.ErrorIs(t, err, backend.ErrThrottled)
	_, err = b.Stat(t.Context(), "busy", d)
	require.ErrorAs(t, err, &th)
	require.Zero(t, th.RetryAfter)
	_, err = b.Stat(t.Context(), "auth", d)
	require.ErrorAs(t, err, &th)
	require.Equal(t, 5*time.Second, th.RetryAfter)
}
