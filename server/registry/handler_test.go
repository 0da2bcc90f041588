package registry_test

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"strconv"
	"strings"
	"sync/atomic"
	"testing"

	"github.com/opencontainers/go-digest"
	ocispec "github.com/opencontainers/image-spec/specs-go/v1"
	"github.com/stretchr/testify/require"

	"github.com/krakenctl/krakenctl/server/registry"
	"github.com/krakenctl/krakenctl/server/registry/errcode"
	"github.com/krakenctl/krakenctl/server/registry/registrytest"
)

// env is a handler over registrytest behind an httptest server.
type env struct {
	t   *testing.T
	reg *registrytest.Registry
	srv *httptest.Server
}

func newEnv(t *testing.T, readOnly bool, opts registry.HandlerOptions) *env {
	t.Helper()
	reg := registrytest.New()
	var w registry.Writer = reg
	if readOnly {
		w = nil
	}
	srv := httptest.NewServer(registry.NewHandler(reg, w, opts))
	t.Cleanup(srv.Close)
	return &env{t: t, reg: reg, srv: srv}
}

// reply is an answer whose body has been read and closed.
type reply struct {
	StatusCode    int
	Header        http.Header
	ContentLength int64
	Method        string // of the request
}

func replyOf(resp *http.Response) reply {
	return reply{StatusCode: resp.StatusCode, Header: resp.Header, ContentLength: resp.ContentLength, Method: resp.Request.Method}
}

// do sends a request and returns the answer and its body; hdr holds header name/value pairs.
func (e *env) do(method, path string, body []byte, hdr ...string) (reply, []byte) {
	e.t.Helper()
	var rd io.Reader
	if body != nil {
		rd = bytes.NewReader(body)
	}
	req, err := http.NewRequestWithContext(e.t.Context(), method, e.srv.URL+path, rd)
	require.NoError(e.t, err)
	for i := 0; i+1 < len(hdr); i += 2 {
		req.Header.Set(hdr[i], hdr[i+1])
	}
	resp, err := e.srv.Client().Do(req)
	require.NoError(e.t, err)
	b, err := io.ReadAll(resp.Body)
	require.NoError(e.t, err)
	require.NoError(e.t, resp.Body.Close())
	require.Equal(e.t, "registry/2.0", resp.Header.Get("Docker-Distribution-API-Version"), "%s %s", method, path)
	return replyOf(resp), b
}

// requireError checks an error answer: status, JSON body with code (no body for HEAD).
func requireError(t *testing.T, resp reply, body []byte, status int, code errcode.Code) errcode.BodyError {
	t.Helper()
	require.Equal(t, status, resp.StatusCode, "body: %s", body)
	require.Equal(t, "application/json", resp.Header.Get("Content-Type"))
	if resp.Method == http.MethodHead {
		require.Empty(t, body)
		return errcode.BodyError{}
	}
	var b errcode.Body
	require.NoError(t, json.Unmarshal(body, &b), "body: %s", body)
	require.Len(t, b.Errors, 1)
	require.Equal(t, code, b.Errors[0].Code, "message: %s", b.Errors[0].Message)
	require.NotEmpty(t, b.Errors[0].Message)
	return b.Errors[0]
}

// image builds a manifest over a config and one layer pushed to repo.
func (e *env) image(repo string, extra string) (body []byte, config, layer digest.Digest) {
	cfg := []byte(`{"architecture":"amd64","os":"linux"}`)
	lay := []byte("layer of " + repo + extra)
	config = e.reg.PushBlob(repo, digest.SHA256, cfg)
	layer = e.reg.PushBlob(repo, digest.SHA256, lay)
	body = fmt.Appendf(nil, `{"schemaVersion":2,"mediaType":%q,"config":{"mediaType":%q,"digest":%q,"size":%d},"layers":[{"mediaType":%q,"digest":%q,"size":%d}]%s}`,
		ocispec.MediaTypeImageManifest, ocispec.MediaTypeImageConfig, config, len(cfg), ocispec.MediaTypeImageLayerGzip, layer, len(lay), extra)
	return body, config, layer
}

func TestPing(t *testing.T) {
	t.Parallel()
	e := newEnv(t, true, registry.HandlerOptions{})
	for _, p := range []string{"/v2/", "/v2", "/v2/?ns=docker.io"} {
		resp, body := e.do("GET", p, nil)
		require.Equal(t, http.StatusOK, resp.StatusCode, p)
		require.JSONEq(t, `{}`, string(body))
	}
	resp, body := e.do("HEAD", "/v2/", nil)
	require.Equal(t, http.StatusOK, resp.StatusCode)
	require.Empty(t, body)
}

func TestUnknownRoutes(t *testing.T) {
	t.Parallel()
	e := newEnv(t, false, registry.HandlerOptions{})
	for _, p := range []string{"/", "/v1/", "/v3/x/manifests/latest", "/v2x/", "/v2/foo", "/v2/foo/bar", "/v2/manifests/latest", "/v2/foo/tags/list/", "/v2/foo/blob/sha256:x"} {
		resp, body := e.do("GET", p, nil)
		requireError(t, resp, body, http.StatusNotFound, errcode.CodeUnsupported)
	}
}

func TestMethodNotAllowed(t *testing.T) {
	t.Parallel()
	e := newEnv(t, false, registry.HandlerOptions{})
	for _, c := range []struct{ method, path string }{
		{"POST", "/v2/"},
		{"POST", "/v2/foo/manifests/latest"},
		{"PATCH", "/v2/foo/blobs/sha256:" + strings.Repeat("a", 64)},
		{"GET", "/v2/foo/blobs/uploads/"},
		{"POST", "/v2/foo/blobs/uploads/abc"},
		{"DELETE", "/v2/foo/tags/list"},
		{"PUT", "/v2/_catalog"},
	} {
		resp, body := e.do(c.method, c.path, nil)
		requireError(t, resp, body, http.StatusMethodNotAllowed, errcode.CodeUnsupported)
		require.NotEmpty(t, resp.Header.Get("Allow"), c.path)
		require.NotContains(t, resp.Header.Get("Allow"), c.method)
	}
}

func TestReadOnly(t *testing.T) {
	t.Parallel()
	e := newEnv(t, true, registry.HandlerOptions{})
	body, config, _ := e.image("ro", "")
	_, err := e.reg.PushManifest("ro", "", body, "v1")
	require.NoError(t, err)
	dig := digest.FromBytes(body)
	for _, c := range []struct {
		method, path string
		body         []byte
	}{
		{"PUT", "/v2/ro/manifests/v2", body},
		{"DELETE", "/v2/ro/manifests/v1", nil},
		{"DELETE", "/v2/ro/manifests/" + dig.String(), nil},
		{"DELETE", "/v2/ro/blobs/" + config.String(), nil},
		{"POST", "/v2/ro/blobs/uploads/", nil},
		{"POST", "/v2/ro/blobs/uploads/?digest=" + config.String(), []byte("x")},
		{"GET", "/v2/ro/blobs/uploads/abc", nil},
		{"PATCH", "/v2/ro/blobs/uploads/abc", []byte("x")},
		{"PUT", "/v2/ro/blobs/uploads/abc?digest=" + config.String(), nil},
		{"DELETE", "/v2/ro/blobs/uploads/abc", nil},
	} {
		resp, b := e.do(c.method, c.path, c.body)
		be := requireError(t, resp, b, http.StatusMethodNotAllowed, errcode.CodeUnsupported)
		require.Contains(t, be.Message, "read-only", c.path)
		require.NotContains(t, resp.Header.Get("Allow"), "PUT")
	}
	// Nothing changed, and reads work.
	resp, b := e.do("GET", "/v2/ro/manifests/v1", nil)
	require.Equal(t, http.StatusOK, resp.StatusCode)
	require.Equal(t, body, b)
	resp, _ = e.do("GET", "/v2/ro/blobs/"+config.String(), nil)
	require.Equal(t, http.StatusOK, resp.StatusCode)
	require.Zero(t, e.reg.Uploads())
}

