package origin_test

import (
	"bytes"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/opencontainers/go-digest"
	"github.com/stretchr/testify/require"

	"github.com/krakenctl/krakenctl/backend/memory"
	"github.com/krakenctl/krakenctl/server/api"
	"github.com/krakenctl/krakenctl/server/registry/errcode"
)

// TestUploadSHA512 pushes by sha512 digest, monolithic and chunked: the content is verified
// against the sha512 digest, stored under its SHA-256, and the answer names the SHA-256.
func TestUploadSHA512(t *testing.T) {
	t.Parallel()
	be := memory.New()
	c := newCluster(t, 2, 2, be, nil)
	base := "http://" + c.nodes[0].addr
	ns := "lib/sha512"

	data, d256 := randomBlob(t, 70000)
	d512 := digest.SHA512.FromBytes(data)
	r := do(t, c.hc, "POST", base+"/namespace/lib%2Fsha512/uploads?digest="+d512.String(), data, nil)
	require.Equal(t, http.StatusCreated, r.status)
	require.Equal(t, d256.String(), r.hdr.Get(api.HeaderContentDigest))
	require.Equal(t, api.BlobPath(ns, d256), r.hdr.Get(api.HeaderLocation))
	for _, nd := range c.nodes {
		require.Equal(t, data, readAll(t, c.origin(nd.addr), ns, d256), "every owner holds it under its SHA-256")
	}
	require.Eventually(t, func() bool {
		_, err := be.Stat(t.Context(), ns, d256.Encoded())
		return err == nil
	}, 10*time.Second, 10*time.Millisecond, "written back under the SHA-256")

	// Chunked, with the last chunk in the commit.
	data2, d256b := randomBlob(t, 5000)
	d512b := digest.SHA512.FromBytes(data2)
	r = do(t, c.hc, "POST", base+"/namespace/lib%2Fsha512/uploads", nil, nil)
	require.Equal(t, http.StatusAccepted, r.status)
	loc := base + r.hdr.Get(api.HeaderLocation)
	r = do(t, c.hc, "PATCH", loc, data2[:3000], map[string]string{"Content-Range": "0-2999"})
	require.Equal(t, http.StatusAccepted, r.status)
	r = do(t, c.hc, "PUT", loc+"?digest="+d512b.String(), data2[3000:], map[string]string{"Content-Range": "3000-4999"})
	require.Equal(t, http.StatusCreated, r.status)
	require.Equal(t, d256b.String(), r.hdr.Get(api.HeaderContentDigest))
	require.Equal(t, data2, readAll(t, c.origin(c.nodes[1].addr), ns, d256b))

	// A sha512 that does not match: 400, nothing stored, the session is spent.
	other, otherD := randomBlob(t, 300)
	r = do(t, c.hc, "POST", base+"/namespace/lib%2Fsha512/uploads", nil, nil)
	loc = base + r.hdr.Get(api.HeaderLocation)
	r = do(t, c.hc, "PATCH", loc, other, nil)
	require.Equal(t, http.StatusAccepted, r.status)
	r = do(t, c.hc, "PUT", loc+"?digest="+d512.String(), nil, nil)
	require.Equal(t, http.StatusBadRequest, r.status)
	require.Equal(t, errcode.CodeDigestInvalid, r.code)
	r = do(t, c.hc, "GET", loc, nil, nil)
	require.Equal(t, http.StatusNotFound, r.status)
	r = do(t, c.hc, "POST", base+"/namespace/lib%2Fsha512/uploads?digest="+d512.String(), other, nil)
	require.Equal(t, http.StatusBadRequest, r.status)
	require.Equal(t, errcode.CodeDigestInvalid, r.code)
	_, err := c.origin(c.nodes[0].addr).StatLocal(t.Context(), ns, otherD)
	require.Error(t, err)

	// Malformed sha512 digests and other algorithms are refused.
	r = do(t, c.hc, "POST", base+"/namespace/lib%2Fsha512/uploads?digest=sha512:abc", other, nil)
	require.Equal(t, http.StatusBadRequest, r.status)
	require.Equal(t, errcode.CodeDigestInvalid, r.code)
	r = do(t, c.hc, "POST", base+"/namespace/lib%2Fsha512/uploads?digest="+digest.SHA384.FromBytes(other).String(), other, nil)
	require.Equal(t, http.StatusBadRequest, r.status)
	require.Equal(t, errcode.CodeUnsupported, r.code)
}

// TestUploadOffsetHeader: a chunk of unknown length says where it starts with Upload-Offset,
// and one that does not start at the session's end is refused with nothing appended.
func TestUploadOffsetHeader(t *testing.T) {
	t.Parallel()
	c := newCluster(t, 1, 1, nil, nil)
	base := "http://" + c.nodes[0].addr
	data, d := randomBlob(t, 1000)

	r := do(t, c.hc, "POST", base+"/namespace/ns/uploads", nil, nil)
	loc := base + r.hdr.Get(api.HeaderLocation)
	r = do(t, c.hc, "PATCH", loc, data[:400], map[string]string{api.HeaderUploadOffset: "0"})
	require.Equal(t, http.StatusAccepted, r.status)
	require.Equal(t, "400", r.hdr.Get(api.HeaderUploadOffset))
	for _, off := range []int{0, 399, 401} {
		r = do(t, c.hc, "PATCH", loc, data[400:], map[string]string{api.HeaderUploadOffset: strconv.Itoa(off)})
		require.Equal(t, http.StatusRequestedRangeNotSatisfiable, r.status, "offset %d", off)
		require.Equal(t, errcode.CodeRangeInvalid, r.code)
	}
	r = do(t, c.hc, "PATCH", loc, data[400:], map[string]string{api.HeaderUploadOffset: "-1"})
	require.Equal(t, http.StatusBadRequest, r.status)
	r = do(t, c.hc, "GET", loc, nil, nil)
	require.Equal(t, "400", r.hdr.Get(api.HeaderUploadOffset), "refused chunks appended nothing")
	// An empty chunk at the right offset is a no-op that still checks the offset.
	r = do(t, c.hc, "PATCH", loc, []byte{}, map[string]string{api.HeaderUploadOffset: "400"})
	require.Equal(t, http.StatusAccepted, r.status)
	r = do(t, c.hc, "PATCH", loc, data[400:], map[string]string{api.HeaderUploadOffset: "400"})
	require.Equal(t, http.StatusAccepted, r.status)
	r = do(t, c.hc, "PUT", loc+"?digest="+d.String(), nil, nil)
	require.Equal(t, http.StatusCreated, r.status)
	require.Equal(t, data, readAll(t, c.origin(c.nodes[0].addr), "ns", d))
}

