package client

import (
	"context"
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"net/url"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/opencontainers/go-digest"
	"github.com/stretchr/testify/require"

	"github.com/krakenctl/krakenctl/server/api"
	"github.com/krakenctl/krakenctl/server/registry"
	"github.com/krakenctl/krakenctl/server/registry/errcode"
)

// fakeNode is a build-index node. In mode "ok" it answers tags with the digest of its name and
// pages its tags two at a time (a server with a small page cap); otherwise it answers every
// request with status (and a matching code), hangs until the request ends ("hang"), or breaks
// the connection ("reset").
type fakeNode struct {
	name string
	srv  *httptest.Server

	mu     sync.Mutex
	mode   string
	status int
	tags   []string // sorted
	calls  int
}

func newFakeNode(t *testing.T, name string) *fakeNode {
	t.Helper()
	f := &fakeNode{name: name, mode: "ok"}
	f.srv = httptest.NewServer(f)
	t.Cleanup(f.srv.Close)
	return f
}

func (f *fakeNode) set(mode string, status int) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.mode, f.status = mode, status
}

func (f *fakeNode) count() int {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.calls
}

func (f *fakeNode) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	f.mu.Lock()
	f.calls++
	mode, status, tags := f.mode, f.status, f.tags
	f.mu.Unlock()
	switch mode {
	case "hang":
		<-r.Context().Done()
		return
	case "reset":
		c, _, err := http.NewResponseController(w).Hijack()
		if err == nil {
			_ = c.Close() // cutting the connection off is the point
		}
		return
	case "status":
		code := errcode.CodeUnavailable
		switch status {
		case http.StatusNotFound:
			code = errcode.CodeManifestUnknown
		case http.StatusBadRequest:
			code = errcode.CodeNameInvalid
		}
		registry.WriteError(w, r, errcode.Errorf(status, code, "fake %s", f.name))
		return
	}
	w.Header().Set("Content-Type", "application/json")
	switch {
	case strings.HasSuffix(r.URL.Path, "/tags"):
		last := r.URL.Query().Get("last")
		n, _ := strconv.Atoi(r.URL.Query().Get("n"))
		var out []string
		for _, t := range tags {
			if t > last {
				out = append(out, t)
			}
		}
		if len(out) == 0 {
			registry.WriteError(w, r, errcode.Errorf(http.StatusNotFound, errcode.CodeNameUnknown, "no tags"))
			return
		}
		n = min(n, 2)
		if len(out) > n {
			out = out[:n]
			q := url.Values{"last": {out[n-1]}, "n": {strconv.Itoa(n)}}
			w.Header().Set("Link", "<"+r.URL.Path+"?"+q.Encode()+`>; rel="next"`)
		}
		_ = json.NewEncoder(w).Encode(api.TagList{Tags: out})
	case r.Method == http.MethodDelete:
		_ = json.NewEncoder(w).Encode(api.Tag{Digest: digest.FromString(f.name)})
	default:
		_ = json.NewEncoder(w).Encode(api.Tag{Digest: digest.FromString(f.name)})
	}
}

func (f *fakeNode) addr() string { return strings.TrimPrefix(f.srv.URL, "http://") }

// deadAddr is an address that refuses connections.
func deadAddr(t *testing.T) string {
	t.Helper()
	srv := httptest.NewServer(http.NotFoundHandler())
	srv.Close()
	return strings.TrimPrefix(srv.URL, "http://")
}

type failureLog struct {
	mu  sync.Mutex
	got []string
}

func (l *failureLog) add(node, next string) {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.got = append(l.got, node+">"+next)
}

func (l *failureLog) take() []string {
	l.mu.Lock()
	defer l.mu.Unlock()
	got := l.got
	l.got = nil
	return got
}