func TestNameInvalid(t *testing.T) {
	t.Parallel()
	e := newEnv(t, false, registry.HandlerOptions{})
	long := strings.Repeat("a", registry.MaxNameLength+1)
	for _, name := range []string{"Foo", "a//b", "-a", "a-", "a_", "a___b", "a/.b", "a..b", "a:b", long, "a/" + strings.Repeat("b", registry.MaxNameLength-1)} {
		for _, c := range []struct{ method, path string }{
			{"GET", "/v2/" + name + "/manifests/latest"},
			{"GET", "/v2/" + name + "/tags/list"},
			{"GET", "/v2/" + name + "/blobs/sha256:" + strings.Repeat("a", 64)},
			{"POST", "/v2/" + name + "/blobs/uploads/"},
			{"GET", "/v2/" + name + "/referrers/sha256:" + strings.Repeat("a", 64)},
		} {
			resp, body := e.do(c.method, c.path, nil)
			requireError(t, resp, body, http.StatusBadRequest, errcode.CodeNameInvalid)
		}
	}
	require.Zero(t, e.reg.Uploads())
	// Valid names with separators and nesting.
	for _, name := range []string{"a", "a0/b-c/d.e", "a__b", "a---b", "library/ubuntu", "x/" + strings.Repeat("b", registry.MaxNameLength-2)} {
		resp, _ := e.do("GET", "/v2/"+name+"/tags/list", nil)
		require.Equal(t, http.StatusOK, resp.StatusCode, name)
	}
}

func TestBlobGetHead(t *testing.T) {
	t.Parallel()
	e := newEnv(t, false, registry.HandlerOptions{})
	data := make([]byte, 2048)
	for i := range data {
		data[i] = byte(i * 7)
	}
	d := e.reg.PushBlob("r", digest.SHA256, data)
	d512 := e.reg.PushBlob("r", digest.SHA512, data)
	empty := e.reg.PushBlob("r", digest.SHA256, nil)

	for _, dd := range []digest.Digest{d, d512} {
		resp, body := e.do("GET", "/v2/r/blobs/"+dd.String()+"?ns=docker.io", nil)
		require.Equal(t, http.StatusOK, resp.StatusCode)
		require.Equal(t, data, body)
		require.Equal(t, dd.String(), resp.Header.Get("Docker-Content-Digest"))
		require.Equal(t, "2048", resp.Header.Get("Content-Length"))
		require.Equal(t, "bytes", resp.Header.Get("Accept-Ranges"))
		require.Equal(t, "application/octet-stream", resp.Header.Get("Content-Type"))

		resp, body = e.do("HEAD", "/v2/r/blobs/"+dd.String(), nil)
		require.Equal(t, http.StatusOK, resp.StatusCode)
		require.Empty(t, body)
		require.Equal(t, int64(2048), resp.ContentLength)
		require.Equal(t, dd.String(), resp.Header.Get("Docker-Content-Digest"))
	}
	// The sha512 digest of a blob pushed as sha256 is not a name it has.
	resp, body := e.do("GET", "/v2/r/blobs/"+digest.SHA512.FromBytes(nil).String(), nil)
	requireError(t, resp, body, http.StatusNotFound, errcode.CodeBlobUnknown)

	resp, body = e.do("GET", "/v2/r/blobs/"+empty.String(), nil)
	require.Equal(t, http.StatusOK, resp.StatusCode)
	require.Empty(t, body)
	require.Equal(t, "0", resp.Header.Get("Content-Length"))

	for _, c := range []struct {
		path   string
		status int
		code   errcode.Code
	}{
		{"/v2/r/blobs/" + digest.FromString("nope").String(), http.StatusNotFound, errcode.CodeBlobUnknown},
		{"/v2/other/blobs/" + d.String(), http.StatusNotFound, errcode.CodeBlobUnknown},
		{"/v2/r/blobs/sha256:abc", http.StatusBadRequest, errcode.CodeDigestInvalid},
		{"/v2/r/blobs/" + d.Encoded(), http.StatusBadRequest, errcode.CodeDigestInvalid},
		{"/v2/r/blobs/md5:" + strings.Repeat("a", 32), http.StatusBadRequest, errcode.CodeUnsupported},
	} {
		for _, m := range []string{"GET", "HEAD"} {
			resp, body := e.do(m, c.path, nil)
			requireError(t, resp, body, c.status, c.code)
		}
	}
}

func TestBlobRange(t *testing.T) {
	t.Parallel()
	e := newEnv(t, false, registry.HandlerOptions{})
	data := make([]byte, 2048)
	for i := range data {
		data[i] = byte(i)
	}
	d := e.reg.PushBlob("r", digest.SHA256, data)
	empty := e.reg.PushBlob("r", digest.SHA256, nil)
	for _, c := range []struct {
		rng        string
		status     int
		start, end int // inclusive, for 206
	}{
		{"bytes=500-1499", http.StatusPartialContent, 500, 1499},
		{"bytes=500-", http.StatusPartialContent, 500, 2047},
		{"bytes=-500", http.StatusPartialContent, 1548, 2047},
		{"bytes=-5000", http.StatusPartialContent, 0, 2047},
		{"bytes=2000-5000", http.StatusPartialContent, 2000, 2047},
		{"bytes=0-0", http.StatusPartialContent, 0, 0},
		{"bytes=2047-2047", http.StatusPartialContent, 2047, 2047},
		{"bytes = 10-19", http.StatusPartialContent, 10, 19},
		{"bytes=500-0", http.StatusRequestedRangeNotSatisfiable, 0, 0},
		{"bytes=5000-10000", http.StatusRequestedRangeNotSatisfiable, 0, 0},
		{"bytes=2048-", http.StatusRequestedRangeNotSatisfiable, 0, 0},
		{"bytes=-0", http.StatusRequestedRangeNotSatisfiable, 0, 0},
		{"bytes=abc", http.StatusRequestedRangeNotSatisfiable, 0, 0},
		{"bytes=1-x", http.StatusRequestedRangeNotSatisfiable, 0, 0},
		{"bytes=+1-2", http.StatusRequestedRangeNotSatisfiable, 0, 0},
		{"bytes", http.StatusRequestedRangeNotSatisfiable, 0, 0},
		{"items=0-1", http.StatusOK, 0, 2047},
		{"bytes=0-1,5-6", http.StatusOK, 0, 2047},
	} {
		resp, body := e.do("GET", "/v2/r/blobs/"+d.String(), nil, "Range", c.rng)
		require.Equal(t, c.status, resp.StatusCode, c.rng)
		switch c.status {
		case http.StatusPartialContent:
			require.Equal(t, data[c.start:c.end+1], body, c.rng)
			require.Equal(t, fmt.Sprintf("bytes %d-%d/2048", c.start, c.end), resp.Header.Get("Content-Range"), c.rng)
			require.Equal(t, strconv.Itoa(c.end-c.start+1), resp.Header.Get("Content-Length"), c.rng)
			require.Equal(t, d.String(), resp.Header.Get("Docker-Content-Digest"))
		case http.StatusOK:
			require.Equal(t, data, body, c.rng)
		default:
			requireError(t, resp, body, c.status, errcode.CodeRangeInvalid)
			require.Equal(t, "bytes */2048", resp.Header.Get("Content-Range"), c.rng)
		}
	}
	resp, body := e.do("HEAD", "/v2/r/blobs/"+d.String(), nil, "Range", "bytes=10-19")
	require.Equal(t, http.StatusPartialContent, resp.StatusCode)
	require.Empty(t, body)
	require.Equal(t, "bytes 10-19/2048", resp.Header.Get("Content-Range"))
	require.Equal(t, int64(10), resp.ContentLength)

	// An empty blob is served whole whatever the Range: no range of it can be written.
	resp, body = e.do("GET", "/v2/r/blobs/"+empty.String(), nil, "Range", "bytes=0-")
	require.Equal(t, http.StatusOK, resp.StatusCode)
	require.Empty(t, body)
	require.Empty(t, resp.Header.Get("Content-Range"))
}

