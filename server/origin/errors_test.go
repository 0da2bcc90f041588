package origin_test

import (
	"bytes"
	"encoding/json"
	"io"
	"net/http"
	"strings"
	"testing"

	"github.com/opencontainers/go-digest"
	"github.com/stretchr/testify/require"

	"github.com/krakenctl/krakenctl/server/origin"
	"github.com/krakenctl/krakenctl/server/registry/errcode"
)

type rawResp struct {
	status int
	code   errcode.Code
	hdr    http.Header
}

func do(t *testing.T, hc *http.Client, method, url string, body []byte, hdr map[string]string) rawResp {
	t.Helper()
	var r io.Reader
	if body != nil {
		r = bytes.NewReader(body)
	}
	req, err := http.NewRequestWithContext(t.Context(), method, url, r)
	require.NoError(t, err)
	for k, v := range hdr {
		req.Header.Set(k, v)
	}
	resp, err := hc.Do(req)
	require.NoError(t, err)
	defer func() { _ = resp.Body.Close() }()
	out := rawResp{status: resp.StatusCode, hdr: resp.Header}
	data, _ := io.ReadAll(resp.Body)
	var b errcode.Body
	if json.Unmarshal(data, &b) == nil && len(b.Errors) > 0 {
		out.code = b.Errors[0].Code
	}
	return out
}

// TestBadInput sends every kind of bad request and checks the status, the error code, and
// that the blob stored before is still served unchanged.
func TestBadInput(t *testing.T) {
	t.Parallel()
	c := newCluster(t, 1, 1, nil, func(cfg *origin.Config) { cfg.Store.MaxBlobSize = 1 << 20 })
	base := "http://" + c.nodes[0].addr
	o := c.origin(c.nodes[0].addr)
	kept, keptD := randomBlob(t, 4096)
	require.NoError(t, o.Upload(t.Context(), "good/ns", keptD, bytes.NewReader(kept), int64(len(kept))))

	other, otherD := randomBlob(t, 100)
	sha512 := "sha512:" + strings.Repeat("ab", 64)

	newUpload := func() string {
		r := do(t, c.hc, "POST", base+"/namespace/good%2Fns/uploads", nil, nil)
		require.Equal(t, http.StatusAccepted, r.status)
		return base + r.hdr.Get("Location")
	}

	for _, tc := range []struct {
		name   string
		method string
		url    func() string
		body   []byte
		hdr    map[string]string
		status int
		code   errcode.Code
	}{
		{"malformed digest", "GET", func() string { return base + "/namespace/good%2Fns/blobs/sha256:xyz" }, nil, nil, 400, errcode.CodeDigestInvalid},
		{"unsupported algorithm", "GET", func() string { return base + "/namespace/good%2Fns/blobs/" + sha512 }, nil, nil, 400, errcode.CodeUnsupported},
		{"unknown blob", "GET", func() string { return base + "/namespace/good%2Fns/blobs/" + otherD.String() }, nil, nil, 404, errcode.CodeBlobUnknown},
		{"traversal namespace", "GET", func() string { return base + "/namespace/..%2F..%2Fetc/blobs/" + keptD.String() }, nil, nil, 400, errcode.CodeNameInvalid},
		{"upper-case namespace", "POST", func() string { return base + "/namespace/Bad%2FNS/uploads?digest=" + otherD.String() }, other, nil, 400, errcode.CodeNameInvalid},
		{"body does not match digest", "POST", func() string { return base + "/namespace/good%2Fns/uploads?digest=" + otherD.String() }, append([]byte("x"), other...), nil, 400, errcode.CodeDigestInvalid},
		{"body over size limit", "POST", func() string { return base + "/namespace/good%2Fns/uploads?digest=" + otherD.String() }, make([]byte, 1<<20+1), nil, 413, errcode.CodeSizeInvalid},
		{"unknown upload id", "PATCH", func() string { return base + "/namespace/good%2Fns/uploads/0123456789abcdef0123456789abcdef" }, other, map[string]string{"Content-Range": "0-99"}, 404, errcode.CodeBlobUploadUnknown},
		{"traversal upload id", "PATCH", func() string { return base + "/namespace/good%2Fns/uploads/..%2F..%2Fblobs" }, other, map[string]string{"Content-Range": "0-99"}, 404, errcode.CodeBlobUploadUnknown},
		{"chunk not at end", "PATCH", func() string { return newUpload() }, other, map[string]string{"Content-Range": "10-109"}, 416, errcode.CodeRangeInvalid},
		{"malformed content-range", "PATCH", func() string { return newUpload() }, other, map[string]string{"Content-Range": "abc"}, 416, errcode.CodeRangeInvalid},
		{"content-range longer than body", "PATCH", func() string { return newUpload() }, other, map[string]string{"Content-Range": "0-199"}, 400, errcode.CodeBlobUploadInvalid},
		{"commit without digest", "PUT", func() string { return newUpload() }, nil, nil, 400, errcode.CodeDigestInvalid},
		{"commit with wrong digest", "PUT", func() string { return newUpload() + "?digest=" + keptD.String() }, other, nil, 400, errcode.CodeDigestInvalid},
	} {
		t.Run(tc.name, func(t *testing.T) {
			r := do(t, c.hc, tc.method, tc.url(), tc.body, tc.hdr)
			require.Equal(t, tc.status, r.status)
			require.Equal(t, tc.code, r.code)
		})
	}

	// Overlapping chunks: the second chunk re-sends bytes the session already holds.
	loc := newUpload()
	r := do(t, c.hc, "PATCH", loc, other[:50], map[string]string{"Content-Range": "0-49"})
	require.Equal(t, http.StatusAccepted, r.status)
	r = do(t, c.hc, "PATCH", loc, other[25:], map[string]string{"Content-Range": "25-99"})
	require.Equal(t, http.StatusRequestedRangeNotSatisfiable, r.status)
	// The failed chunk changed nothing: the upload completes from byte 50.
	r = do(t, c.hc, "PATCH", loc, other[50:], map[string]string{"Content-Range": "50-99"})
	require.Equal(t, http.StatusAccepted, r.status)
	require.Equal(t, "100", r.hdr.Get("Upload-Offset"))
	r = do(t, c.hc, "PUT", loc+"?digest="+otherD.String(), nil, nil)
	require.Equal(t, http.StatusCreated, r.status)

	// The blob stored before every bad request is unchanged.
	require.Equal(t, kept, readAll(t, o, "good/ns", keptD))
	require.Equal(t, other, readAll(t, o, "good/ns", otherD))
	require.Equal(t, digest.FromBytes(kept), keptD)
}