// TestUploadSessionBelongsToItsNamespace: a session started in one namespace is unknown under
// any other, for every session method, and stays usable in its own.
func TestUploadSessionBelongsToItsNamespace(t *testing.T) {
	t.Parallel()
	c := newCluster(t, 1, 1, nil, nil)
	base := "http://" + c.nodes[0].addr
	data, d := randomBlob(t, 1000)

	r := do(t, c.hc, "POST", base+"/namespace/team-a%2Fapp/uploads", nil, nil)
	require.Equal(t, http.StatusAccepted, r.status)
	loc := r.hdr.Get(api.HeaderLocation)
	id := loc[strings.LastIndex(loc, "/")+1:]
	r = do(t, c.hc, "PATCH", base+loc, data[:400], nil)
	require.Equal(t, http.StatusAccepted, r.status)
	other := base + "/namespace/team-b%2Fapp/uploads/" + id
	for _, m := range []struct {
		method string
		url    string
		body   []byte
	}{
		{"GET", other, nil},
		{"PATCH", other, data[400:]},
		{"PUT", other + "?digest=" + d.String(), data[400:]},
		{"DELETE", other, nil},
	} {
		r = do(t, c.hc, m.method, m.url, m.body, nil)
		require.Equal(t, http.StatusNotFound, r.status, m.method)
		require.Equal(t, errcode.CodeBlobUploadUnknown, r.code, m.method)
	}
	r = do(t, c.hc, "GET", base+loc, nil, nil)
	require.Equal(t, "400", r.hdr.Get(api.HeaderUploadOffset), "the other namespace's requests changed nothing")
	r = do(t, c.hc, "PUT", base+loc+"?digest="+d.String(), data[400:], nil)
	require.Equal(t, http.StatusCreated, r.status)
	require.Equal(t, data, readAll(t, c.origin(c.nodes[0].addr), "team-a/app", d))
}

// TestMount adds a stored blob to another namespace without sending it: the origin records the
// namespace and writes the blob back under it, fetching it from the source namespace's storage
// when no origin holds it.
func TestMount(t *testing.T) {
	t.Parallel()
	be := memory.New()
	c := newCluster(t, 2, 2, be, nil)
	base := "http://" + c.nodes[0].addr
	o := c.origin(c.nodes[1].addr)
	mount := func(ns, d, from string) rawResp {
		u := base + "/namespace/" + url.PathEscape(ns) + "/uploads?mount=" + d
		if from != "" {
			u += "&from=" + url.QueryEscape(from)
		}
		return do(t, c.hc, "POST", u, nil, nil)
	}
	inBackend := func(ns string, d digest.Digest) func() bool {
		return func() bool {
			_, err := be.Stat(t.Context(), ns, d.Encoded())
			return err == nil
		}
	}

	data, d := randomBlob(t, 20000)
	require.NoError(t, o.Upload(t.Context(), "src/a", d, bytes.NewReader(data), int64(len(data))))
	r := mount("dst/b", d.String(), "src/a")
	require.Equal(t, http.StatusCreated, r.status)
	require.Equal(t, d.String(), r.hdr.Get(api.HeaderContentDigest))
	require.Eventually(t, inBackend("dst/b", d), 10*time.Second, 10*time.Millisecond)
	require.Equal(t, data, readAll(t, o, "dst/b", d))

	// Only in storage, under the source namespace: fetched from there.
	cold := []byte("only in the backend under src/a")
	coldD := digest.FromBytes(cold)
	require.NoError(t, be.Upload(t.Context(), "src/a", coldD.Encoded(), bytes.NewReader(cold), int64(len(cold))))
	r = mount("dst/c", coldD.String(), "")
	require.Equal(t, http.StatusNotFound, r.status, "without from, only dst/c's storage is searched")
	require.Equal(t, errcode.CodeBlobUnknown, r.code)
	r = mount("dst/c", coldD.String(), "src/a")
	require.Equal(t, http.StatusCreated, r.status)
	require.Eventually(t, inBackend("dst/c", coldD), 10*time.Second, 10*time.Millisecond)

	// Unknown blobs, bad digests and bad namespaces.
	_, missing := randomBlob(t, 10)
	r = mount("dst/b", missing.String(), "src/a")
	require.Equal(t, http.StatusNotFound, r.status)
	require.Equal(t, errcode.CodeBlobUnknown, r.code)
	r = mount("dst/b", digest.SHA512.FromBytes(data).String(), "src/a")
	require.Equal(t, http.StatusBadRequest, r.status)
	require.Equal(t, errcode.CodeUnsupported, r.code)
	r = mount("dst/b", "sha256:nope", "src/a")
	require.Equal(t, errcode.CodeDigestInvalid, r.code)
	r = mount("dst/b", d.String(), "../x")
	require.Equal(t, errcode.CodeNameInvalid, r.code)
}