func TestBlobDelete(t *testing.T) {
	t.Parallel()
	e := newEnv(t, false, registry.HandlerOptions{})
	d := e.reg.PushBlob("r", digest.SHA256, []byte("x"))
	e.reg.PushBlob("s", digest.SHA256, []byte("x"))
	resp, _ := e.do("DELETE", "/v2/r/blobs/"+d.String(), nil)
	require.Equal(t, http.StatusAccepted, resp.StatusCode)
	resp, body := e.do("HEAD", "/v2/r/blobs/"+d.String(), nil)
	requireError(t, resp, body, http.StatusNotFound, errcode.CodeBlobUnknown)
	resp, body = e.do("DELETE", "/v2/r/blobs/"+d.String(), nil)
	requireError(t, resp, body, http.StatusNotFound, errcode.CodeBlobUnknown)
	resp, body = e.do("DELETE", "/v2/r/blobs/sha256:zz", nil)
	requireError(t, resp, body, http.StatusBadRequest, errcode.CodeDigestInvalid)
	// The other repository's link is untouched.
	resp, body = e.do("GET", "/v2/s/blobs/"+d.String(), nil)
	require.Equal(t, http.StatusOK, resp.StatusCode)
	require.Equal(t, "x", string(body))
}

// startSession POSTs a new upload and returns its Location.
func (e *env) startSession(repo string) string {
	e.t.Helper()
	resp, body := e.do("POST", "/v2/"+repo+"/blobs/uploads/", nil)
	require.Equal(e.t, http.StatusAccepted, resp.StatusCode, "body: %s", body)
	loc := resp.Header.Get("Location")
	require.True(e.t, strings.HasPrefix(loc, "/v2/"+repo+"/blobs/uploads/"), loc)
	id := strings.TrimPrefix(loc, "/v2/"+repo+"/blobs/uploads/")
	require.NotEmpty(e.t, id)
	require.Equal(e.t, id, resp.Header.Get("Docker-Upload-UUID"))
	require.Equal(e.t, "0-0", resp.Header.Get("Range"))
	return loc
}

func TestChunkedUpload(t *testing.T) {
	t.Parallel()
	e := newEnv(t, false, registry.HandlerOptions{})
	data := []byte("0123456789abcdefghijklmnopqrstuvwxyz")
	d := digest.FromBytes(data)
	loc := e.startSession("r")
	id := strings.TrimPrefix(loc, "/v2/r/blobs/uploads/")

	resp, _ := e.do("PATCH", loc, data[:10], "Content-Range", "0-9", "Content-Type", "application/octet-stream")
	require.Equal(t, http.StatusAccepted, resp.StatusCode)
	require.Equal(t, "0-9", resp.Header.Get("Range"))
	require.Equal(t, loc, resp.Header.Get("Location"))
	require.Equal(t, id, resp.Header.Get("Docker-Upload-UUID"))

	// Out of order: ahead, and back to the start.
	for _, cr := range []string{"20-29", "0-9", "10-19x", "9-8"} {
		resp, body := e.do("PATCH", loc, data[:10], "Content-Range", cr)
		requireError(t, resp, body, http.StatusRequestedRangeNotSatisfiable, errcode.CodeRangeInvalid)
		require.Equal(t, "0-9", resp.Header.Get("Range"), cr)
		require.Equal(t, loc, resp.Header.Get("Location"), cr)
	}
	// Content-Length disagreeing with Content-Range.
	resp, body := e.do("PATCH", loc, data[10:15], "Content-Range", "10-19")
	requireError(t, resp, body, http.StatusBadRequest, errcode.CodeSizeInvalid)

	resp, body = e.do("GET", loc, nil)
	require.Equal(t, http.StatusNoContent, resp.StatusCode, "body: %s", body)
	require.Equal(t, "0-9", resp.Header.Get("Range"))
	require.Equal(t, loc, resp.Header.Get("Location"))
	require.Equal(t, id, resp.Header.Get("Docker-Upload-UUID"))

	// A streamed chunk (no Content-Range) goes at the end.
	resp, _ = e.do("PATCH", loc, data[10:20])
	require.Equal(t, http.StatusAccepted, resp.StatusCode)
	require.Equal(t, "0-19", resp.Header.Get("Range"))

	// PUT without a digest does not finish the session.
	resp, body = e.do("PUT", loc, nil)
	requireError(t, resp, body, http.StatusBadRequest, errcode.CodeDigestInvalid)
	resp, body = e.do("PUT", loc+"?digest=sha256:nothex", nil)
	requireError(t, resp, body, http.StatusBadRequest, errcode.CodeDigestInvalid)
	require.Equal(t, 1, e.reg.Uploads())

	// The last chunk with the PUT.
	resp, body = e.do("PUT", loc+"?digest="+d.String(), data[20:], "Content-Range", fmt.Sprintf("20-%d", len(data)-1))
	require.Equal(t, http.StatusCreated, resp.StatusCode, "body: %s", body)
	require.Equal(t, "/v2/r/blobs/"+d.String(), resp.Header.Get("Location"))
	require.Equal(t, d.String(), resp.Header.Get("Docker-Content-Digest"))
	resp, body = e.do("GET", resp.Header.Get("Location"), nil)
	require.Equal(t, http.StatusOK, resp.StatusCode)
	require.Equal(t, data, body)

	// The session is gone.
	for _, m := range []string{"GET", "PATCH", "PUT", "DELETE"} {
		resp, body := e.do(m, loc+"?digest="+d.String(), []byte("x"))
		requireError(t, resp, body, http.StatusNotFound, errcode.CodeBlobUploadUnknown)
	}
	require.Zero(t, e.reg.Uploads())
}

func TestStreamedUploadSHA512(t *testing.T) {
	t.Parallel()
	e := newEnv(t, false, registry.HandlerOptions{})
	data := bytes.Repeat([]byte("sha512 "), 1000)
	d := digest.SHA512.FromBytes(data)
	loc := e.startSession("r")
	// An unknown length (chunked transfer encoding).
	req, err := http.NewRequestWithContext(t.Context(), "PATCH", e.srv.URL+loc, io.MultiReader(bytes.NewReader(data)))
	require.NoError(t, err)
	patch, err := e.srv.Client().Do(req)
	require.NoError(t, err)
	_ = patch.Body.Close()
	require.Equal(t, http.StatusAccepted, patch.StatusCode)
	require.Equal(t, fmt.Sprintf("0-%d", len(data)-1), patch.Header.Get("Range"))
	resp, _ := e.do("PUT", loc+"?digest="+d.String(), nil)
	require.Equal(t, http.StatusCreated, resp.StatusCode)
	require.Equal(t, d.String(), resp.Header.Get("Docker-Content-Digest"))
	resp, body := e.do("GET", "/v2/r/blobs/"+d.String(), nil)
	require.Equal(t, http.StatusOK, resp.StatusCode)
	require.Equal(t, data, body)
	require.Equal(t, d.String(), resp.Header.Get("Docker-Content-Digest"))
}

