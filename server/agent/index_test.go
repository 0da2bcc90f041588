package agent

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"testing"
	"time"

	"github.com/opencontainers/go-digest"
	"github.com/prometheus/client_golang/prometheus"
	dto "github.com/prometheus/client_model/go"
	"github.com/stretchr/testify/require"

	"github.com/krakenctl/krakenctl/server/api"
	"github.com/krakenctl/krakenctl/server/client"
	"github.com/krakenctl/krakenctl/server/registry"
)

// fakeNode is a build-index node that answers every call with err, or with its tags.
type fakeNode struct {
	addr  string
	err   error
	hang  bool     // accept the request and never answer
	tags  []string // sorted
	calls int
}

func (f *fakeNode) Addr() string { return f.addr }

func (f *fakeNode) GetTag(ctx context.Context, repo, tag string, stale bool) (api.Tag, error) {
	f.calls++
	if stale {
		return api.Tag{}, errors.New("the registry reads tags linearizably")
	}
	if f.hang {
		<-ctx.Done()
		return api.Tag{}, fmt.Errorf("get tag: %w", ctx.Err())
	}
	if f.err != nil {
		return api.Tag{}, f.err
	}
	return api.Tag{Repo: repo, Tag: tag, Digest: digest.FromString(f.addr)}, nil
}

func (f *fakeNode) GetLink(context.Context, string, string, bool) (api.Link, error) {
	return api.Link{}, errors.New("not used")
}

func (f *fakeNode) ListLinks(context.Context, string, string, bool) ([]api.Link, error) {
	return nil, errors.New("not used")
}

// ListTags pages f.tags; it answers at most 2 per page, as a server with a small page cap.
func (f *fakeNode) ListTags(_ context.Context, _, last string, n int) ([]string, string, error) {
	f.calls++
	if f.err != nil {
		return nil, "", f.err
	}
	var out []string
	for _, t := range f.tags {
		if t > last {
			out = append(out, t)
		}
	}
	if len(out) == 0 {
		return nil, "", fmt.Errorf("list tags: %w", client.ErrNotFound)
	}
	n = min(n, 2)
	if len(out) > n {
		return out[:n], out[n-1], nil
	}
	return out, "", nil
}

func (f *fakeNode) ListRepositories(context.Context, string, int) ([]string, string, error) {
	return nil, "", errors.New("not used")
}

func counterValue(t *testing.T, c prometheus.Counter) float64 {
	t.Helper()
	var m dto.Metric
	require.NoError(t, c.Write(&m))
	return m.GetCounter().GetValue()
}

func apiError(status int, code registry.Code) error {
	return fmt.Errorf("get tag: %w", &registry.Error{Status: status, Code: code, Message: "x"})
}

