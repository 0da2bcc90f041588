package webhdfs_test

import (
	"bytes"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
	"go.uber.org/goleak"

	"github.com/krakenctl/krakenctl/backend"
	"github.com/krakenctl/krakenctl/backend/backendtest"
	"github.com/krakenctl/krakenctl/backend/webhdfs"
	"github.com/krakenctl/krakenctl/backend/webhdfs/webhdfstest"
)

func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m)
}

func newBackend(t *testing.T, cfg webhdfs.Config) *webhdfs.Backend {
	t.Helper()
	return newBackendTB(t, cfg)
}

func newBackendTB(tb testing.TB, cfg webhdfs.Config) *webhdfs.Backend {
	tb.Helper()
	b, err := webhdfs.New(cfg)
	require.NoError(tb, err)
	tb.Cleanup(func() { require.NoError(tb, b.Close()) })
	return b
}

func config(s *webhdfstest.Server, root string) webhdfs.Config {
	return webhdfs.Config{Namenodes: s.NamenodeURLs(), Root: root, UserName: "kraken"}
}

// TestConformance runs the backend suite, Delete included, against the spec server; the
// server fails the test if a namenode ever receives file bytes.
func TestConformance(t *testing.T) {
	s := webhdfstest.Start(t, webhdfstest.Options{})
	// Cleanup, not a line after Run: the suite's subtests are parallel and run after Run returns.
	t.Cleanup(func() {
		require.Empty(t, s.Files("/krakenctl/objects/_tmp"), "temporary files left behind")
		require.Positive(t, s.Count("datanode", "CREATE"))
	})
	backendtest.Run(t, func(t *testing.T) backend.Backend {
		return newBackend(t, config(s, "/krakenctl/objects"))
	})
}

// TestConformanceHA runs the suite with a standby namenode listed first: every request
// fails over to the active one.
func TestConformanceHA(t *testing.T) {
	s := webhdfstest.Start(t, webhdfstest.Options{Namenodes: 2})
	s.SetStandby(0, true)
	backendtest.Run(t, func(t *testing.T) backend.Backend {
		return newBackend(t, config(s, "/"))
	})
}

func TestLayoutAndRedirects(t *testing.T) {
	t.Parallel()
	s := webhdfstest.Start(t, webhdfstest.Options{})
	b := newBackend(t, config(s, "/root"))
	ctx := t.Context()
	require.NoError(t, b.Upload(ctx, "library", "ubuntu", strings.NewReader("abc"), 3))
	require.NoError(t, b.Upload(ctx, "library/ubuntu", "x", strings.NewReader("defg"), -1))
	require.Equal(t, []string{"/root/library/_objects/ubuntu", "/root/library/ubuntu/_objects/x"}, s.Files("/root"))
	// Both uploads: a body-less CREATE at the namenode, the bytes at the datanode.
	require.Equal(t, 2, s.Count("namenode", "CREATE"))
	require.Equal(t, 2, s.Count("datanode", "CREATE"))

	info, err := b.Stat(ctx, "library", "ubuntu")
	require.NoError(t, err)
	require.Equal(t, int64(3), info.Size)
	require.False(t, info.ModTime.IsZero(), "modificationTime is read")
	var buf bytes.Buffer
	require.NoError(t, b.Download(ctx, "library", "ubuntu", &buf))
	require.Equal(t, "abc", buf.String())
	require.Equal(t, 1, s.Count("datanode", "OPEN"), "OPEN follows the redirect to the datanode")

	// Files that are not objects (nested directories, stray names) are not listed.
	s.Put("/root/library/_objects/sub/y", []byte("z"))
	s.Put("/root/library/_objects/a~b", []byte("z"))
	names, err := b.List(ctx, "library", "")
	require.NoError(t, err)
	require.Equal(t, []string{"ubuntu"}, names)
}