func TestBuildIndexesFailover(t *testing.T) {
	t.Parallel()
	ctx := t.Context()
	down := deadAddr(t)
	electing, up := newFakeNode(t, "b"), newFakeNode(t, "c")
	electing.set("status", http.StatusServiceUnavailable)
	var log failureLog
	b := NewBuildIndexes([]string{down, electing.addr(), up.addr()}, nil, BuildIndexesOptions{OnFailure: log.add})
	require.Equal(t, []string{down, electing.addr(), up.addr()}, b.Addrs())

	// Unreachable and 5xx nodes pass the read on; the node that answers is asked first next time.
	tag, err := b.GetTag(ctx, "r", "t", false)
	require.NoError(t, err)
	require.Equal(t, digest.FromString("c"), tag.Digest)
	require.Equal(t, []int{1, 1}, []int{electing.count(), up.count()})
	require.Equal(t, []string{down + ">" + electing.addr(), electing.addr() + ">" + up.addr()}, log.take())
	_, err = b.GetTag(ctx, "r", "t", false)
	require.NoError(t, err)
	require.Equal(t, []int{1, 2}, []int{electing.count(), up.count()})
	require.Empty(t, log.take())

	// An answer about the request is final: no other node is asked.
	up.set("status", http.StatusNotFound)
	_, err = b.GetTag(ctx, "r", "t", false)
	require.ErrorIs(t, err, ErrNotFound)
	require.Equal(t, []int{1, 3}, []int{electing.count(), up.count()})
	up.set("status", http.StatusBadRequest)
	_, err = b.GetLink(ctx, "r", "blob/x", false)
	require.Equal(t, errcode.CodeNameInvalid, registry.FromError(err).Code)
	require.Equal(t, []int{1, 4}, []int{electing.count(), up.count()})

	// Every node failing is 503 UNAVAILABLE, whatever the individual errors were, and the
	// wrapped errors name each node; the last one has no next.
	up.set("reset", 0)
	_, err = b.GetTag(ctx, "r", "t", false)
	e := registry.FromError(err)
	require.Equal(t, http.StatusServiceUnavailable, e.Status)
	require.Equal(t, errcode.CodeUnavailable, e.Code)
	require.Contains(t, e.Message, "none of the 3 build-index nodes answered")
	for _, s := range []string{"connection refused", "fake b", up.addr()} {
		require.ErrorContains(t, err, s)
	}
	require.Equal(t, []string{up.addr() + ">" + down, down + ">" + electing.addr(), electing.addr() + ">"}, log.take())

	one := NewBuildIndexes([]string{deadAddr(t)}, nil, BuildIndexesOptions{})
	_, err = one.GetTag(ctx, "r", "t", false)
	require.Equal(t, http.StatusServiceUnavailable, registry.FromError(err).Status)
	require.Contains(t, registry.FromError(err).Message, "the build-index did not answer")

	// A request ended by ctx is not passed on.
	cctx, cancel := context.WithCancel(ctx)
	cancel()
	before := []int{electing.count(), up.count()}
	_, err = b.GetTag(cctx, "r", "t", false)
	require.ErrorIs(t, err, context.Canceled)
	after := []int{electing.count(), up.count()}
	require.Equal(t, before, after)
	require.Empty(t, log.take())

	_, err = NewBuildIndexes(nil, nil, BuildIndexesOptions{}).GetTag(ctx, "r", "t", false)
	require.ErrorIs(t, err, ErrNoBuildIndex)
	var ec *errcode.Error
	require.ErrorAs(t, err, &ec)
	require.Equal(t, http.StatusServiceUnavailable, ec.Status, "no node known yet: retry, not an internal error")
}

// TestBuildIndexesWrites: puts are passed on after any failure (the same value twice is
// harmless); deletes only when the node surely did not apply them.
func TestBuildIndexesWrites(t *testing.T) {
	t.Parallel()
	ctx := t.Context()
	a, c := newFakeNode(t, "a"), newFakeNode(t, "c")
	b := NewBuildIndexes([]string{a.addr(), c.addr()}, nil, BuildIndexesOptions{})

	a.set("status", http.StatusGatewayTimeout) // outcome unknown: may have been applied
	_, err := b.PutLink(ctx, "r", "blob/x", digest.FromString("x"))
	require.NoError(t, err)
	require.Equal(t, []int{1, 1}, []int{a.count(), c.count()})

	// The next request starts at c, which answers 504 to a delete: final.
	c.set("status", http.StatusGatewayTimeout)
	_, err = b.DeleteLink(ctx, "r", "blob/x")
	require.Equal(t, http.StatusGatewayTimeout, registry.FromError(err).Status)
	require.Equal(t, []int{1, 2}, []int{a.count(), c.count()})

	// A broken connection may have applied the delete: not repeated, 503.
	c.set("reset", 0)
	a.set("ok", 0)
	_, err = b.DeleteTag(ctx, "r", "t")
	require.Equal(t, http.StatusServiceUnavailable, registry.FromError(err).Status)
	require.Equal(t, []int{1, 3}, []int{a.count(), c.count()})

	// 503 says the node did not apply it: the next node gets the delete.
	c.set("status", http.StatusServiceUnavailable)
	old, err := b.DeleteTag(ctx, "r", "t")
	require.NoError(t, err)
	require.Equal(t, digest.FromString("a"), old.Digest)
	require.Equal(t, []int{2, 4}, []int{a.count(), c.count()})

	// A refused connection too.
	d := NewBuildIndexes([]string{deadAddr(t), a.addr()}, nil, BuildIndexesOptions{})
	_, err = d.DeleteLink(ctx, "r", "blob/x")
	require.NoError(t, err)
}

