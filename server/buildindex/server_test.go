package buildindex

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/opencontainers/go-digest"
	"github.com/stretchr/testify/require"
	"go.uber.org/goleak"

	"github.com/krakenctl/krakenctl/backend/memory"
	"github.com/krakenctl/krakenctl/server/api"
	"github.com/krakenctl/krakenctl/server/client"
	"github.com/krakenctl/krakenctl/server/registry/errcode"
	"github.com/krakenctl/krakenctl/server/role"
	"github.com/krakenctl/krakenctl/tagstore"
)

func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m,
		// raft's awaitFuture goroutine for a write in flight at Close (documented in tagstore).
		goleak.IgnoreTopFunction("github.com/krakenctl/krakenctl/tagstore.awaitFuture"),
	)
}

// node is a running Server in a test.
type node struct {
	srv   *Server
	cli   *client.BuildIndex
	addr  string
	store *fakeStore
	stop  func()
}

func testHTTPClient(t testing.TB) *http.Client {
	tr := &http.Transport{}
	t.Cleanup(tr.CloseIdleConnections)
	return &http.Client{Transport: tr, Timeout: 30 * time.Second}
}

func noVerify(cfg *Config) {
	v := false
	cfg.VerifyContent = &v
}

// startFake runs a Server over a fakeStore, on deps.Listener or a new loopback listener. edit
// may change the config before New.
func startFake(t *testing.T, store *fakeStore, deps Deps, edit func(*Config)) *node {
	t.Helper()
	ln := deps.Listener
	if ln == nil {
		var err error
		ln, err = net.Listen("tcp", "127.0.0.1:0")
		require.NoError(t, err)
	}
	cfg := Config{Listen: ln.Addr().String(), Dir: t.TempDir()}
	cfg.Raft.NodeID = store.id
	noVerify(&cfg)
	cfg.Writeback.RetryInitial = 10 * time.Millisecond
	cfg.Writeback.RetryMax = 50 * time.Millisecond
	cfg.Writeback.FollowerDelay = time.Millisecond
	if edit != nil {
		edit(&cfg)
	}
	deps.Listener = ln
	deps.Store = store
	if deps.HTTPClient == nil {
		deps.HTTPClient = testHTTPClient(t)
	}
	srv, err := New(cfg, deps)
	require.NoError(t, err)
	srv.leaderWait = 300 * time.Millisecond
	ctx, cancel := context.WithCancel(context.Background())
	errc := make(chan error, 1)
	go func() { errc <- srv.Run(ctx) }()
	n := &node{srv: srv, addr: ln.Addr().String(), store: store, cli: client.NewBuildIndex(ln.Addr().String(), testHTTPClient(t))}
	stopped := false
	n.stop = func() {
		if stopped {
			return
		}
		stopped = true
		cancel()
		require.NoError(t, <-errc)
	}
	t.Cleanup(func() { n.stop(); store.close() })
	return n
}

func dig(s string) digest.Digest { return digest.FromString(s) }

// apiErr asserts err carries a registry error with status and code, and returns it.
func apiErr(t *testing.T, err error, status int, code errcode.Code) *errcode.Error {
	t.Helper()
	var re *errcode.Error
	require.ErrorAs(t, err, &re)
	require.Equal(t, status, re.Status, "%v", err)
	require.Equal(t, code, re.Code, "%v", err)
	return re
}

// httpGet GETs url with the test's context; the caller closes the body.
func httpGet(t *testing.T, url string) *http.Response {
	t.Helper()
	req, err := http.NewRequestWithContext(t.Context(), http.MethodGet, url, nil)
	require.NoError(t, err)
	resp, err := http.DefaultClient.Do(req)
	require.NoError(t, err)
	return resp
}

// requireAPIErr is apiErr for a test that needs nothing more of the error.
func requireAPIErr(t *testing.T, err error, status int, code errcode.Code) {
	t.Helper()
	_ = apiErr(t, err, status, code)
}