func TestIndexFailover(t *testing.T) {
	t.Parallel()
	ctx := t.Context()
	down := &fakeNode{addr: "a", err: errors.New("dial tcp a: connection refused")}
	electing := &fakeNode{addr: "b", err: apiError(http.StatusServiceUnavailable, registry.CodeUnavailable)}
	up := &fakeNode{addr: "c"}
	failures := prometheus.NewCounterVec(prometheus.CounterOpts{Name: "f"}, []string{"node"})
	ix := newIndex([]indexNode{down, electing, up}, failures)

	// Unreachable and 5xx nodes pass the read on; the node that answers is asked first next time.
	tag, err := ix.getTag(ctx, "r", "t")
	require.NoError(t, err)
	require.Equal(t, digest.FromString("c"), tag.Digest)
	require.Equal(t, []int{1, 1, 1}, []int{down.calls, electing.calls, up.calls})
	require.Equal(t, 1.0, counterValue(t, failures.WithLabelValues("a")))
	require.Equal(t, 1.0, counterValue(t, failures.WithLabelValues("b")))
	require.Equal(t, 0.0, counterValue(t, failures.WithLabelValues("c")))
	_, err = ix.getTag(ctx, "r", "t")
	require.NoError(t, err)
	require.Equal(t, []int{1, 1, 2}, []int{down.calls, electing.calls, up.calls})

	// An answer about the request is final: no other node is asked.
	up.err = fmt.Errorf("get tag: %w: %w", client.ErrNotFound, &registry.Error{Status: http.StatusNotFound, Code: registry.CodeManifestUnknown})
	_, err = ix.getTag(ctx, "r", "t")
	require.True(t, isNotFound(err), "%v", err)
	require.Equal(t, []int{1, 1, 3}, []int{down.calls, electing.calls, up.calls})
	up.err = apiError(http.StatusBadRequest, registry.CodeNameInvalid)
	_, err = ix.getTag(ctx, "r", "t")
	require.Equal(t, registry.CodeNameInvalid, registry.FromError(err).Code)
	require.Equal(t, []int{1, 1, 4}, []int{down.calls, electing.calls, up.calls})

	// Every node failing is 503 UNAVAILABLE, whatever the individual errors were, and the
	// wrapped errors name each.
	up.err = errors.New("read tcp c: connection reset by peer")
	_, err = ix.getTag(ctx, "r", "t")
	e := registry.FromError(err)
	require.Equal(t, http.StatusServiceUnavailable, e.Status)
	require.Equal(t, registry.CodeUnavailable, e.Code)
	for _, s := range []string{"connection refused", "UNAVAILABLE", "connection reset"} {
		require.ErrorContains(t, err, s)
	}
	one := newIndex([]indexNode{&fakeNode{addr: "z", err: errors.New("dial tcp z: connection refused")}}, nil)
	_, err = one.getTag(ctx, "r", "t")
	require.Equal(t, http.StatusServiceUnavailable, registry.FromError(err).Status)

	// A cancelled request is not passed on.
	cctx, cancel := context.WithCancel(ctx)
	cancel()
	down.calls, up.calls, electing.calls = 0, 0, 0
	up.err = context.Canceled
	ix.first.Store(2)
	_, err = ix.getTag(cctx, "r", "t")
	require.ErrorIs(t, err, context.Canceled)
	require.Equal(t, []int{0, 0, 1}, []int{down.calls, electing.calls, up.calls})
}

func TestIndexHungNode(t *testing.T) {
	t.Parallel()
	hung := &fakeNode{addr: "a", hang: true}
	up := &fakeNode{addr: "b"}
	ix := newIndex([]indexNode{hung, up}, nil)
	ix.attempt = 50 * time.Millisecond
	tag, err := ix.getTag(t.Context(), "r", "t")
	require.NoError(t, err)
	require.Equal(t, digest.FromString("b"), tag.Digest)
	require.Equal(t, []int{1, 1}, []int{hung.calls, up.calls})
}

func TestNoIndex(t *testing.T) {
	t.Parallel()
	ix := newIndex(nil, nil)
	require.Nil(t, ix)
	_, err := ix.getTag(t.Context(), "r", "t")
	e := registry.FromError(err)
	require.Equal(t, http.StatusServiceUnavailable, e.Status)
	require.Equal(t, registry.CodeUnavailable, e.Code)
	require.Contains(t, e.Message, "no build_index configured")
}

func TestCollectPages(t *testing.T) {
	t.Parallel()
	node := &fakeNode{addr: "a", tags: []string{"a", "b", "c", "d", "e"}}
	r := &ociReader{index: newIndex([]indexNode{node}, nil)}
	ctx := t.Context()
	for _, tc := range []struct {
		last string
		n    int
		want []string
		more bool
	}{
		{"", 100, []string{"a", "b", "c", "d", "e"}, false},
		{"", 5, []string{"a", "b", "c", "d", "e"}, false},
		{"", 4, []string{"a", "b", "c", "d"}, true},
		{"", 3, []string{"a", "b", "c"}, true},
		{"b", 2, []string{"c", "d"}, true},
		{"c", 2, []string{"d", "e"}, false},
		{"e", 2, nil, false},
	} {
		got, more, err := r.Tags(ctx, "repo", tc.last, tc.n)
		require.NoError(t, err)
		require.Equal(t, tc.want, got, "last %q n %d", tc.last, tc.n)
		require.Equal(t, tc.more, more, "last %q n %d", tc.last, tc.n)
	}

	// A repository without tags is empty, not an error.
	node.tags = nil
	got, more, err := r.Tags(ctx, "repo", "", 10)
	require.NoError(t, err)
	require.Empty(t, got)
	require.False(t, more)

	// A page that does not advance is an error, not a loop.
	_, _, err = collect("", 10, func(string, int) (page, error) { return page{items: nil, next: "x"}, nil })
	require.ErrorContains(t, err, "does not advance")
	_, _, err = collect("m", 10, func(string, int) (page, error) { return page{items: []string{"a"}, next: "a"}, nil })
	require.ErrorContains(t, err, "does not advance")
}
