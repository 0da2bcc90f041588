package registry_test

import (
	"net/http"
	"net/http/httptest"
	"strconv"
	"strings"
	"sync"
	"testing"

	"github.com/opencontainers/go-digest"
	"github.com/stretchr/testify/require"

	"github.com/krakenctl/krakenctl/backend"
	"github.com/krakenctl/krakenctl/backend/registry"
)

// TestResolveTag resolves tags pushed with go-containerregistry to the digests of their
// manifests, through a HEAD.
func TestResolveTag(t *testing.T) {
	t.Parallel()
	var mu sync.Mutex
	methods := map[string]int{}
	next := newRegistryHandler(newRepoBlobs())
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if strings.Contains(r.URL.Path, "/manifests/") {
			mu.Lock()
			methods[r.Method]++
			mu.Unlock()
		}
		next.ServeHTTP(w, r)
	}))
	t.Cleanup(srv.Close)
	addr := strings.TrimPrefix(srv.URL, "http://")
	img := newPusher(t, addr, nil).image(t, "library/app", "v1")
	want, err := img.Digest()
	require.NoError(t, err)

	b := newBackend(t, registry.Config{Address: addr, Insecure: true})
	mu.Lock()
	clear(methods)
	mu.Unlock()
	got, err := b.ResolveTag(t.Context(), "library/app", "v1")
	require.NoError(t, err)
	require.Equal(t, want.String(), got.String())
	mu.Lock()
	require.Equal(t, map[string]int{http.MethodHead: 1}, methods, "a registry that sends Docker-Content-Digest is asked with one HEAD")
	mu.Unlock()

	_, err = b.ResolveTag(t.Context(), "library/app", "v2")
	require.ErrorIs(t, err, backend.ErrNotFound)
	_, err = b.ResolveTag(t.Context(), "library/none", "v1")
	require.ErrorIs(t, err, backend.ErrNotFound)
	for _, tag := range []string{"", "-x", "a/b", "a:b", strings.Repeat("a", 129)} {
		_, err = b.ResolveTag(t.Context(), "library/app", tag)
		require.ErrorIs(t, err, backend.ErrInvalidKey, "tag %q", tag)
	}
	_, err = b.ResolveTag(t.Context(), "Library/App", "v1")
	require.ErrorIs(t, err, backend.ErrInvalidKey)
}

// fixedManifest answers every manifest request with status, header h and body (on GET).
func fixedManifest(t *testing.T, status int, h http.Header, body []byte) (*registry.Backend, *[]string) {
	t.Helper()
	var mu sync.Mutex
	var methods []string
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		mu.Lock()
		methods = append(methods, r.Method)
		mu.Unlock()
		for k, v := range h {
			w.Header()[k] = v
		}
		w.Header().Set("Content-Length", strconv.Itoa(len(body)))
		w.WriteHeader(status)
		if r.Method == http.MethodGet {
			_, _ = w.Write(body)
		}
	}))
	t.Cleanup(srv.Close)
	return newBackend(t, registry.Config{Address: strings.TrimPrefix(srv.URL, "http://"), Insecure: true}), &methods
}

// TestResolveTagWithoutHeader: a registry that sends no Docker-Content-Digest is asked with a
// GET, and the digest is the sha256 of the manifest it sends.
func TestResolveTagWithoutHeader(t *testing.T) {
	t.Parallel()
	body := []byte(`{"schemaVersion":2,"mediaType":"application/vnd.oci.image.manifest.v1+json"}`)
	b, methods := fixedManifest(t, http.StatusOK, http.Header{"Content-Type": {"application/vnd.oci.image.manifest.v1+json"}}, body)
	got, err := b.ResolveTag(t.Context(), "app", "v1")
	require.NoError(t, err)
	require.Equal(t, digest.FromBytes(body), got)
	require.Equal(t, []string{http.MethodHead, http.MethodGet}, *methods)
}

// TestResolveTagGarbage: a registry that labels a manifest with something that is not a
// digest, or sends a manifest too large to be one, gets a clear error, not a digest.
func TestResolveTagGarbage(t *testing.T) {
	t.Parallel()
	for _, h := range []string{"sha256:abc", "SHA256:" + strings.Repeat("A", 64), "md5:" + strings.Repeat("a", 32), "not a digest", "sha256:" + strings.Repeat("g", 64)} {
		b, _ := fixedManifest(t, http.StatusOK, http.Header{"Docker-Content-Digest": {h}}, []byte("{}"))
		_, err := b.ResolveTag(t.Context(), "app", "v1")
		require.ErrorIs(t, err, registry.ErrInvalidResponse, "header %q", h)
	}
	b, _ := fixedManifest(t, http.StatusOK, nil, make([]byte, registry.MaxManifestSize+1))
	_, err := b.ResolveTag(t.Context(), "app", "v1")
	require.ErrorIs(t, err, registry.ErrInvalidResponse)

	b, _ = fixedManifest(t, http.StatusInternalServerError, nil, []byte(`{"errors":[{"code":"UNKNOWN","message":"disk on fire"}]}`))
	_, err = b.ResolveTag(t.Context(), "app", "v1")
	require.ErrorContains(t, err, "500 Internal Server Error")
	require.NotErrorIs(t, err, backend.ErrNotFound)
}

// TestResolveTagUnauthorized: refused credentials are ErrUnauthorized, not "not found".
func TestResolveTagUnauthorized(t *testing.T) {
	t.Parallel()
	guard := &basicGuard{next: newRegistryHandler(newRepoBlobs()), user: "bob", pass: "hunter2"}
	srv := httptest.NewServer(guard)
	t.Cleanup(srv.Close)
	addr := strings.TrimPrefix(srv.URL, "http://")
	_, err := newBackend(t, registry.Config{Address: addr, Insecure: true, Username: "bob", Password: "wrong"}).ResolveTag(t.Context(), "app", "v1")
	require.ErrorIs(t, err, registry.ErrUnauthorized)
}