func TestPutGetDelete(t *testing.T) {
	t.Parallel()
	n := startFake(t, newFakeStore("a"), Deps{}, nil)
	ctx := t.Context()

	got, err := n.cli.PutTag(ctx, "library/ubuntu", "24.04", dig("one"))
	require.NoError(t, err)
	require.Equal(t, api.Tag{Repo: "library/ubuntu", Tag: "24.04", Digest: dig("one"), Index: 1, Updated: got.Updated}, got)

	for _, stale := range []bool{false, true} {
		g, err := n.cli.GetTag(ctx, "library/ubuntu", "24.04", stale)
		require.NoError(t, err)
		require.Equal(t, got.Digest, g.Digest)
		require.Equal(t, got.Index, g.Index)
	}

	moved, err := n.cli.PutTag(ctx, "library/ubuntu", "24.04", dig("two"))
	require.NoError(t, err)
	require.Equal(t, dig("two"), moved.Digest)
	require.Greater(t, moved.Index, got.Index)

	del, err := n.cli.DeleteTag(ctx, "library/ubuntu", "24.04")
	require.NoError(t, err)
	require.Equal(t, dig("two"), del.Digest)

	_, err = n.cli.GetTag(ctx, "library/ubuntu", "24.04", false)
	require.ErrorIs(t, err, client.ErrNotFound)
	requireAPIErr(t, err, http.StatusNotFound, errcode.CodeManifestUnknown)
	_, err = n.cli.DeleteTag(ctx, "library/ubuntu", "24.04")
	require.ErrorIs(t, err, client.ErrNotFound)

	// Repository slashes may be left unescaped.
	req, err := http.NewRequestWithContext(ctx, http.MethodPut, "http://"+n.addr+"/repositories/library/ubuntu/tags/raw",
		strings.NewReader(`{"digest":"`+dig("raw").String()+`"}`))
	require.NoError(t, err)
	resp, err := http.DefaultClient.Do(req)
	require.NoError(t, err)
	require.NoError(t, resp.Body.Close())
	require.Equal(t, http.StatusOK, resp.StatusCode)
	raw, err := n.cli.GetTag(ctx, "library/ubuntu", "raw", false)
	require.NoError(t, err)
	require.Equal(t, dig("raw"), raw.Digest)
	for path, want := range map[string]int{
		"/repositories/library/ubuntu/tags/raw":   http.StatusOK,
		"/repositories/library/ubuntu/tags":       http.StatusOK,
		"/repositories/library/ubuntu/tags/nope":  http.StatusNotFound,
		"/repositories/library/ubuntu/tags/a/b":   http.StatusBadRequest,
		"/repositories/library/ubuntu":            http.StatusNotFound,
		"/repositories/library/Ubuntu/tags":       http.StatusBadRequest,
		"/repositories/library%2Fubuntu/tags/raw": http.StatusOK,
		"/repositories/library%2Fubuntu/tags/":    http.StatusBadRequest, // an empty tag
	} {
		resp := httpGet(t, "http://"+n.addr+path)
		require.NoError(t, resp.Body.Close())
		require.Equal(t, want, resp.StatusCode, path)
	}
	req, err = http.NewRequestWithContext(ctx, http.MethodPost, "http://"+n.addr+"/repositories/library/ubuntu/tags/raw", nil)
	require.NoError(t, err)
	resp, err = http.DefaultClient.Do(req)
	require.NoError(t, err)
	require.NoError(t, resp.Body.Close())
	require.Equal(t, http.StatusMethodNotAllowed, resp.StatusCode)

	// The response names the node that executed it.
	resp = httpGet(t, "http://"+n.addr+api.TagPath("library/ubuntu", "nope"))
	require.NoError(t, resp.Body.Close())
	require.Equal(t, "a", resp.Header.Get(HeaderServedBy))
}

