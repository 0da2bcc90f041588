package webhdfstest_test

import (
	"encoding/json"
	"io"
	"net/http"
	"net/url"
	"strings"
	"testing"

	"github.com/stretchr/testify/require"
	"go.uber.org/goleak"

	"github.com/krakenctl/krakenctl/backend/webhdfs/webhdfstest"
)

func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m)
}

// client speaks raw WebHDFS, following no redirects, so each step of the spec is visible.
type client struct {
	t  *testing.T
	nn string
	hc *http.Client
}

func newClient(t *testing.T, s *webhdfstest.Server) *client {
	hc := &http.Client{
		Transport:     &http.Transport{DisableKeepAlives: true},
		CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse },
	}
	return &client{t: t, nn: s.NamenodeURLs()[0], hc: hc}
}

type answer struct {
	status int
	header http.Header
	body   string
}

func (c *client) do(method, rawURL, body string) answer {
	c.t.Helper()
	var r io.Reader
	if body != "" {
		r = strings.NewReader(body)
	}
	req, err := http.NewRequestWithContext(c.t.Context(), method, rawURL, r)
	require.NoError(c.t, err)
	resp, err := c.hc.Do(req)
	require.NoError(c.t, err)
	defer func() { _ = resp.Body.Close() }()
	data, err := io.ReadAll(resp.Body)
	require.NoError(c.t, err)
	return answer{resp.StatusCode, resp.Header, string(data)}
}

func (c *client) op(method, path, query string) answer {
	c.t.Helper()
	return c.do(method, c.nn+"/webhdfs/v1"+path+"?"+query, "")
}

// remote decodes a RemoteException answer.
func remote(t *testing.T, a answer) (exception, javaClass, message string) {
	t.Helper()
	var doc struct {
		RemoteException struct{ Exception, JavaClassName, Message string }
	}
	require.NoError(t, json.Unmarshal([]byte(a.body), &doc), a.body)
	return doc.RemoteException.Exception, doc.RemoteException.JavaClassName, doc.RemoteException.Message
}

func TestCreateAndOpenRedirect(t *testing.T) {
	t.Parallel()
	s := webhdfstest.Start(t, webhdfstest.Options{})
	c := newClient(t, s)

	a := c.op(http.MethodPut, "/d/f", "op=CREATE&user.name=u&overwrite=false")
	require.Equal(t, http.StatusTemporaryRedirect, a.status)
	loc, err := url.Parse(a.header.Get("Location"))
	require.NoError(t, err)
	require.Equal(t, strings.TrimPrefix(s.DatanodeURL(), "http://"), loc.Host, "CREATE redirects to the datanode")
	require.Equal(t, "/webhdfs/v1/d/f", loc.Path)
	require.Equal(t, "CREATE", loc.Query().Get("op"))
	require.Equal(t, "u", loc.Query().Get("user.name"))
	require.NotEmpty(t, loc.Query().Get("namenoderpcaddress"))
	_, exists := s.ReadFile("/d/f")
	require.False(t, exists, "the namenode step creates nothing")

	a = c.do(http.MethodPut, loc.String(), "hello, hdfs")
	require.Equal(t, http.StatusCreated, a.status)
	require.True(t, strings.HasPrefix(a.header.Get("Location"), "webhdfs://"), a.header.Get("Location"))

	a = c.op(http.MethodGet, "/d/f", "op=GETFILESTATUS")
	require.Equal(t, http.StatusOK, a.status)
	var st struct{ FileStatus map[string]any }
	require.NoError(t, json.Unmarshal([]byte(a.body), &st))
	require.Equal(t, "FILE", st.FileStatus["type"])
	require.EqualValues(t, 11, st.FileStatus["length"])

	// overwrite=false (the default) refuses an existing file.
	for _, q := range []string{"op=CREATE&overwrite=false", "op=create"} {
		a = c.op(http.MethodPut, "/d/f", q)
		require.Equal(t, http.StatusForbidden, a.status)
		exc, class, _ := remote(t, a)
		require.Equal(t, "FileAlreadyExistsException", exc)
		require.Equal(t, "org.apache.hadoop.fs.FileAlreadyExistsException", class)
	}

	// OPEN with offset and length, through the redirect.
	a = c.op(http.MethodGet, "/d/f", "op=OPEN&offset=7&length=2")
	require.Equal(t, http.StatusTemporaryRedirect, a.status)
	a = c.do(http.MethodGet, a.header.Get("Location"), "")
	require.Equal(t, http.StatusOK, a.status)
	require.Equal(t, "hd", a.body)
	require.Equal(t, "2", a.header.Get("Content-Length"))

	a = c.op(http.MethodGet, "/d/missing", "op=OPEN")
	require.Equal(t, http.StatusNotFound, a.status)
	exc, class, msg := remote(t, a)
	require.Equal(t, "FileNotFoundException", exc)
	require.Equal(t, "java.io.FileNotFoundException", class)
	require.Contains(t, msg, "/d/missing")
}