func TestUploadBadDigest(t *testing.T) {
	t.Parallel()
	e := newEnv(t, false, registry.HandlerOptions{})
	data := []byte("some content")
	wrong := digest.FromString("other content")

	// Monolithic POST.
	resp, body := e.do("POST", "/v2/r/blobs/uploads/?digest="+wrong.String(), data)
	requireError(t, resp, body, http.StatusBadRequest, errcode.CodeDigestInvalid)
	resp, body = e.do("POST", "/v2/r/blobs/uploads/?digest=sha256:short", data)
	requireError(t, resp, body, http.StatusBadRequest, errcode.CodeDigestInvalid)
	// POST then PUT.
	loc := e.startSession("r")
	resp, body = e.do("PUT", loc+"?digest="+wrong.String(), data)
	requireError(t, resp, body, http.StatusBadRequest, errcode.CodeDigestInvalid)
	// A sha512 digest of the wrong content.
	loc = e.startSession("r")
	resp, body = e.do("PUT", loc+"?digest="+digest.SHA512.FromString("x").String(), data)
	requireError(t, resp, body, http.StatusBadRequest, errcode.CodeDigestInvalid)

	require.Zero(t, e.reg.Uploads())
	require.Empty(t, e.reg.Repositories(), "nothing was stored")
}

func TestMonolithicUpload(t *testing.T) {
	t.Parallel()
	e := newEnv(t, false, registry.HandlerOptions{})
	for _, data := range [][]byte{[]byte("monolithic"), {}} {
		d := digest.FromBytes(data)
		resp, body := e.do("POST", "/v2/r/blobs/uploads/?digest="+d.String(), data, "Content-Type", "application/octet-stream")
		require.Equal(t, http.StatusCreated, resp.StatusCode, "body: %s", body)
		require.Equal(t, "/v2/r/blobs/"+d.String(), resp.Header.Get("Location"))
		require.Equal(t, d.String(), resp.Header.Get("Docker-Content-Digest"))
		resp, body = e.do("GET", "/v2/r/blobs/"+d.String(), nil)
		require.Equal(t, http.StatusOK, resp.StatusCode)
		require.Equal(t, data, body)
	}
	// POST then a PUT with the whole blob.
	data := []byte("post then put")
	d := digest.FromBytes(data)
	loc := e.startSession("r")
	resp, body := e.do("PUT", loc+"?digest="+d.String(), data)
	require.Equal(t, http.StatusCreated, resp.StatusCode, "body: %s", body)
	require.Zero(t, e.reg.Uploads())
}

func TestUploadCancelAndUnknown(t *testing.T) {
	t.Parallel()
	e := newEnv(t, false, registry.HandlerOptions{})
	loc := e.startSession("r")
	resp, _ := e.do("PATCH", loc, []byte("abc"))
	require.Equal(t, http.StatusAccepted, resp.StatusCode)
	// The session belongs to r only.
	other := strings.Replace(loc, "/v2/r/", "/v2/s/", 1)
	resp, body := e.do("GET", other, nil)
	requireError(t, resp, body, http.StatusNotFound, errcode.CodeBlobUploadUnknown)
	resp, body = e.do("DELETE", other, nil)
	requireError(t, resp, body, http.StatusNotFound, errcode.CodeBlobUploadUnknown)

	resp, _ = e.do("DELETE", loc, nil)
	require.Equal(t, http.StatusNoContent, resp.StatusCode)
	resp, body = e.do("GET", loc, nil)
	requireError(t, resp, body, http.StatusNotFound, errcode.CodeBlobUploadUnknown)
	resp, body = e.do("DELETE", loc, nil)
	requireError(t, resp, body, http.StatusNotFound, errcode.CodeBlobUploadUnknown)

	for _, id := range []string{"nope", "a%20b", "a%3Fb", strings.Repeat("a", 300)} {
		resp, body := e.do("PATCH", "/v2/r/blobs/uploads/"+id, []byte("x"))
		requireError(t, resp, body, http.StatusNotFound, errcode.CodeBlobUploadUnknown)
	}
	require.Zero(t, e.reg.Uploads())
}

func TestMount(t *testing.T) {
	t.Parallel()
	e := newEnv(t, false, registry.HandlerOptions{})
	d := e.reg.PushBlob("src", digest.SHA256, []byte("mounted"))
	d512 := e.reg.PushBlob("src", digest.SHA512, []byte("mounted"))

	for _, c := range []struct{ dst, query string }{
		{"dst", "?mount=" + d.String() + "&from=src"},
		{"dst2", "?mount=" + d.String()},
		{"dst3", "?mount=" + d512.String() + "&from=src"},
	} {
		resp, body := e.do("POST", "/v2/"+c.dst+"/blobs/uploads/"+c.query, nil)
		require.Equal(t, http.StatusCreated, resp.StatusCode, "body: %s", body)
		mounted := strings.TrimPrefix(c.query, "?mount=")
		mounted, _, _ = strings.Cut(mounted, "&")
		require.Equal(t, "/v2/"+c.dst+"/blobs/"+mounted, resp.Header.Get("Location"))
		require.Equal(t, mounted, resp.Header.Get("Docker-Content-Digest"))
		resp, body = e.do("GET", resp.Header.Get("Location"), nil)
		require.Equal(t, http.StatusOK, resp.StatusCode)
		require.Equal(t, "mounted", string(body))
	}
	// Mounts that cannot happen fall back to a new session.
	for _, q := range []string{
		"?mount=" + digest.FromString("missing").String() + "&from=src",
		"?mount=" + d.String() + "&from=empty",
		"?mount=" + d.String() + "&from=Bad..Name",
		"?mount=sha256:bad&from=src",
	} {
		resp, body := e.do("POST", "/v2/dst4/blobs/uploads/"+q, nil)
		require.Equal(t, http.StatusAccepted, resp.StatusCode, "%s: %s", q, body)
		require.Contains(t, resp.Header.Get("Location"), "/v2/dst4/blobs/uploads/")
	}
	resp, body := e.do("HEAD", "/v2/dst4/blobs/"+d.String(), nil)
	requireError(t, resp, body, http.StatusNotFound, errcode.CodeBlobUnknown)
}

func TestUploadShortBody(t *testing.T) {
	t.Parallel()
	reg := registrytest.New()
	h := registry.NewHandler(reg, reg, registry.HandlerOptions{})
	id, err := reg.StartUpload(t.Context(), "r")
	require.NoError(t, err)
	// A body that ends before its Content-Length: the client's fault, and nothing is appended.
	req := httptest.NewRequestWithContext(t.Context(), "PATCH", "/v2/r/blobs/uploads/"+id, strings.NewReader("abc"))
	req.ContentLength = 10
	req.Header.Set("Content-Range", "0-9")
	rec := httptest.NewRecorder()
	h.ServeHTTP(rec, req)
	require.Equal(t, http.StatusBadRequest, rec.Code, rec.Body.String())
	require.Contains(t, rec.Body.String(), string(errcode.CodeSizeInvalid))
	n, err := reg.UploadOffset(t.Context(), "r", id)
	require.NoError(t, err)
	require.Zero(t, n)

	// A body that fails.
	req = httptest.NewRequestWithContext(t.Context(), "PATCH", "/v2/r/blobs/uploads/"+id, io.MultiReader(strings.NewReader("ab"), iotestErrReader{}))
	req.ContentLength = -1
	rec = httptest.NewRecorder()
	h.ServeHTTP(rec, req)
	require.Equal(t, http.StatusBadRequest, rec.Code, rec.Body.String())
	require.Contains(t, rec.Body.String(), string(errcode.CodeBlobUploadInvalid))
	n, err = reg.UploadOffset(t.Context(), "r", id)
	require.NoError(t, err)
	require.Zero(t, n)

	// A chunked body longer than its Content-Range.
	req = httptest.NewRequestWithContext(t.Context(), "PATCH", "/v2/r/blobs/uploads/"+id, strings.NewReader("abcdef"))
	req.ContentLength = -1
	req.Header.Set("Content-Range", "0-2")
	rec = httptest.NewRecorder()
	h.ServeHTTP(rec, req)
	require.Equal(t, http.StatusBadRequest, rec.Code, rec.Body.String())
	require.Contains(t, rec.Body.String(), string(errcode.CodeSizeInvalid))
}

type iotestErrReader struct{}

func (iotestErrReader) Read([]byte) (int, error) { return 0, errors.New("connection reset") }