// TestBadInput: every malformed request gets its status and code, and the store is untouched.
func TestBadInput(t *testing.T) {
	t.Parallel()
	store := newFakeStore("a")
	n := startFake(t, store, Deps{}, nil)
	ctx := t.Context()
	good := dig("x").String()

	for _, tc := range []struct {
		repo, tag string
		code      errcode.Code
	}{
		{"Library/ubuntu", "latest", errcode.CodeNameInvalid},
		{"library//ubuntu", "latest", errcode.CodeNameInvalid},
		{"library/ubuntu-", "latest", errcode.CodeNameInvalid},
		{"a..b", "latest", errcode.CodeNameInvalid},
		{strings.Repeat("a", 256), "latest", errcode.CodeNameInvalid},
		{"library/ubuntu", ".hidden", errcode.CodeTagInvalid},
		{"library/ubuntu", "-x", errcode.CodeTagInvalid},
		{"library/ubuntu", strings.Repeat("t", 129), errcode.CodeTagInvalid},
		{"library/ubuntu", "a+b", errcode.CodeTagInvalid},
	} {
		_, err := n.cli.PutTag(ctx, tc.repo, tc.tag, digest.Digest(good))
		requireAPIErr(t, err, http.StatusBadRequest, tc.code)
		_, err = n.cli.GetTag(ctx, tc.repo, tc.tag, false)
		requireAPIErr(t, err, http.StatusBadRequest, tc.code)
		_, err = n.cli.DeleteTag(ctx, tc.repo, tc.tag)
		requireAPIErr(t, err, http.StatusBadRequest, tc.code)
	}
	// The longest valid names pass.
	_, err := n.cli.PutTag(ctx, strings.Repeat("a", 255), strings.Repeat("t", 128), digest.Digest(good))
	require.NoError(t, err)
	before := store.writeCount()

	for _, d := range []string{"", "sha256:abc", strings.Repeat("a", 64), "sha256:" + strings.Repeat("G", 64), "md5:0123"} {
		_, err := n.cli.PutTag(ctx, "app", "v1", digest.Digest(d))
		requireAPIErr(t, err, http.StatusBadRequest, errcode.CodeDigestInvalid)
	}
	_, err = n.cli.PutTag(ctx, "app", "v1", digest.Digest("sha384:"+strings.Repeat("a", 96)))
	requireAPIErr(t, err, http.StatusBadRequest, errcode.CodeUnsupported)
	_, err = n.cli.PutTag(ctx, "app", "v1", digest.Digest("sha512:"+strings.Repeat("a", 127)))
	requireAPIErr(t, err, http.StatusBadRequest, errcode.CodeDigestInvalid)
	// sha512 is accepted: a manifest pushed by its sha512 digest (found through its link).
	_, err = n.cli.PutTag(ctx, "app", "sha512", digest.Digest("sha512:"+strings.Repeat("a", 128)))
	require.NoError(t, err)
	before++

	put := func(body string) *http.Response {
		req, err := http.NewRequestWithContext(ctx, http.MethodPut, "http://"+n.addr+api.TagPath("app", "v1"), strings.NewReader(body))
		require.NoError(t, err)
		resp, err := http.DefaultClient.Do(req)
		require.NoError(t, err)
		return resp
	}
	for body, code := range map[string]errcode.Code{
		`{"digest":`:                          errcode.CodeBodyInvalid,
		`[]`:                                  errcode.CodeBodyInvalid,
		`{"digest":"` + good + `","extra":1}`: errcode.CodeBodyInvalid,
		`{"digest":"` + good + `"}{"digest":"` + good + `"}`: errcode.CodeBodyInvalid,
		``: errcode.CodeBodyInvalid,
	} {
		resp := put(body)
		b, _ := io.ReadAll(resp.Body)
		require.NoError(t, resp.Body.Close())
		require.Equal(t, http.StatusBadRequest, resp.StatusCode, body)
		require.Equal(t, code, errcode.DecodeError(resp.StatusCode, b).Code, body)
	}
	resp := put(`{"digest":"` + good + `","pad":"` + strings.Repeat("x", 70<<10) + `"}`)
	require.NoError(t, resp.Body.Close())
	require.Equal(t, http.StatusRequestEntityTooLarge, resp.StatusCode)

	for _, path := range []string{
		api.TagPath("app", "v1") + "?stale=maybe",
		api.TagsPath("app") + "?n=-1",
		api.TagsPath("app") + "?n=ten",
		api.RepositoriesPath + "?n=1.5",
		api.ChangesPath + "?from=-3",
	} {
		resp := httpGet(t, "http://"+n.addr+path)
		require.NoError(t, resp.Body.Close())
		require.Equal(t, http.StatusBadRequest, resp.StatusCode, path)
	}

	for _, m := range []api.Member{
		{RaftAddr: "127.0.0.1:9", APIAddr: "127.0.0.1:8"},
		{ID: "b", RaftAddr: "nope", APIAddr: "127.0.0.1:8"},
		{ID: "b", RaftAddr: "127.0.0.1:9"},
	} {
		_, err := n.cli.Join(ctx, m)
		requireAPIErr(t, err, http.StatusBadRequest, errcode.CodeBodyInvalid)
	}
	_, err = n.cli.Join(ctx, api.Member{ID: "a", RaftAddr: "127.0.0.1:7", APIAddr: "127.0.0.1:8"})
	requireAPIErr(t, err, http.StatusConflict, errcode.CodeMemberExists)
	_, err = n.cli.Remove(ctx, "nobody", false)
	require.ErrorIs(t, err, client.ErrNotFound)
	requireAPIErr(t, err, http.StatusNotFound, errcode.CodeMemberUnknown)

	_, err = n.cli.Restore(ctx)
	requireAPIErr(t, err, http.StatusBadRequest, errcode.CodeUnsupported)

	require.Equal(t, before, store.writeCount(), "no bad request changed the store")
	st, err := n.cli.ClusterStatus(ctx)
	require.NoError(t, err)
	require.Len(t, st.Members, 1)
}