// TestNamenodeBodyIsAViolation proves the spec server catches a client that sends file bytes
// to the namenode, so the conformance run above would have failed on one.
func TestNamenodeBodyIsAViolation(t *testing.T) {
	t.Parallel()
	var got []string
	s := webhdfstest.New(webhdfstest.Options{OnViolation: func(msg string) { got = append(got, msg) }})
	defer s.Close()
	req, err := http.NewRequestWithContext(t.Context(), http.MethodPut, s.NamenodeURLs()[0]+"/webhdfs/v1/x?op=CREATE", strings.NewReader("data"))
	require.NoError(t, err)
	resp, err := http.DefaultClient.Do(req)
	require.NoError(t, err)
	require.NoError(t, resp.Body.Close())
	require.Equal(t, http.StatusBadRequest, resp.StatusCode)
	require.Len(t, got, 1)
	require.Contains(t, got[0], "namenode got a 4-byte body")
	_, ok := s.ReadFile("/x")
	require.False(t, ok)

	// A datanode write that skipped the namenode is one too.
	req, err = http.NewRequestWithContext(t.Context(), http.MethodPut, s.DatanodeURL()+"/webhdfs/v1/x?op=CREATE", strings.NewReader("data"))
	require.NoError(t, err)
	resp, err = http.DefaultClient.Do(req)
	require.NoError(t, err)
	require.NoError(t, resp.Body.Close())
	require.Len(t, got, 2)
	http.DefaultClient.CloseIdleConnections()
}

func TestFailover(t *testing.T) {
	t.Parallel()
	s := webhdfstest.Start(t, webhdfstest.Options{Namenodes: 2})
	b := newBackend(t, config(s, "/r"))
	ctx := t.Context()
	require.NoError(t, b.Upload(ctx, "ns", "a", strings.NewReader("one"), 3))
	require.Equal(t, 1, s.Count("namenode", "CREATE"))

	// The first namenode becomes a standby: the second takes over.
	s.SetStandby(0, true)
	require.NoError(t, b.Upload(ctx, "ns", "b", strings.NewReader("two"), 3))
	info, err := b.Stat(ctx, "ns", "a")
	require.NoError(t, err)
	require.Equal(t, int64(3), info.Size)

	// Both standby: a clear error, not a hang or a not-found.
	s.SetStandby(1, true)
	_, err = b.Stat(ctx, "ns", "a")
	require.ErrorContains(t, err, "no namenode answered as active")
	require.ErrorContains(t, err, "StandbyException")
	require.NotErrorIs(t, err, backend.ErrNotFound)
	s.SetStandby(0, false)
	_, err = b.Stat(ctx, "ns", "a")
	require.NoError(t, err)
}

func TestFailoverUnreachable(t *testing.T) {
	t.Parallel()
	s := webhdfstest.Start(t, webhdfstest.Options{})
	// A port nothing listens on: connections are refused.
	l, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	dead := "http://" + l.Addr().String()
	require.NoError(t, l.Close())
	cfg := config(s, "/r")
	cfg.Namenodes = []string{dead, s.NamenodeURLs()[0]}
	b := newBackend(t, cfg)
	require.NoError(t, b.Upload(t.Context(), "ns", "a", strings.NewReader("one"), 3))
	var buf bytes.Buffer
	require.NoError(t, b.Download(t.Context(), "ns", "a", &buf))
	require.Equal(t, "one", buf.String())

	// None reachable: the error names each namenode, and never the delegation token that was
	// in the URLs.
	tok := filepath.Join(t.TempDir(), "token")
	require.NoError(t, os.WriteFile(tok, []byte("secret-token-value"), 0o600))
	cfg = webhdfs.Config{Namenodes: []string{dead, dead + "/gw"}, Root: "/r", DelegationTokenFile: tok}
	_, err = newBackend(t, cfg).Stat(t.Context(), "ns", "a")
	require.ErrorContains(t, err, "no namenode answered")
	require.ErrorContains(t, err, "connection refused")
	require.NotContains(t, err.Error(), "secret-token-value")
}