func TestManifestPushPull(t *testing.T) {
	t.Parallel()
	e := newEnv(t, false, registry.HandlerOptions{})
	body, _, _ := e.image("r", "")
	d := digest.FromBytes(body)

	resp, b := e.do("PUT", "/v2/r/manifests/v1", body, "Content-Type", ocispec.MediaTypeImageManifest)
	require.Equal(t, http.StatusCreated, resp.StatusCode, "body: %s", b)
	require.Equal(t, "/v2/r/manifests/"+d.String(), resp.Header.Get("Location"))
	require.Equal(t, d.String(), resp.Header.Get("Docker-Content-Digest"))
	require.Empty(t, resp.Header.Get("OCI-Subject"))
	require.Empty(t, resp.Header.Get("OCI-Tag"))

	for _, ref := range []string{"v1", d.String(), "v1?ns=docker.io"} {
		resp, b := e.do("GET", "/v2/r/manifests/"+ref, nil, "Accept", ocispec.MediaTypeImageManifest)
		require.Equal(t, http.StatusOK, resp.StatusCode, ref)
		require.Equal(t, body, b)
		require.Equal(t, ocispec.MediaTypeImageManifest, resp.Header.Get("Content-Type"))
		require.Equal(t, d.String(), resp.Header.Get("Docker-Content-Digest"))
		require.Equal(t, strconv.Itoa(len(body)), resp.Header.Get("Content-Length"))

		resp, b = e.do("HEAD", "/v2/r/manifests/"+ref, nil)
		require.Equal(t, http.StatusOK, resp.StatusCode, ref)
		require.Empty(t, b)
		require.Equal(t, int64(len(body)), resp.ContentLength)
		require.Equal(t, d.String(), resp.Header.Get("Docker-Content-Digest"))
		require.Equal(t, ocispec.MediaTypeImageManifest, resp.Header.Get("Content-Type"))
	}
	// Retagging by a push by digest with tag parameters.
	resp, b = e.do("PUT", "/v2/r/manifests/"+d.String()+"?tag=v2&tag=v3&tag=v2", body, "Content-Type", ocispec.MediaTypeImageManifest)
	require.Equal(t, http.StatusCreated, resp.StatusCode, "body: %s", b)
	require.Equal(t, []string{"v2", "v3"}, resp.Header.Values("OCI-Tag"))
	resp, b = e.do("GET", "/v2/r/tags/list", nil)
	require.Equal(t, http.StatusOK, resp.StatusCode)
	require.JSONEq(t, `{"name":"r","tags":["v1","v2","v3"]}`, string(b))

	for _, c := range []struct {
		method, ref string
		status      int
		code        errcode.Code
	}{
		{"GET", "missing", http.StatusNotFound, errcode.CodeManifestUnknown},
		{"HEAD", "missing", http.StatusNotFound, errcode.CodeManifestUnknown},
		{"GET", digest.FromString("missing").String(), http.StatusNotFound, errcode.CodeManifestUnknown},
		{"GET", digest.SHA512.FromBytes(body).String(), http.StatusNotFound, errcode.CodeManifestUnknown},
		{"GET", "sha256:baddigeststring", http.StatusBadRequest, errcode.CodeDigestInvalid},
		{"GET", ".bad", http.StatusBadRequest, errcode.CodeTagInvalid},
		{"GET", strings.Repeat("t", 129), http.StatusBadRequest, errcode.CodeTagInvalid},
		{"GET", "", http.StatusBadRequest, errcode.CodeTagInvalid},
	} {
		resp, b := e.do(c.method, "/v2/r/manifests/"+c.ref, nil)
		requireError(t, resp, b, c.status, c.code)
	}
}

func TestManifestPushSHA512(t *testing.T) {
	t.Parallel()
	e := newEnv(t, false, registry.HandlerOptions{})
	body, _, _ := e.image("r", "")
	d := digest.SHA512.FromBytes(body)
	resp, b := e.do("PUT", "/v2/r/manifests/"+d.String()+"?tag=t512", body, "Content-Type", ocispec.MediaTypeImageManifest)
	require.Equal(t, http.StatusCreated, resp.StatusCode, "body: %s", b)
	require.Equal(t, d.String(), resp.Header.Get("Docker-Content-Digest"))
	require.Equal(t, "/v2/r/manifests/"+d.String(), resp.Header.Get("Location"))
	require.Equal(t, []string{"t512"}, resp.Header.Values("OCI-Tag"))
	for _, ref := range []string{"t512", d.String()} {
		resp, b := e.do("GET", "/v2/r/manifests/"+ref, nil)
		require.Equal(t, http.StatusOK, resp.StatusCode)
		require.Equal(t, body, b)
		require.Equal(t, d.String(), resp.Header.Get("Docker-Content-Digest"), ref)
	}
}

func TestManifestPushInvalid(t *testing.T) {
	t.Parallel()
	e := newEnv(t, false, registry.HandlerOptions{})
	body, config, _ := e.image("r", "")
	missing := digest.FromString("never pushed")
	missingLayer := bytes.Replace(body, []byte(config.String()), []byte(missing.String()), 1)
	index := fmt.Appendf(nil, `{"schemaVersion":2,"mediaType":%q,"manifests":[{"mediaType":%q,"digest":%q,"size":10}]}`, ocispec.MediaTypeImageIndex, ocispec.MediaTypeImageManifest, missing)
	huge := append(append([]byte(`{"schemaVersion":2,"annotations":{"a":"`), bytes.Repeat([]byte("a"), registry.MaxManifestSize)...), `"}}`...)

	for _, c := range []struct {
		name, ref, ct string
		body          []byte
		status        int
		code          errcode.Code
		msg           string
	}{
		{"not json", "t", ocispec.MediaTypeImageManifest, []byte("{nope"), http.StatusBadRequest, errcode.CodeManifestInvalid, "JSON"},
		{"schema 1", "t", "", []byte(`{"schemaVersion":1}`), http.StatusBadRequest, errcode.CodeManifestInvalid, "schemaVersion"},
		{"type mismatch", "t", ocispec.MediaTypeImageIndex, body, http.StatusBadRequest, errcode.CodeManifestInvalid, "does not match the Content-Type"},
		{"unsupported type", "t", "application/vnd.docker.distribution.manifest.v1+prettyjws", []byte(`{"schemaVersion":2}`), http.StatusBadRequest, errcode.CodeManifestInvalid, "unsupported"},
		{"bad descriptor", "t", "", bytes.Replace(body, []byte(config.String()), []byte("sha256:zz"), 1), http.StatusBadRequest, errcode.CodeManifestInvalid, "config: invalid digest"},
		{"too large", "t", "", huge, http.StatusRequestEntityTooLarge, errcode.CodeManifestInvalid, "limit"},
		{"wrong digest", digest.FromString("other").String(), "", body, http.StatusBadRequest, errcode.CodeDigestInvalid, "not the"},
		{"bad digest", "sha256:baddigeststring", "", body, http.StatusBadRequest, errcode.CodeDigestInvalid, "invalid digest"},
		{"bad tag", "-t", "", body, http.StatusBadRequest, errcode.CodeTagInvalid, "invalid tag"},
		{"bad tag param", digest.FromBytes(body).String() + "?tag=a&tag=.b", "", body, http.StatusBadRequest, errcode.CodeTagInvalid, "invalid tag"},
		{"tag param on tag", "t?tag=u", "", body, http.StatusBadRequest, errcode.CodeTagInvalid, "push by digest"},
		{"missing blob", "t", "", missingLayer, http.StatusBadRequest, errcode.CodeManifestBlobUnknown, missing.String()},
		{"missing child", "t", "", index, http.StatusBadRequest, errcode.CodeManifestBlobUnknown, missing.String()},
	} {
		hdr := []string{}
		if c.ct != "" {
			hdr = append(hdr, "Content-Type", c.ct)
		}
		resp, b := e.do("PUT", "/v2/r/manifests/"+c.ref, c.body, hdr...)
		be := requireError(t, resp, b, c.status, c.code)
		require.Contains(t, be.Message, c.msg, c.name)
		if c.code == errcode.CodeManifestBlobUnknown {
			require.Equal(t, map[string]any{"digest": missing.String()}, be.Detail, c.name)
		}
	}
	// A too-large manifest of unknown length is cut off too.
	req, err := http.NewRequestWithContext(t.Context(), "PUT", e.srv.URL+"/v2/r/manifests/t", io.MultiReader(bytes.NewReader(huge)))
	require.NoError(t, err)
	put, err := e.srv.Client().Do(req)
	require.NoError(t, err)
	b, _ := io.ReadAll(put.Body)
	_ = put.Body.Close()
	requireError(t, replyOf(put), b, http.StatusRequestEntityTooLarge, errcode.CodeManifestInvalid)

	// Nothing was stored.
	resp, b := e.do("GET", "/v2/r/tags/list", nil)
	require.Equal(t, http.StatusOK, resp.StatusCode)
	require.JSONEq(t, `{"name":"r","tags":[]}`, string(b))
}