func TestStoreErrors(t *testing.T) {
	t.Parallel()
	store := newFakeStore("a")
	n := startFake(t, store, Deps{}, nil)
	for _, tc := range []struct {
		err    error
		status int
		code   errcode.Code
	}{
		{fmt.Errorf("put: %w: %w", tagstore.ErrIndeterminate, context.Canceled), http.StatusGatewayTimeout, errcode.CodeOutcomeUnknown},
		{fmt.Errorf("put: %w (%w)", tagstore.ErrClosed, tagstore.ErrIndeterminate), http.StatusGatewayTimeout, errcode.CodeOutcomeUnknown},
		{fmt.Errorf("put: %w", tagstore.ErrUnavailable), http.StatusServiceUnavailable, errcode.CodeUnavailable},
		{fmt.Errorf("put: %w", tagstore.ErrClosed), http.StatusServiceUnavailable, errcode.CodeUnavailable},
		{fmt.Errorf("put: %w repository name", tagstore.ErrInvalid), http.StatusBadRequest, errcode.CodeNameInvalid},
	} {
		store.mu.Lock()
		store.putErr = tc.err
		store.mu.Unlock()
		_, err := n.cli.PutTag(t.Context(), "app", "v1", dig("x"))
		requireAPIErr(t, err, tc.status, tc.code)
	}
}