func TestErrorMapping(t *testing.T) {
	t.Parallel()
	s := webhdfstest.Start(t, webhdfstest.Options{
		Users:  map[string]webhdfstest.Access{"kraken": webhdfstest.ReadWrite, "reader": webhdfstest.Read},
		Tokens: map[string]string{"tok-1": "kraken"},
	})
	ctx := t.Context()
	b := newBackend(t, config(s, "/r"))
	require.NoError(t, b.Upload(ctx, "ns", "a", strings.NewReader("one"), 3))

	_, err := b.Stat(ctx, "ns", "missing")
	require.ErrorIs(t, err, backend.ErrNotFound)
	require.ErrorContains(t, err, "ns/missing")
	require.ErrorIs(t, b.Download(ctx, "ns", "missing", io.Discard), backend.ErrNotFound)

	// A reader may read but not write: AccessControlException.
	cfg := config(s, "/r")
	cfg.UserName = "reader"
	ro := newBackend(t, cfg)
	_, err = ro.Stat(ctx, "ns", "a")
	require.NoError(t, err)
	err = ro.Upload(ctx, "ns", "b", strings.NewReader("x"), 1)
	require.ErrorIs(t, err, webhdfs.ErrAccessDenied)
	require.ErrorContains(t, err, "AccessControlException")
	require.ErrorContains(t, err, "user=reader")
	require.ErrorContains(t, err, "ns/b")

	// An unknown user may do nothing.
	cfg.UserName = "mallory"
	_, err = newBackend(t, cfg).Stat(ctx, "ns", "a")
	require.ErrorIs(t, err, webhdfs.ErrAccessDenied)

	// A delegation token from a file authenticates; a wrong one is refused.
	dir := t.TempDir()
	good := filepath.Join(dir, "good")
	require.NoError(t, os.WriteFile(good, []byte("tok-1\n"), 0o600))
	bad := filepath.Join(dir, "bad")
	require.NoError(t, os.WriteFile(bad, []byte("tok-2\n"), 0o600))
	cfg = config(s, "/r")
	cfg.UserName = ""
	cfg.DelegationTokenFile = good
	require.NoError(t, newBackend(t, cfg).Upload(ctx, "ns", "c", strings.NewReader("x"), 1))
	cfg.DelegationTokenFile = bad
	err = newBackend(t, cfg).Upload(ctx, "ns", "d", strings.NewReader("x"), 1)
	require.ErrorIs(t, err, webhdfs.ErrAccessDenied)
	require.NotContains(t, err.Error(), "tok-2", "the token never appears in errors")
}

// TestTokenFromEnv is not parallel: it sets an environment variable.
func TestTokenFromEnv(t *testing.T) {
	s := webhdfstest.Start(t, webhdfstest.Options{
		Users:  map[string]webhdfstest.Access{"kraken": webhdfstest.ReadWrite},
		Tokens: map[string]string{"tok-1": "kraken"},
	})
	t.Setenv("KRAKENCTL_TEST_WEBHDFS_TOKEN", "tok-1")
	cfg := config(s, "/r")
	cfg.UserName = ""
	cfg.DelegationTokenEnv = "KRAKENCTL_TEST_WEBHDFS_TOKEN"
	require.NoError(t, newBackend(t, cfg).Upload(t.Context(), "ns", "e", strings.NewReader("x"), 1))
	// Without the token the anonymous user is refused.
	cfg.DelegationTokenEnv = ""
	_, err := newBackend(t, cfg).Stat(t.Context(), "ns", "e")
	require.ErrorIs(t, err, webhdfs.ErrAccessDenied)
	require.ErrorContains(t, err, "user=dr.who")
}

func TestThrottled(t *testing.T) {
	t.Parallel()
	s := webhdfstest.Start(t, webhdfstest.Options{})
	b := newBackend(t, config(s, "/r"))
	ctx := t.Context()
	for _, status := range []int{http.StatusTooManyRequests, http.StatusServiceUnavailable} {
		s.Throttle(1, status, 7*time.Second)
		_, err := b.Stat(ctx, "ns", "a")
		var th *backend.Throttled
		require.ErrorAs(t, err, &th, "status %d", status)
		require.ErrorIs(t, err, backend.ErrThrottled)
		require.Equal(t, 7*time.Second, th.RetryAfter)
		require.ErrorContains(t, err, "ns/a")
	}
	s.ThrottleRetriable(1)
	err := b.Upload(ctx, "ns", "a", strings.NewReader("x"), 1)
	require.ErrorIs(t, err, backend.ErrThrottled)
	require.ErrorContains(t, err, "RetriableException")
	// Throttling is not a failover reason, and it passes: the next call works.
	require.NoError(t, b.Upload(ctx, "ns", "a", strings.NewReader("x"), 1))
}