func TestManifestDelete(t *testing.T) {
	t.Parallel()
	e := newEnv(t, false, registry.HandlerOptions{})
	body, _, _ := e.image("r", "")
	d, err := e.reg.PushManifest("r", "", body, "v1", "v2")
	require.NoError(t, err)

	resp, _ := e.do("DELETE", "/v2/r/manifests/v1", nil)
	require.Equal(t, http.StatusAccepted, resp.StatusCode)
	resp, b := e.do("HEAD", "/v2/r/manifests/v1", nil)
	requireError(t, resp, b, http.StatusNotFound, errcode.CodeManifestUnknown)
	resp, _ = e.do("HEAD", "/v2/r/manifests/v2", nil)
	require.Equal(t, http.StatusOK, resp.StatusCode)
	resp, b = e.do("DELETE", "/v2/r/manifests/v1", nil)
	requireError(t, resp, b, http.StatusNotFound, errcode.CodeManifestUnknown)

	resp, _ = e.do("DELETE", "/v2/r/manifests/"+d.String(), nil)
	require.Equal(t, http.StatusAccepted, resp.StatusCode)
	resp, b = e.do("GET", "/v2/r/manifests/"+d.String(), nil)
	requireError(t, resp, b, http.StatusNotFound, errcode.CodeManifestUnknown)
	resp, b = e.do("DELETE", "/v2/r/manifests/"+d.String(), nil)
	requireError(t, resp, b, http.StatusNotFound, errcode.CodeManifestUnknown)
	resp, b = e.do("DELETE", "/v2/r/manifests/sha256:x", nil)
	requireError(t, resp, b, http.StatusBadRequest, errcode.CodeDigestInvalid)
}

func TestReferrers(t *testing.T) {
	t.Parallel()
	e := newEnv(t, false, registry.HandlerOptions{})
	subject, _, _ := e.image("r", "")
	sd, err := e.reg.PushManifest("r", "", subject, "v1")
	require.NoError(t, err)
	empty := e.reg.PushBlob("r", digest.SHA256, []byte("{}"))
	artifact := func(at, note string) []byte {
		return fmt.Appendf(nil, `{"schemaVersion":2,"mediaType":%q,"artifactType":%q,"config":{"mediaType":%q,"digest":%q,"size":2},"layers":[],"subject":{"mediaType":%q,"digest":%q,"size":%d},"annotations":{"note":%q}}`,
			ocispec.MediaTypeImageManifest, at, ocispec.MediaTypeEmptyJSON, empty, ocispec.MediaTypeImageManifest, sd, len(subject), note)
	}
	sbom, sig := artifact("application/vnd.example.sbom", "a"), artifact("application/vnd.example.sig", "b")
	for _, m := range [][]byte{sbom, sig} {
		d := digest.FromBytes(m)
		resp, b := e.do("PUT", "/v2/r/manifests/"+d.String(), m, "Content-Type", ocispec.MediaTypeImageManifest)
		require.Equal(t, http.StatusCreated, resp.StatusCode, "body: %s", b)
		require.Equal(t, sd.String(), resp.Header.Get("OCI-Subject"))
	}
	list := func(query string) (ocispec.Index, reply) {
		resp, b := e.do("GET", "/v2/r/referrers/"+sd.String()+query, nil)
		require.Equal(t, http.StatusOK, resp.StatusCode, "body: %s", b)
		require.Equal(t, ocispec.MediaTypeImageIndex, resp.Header.Get("Content-Type"))
		var idx ocispec.Index
		require.NoError(t, json.Unmarshal(b, &idx))
		require.Equal(t, 2, idx.SchemaVersion)
		require.Equal(t, ocispec.MediaTypeImageIndex, idx.MediaType)
		return idx, resp
	}
	idx, resp := list("")
	require.Empty(t, resp.Header.Get("OCI-Filters-Applied"))
	require.Len(t, idx.Manifests, 2)
	for _, desc := range idx.Manifests {
		want := sbom
		if desc.ArtifactType == "application/vnd.example.sig" {
			want = sig
		}
		require.Equal(t, digest.FromBytes(want), desc.Digest)
		require.Equal(t, int64(len(want)), desc.Size)
		require.Equal(t, ocispec.MediaTypeImageManifest, desc.MediaType)
		require.NotEmpty(t, desc.Annotations["note"])
	}
	idx, resp = list("?artifactType=application/vnd.example.sig")
	require.Equal(t, "artifactType", resp.Header.Get("OCI-Filters-Applied"))
	require.Len(t, idx.Manifests, 1)
	require.Equal(t, digest.FromBytes(sig), idx.Manifests[0].Digest)
	idx, _ = list("?artifactType=application/vnd.none")
	require.NotNil(t, idx.Manifests)
	require.Empty(t, idx.Manifests)

	// None is an empty index, not an error; "manifests" is [] rather than null.
	resp, b := e.do("GET", "/v2/r/referrers/"+digest.FromString("x").String(), nil)
	require.Equal(t, http.StatusOK, resp.StatusCode)
	require.Contains(t, string(b), `"manifests":[]`)

	resp, b = e.do("GET", "/v2/r/referrers/sha256:nothex", nil)
	requireError(t, resp, b, http.StatusBadRequest, errcode.CodeDigestInvalid)
	resp, b = e.do("GET", "/v2/r/referrers/latest", nil)
	requireError(t, resp, b, http.StatusBadRequest, errcode.CodeDigestInvalid)

	// Deleting a referrer removes it from the list.
	resp, _ = e.do("DELETE", "/v2/r/manifests/"+digest.FromBytes(sbom).String(), nil)
	require.Equal(t, http.StatusAccepted, resp.StatusCode)
	idx, _ = list("")
	require.Len(t, idx.Manifests, 1)
}