func TestPagination(t *testing.T) {
	t.Parallel()
	n := startFake(t, newFakeStore("a"), Deps{}, nil)
	ctx := t.Context()
	var want []string
	for i := range 25 {
		tag := fmt.Sprintf("v%02d", i)
		want = append(want, tag)
		_, err := n.cli.PutTag(ctx, "team/app", tag, dig(tag))
		require.NoError(t, err)
	}
	var repos []string
	for i := range 7 {
		r := fmt.Sprintf("r%d/x", i)
		repos = append(repos, r)
		_, err := n.cli.PutTag(ctx, r, "latest", dig(r))
		require.NoError(t, err)
	}
	repos = append(repos, "team/app")

	var got []string
	last, pages := "", 0
	for {
		tags, next, err := n.cli.ListTags(ctx, "team/app", last, 10)
		require.NoError(t, err)
		got = append(got, tags...)
		pages++
		if next == "" {
			break
		}
		require.Equal(t, tags[len(tags)-1], next)
		last = next
	}
	require.Equal(t, want, got)
	require.Equal(t, 3, pages)

	// Exactly n left: no Link.
	tags, next, err := n.cli.ListTags(ctx, "team/app", "v19", 5)
	require.NoError(t, err)
	require.Equal(t, want[20:], tags)
	require.Empty(t, next)
	// Past the end: an empty page.
	tags, next, err = n.cli.ListTags(ctx, "team/app", "zzz", 5)
	require.NoError(t, err)
	require.Empty(t, tags)
	require.Empty(t, next)
	// No n: the default page holds them all.
	tags, _, err = n.cli.ListTags(ctx, "team/app", "", 0)
	require.NoError(t, err)
	require.Equal(t, want, tags)

	// The Link header as the OCI spec writes it, and n=0.
	resp := httpGet(t, "http://"+n.addr+api.TagsPath("team/app")+"?n=2&last=v03")
	var tl api.TagList
	require.NoError(t, json.NewDecoder(resp.Body).Decode(&tl))
	require.NoError(t, resp.Body.Close())
	require.Equal(t, api.TagList{Name: "team/app", Tags: []string{"v04", "v05"}}, tl)
	require.Equal(t, `</repositories/team%2Fapp/tags?last=v05&n=2>; rel="next"`, resp.Header.Get("Link"))
	resp = httpGet(t, "http://"+n.addr+api.TagsPath("team/app")+"?n=0")
	b, _ := io.ReadAll(resp.Body)
	require.NoError(t, resp.Body.Close())
	require.JSONEq(t, `{"name":"team/app","tags":[]}`, string(b))
	require.Empty(t, resp.Header.Get("Link"))

	_, _, err = n.cli.ListTags(ctx, "no/such", "", 0)
	require.ErrorIs(t, err, client.ErrNotFound)
	requireAPIErr(t, err, http.StatusNotFound, errcode.CodeNameUnknown)

	got = nil
	last = ""
	for {
		page, next, err := n.cli.ListRepositories(ctx, last, 3)
		require.NoError(t, err)
		require.LessOrEqual(t, len(page), 3)
		got = append(got, page...)
		if next == "" {
			break
		}
		last = next
	}
	require.Equal(t, repos, got)
}

