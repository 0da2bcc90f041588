package backend_test

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"regexp"
	"sync"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/krakenctl/krakenctl/backend"
	"github.com/krakenctl/krakenctl/backend/memory"
)

// recorder is a Backend that remembers the calls it received, so routing is observable
// without any storage. (backend/memory cannot be used here: it imports this package.)
type recorder struct {
	name  string
	mu    sync.Mutex
	calls []string
}

func (r *recorder) record(op, ns, name string) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.calls = append(r.calls, op+" "+ns+" "+name)
}

func (r *recorder) Stat(_ context.Context, ns, name string) (backend.Info, error) {
	r.record("stat", ns, name)
	return backend.Info{Size: int64(len(r.name))}, nil
}

func (r *recorder) Download(_ context.Context, ns, name string, w io.Writer) error {
	r.record("download", ns, name)
	_, err := io.WriteString(w, r.name)
	return err
}

func (r *recorder) Upload(_ context.Context, ns, name string, rd io.Reader, _ int64) error {
	data, err := io.ReadAll(rd)
	r.record("upload", ns, name+"="+string(data))
	return err
}

func (r *recorder) List(_ context.Context, ns, prefix string) ([]string, error) {
	r.record("list", ns, prefix)
	return []string{r.name}, nil
}

func TestRouterFirstMatchWins(t *testing.T) {
	t.Parallel()
	images, library, fallback := &recorder{name: "images"}, &recorder{name: "library"}, &recorder{name: "fallback"}
	r := backend.NewRouter(
		backend.Route{Pattern: regexp.MustCompile(`library/.*`), Name: "library", Backend: library},
		backend.Route{Pattern: regexp.MustCompile(`library/ubuntu`), Name: "never", Backend: images},
		backend.Route{Pattern: regexp.MustCompile(`images/[a-z]+`), Name: "images", Backend: images},
		backend.Route{Pattern: regexp.MustCompile(`.*`), Name: "fallback", Backend: fallback},
	)
	cases := []struct{ ns, route string }{
		{"library/ubuntu", "library"},
		{"library/a/b", "library"},
		{"images/x", "images"},
		{"images/x/y", "fallback"},
		{"images", "fallback"},
		{"evil/library/x", "fallback"},
		{"library", "fallback"},
	}
	for _, c := range cases {
		rt, err := r.Route(c.ns)
		require.NoError(t, err, c.ns)
		require.Equal(t, c.route, rt.Name, c.ns)
	}
}

func TestRouterAnchorsPatterns(t *testing.T) {
	t.Parallel()
	lib := &recorder{name: "library"}
	r := backend.NewRouter(
		backend.Route{Pattern: regexp.MustCompile(`library/.*`), Name: "library", Backend: lib},
		// An alternation must be anchored as a whole, not just its first and last branch.
		backend.Route{Pattern: regexp.MustCompile(`a|b`), Name: "ab", Backend: lib},
	)
	for _, ns := range []string{"evil/library/x", "xlibrary/y", "library", "ab", "xa", "bx", "a/b"} {
		_, err := r.Route(ns)
		require.ErrorIs(t, err, backend.ErrNoRoute, ns)
		require.ErrorContains(t, err, ns)
	}
	for _, ns := range []string{"library/x", "a", "b"} {
		_, err := r.Route(ns)
		require.NoError(t, err, ns)
	}
}

func TestRouterNoRoute(t *testing.T) {
	t.Parallel()
	ctx := t.Context()
	for _, r := range []*backend.Router{
		backend.NewRouter(),
		backend.NewRouter(backend.Route{Pattern: regexp.MustCompile(`only/this`), Name: "x", Backend: &recorder{}}),
	} {
		_, err := r.Stat(ctx, "other", "n")
		require.ErrorIs(t, err, backend.ErrNoRoute)
		var buf bytes.Buffer
		require.ErrorIs(t, r.Download(ctx, "other", "n", &buf), backend.ErrNoRoute)
		require.Zero(t, buf.Len())
		require.ErrorIs(t, r.Upload(ctx, "other", "n", bytes.NewReader(nil), 0), backend.ErrNoRoute)
		_, err = r.List(ctx, "other", "")
		require.ErrorIs(t, err, backend.ErrNoRoute)
	}
}

func TestRouterForwardsEveryMethod(t *testing.T) {
	t.Parallel()
	ctx := t.Context()
	a, b := &recorder{name: "a"}, &recorder{name: "b"}
	r := backend.NewRouter(
		backend.Route{Pattern: regexp.MustCompile(`a(/.*)?`), Name: "a", Backend: a},
		backend.Route{Pattern: regexp.MustCompile(`b(/.*)?`), Name: "b", Backend: b},
	)
	info, err := r.Stat(ctx, "a/x", "n1")
	require.NoError(t, err)
	require.Equal(t, int64(1), info.Size)
	var buf bytes.Buffer
	require.NoError(t, r.Download(ctx, "b", "n2", &buf))
	require.Equal(t, "b", buf.String())
	require.NoError(t, r.Upload(ctx, "a", "n3", bytes.NewReader([]byte("data")), 4))
	names, err := r.List(ctx, "b/y", "p")
	require.NoError(t, err)
	require.Equal(t, []string{"b"}, names)

	require.Equal(t, []string{"stat a/x n1", "upload a n3=data"}, a.calls)
	require.Equal(t, []string{"download b n2", "list b/y p"}, b.calls)
}

func TestNewRouterDoesNotModifyCallerRoutes(t *testing.T) {
	t.Parallel()
	routes := []backend.Route{{Pattern: regexp.MustCompile(`x`), Name: "x", Backend: &recorder{}}}
	backend.NewRouter(routes...)
	require.Equal(t, "x", routes[0].Pattern.String())
}

// roBackend is a backend that knows it takes no uploads.
type roBackend struct{ backend.Backend }

func (roBackend) CheckWrite(string) error { return fmt.Errorf("%w: test says so", backend.ErrReadOnly) }

// The router answers CheckWrite for the namespace's route and names it; a backend without a
// WriteChecker is writable; a namespace with no route cannot be written either.
func TestRouterCheckWrite(t *testing.T) {
	t.Parallel()
	r := backend.NewRouter(
		backend.Route{Pattern: regexp.MustCompile(`mirror/.*`), Name: "upstream", Backend: roBackend{memory.New()}},
		backend.Route{Pattern: regexp.MustCompile(`team/.*`), Name: "s3-team", Backend: memory.New()},
	)
	err := r.CheckWrite("mirror/ubuntu")
	require.ErrorIs(t, err, backend.ErrReadOnly)
	require.EqualError(t, err, `namespace "mirror/ubuntu" is stored by backend "upstream": backend: read-only: test says so`)
	require.NoError(t, r.CheckWrite("team/app"))
	require.ErrorIs(t, r.CheckWrite("other/x"), backend.ErrNoRoute)
	require.NoError(t, backend.CheckWrite(memory.New(), "x"), "no WriteChecker: writable")
	require.ErrorIs(t, backend.CheckWrite(r, "mirror/x"), backend.ErrReadOnly)
}