func TestTagsListPagination(t *testing.T) {
	t.Parallel()
	e := newEnv(t, false, registry.HandlerOptions{MaxPage: 3})
	body, _, _ := e.image("r", "")
	_, err := e.reg.PushManifest("r", "", body, "e", "a", "d", "c", "b")
	require.NoError(t, err)
	get := func(query string) (registry.TagList, string) {
		resp, b := e.do("GET", "/v2/r/tags/list"+query, nil)
		require.Equal(t, http.StatusOK, resp.StatusCode, "body: %s", b)
		require.Equal(t, "application/json", resp.Header.Get("Content-Type"))
		var tl registry.TagList
		require.NoError(t, json.Unmarshal(b, &tl))
		require.Equal(t, "r", tl.Name)
		require.NotNil(t, tl.Tags)
		return tl, resp.Header.Get("Link")
	}
	tl, link := get("?n=2")
	require.Equal(t, []string{"a", "b"}, tl.Tags)
	require.Equal(t, `</v2/r/tags/list?last=b&n=2>; rel="next"`, link)
	tl, link = get("?n=2&last=b")
	require.Equal(t, []string{"c", "d"}, tl.Tags)
	require.Equal(t, `</v2/r/tags/list?last=d&n=2>; rel="next"`, link)
	tl, link = get("?n=2&last=d")
	require.Equal(t, []string{"e"}, tl.Tags)
	require.Empty(t, link)
	tl, link = get("?last=bb")
	require.Equal(t, []string{"c", "d", "e"}, tl.Tags)
	require.Empty(t, link)
	// Without n, or above MaxPage: pages of MaxPage.
	tl, link = get("")
	require.Equal(t, []string{"a", "b", "c"}, tl.Tags)
	require.Equal(t, `</v2/r/tags/list?last=c&n=3>; rel="next"`, link)
	tl, link = get("?n=100&ns=docker.io")
	require.Equal(t, []string{"a", "b", "c"}, tl.Tags)
	require.Equal(t, `</v2/r/tags/list?last=c&n=3&ns=docker.io>; rel="next"`, link)
	tl, link = get("?n=0")
	require.Empty(t, tl.Tags)
	require.Empty(t, link)

	for _, n := range []string{"-1", "x", "1.5", ""} {
		resp, b := e.do("GET", "/v2/r/tags/list?n="+n, nil)
		requireError(t, resp, b, http.StatusBadRequest, errcode.CodePaginationNumberInvalid)
	}
	resp, b := e.do("GET", "/v2/unknown/tags/list", nil)
	require.Equal(t, http.StatusOK, resp.StatusCode)
	require.JSONEq(t, `{"name":"unknown","tags":[]}`, string(b))
}

func TestCatalog(t *testing.T) {
	t.Parallel()
	e := newEnv(t, false, registry.HandlerOptions{})
	for _, r := range []string{"c/x", "a", "b/y/z"} {
		e.reg.PushBlob(r, digest.SHA256, []byte(r))
	}
	resp, b := e.do("GET", "/v2/_catalog", nil)
	require.Equal(t, http.StatusOK, resp.StatusCode)
	require.JSONEq(t, `{"repositories":["a","b/y/z","c/x"]}`, string(b))
	require.Empty(t, resp.Header.Get("Link"))
	resp, b = e.do("GET", "/v2/_catalog?n=1&last=a", nil)
	require.Equal(t, http.StatusOK, resp.StatusCode)
	require.JSONEq(t, `{"repositories":["b/y/z"]}`, string(b))
	require.Equal(t, `</v2/_catalog?last=b%2Fy%2Fz&n=1>; rel="next"`, resp.Header.Get("Link"))
	resp, b = e.do("GET", "/v2/_catalog?n=-2", nil)
	requireError(t, resp, b, http.StatusBadRequest, errcode.CodePaginationNumberInvalid)

	empty := newEnv(t, true, registry.HandlerOptions{})
	resp, b = empty.do("GET", "/v2/_catalog", nil)
	require.Equal(t, http.StatusOK, resp.StatusCode)
	require.JSONEq(t, `{"repositories":[]}`, string(b))
}

// faultyReader is a Reader whose answers the test chooses.
type faultyReader struct {
	registry.Reader
	err  error
	man  *registry.Manifest
	blob registry.BlobReader
}

func (f faultyReader) Blob(ctx context.Context, repo string, d digest.Digest) (registry.BlobReader, error) {
	if f.blob != nil {
		return f.blob, nil
	}
	return nil, f.err
}

func (f faultyReader) Manifest(ctx context.Context, repo string, ref registry.Reference) (*registry.Manifest, error) {
	if f.man != nil {
		return f.man, nil
	}
	return nil, f.err
}

func (f faultyReader) Tags(ctx context.Context, repo, last string, n int) ([]string, bool, error) {
	return nil, false, f.err
}

func (f faultyReader) Catalog(ctx context.Context, last string, n int) ([]string, bool, error) {
	return nil, false, f.err
}

func (f faultyReader) Referrers(ctx context.Context, repo string, d digest.Digest) ([]ocispec.Descriptor, error) {
	return nil, f.err
}

// failingBlob is a blob whose download fails when opened.
type failingBlob struct{ err error }

func (failingBlob) Size() int64 { return 100 }
func (b failingBlob) Open(ctx context.Context, off int64) (io.ReadCloser, error) {
	return nil, b.err
}
func (failingBlob) Close() error { return nil }

func TestReaderFailures(t *testing.T) {
	t.Parallel()
	serve := func(f faultyReader, method, path string) *httptest.ResponseRecorder {
		rec := httptest.NewRecorder()
		registry.NewHandler(f, nil, registry.HandlerOptions{}).ServeHTTP(rec, httptest.NewRequestWithContext(t.Context(), method, path, nil))
		return rec
	}
	boom := errors.New("disk on fire")
	d := digest.FromString("x")
	for _, p := range []string{"/v2/r/blobs/" + d.String(), "/v2/r/manifests/t", "/v2/r/tags/list", "/v2/_catalog", "/v2/r/referrers/" + d.String()} {
		rec := serve(faultyReader{err: boom}, "GET", p)
		require.Equal(t, http.StatusInternalServerError, rec.Code, p)
		require.Contains(t, rec.Body.String(), `"UNKNOWN"`)
		require.NotContains(t, rec.Body.String(), "disk on fire", "internal errors stay internal")
		rec = serve(faultyReader{err: fmt.Errorf("wrapped: %w", context.DeadlineExceeded)}, "HEAD", p)
		require.Equal(t, http.StatusServiceUnavailable, rec.Code, p)
		require.Empty(t, rec.Body.String())
	}
	// A blob whose download fails before the first byte gets a status, not a cut body.
	rec := serve(faultyReader{blob: failingBlob{err: fmt.Errorf("fetch: %w", registry.ErrBlobUnknown)}}, "GET", "/v2/r/blobs/"+d.String())
	require.Equal(t, http.StatusNotFound, rec.Code)
	require.Contains(t, rec.Body.String(), "BLOB_UNKNOWN")
	// HEAD does not open the blob.
	rec = serve(faultyReader{blob: failingBlob{err: boom}}, "HEAD", "/v2/r/blobs/"+d.String())
	require.Equal(t, http.StatusOK, rec.Code)
	require.Equal(t, "100", rec.Header().Get("Content-Length"))

	// A stored manifest that does not match the digest asked for is never served.
	body := []byte(`{"schemaVersion":2}`)
	rec = serve(faultyReader{man: &registry.Manifest{Digest: d, MediaType: ocispec.MediaTypeImageManifest, Body: body}}, "GET", "/v2/r/manifests/"+d.String())
	require.Equal(t, http.StatusInternalServerError, rec.Code)
	rec = serve(faultyReader{man: &registry.Manifest{Digest: d, Body: body}}, "GET", "/v2/r/manifests/t")
	require.Equal(t, http.StatusInternalServerError, rec.Code)
	// A manifest stored without a media type gets the detected one.
	rec = serve(faultyReader{man: &registry.Manifest{Digest: digest.FromBytes(body), Body: body}}, "GET", "/v2/r/manifests/t")
	require.Equal(t, http.StatusOK, rec.Code)
	require.Equal(t, ocispec.MediaTypeImageManifest, rec.Header().Get("Content-Type"))
	idx := []byte(`{"schemaVersion":2,"manifests":[]}`)
	rec = serve(faultyReader{man: &registry.Manifest{Digest: digest.FromBytes(idx), Body: idx}}, "GET", "/v2/r/manifests/t")
	require.Equal(t, http.StatusOK, rec.Code)
	require.Equal(t, ocispec.MediaTypeImageIndex, rec.Header().Get("Content-Type"))
}