// TestForwarding: a follower relays writes and linearizable reads to the leader, serves stale
// reads itself, and never forwards a request twice.
func TestForwarding(t *testing.T) {
	t.Parallel()
	ctx := t.Context()
	leader := startFake(t, newFakeStore("L"), Deps{}, nil)
	fstore := newFakeStore("F")
	fstore.followerOf("L", leader.addr)
	follower := startFake(t, fstore, Deps{}, nil)

	put, err := follower.cli.PutTag(ctx, "app", "v1", dig("one"))
	require.NoError(t, err)
	lt, err := leader.store.Get(ctx, "app", "v1", tagstore.Stale)
	require.NoError(t, err)
	require.Equal(t, put.Index, lt.Index)

	resp := httpGet(t, "http://"+follower.addr+api.TagPath("app", "v1"))
	require.NoError(t, resp.Body.Close())
	require.Equal(t, http.StatusOK, resp.StatusCode)
	require.Equal(t, "L", resp.Header.Get(HeaderServedBy), "linearizable read served by the leader")

	// A stale read is the follower's own (it has nothing).
	_, err = follower.cli.GetTag(ctx, "app", "v1", true)
	require.ErrorIs(t, err, client.ErrNotFound)

	tags, _, err := follower.cli.ListTags(ctx, "app", "", 0)
	require.NoError(t, err)
	require.Equal(t, []string{"v1"}, tags)
	repos, _, err := follower.cli.ListRepositories(ctx, "", 0)
	require.NoError(t, err)
	require.Equal(t, []string{"app"}, repos)
	_, err = follower.cli.Join(ctx, api.Member{ID: "c", RaftAddr: "127.0.0.1:3", APIAddr: "127.0.0.1:4"})
	require.NoError(t, err)
	st, err := follower.cli.Remove(ctx, "c", false)
	require.NoError(t, err)
	require.Equal(t, "L", st.ID, "the status after a change is the leader's")
	_, err = follower.cli.DeleteTag(ctx, "app", "v1")
	require.NoError(t, err)
	_, err = leader.store.Get(ctx, "app", "v1", tagstore.Stale)
	require.ErrorIs(t, err, tagstore.ErrNotFound)
	// Errors come back from the leader unchanged.
	_, err = follower.cli.DeleteTag(ctx, "app", "v1")
	requireAPIErr(t, err, http.StatusNotFound, errcode.CodeManifestUnknown)

	// Two nodes that each name the other as the leader: one hop, then 503.
	a, b := newFakeStore("A"), newFakeStore("B")
	na := startFake(t, a, Deps{}, nil)
	nb := startFake(t, b, Deps{}, nil)
	a.followerOf("B", nb.addr)
	b.followerOf("A", na.addr)
	_, err = na.cli.PutTag(ctx, "app", "v1", dig("x"))
	re := apiErr(t, err, http.StatusServiceUnavailable, errcode.CodeUnavailable)
	require.Contains(t, re.Message, "forwarded")

	// No leader known: wait, then 503 with Retry-After.
	lone := newFakeStore("Z")
	lone.followerOf("", "")
	nz := startFake(t, lone, Deps{}, nil)
	resp = httpGet(t, "http://"+nz.addr+api.TagPath("app", "v1"))
	require.NoError(t, resp.Body.Close())
	require.Equal(t, http.StatusServiceUnavailable, resp.StatusCode)
	require.Equal(t, "1", resp.Header.Get("Retry-After"))
	require.Error(t, nz.cli.Ready(ctx), "not ready without a leader")
	require.NoError(t, follower.cli.Ready(ctx))

	// The leader unreachable: 503.
	gone := newFakeStore("G")
	gone.followerOf("L2", closedAddr(t))
	ng := startFake(t, gone, Deps{}, nil)
	_, err = ng.cli.PutTag(ctx, "app", "v1", dig("x"))
	requireAPIErr(t, err, http.StatusServiceUnavailable, errcode.CodeUnavailable)
}

// closedAddr returns a loopback address nothing listens on.
func closedAddr(t *testing.T) string {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	addr := ln.Addr().String()
	require.NoError(t, ln.Close())
	return addr
}