func TestNamespaceOps(t *testing.T) {
	t.Parallel()
	s := webhdfstest.Start(t, webhdfstest.Options{})
	c := newClient(t, s)
	s.Put("/a/x", []byte("1"))
	s.Put("/a/sub/y", []byte("22"))
	s.Put("/b/x", []byte("333"))

	a := c.op(http.MethodGet, "/a", "op=LISTSTATUS")
	require.Equal(t, http.StatusOK, a.status)
	var ls struct {
		FileStatuses struct{ FileStatus []map[string]any }
	}
	require.NoError(t, json.Unmarshal([]byte(a.body), &ls))
	require.Len(t, ls.FileStatuses.FileStatus, 2)
	require.Equal(t, "sub", ls.FileStatuses.FileStatus[0]["pathSuffix"])
	require.Equal(t, "DIRECTORY", ls.FileStatuses.FileStatus[0]["type"])
	require.Equal(t, "x", ls.FileStatuses.FileStatus[1]["pathSuffix"])
	require.Equal(t, http.StatusNotFound, c.op(http.MethodGet, "/nope", "op=LISTSTATUS").status)

	// RENAME without options: FileSystem.rename, false on an existing file, into a directory.
	a = c.op(http.MethodPut, "/a/x", "op=RENAME&destination=/b/x")
	require.JSONEq(t, `{"boolean":false}`, a.body)
	a = c.op(http.MethodPut, "/a/x", "op=RENAME&destination=/a/sub")
	require.JSONEq(t, `{"boolean":true}`, a.body)
	_, ok := s.ReadFile("/a/sub/x")
	require.True(t, ok, "moved into the directory")

	// renameoptions=OVERWRITE: rename2 replaces a file, and needs the destination's parent.
	a = c.op(http.MethodPut, "/a/sub/x", "op=RENAME&destination=/b/x&renameoptions=NONE")
	require.Equal(t, http.StatusForbidden, a.status, "rename2 without OVERWRITE refuses an existing file")
	exc, _, _ := remote(t, a)
	require.Equal(t, "FileAlreadyExistsException", exc)
	a = c.op(http.MethodPut, "/a/sub/x", "op=RENAME&destination=/b/x&renameoptions=OVERWRITE")
	require.Equal(t, http.StatusOK, a.status)
	data, _ := s.ReadFile("/b/x")
	require.Equal(t, "1", string(data))
	a = c.op(http.MethodPut, "/b/x", "op=RENAME&destination=/c/x&renameoptions=OVERWRITE")
	require.Equal(t, http.StatusNotFound, a.status)
	exc, _, _ = remote(t, a)
	require.Equal(t, "FileNotFoundException", exc)

	// DELETE: false when missing, refused on a non-empty directory unless recursive.
	require.JSONEq(t, `{"boolean":false}`, c.op(http.MethodDelete, "/zz", "op=DELETE").body)
	a = c.op(http.MethodDelete, "/a", "op=DELETE")
	require.Equal(t, http.StatusForbidden, a.status)
	exc, _, _ = remote(t, a)
	require.Equal(t, "PathIsNotEmptyDirectoryException", exc)
	require.JSONEq(t, `{"boolean":true}`, c.op(http.MethodDelete, "/a", "op=DELETE&recursive=true").body)
	require.Equal(t, []string{"/b/x"}, s.Files("/"))

	require.JSONEq(t, `{"boolean":true}`, c.op(http.MethodPut, "/m/n", "op=MKDIRS").body)

	// An operation with the wrong method is an IllegalArgumentException.
	a = c.op(http.MethodGet, "/b/x", "op=DELETE")
	require.Equal(t, http.StatusBadRequest, a.status)
	exc, _, _ = remote(t, a)
	require.Equal(t, "IllegalArgumentException", exc)
}

func TestUsersStandbyAndThrottle(t *testing.T) {
	t.Parallel()
	s := webhdfstest.Start(t, webhdfstest.Options{
		Namenodes: 2,
		Users:     map[string]webhdfstest.Access{"w": webhdfstest.ReadWrite, "r": webhdfstest.Read},
		Tokens:    map[string]string{"tok": "w"},
	})
	c := newClient(t, s)
	require.Equal(t, http.StatusOK, c.op(http.MethodPut, "/d", "op=MKDIRS&user.name=w").status)
	require.Equal(t, http.StatusOK, c.op(http.MethodPut, "/e", "op=MKDIRS&delegation=tok").status)
	require.Equal(t, http.StatusOK, c.op(http.MethodGet, "/d", "op=GETFILESTATUS&user.name=r").status)
	a := c.op(http.MethodPut, "/f", "op=MKDIRS&user.name=r")
	require.Equal(t, http.StatusForbidden, a.status)
	exc, _, msg := remote(t, a)
	require.Equal(t, "AccessControlException", exc)
	require.Contains(t, msg, "user=r, access=WRITE")
	a = c.op(http.MethodGet, "/d", "op=GETFILESTATUS&delegation=bad")
	exc, _, _ = remote(t, a)
	require.Equal(t, "InvalidToken", exc)

	s.SetStandby(0, true)
	a = c.op(http.MethodGet, "/d", "op=GETFILESTATUS&user.name=r")
	require.Equal(t, http.StatusForbidden, a.status)
	exc, class, _ := remote(t, a)
	require.Equal(t, "StandbyException", exc)
	require.Equal(t, "org.apache.hadoop.ipc.StandbyException", class)
	c.nn = s.NamenodeURLs()[1]
	require.Equal(t, http.StatusOK, c.op(http.MethodGet, "/d", "op=GETFILESTATUS&user.name=r").status, "the other namenode shares the tree")

	s.Throttle(1, http.StatusTooManyRequests, 3e9)
	a = c.op(http.MethodGet, "/d", "op=GETFILESTATUS&user.name=r")
	require.Equal(t, http.StatusTooManyRequests, a.status)
	require.Equal(t, "3", a.header.Get("Retry-After"))
	s.ThrottleRetriable(1)
	exc, _, _ = remote(t, c.op(http.MethodGet, "/d", "op=GETFILESTATUS&user.name=r"))
	require.Equal(t, "RetriableException", exc)
	require.Equal(t, http.StatusOK, c.op(http.MethodGet, "/d", "op=GETFILESTATUS&user.name=r").status)
}