// TestConcurrentPushes pushes images to several repositories at once through the handler.
func TestConcurrentPushes(t *testing.T) {
	t.Parallel()
	e := newEnv(t, false, registry.HandlerOptions{})
	const n = 8
	errs := make(chan error, n)
	for i := range n {
		go func() {
			errs <- func() error {
				repo := fmt.Sprintf("repo%d", i)
				layer := bytes.Repeat([]byte{byte(i)}, 1000+i)
				ld := digest.FromBytes(layer)
				client := e.srv.Client()
				req, _ := http.NewRequestWithContext(t.Context(), "POST", e.srv.URL+"/v2/"+repo+"/blobs/uploads/?digest="+ld.String(), bytes.NewReader(layer))
				resp, err := client.Do(req)
				if err != nil {
					return err
				}
				_ = resp.Body.Close()
				if resp.StatusCode != http.StatusCreated {
					return fmt.Errorf("%s: blob push: %d", repo, resp.StatusCode)
				}
				cfg := e.reg.PushBlob(repo, digest.SHA256, []byte("{}"))
				man := fmt.Appendf(nil, `{"schemaVersion":2,"config":{"mediaType":%q,"digest":%q,"size":2},"layers":[{"mediaType":%q,"digest":%q,"size":%d}]}`,
					ocispec.MediaTypeImageConfig, cfg, ocispec.MediaTypeImageLayer, ld, len(layer))
				req, _ = http.NewRequestWithContext(t.Context(), "PUT", e.srv.URL+"/v2/"+repo+"/manifests/latest", bytes.NewReader(man))
				resp, err = client.Do(req)
				if err != nil {
					return err
				}
				_ = resp.Body.Close()
				if resp.StatusCode != http.StatusCreated {
					return fmt.Errorf("%s: manifest push: %d", repo, resp.StatusCode)
				}
				return nil
			}()
		}()
	}
	for range n {
		require.NoError(t, <-errs)
	}
	resp, b := e.do("GET", "/v2/_catalog", nil)
	require.Equal(t, http.StatusOK, resp.StatusCode)
	var c registry.Catalog
	require.NoError(t, json.Unmarshal(b, &c))
	require.Len(t, c.Repositories, n)
}

// TestMountDoesNotCleanPaths: behind Mount, a name with an empty component is NAME_INVALID,
// not the 307 to another repository that an http.ServeMux answers; other paths reach the
// other handler.
func TestMountDoesNotCleanPaths(t *testing.T) {
	t.Parallel()
	reg := registrytest.New()
	mux := http.NewServeMux()
	mux.HandleFunc("GET /health", func(w http.ResponseWriter, _ *http.Request) { w.WriteHeader(http.StatusTeapot) })
	srv := httptest.NewServer(registry.Mount(registry.NewHandler(reg, reg, registry.HandlerOptions{}), mux))
	t.Cleanup(srv.Close)
	hc := srv.Client()
	hc.CheckRedirect = func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }
	for _, p := range []string{"/v2/a//b/manifests/v1", "/v2/a/./b/manifests/v1", "/v2/a/b/../c/blobs/uploads/"} {
		method := http.MethodGet
		if strings.HasSuffix(p, "/uploads/") {
			method = http.MethodPost
		}
		req, err := http.NewRequestWithContext(t.Context(), method, srv.URL+p, nil)
		require.NoError(t, err)
		resp, err := hc.Do(req)
		require.NoError(t, err)
		var body errcode.Body
		require.NoError(t, json.NewDecoder(resp.Body).Decode(&body))
		_ = resp.Body.Close()
		require.Equal(t, http.StatusBadRequest, resp.StatusCode, p)
		require.Equal(t, errcode.CodeNameInvalid, body.Errors[0].Code, p)
	}
	require.Empty(t, reg.Repositories(), "nothing was written anywhere")
	for path, want := range map[string]int{"/health": http.StatusTeapot, "/v2/": http.StatusOK} {
		req, err := http.NewRequestWithContext(t.Context(), http.MethodGet, srv.URL+path, nil)
		require.NoError(t, err)
		resp, err := hc.Do(req)
		require.NoError(t, err)
		_ = resp.Body.Close()
		require.Equal(t, want, resp.StatusCode, path)
	}
}

// writerToReader serves registrytest's blobs through bodies that record whether the handler
// sent them with their WriteTo (the agent's sendfile path) rather than through Read.
type writerToReader struct {
	*registrytest.Registry
	usedWriteTo atomic.Bool
}

func (r *writerToReader) Blob(ctx context.Context, repo string, d digest.Digest) (registry.BlobReader, error) {
	br, err := r.Registry.Blob(ctx, repo, d)
	if err != nil {
		return nil, err
	}
	return &writerToBlob{BlobReader: br, used: &r.usedWriteTo}, nil
}

type writerToBlob struct {
	registry.BlobReader
	used *atomic.Bool
}

func (b *writerToBlob) Open(ctx context.Context, off int64) (io.ReadCloser, error) {
	rc, err := b.BlobReader.Open(ctx, off)
	if err != nil {
		return nil, err
	}
	return &writerToBody{ReadCloser: rc, used: b.used}, nil
}

type writerToBody struct {
	io.ReadCloser
	used *atomic.Bool
}

func (b *writerToBody) WriteTo(w io.Writer) (int64, error) {
	b.used.Store(true)
	return io.Copy(w, b.ReadCloser)
}

// TestBlobBodyWriteTo: a GET whose range runs to the end of the blob hands the body's WriteTo
// the response (so an agent can send from its file); a bounded range reads exactly its bytes.
func TestBlobBodyWriteTo(t *testing.T) {
	t.Parallel()
	reg := &writerToReader{Registry: registrytest.New()}
	srv := httptest.NewServer(registry.NewHandler(reg, nil, registry.HandlerOptions{}))
	t.Cleanup(srv.Close)
	data := bytes.Repeat([]byte("0123456789"), 100)
	d := reg.PushBlob("r", digest.SHA256, data)
	for _, c := range []struct {
		rng       string
		status    int
		want      []byte
		viaWriter bool
	}{
		{"", http.StatusOK, data, true},
		{"bytes=10-", http.StatusPartialContent, data[10:], true},
		{"bytes=-5", http.StatusPartialContent, data[995:], true},
		{"bytes=10-19", http.StatusPartialContent, data[10:20], false},
	} {
		reg.usedWriteTo.Store(false)
		req, err := http.NewRequestWithContext(t.Context(), http.MethodGet, srv.URL+"/v2/r/blobs/"+d.String(), nil)
		require.NoError(t, err)
		if c.rng != "" {
			req.Header.Set("Range", c.rng)
		}
		resp, err := srv.Client().Do(req)
		require.NoError(t, err)
		body, err := io.ReadAll(resp.Body)
		_ = resp.Body.Close()
		require.NoError(t, err)
		require.Equal(t, c.status, resp.StatusCode, c.rng)
		require.Equal(t, c.want, body, c.rng)
		require.Equal(t, c.viaWriter, reg.usedWriteTo.Load(), c.rng)
	}
}

// Over a real connection net/http reports a body cut short as io.ErrUnexpectedEOF, not the
// io.EOF of httptest's requests: it is SIZE_INVALID all the same, and nothing is appended.
func TestUploadShortBodyOverHTTP(t *testing.T) {
	t.Parallel()
	reg := registrytest.New()
	srv := httptest.NewServer(registry.NewHandler(reg, reg, registry.HandlerOptions{}))
	t.Cleanup(srv.Close)
	id, err := reg.StartUpload(t.Context(), "r")
	require.NoError(t, err)
	answer, err := registrytest.ShortPatch(t.Context(), srv.Listener.Addr().String(), "/v2/r/blobs/uploads/"+id)
	require.NoError(t, err)
	require.Contains(t, answer, "HTTP/1.1 400 ")
	require.Contains(t, answer, string(errcode.CodeSizeInvalid))
	n, err := reg.UploadOffset(t.Context(), "r", id)
	require.NoError(t, err)
	require.Zero(t, n)
}