func TestChanges(t *testing.T) {
	t.Parallel()
	store := newFakeStore("a")
	n := startFake(t, store, Deps{}, nil)
	ctx, cancel := context.WithCancel(t.Context())
	defer cancel()
	_, err := n.cli.PutTag(ctx, "app", "v1", dig("1"))
	require.NoError(t, err)

	got := make(chan api.TagChange, 10)
	errc := make(chan error, 1)
	go func() {
		errc <- n.cli.Changes(ctx, 0, func(c api.TagChange) error { got <- c; return nil })
	}()
	next := func() api.TagChange {
		select {
		case c := <-got:
			return c
		case err := <-errc:
			t.Fatalf("feed ended: %v", err)
		case <-time.After(10 * time.Second):
			t.Fatal("no change arrived")
		}
		return api.TagChange{}
	}
	c := next()
	require.Equal(t, api.TagChange{Index: 1, Op: "put", Tag: api.Tag{Repo: "app", Tag: "v1", Digest: dig("1"), Index: 1, Updated: c.Tag.Updated}}, c)
	_, err = n.cli.PutTag(ctx, "app", "v2", dig("2"))
	require.NoError(t, err)
	_, err = n.cli.DeleteTag(ctx, "app", "v1")
	require.NoError(t, err)
	c = next()
	require.Equal(t, "put", c.Op)
	require.Equal(t, "v2", c.Tag.Tag)
	c = next()
	require.Equal(t, "delete", c.Op)
	require.Equal(t, uint64(3), c.Index)
	require.Equal(t, "v1", c.Tag.Tag)

	// From an index: only what follows it.
	sub, subCancel := context.WithCancel(ctx)
	var seen []uint64
	err = n.cli.Changes(sub, 2, func(c api.TagChange) error {
		seen = append(seen, c.Index)
		subCancel()
		return nil
	})
	require.ErrorIs(t, err, context.Canceled)
	require.Equal(t, []uint64{3}, seen)

	// fn's error ends the stream and is returned as is.
	boom := errors.New("boom")
	require.ErrorIs(t, n.cli.Changes(ctx, 0, func(api.TagChange) error { return boom }), boom)

	// A lost place: one resync, then the end.
	store.forget()
	var ops []string
	err = n.cli.Changes(ctx, 1, func(c api.TagChange) error { ops = append(ops, c.Op); return nil })
	require.ErrorIs(t, err, client.ErrFeedEnded)
	require.Equal(t, []string{"resync"}, ops)

	// Shutting the server down ends open streams; Run returns.
	n.stop()
	select {
	case err := <-errc:
		require.ErrorIs(t, err, client.ErrFeedEnded)
	case <-time.After(20 * time.Second):
		t.Fatal("stream did not end at shutdown")
	}
}

func TestConfigValidate(t *testing.T) {
	t.Parallel()
	base := func() Config {
		c := Config{Dir: "/tmp/x", Origins: []string{"127.0.0.1:15000"}}
		return c
	}
	c := base()
	c.Defaults()
	require.NoError(t, c.Validate())
	require.Equal(t, "127.0.0.1-15100", c.Raft.NodeID)
	require.Equal(t, "/tmp/x/raft", c.Raft.Dir)
	require.Equal(t, DefaultRaftListen, c.Raft.Advertise)
	require.Equal(t, c.Advertise, c.Raft.APIAddr)
	require.True(t, c.verify())

	for _, tc := range []struct {
		edit func(*Config)
		want string
	}{
		{func(c *Config) { c.Dir = "" }, "dir: required"},
		{func(c *Config) { c.Listen = "nope" }, "listen:"},
		{func(c *Config) { c.RaftListen = "nope" }, "raft_listen:"},
		{func(c *Config) { c.Origins = nil }, "origins: required"},
		{func(c *Config) { c.Origins = []string{"x"} }, "origins[0]:"},
		{func(c *Config) { c.Raft.APIAddr = "127.0.0.1:1" }, "raft.api_addr"},
		{func(c *Config) { c.Raft.HeartbeatTimeout = time.Microsecond }, "raft: heartbeat_timeout"},
		{func(c *Config) { c.Raft.NodeID = "a b" }, "raft: node_id"},
		{func(c *Config) { c.TagsNamespace = "Tags" }, "tags_namespace"},
		{func(c *Config) { c.Writeback.Workers = -1 }, "writeback.workers"},
		{func(c *Config) { c.Writeback.RetryMax = time.Millisecond }, "writeback.retry_initial/retry_max"},
		{func(c *Config) { c.Join = []string{"127.0.0.1:15100"} }, "join: [\"127.0.0.1:15100\"] is this node's own address and names no other node"},
		{func(c *Config) { c.Join = []string{"127.0.0.1:15100", "127.0.0.1:15100"} }, "names no other node"},
		{func(c *Config) { c.Join = []string{"127.0.0.1:1"}; c.Raft.Bootstrap = true }, "join: a node that bootstraps"},
		{func(c *Config) { c.MaxBody = -1 }, "max_body"},
		{func(c *Config) {
			c.Replication = []ReplicationRule{{Repository: "team/(", To: []string{"/etc/r/dc2.yaml"}}}
		}, "replication[0].repository: \"team/(\" is not a regular expression"},
		{func(c *Config) { c.Replication = []ReplicationRule{{To: []string{"/etc/r/dc2.yaml"}}} }, "replication[0].repository: required"},
		{func(c *Config) { c.Replication = []ReplicationRule{{Repository: ".*"}} }, "replication[0].to: name at least one"},
		{func(c *Config) { c.Replication = []ReplicationRule{{Repository: ".*", To: []string{" "}}} }, "replication[0].to[0]: empty path"},
		{func(c *Config) {
			c.Replication = []ReplicationRule{{Repository: "a", To: []string{"/etc/r/dc2.yaml"}}, {Repository: "b", To: []string{"/srv/dc2.json"}}}
		}, `would both be remote "dc2"`},
		{func(c *Config) { c.ReplicationQueue.Workers = -1 }, "replication_queue.workers"},
		{func(c *Config) { c.ReplicationQueue.RetryMax = time.Millisecond }, "replication_queue.retry_initial/retry_max"},
	} {
		c := base()
		tc.edit(&c)
		c.Defaults()
		err := c.Validate()
		require.Error(t, err, tc.want)
		require.ErrorContains(t, err, tc.want)
	}
	c = base()
	c.Replication = []ReplicationRule{{Repository: "^a/", To: []string{"/etc/r/dc2.yaml"}}, {Repository: "^b/", To: []string{"/etc/r/dc2.yaml", "/etc/r/dc3.yml"}}}
	c.Defaults()
	require.NoError(t, c.Validate(), "two rules may name the same remote")
	require.Equal(t, "dc3", RemoteName("/etc/r/dc3.yml"))

	c = base()
	c.Join = []string{"127.0.0.1:15100", "127.0.0.1:15110", "127.0.0.1:15120"}
	c.Defaults()
	require.NoError(t, c.Validate(), "a StatefulSet's join list names every node, this one too")

	c = base()
	c.Origins = nil
	noVerify(&c)
	c.Defaults()
	require.NoError(t, c.Validate(), "no origins needed without content checks")
}