func TestBuildIndexesHungNode(t *testing.T) {
	t.Parallel()
	hung, up := newFakeNode(t, "a"), newFakeNode(t, "b")
	hung.set("hang", 0)
	b := NewBuildIndexes([]string{hung.addr(), up.addr()}, nil, BuildIndexesOptions{Attempt: 50 * time.Millisecond})
	tag, err := b.GetTag(t.Context(), "r", "t", false)
	require.NoError(t, err)
	require.Equal(t, digest.FromString("b"), tag.Digest)
	require.Equal(t, []int{1, 1}, []int{hung.count(), up.count()})
}

func TestBuildIndexesReady(t *testing.T) {
	t.Parallel()
	up := newFakeNode(t, "b")
	require.NoError(t, NewBuildIndexes([]string{deadAddr(t), up.addr()}, nil, BuildIndexesOptions{}).Ready(t.Context()))
	require.Error(t, NewBuildIndexes([]string{deadAddr(t)}, nil, BuildIndexesOptions{}).Ready(t.Context()))
}

func TestCollectPages(t *testing.T) {
	t.Parallel()
	node := newFakeNode(t, "a")
	node.tags = []string{"a", "b", "c", "d", "e"}
	b := NewBuildIndexes([]string{node.addr()}, nil, BuildIndexesOptions{})
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
		got, more, err := b.CollectTags(ctx, "repo", tc.last, tc.n)
		require.NoError(t, err)
		require.Equal(t, tc.want, got, "last %q n %d", tc.last, tc.n)
		require.Equal(t, tc.more, more, "last %q n %d", tc.last, tc.n)
	}

	// A repository without tags is empty, not an error.
	node.mu.Lock()
	node.tags = nil
	node.mu.Unlock()
	got, more, err := b.CollectTags(ctx, "repo", "", 10)
	require.NoError(t, err)
	require.Empty(t, got)
	require.False(t, more)

	// A page that does not advance is an error, not a loop.
	_, _, err = collect("", 10, func(string, int) (page, error) { return page{items: nil, next: "x"}, nil })
	require.ErrorContains(t, err, "does not advance")
	_, _, err = collect("m", 10, func(string, int) (page, error) { return page{items: []string{"a"}, next: "a"}, nil })
	require.ErrorContains(t, err, "does not advance")
	_, _, err = collect("", 0, nil)
	require.ErrorContains(t, err, "not positive")

	// Other failures are errors.
	node.set("status", http.StatusBadRequest)
	_, _, err = b.CollectRepositories(ctx, "", 10)
	require.NotErrorIs(t, err, ErrNotFound)
	require.Equal(t, errcode.CodeNameInvalid, registry.FromError(err).Code)
}

// TestBuildIndexesSetAddrs: after SetAddrs (a new DNS answer) requests go to the new nodes,
// and a client built without any starts working once it has some.
func TestBuildIndexesSetAddrs(t *testing.T) {
	t.Parallel()
	oldNode, newNode := newFakeNode(t, "old"), newFakeNode(t, "new")
	b := NewBuildIndexes(nil, nil, BuildIndexesOptions{})
	_, err := b.GetTag(t.Context(), "repo", "v1", false)
	require.ErrorIs(t, err, ErrNoBuildIndex)

	b.SetAddrs([]string{oldNode.addr()})
	tag, err := b.GetTag(t.Context(), "repo", "v1", false)
	require.NoError(t, err)
	require.Equal(t, digest.FromString("old"), tag.Digest)

	b.SetAddrs([]string{newNode.addr()})
	require.Equal(t, []string{newNode.addr()}, b.Addrs())
	before := oldNode.count()
	tag, err = b.GetTag(t.Context(), "repo", "v1", false)
	require.NoError(t, err)
	require.Equal(t, digest.FromString("new"), tag.Digest)
	require.Equal(t, before, oldNode.count(), "the departed node is not asked")
}

func TestClusterSetAddrs(t *testing.T) {
	t.Parallel()
	c := NewCluster([]string{"10.0.0.1:1"}, nil)
	c.SetAddrs([]string{"10.0.0.2:1", "10.0.0.3:1"})
	require.Equal(t, []string{"10.0.0.2:1", "10.0.0.3:1"}, c.Addrs())
	c.SetAddrs(nil)
	_, err := c.Ring(t.Context(), "")
	require.ErrorIs(t, err, ErrNoOrigins)
}