func TestDroppedUpload(t *testing.T) {
	t.Parallel()
	s := webhdfstest.Start(t, webhdfstest.Options{})
	b := newBackend(t, config(s, "/r"))
	ctx := t.Context()
	old := []byte("the previous object")
	require.NoError(t, b.Upload(ctx, "ns", "obj", bytes.NewReader(old), int64(len(old))))

	data := bytes.Repeat([]byte("x"), 1<<20)
	for _, size := range []int64{int64(len(data)), -1} {
		s.DropUploadAfter(100 << 10)
		err := b.Upload(ctx, "ns", "obj", bytes.NewReader(data), size)
		require.Error(t, err, "size %d", size)
		require.ErrorContains(t, err, "ns/obj")
		// The previous object is intact and the partial temporary file is gone.
		got, ok := s.ReadFile("/r/ns/_objects/obj")
		require.True(t, ok)
		require.Equal(t, old, got)
		require.Empty(t, s.Files("/r/_tmp"))
	}
}

func TestSizeMismatchDeletesTemp(t *testing.T) {
	t.Parallel()
	s := webhdfstest.Start(t, webhdfstest.Options{})
	b := newBackend(t, config(s, "/r"))
	for _, size := range []int64{2, 4} {
		err := b.Upload(t.Context(), "ns", "obj", strings.NewReader("abc"), size)
		require.Error(t, err)
		require.Empty(t, s.Files("/r"), "size %d", size)
	}
}

func TestTruncatedDownload(t *testing.T) {
	t.Parallel()
	s := webhdfstest.Start(t, webhdfstest.Options{})
	b := newBackend(t, config(s, "/r"))
	data := bytes.Repeat([]byte("0123456789"), 10000)
	require.NoError(t, b.Upload(t.Context(), "ns", "obj", bytes.NewReader(data), int64(len(data))))
	s.TruncateNextOpen(5000)
	err := b.Download(t.Context(), "ns", "obj", io.Discard)
	require.Error(t, err)
	require.ErrorContains(t, err, "ns/obj")
	require.ErrorContains(t, err, "of 100000 bytes")

	// The fault was for one OPEN: the next download is whole.
	var buf bytes.Buffer
	require.NoError(t, b.Download(t.Context(), "ns", "obj", &buf))
	require.Equal(t, data, buf.Bytes())
}