func TestNewErrors(t *testing.T) {
	t.Parallel()
	_, err := New(Config{}, Deps{})
	require.ErrorContains(t, err, "dir: required")
	cfg := Config{Dir: t.TempDir()}
	noVerify(&cfg)
	_, err = New(cfg, Deps{})
	require.ErrorContains(t, err, "no listener")
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	defer func() { _ = ln.Close() }()
	_, err = New(cfg, Deps{Deps: role.Deps{Listener: ln}})
	require.ErrorContains(t, err, "no raft listener")
	// Backends that do not route the tags namespace.
	cfg.Backends = nil
	cfg.TagsNamespace = "tags"
	srv, err := New(cfg, Deps{Deps: role.Deps{Listener: ln}, Store: newFakeStore("a"), Backend: memory.New()})
	require.NoError(t, err)
	require.NoError(t, srv.Close())
	require.ErrorContains(t, srv.Run(t.Context()), "already started")
}

// TestMetricsAndHealth: the admin endpoints are mounted.
func TestMetricsAndHealth(t *testing.T) {
	t.Parallel()
	n := startFake(t, newFakeStore("a"), Deps{}, nil)
	for _, p := range []string{"/health", "/readyz"} {
		resp := httpGet(t, "http://"+n.addr+p)
		require.NoError(t, resp.Body.Close())
		require.Equal(t, http.StatusOK, resp.StatusCode, p)
	}
	var buf bytes.Buffer
	resp := httpGet(t, "http://"+n.addr+api.ClusterPath)
	_, _ = io.Copy(&buf, resp.Body)
	require.NoError(t, resp.Body.Close())
	var st api.ClusterStatus
	require.NoError(t, json.Unmarshal(buf.Bytes(), &st))
	require.Equal(t, "a", st.LeaderID)
	require.Equal(t, "leader", st.State)
}