func TestConfigValidate(t *testing.T) {
	t.Parallel()
	ok := webhdfs.Config{Namenodes: []string{"http://nn:9870"}, Root: "/k"}
	require.NoError(t, ok.Validate())
	for _, tc := range []struct {
		name string
		mod  func(*webhdfs.Config)
		want string
	}{
		{"no namenodes", func(c *webhdfs.Config) { c.Namenodes = nil }, "namenodes: at least one"},
		{"bad scheme", func(c *webhdfs.Config) { c.Namenodes = []string{"ftp://nn"} }, "namenodes[0]:"},
		{"no host", func(c *webhdfs.Config) { c.Namenodes = []string{"http://"} }, "namenodes[0]:"},
		{"user info", func(c *webhdfs.Config) { c.Namenodes = []string{"http://u:secret@nn"} }, "namenodes[0]:"},
		{"query", func(c *webhdfs.Config) { c.Namenodes = []string{"http://nn?delegation=x"} }, "no user info, query"},
		{"webhdfs path", func(c *webhdfs.Config) { c.Namenodes = []string{"http://nn/webhdfs/v1"} }, "/webhdfs/v1 is appended"},
		{"second namenode", func(c *webhdfs.Config) { c.Namenodes = append(c.Namenodes, "nn2:9870") }, "namenodes[1]:"},
		{"no root", func(c *webhdfs.Config) { c.Root = "" }, "root: must be set"},
		{"relative root", func(c *webhdfs.Config) { c.Root = "k" }, "root:"},
		{"dotdot root", func(c *webhdfs.Config) { c.Root = "/k/../x" }, "root:"},
		{"trailing slash", func(c *webhdfs.Config) { c.Root = "/k/" }, "root:"},
		{"odd byte", func(c *webhdfs.Config) { c.Root = "/k?x" }, "root:"},
		{"user name", func(c *webhdfs.Config) { c.UserName = "a&b" }, "user_name:"},
		{"both tokens", func(c *webhdfs.Config) { c.DelegationTokenFile, c.DelegationTokenEnv = "/t", "T" }, "delegation_token_env:"},
		{"relative token file", func(c *webhdfs.Config) { c.DelegationTokenFile = "token" }, "delegation_token_file: \"token\" must be an absolute path"},
		{"user and token", func(c *webhdfs.Config) { c.UserName, c.DelegationTokenFile = "u", "/t" }, "user_name:"},
		{"negative timeout", func(c *webhdfs.Config) { c.Timeout = -time.Second }, "timeout:"},
	} {
		c := ok
		c.Namenodes = append([]string(nil), ok.Namenodes...)
		tc.mod(&c)
		err := c.Validate()
		require.Error(t, err, tc.name)
		require.ErrorContains(t, err, tc.want, tc.name)
		require.NotContains(t, err.Error(), "secret", tc.name)
	}

	// New reads the token and names the key when it cannot.
	c := ok
	c.DelegationTokenFile = filepath.Join(t.TempDir(), "missing")
	_, err := webhdfs.New(c)
	require.ErrorContains(t, err, "delegation_token_file:")
	empty := filepath.Join(t.TempDir(), "empty")
	require.NoError(t, os.WriteFile(empty, []byte("\n"), 0o600))
	c.DelegationTokenFile = empty
	_, err = webhdfs.New(c)
	require.ErrorContains(t, err, "is empty")
	c.DelegationTokenFile = ""
	c.DelegationTokenEnv = "KRAKENCTL_TEST_WEBHDFS_UNSET_VARIABLE"
	_, err = webhdfs.New(c)
	require.ErrorContains(t, err, "delegation_token_env: KRAKENCTL_TEST_WEBHDFS_UNSET_VARIABLE is unset")
	require.NotErrorIs(t, err, backend.ErrNotFound)
}

// TestBareStatuses: answers without a RemoteException (a proxy, a wrong URL) are mapped by
// status, and a bare 404 is not taken for a missing object: it more likely means the URL is not
// a WebHDFS endpoint, and "not found" would be cached by the origin.
func TestBareStatuses(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		status int
		check  func(t *testing.T, err error)
	}{
		{http.StatusUnauthorized, func(t *testing.T, err error) { require.ErrorIs(t, err, webhdfs.ErrAccessDenied) }},
		{http.StatusForbidden, func(t *testing.T, err error) { require.ErrorIs(t, err, webhdfs.ErrAccessDenied) }},
		{http.StatusNotFound, func(t *testing.T, err error) {
			require.NotErrorIs(t, err, backend.ErrNotFound)
			var re *webhdfs.RemoteError
			require.ErrorAs(t, err, &re)
			require.Equal(t, http.StatusNotFound, re.Status)
		}},
		{http.StatusServiceUnavailable, func(t *testing.T, err error) { require.ErrorIs(t, err, backend.ErrThrottled) }},
	} {
		srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
			http.Error(w, "no", tc.status)
		}))
		b := newBackend(t, webhdfs.Config{Namenodes: []string{srv.URL}, Root: "/r"})
		_, err := b.Stat(t.Context(), "ns", "a")
		require.Error(t, err, "status %d", tc.status)
		require.ErrorContains(t, err, "ns/a")
		tc.check(t, err)
		require.NoError(t, b.Close())
		srv.Close()
	}
}
