package e2e

import (
	"bytes"
	"encoding/json"
	"net/http"
	"strconv"
	"strings"
	"testing"

	"github.com/opencontainers/go-digest"
	ocispec "github.com/opencontainers/image-spec/specs-go/v1"
	"github.com/stretchr/testify/require"
)

// requireError checks an answer's status and that its body is an OCI error with code (any
// code when code is empty).
func requireError(t *testing.T, r response, status int, code string, what string) {
	t.Helper()
	require.Equal(t, status, r.status, "%s: %s", what, r)
	codes := r.errorCodes()
	require.NotEmpty(t, codes, "%s: no OCI error body: %s", what, r)
	if code != "" {
		require.Equal(t, code, codes[0], "%s: %s", what, r)
	}
}

// TestBadInputLeavesStoreIntact sends the running proxy (and an agent) malformed, oversized,
// misaddressed and out-of-order requests: each gets the spec's status and error code, and the
// image already stored is served unchanged afterwards, by the proxy and through the agent.
func TestBadInputLeavesStoreIntact(t *testing.T) {
	t.Parallel()
	c := devUp(t, 1)
	proxy, agent := c.proxy(), c.ep.Agents[0]
	const repo = "e2e/intact"
	s := seedImage(t, proxy, repo, "v1")
	s.requireIntact(t, proxy)
	s.requireIntact(t, agent)
	p := newOCIClient(t, proxy)
	ociManifest := http.Header{"Content-Type": {ocispec.MediaTypeImageManifest}}
	var config digest.Digest
	{
		var m ocispec.Manifest
		require.NoError(t, json.Unmarshal(s.body, &m))
		config = m.Config.Digest
	}
	manifestWith := func(layers ...ocispec.Descriptor) []byte {
		m := ocispec.Manifest{
			MediaType: ocispec.MediaTypeImageManifest,
			Config:    ocispec.Descriptor{MediaType: ocispec.MediaTypeImageConfig, Digest: config, Size: int64(len(s.blobs[config]))},
			Layers:    layers,
		}
		m.SchemaVersion = 2
		b, err := json.Marshal(m)
		require.NoError(t, err)
		return b
	}

	t.Run("malformed manifests", func(t *testing.T) {
		for name, body := range map[string][]byte{
			"truncated JSON":      s.body[:len(s.body)/2],
			"not JSON":            []byte("this is not a manifest"),
			"schema version 1":    bytes.Replace(s.body, []byte(`"schemaVersion":2`), []byte(`"schemaVersion":1`), 1),
			"config not a digest": bytes.Replace(s.body, []byte(config.String()), []byte("sha256:nothex"), 1),
			"empty body":          {},
		} {
			r := p.do(http.MethodPut, "/v2/"+repo+"/manifests/v1", ociManifest, body)
			requireError(t, r, http.StatusBadRequest, "MANIFEST_INVALID", name)
		}
	})

	t.Run("manifest naming a blob the repository lacks", func(t *testing.T) {
		missing := randomBytes(t, 100)
		body := manifestWith(ocispec.Descriptor{MediaType: ocispec.MediaTypeImageLayer, Digest: digest.FromBytes(missing), Size: 100})
		r := p.do(http.MethodPut, "/v2/"+repo+"/manifests/v1", ociManifest, body)
		requireError(t, r, http.StatusBadRequest, "MANIFEST_BLOB_UNKNOWN", "unknown layer")

		// A blob of another repository is not one of this one's.
		other := p.pushBlob("e2e/other", missing)
		r = p.do(http.MethodPut, "/v2/"+repo+"/manifests/v1", ociManifest,
			manifestWith(ocispec.Descriptor{MediaType: ocispec.MediaTypeImageLayer, Digest: other, Size: 100}))
		requireError(t, r, http.StatusBadRequest, "MANIFEST_BLOB_UNKNOWN", "layer of another repository")
	})

	t.Run("oversized manifest", func(t *testing.T) {
		var m ocispec.Manifest
		require.NoError(t, json.Unmarshal(s.body, &m))
		m.Annotations = map[string]string{"padding": strings.Repeat("x", 4<<20)}
		body, err := json.Marshal(m)
		require.NoError(t, err)
		r := p.do(http.MethodPut, "/v2/"+repo+"/manifests/v1", ociManifest, body)
		// The spec names the status only; the code says which limit.
		require.Equal(t, http.StatusRequestEntityTooLarge, r.status, "%s", r)
		require.Contains(t, []string{"MANIFEST_INVALID", "SIZE_INVALID"}, first(r.errorCodes()), "%s", r)
	})

	t.Run("wrong digests", func(t *testing.T) {
		// A manifest put by a digest that is not its own.
		other := manifestWith()
		r := p.do(http.MethodPut, "/v2/"+repo+"/manifests/"+digest.FromBytes(s.body).String(), ociManifest, other)
		requireError(t, r, http.StatusBadRequest, "DIGEST_INVALID", "manifest under another digest")

		// A blob finished with a digest that is not its content's: the session is gone and
		// nothing is stored under either digest.
		data := randomBytes(t, 1000)
		wrong := digest.FromBytes(randomBytes(t, 10))
		r = p.do(http.MethodPost, "/v2/"+repo+"/blobs/uploads/", nil, nil)
		require.Equal(t, http.StatusAccepted, r.status, "%s", r)
		loc := p.location(r)
		r = p.do(http.MethodPut, withQuery(loc, "digest", wrong.String()), http.Header{"Content-Type": {"application/octet-stream"}}, data)
		requireError(t, r, http.StatusBadRequest, "DIGEST_INVALID", "upload with a wrong digest")
		for _, d := range []digest.Digest{wrong, digest.FromBytes(data)} {
			r = p.do(http.MethodHead, "/v2/"+repo+"/blobs/"+d.String(), nil, nil)
			require.Equal(t, http.StatusNotFound, r.status, "blob %s after a failed upload: %s", d, r)
		}
		r = p.do(http.MethodGet, loc, nil, nil)
		requireError(t, r, http.StatusNotFound, "BLOB_UPLOAD_UNKNOWN", "session after a digest mismatch")

		// Monolithic upload in one POST with the wrong digest.
		r = p.do(http.MethodPost, "/v2/"+repo+"/blobs/uploads/?digest="+wrong.String(), http.Header{"Content-Type": {"application/octet-stream"}}, data)
		requireError(t, r, http.StatusBadRequest, "DIGEST_INVALID", "monolithic upload with a wrong digest")

		// Digests that are not digests.
		for _, bad := range []string{"sha256:xyz", "sha256:" + strings.Repeat("a", 63), "sha256:" + strings.Repeat("A", 64), "nocolon"} {
			r = p.do(http.MethodPost, "/v2/"+repo+"/blobs/uploads/?digest="+bad, http.Header{"Content-Type": {"application/octet-stream"}}, data)
			requireError(t, r, http.StatusBadRequest, "DIGEST_INVALID", "upload with digest "+bad)
			if strings.Contains(bad, ":") {
				r = p.do(http.MethodGet, "/v2/"+repo+"/blobs/"+bad, nil, nil)
				requireError(t, r, http.StatusBadRequest, "DIGEST_INVALID", "blob GET with digest "+bad)
			}
		}
		// An algorithm the registry does not implement: refused before anything is stored.
		r = p.do(http.MethodPost, "/v2/"+repo+"/blobs/uploads/?digest=md5:d41d8cd98f00b204e9800998ecf8427e", http.Header{"Content-Type": {"application/octet-stream"}}, data)
		require.Equal(t, http.StatusBadRequest, r.status, "upload with an md5 digest: %s", r)
		require.Contains(t, []string{"DIGEST_INVALID", "UNSUPPORTED"}, first(r.errorCodes()), "upload with an md5 digest: %s", r)
	})

	t.Run("invalid names", func(t *testing.T) {
		a := newOCIClient(t, agent)
		for _, name := range []string{"E2E/Upper", "e2e/a..b", "e2e/-dash", "e2e//x", strings.Repeat("a", 256)} {
			r := p.do(http.MethodGet, "/v2/"+name+"/manifests/v1", nil, nil)
			requireError(t, r, http.StatusBadRequest, "NAME_INVALID", "GET manifest of "+name)
			r = a.do(http.MethodGet, "/v2/"+name+"/manifests/v1", nil, nil)
			requireError(t, r, http.StatusBadRequest, "NAME_INVALID", "GET manifest of "+name+" on an agent")
			r = p.do(http.MethodPost, "/v2/"+name+"/blobs/uploads/", nil, nil)
			requireError(t, r, http.StatusBadRequest, "NAME_INVALID", "upload to "+name)
			r = p.do(http.MethodPut, "/v2/"+name+"/manifests/v1", ociManifest, s.body)
			requireError(t, r, http.StatusBadRequest, "NAME_INVALID", "PUT manifest to "+name)
		}
		r := p.do(http.MethodPut, "/v2/"+repo+"/manifests/-bad-tag", ociManifest, s.body)
		requireError(t, r, http.StatusBadRequest, "TAG_INVALID", "PUT manifest with tag -bad-tag")
	})

	t.Run("unknown blobs manifests and uploads", func(t *testing.T) {
		unknown := digest.FromBytes(randomBytes(t, 10))
		r := p.do(http.MethodGet, "/v2/"+repo+"/blobs/"+unknown.String(), nil, nil)
		requireError(t, r, http.StatusNotFound, "BLOB_UNKNOWN", "GET unknown blob")
		r = p.do(http.MethodHead, "/v2/"+repo+"/blobs/"+unknown.String(), nil, nil)
		require.Equal(t, http.StatusNotFound, r.status, "HEAD unknown blob: %s", r)
		// A blob of this repository is not one of another's.
		r = p.do(http.MethodGet, "/v2/e2e/stranger/blobs/"+config.String(), nil, nil)
		requireError(t, r, http.StatusNotFound, "BLOB_UNKNOWN", "GET a blob of another repository")
		r = p.do(http.MethodDelete, "/v2/"+repo+"/blobs/"+unknown.String(), nil, nil)
		requireError(t, r, http.StatusNotFound, "BLOB_UNKNOWN", "DELETE unknown blob")

		for _, ref := range []string{"nope", unknown.String()} {
			r = p.getManifest(repo, ref)
			requireError(t, r, http.StatusNotFound, "MANIFEST_UNKNOWN", "GET unknown manifest "+ref)
			r = p.do(http.MethodDelete, "/v2/"+repo+"/manifests/"+ref, nil, nil)
			requireError(t, r, http.StatusNotFound, "MANIFEST_UNKNOWN", "DELETE unknown manifest "+ref)
		}

		bogus := "/v2/" + repo + "/blobs/uploads/no-such-session"
		for _, m := range []string{http.MethodGet, http.MethodPatch, http.MethodPut, http.MethodDelete} {
			u := bogus
			if m == http.MethodPut {
				u = withQuery(u, "digest", unknown.String())
			}
			r = p.do(m, u, http.Header{"Content-Type": {"application/octet-stream"}}, []byte("x"))
			requireError(t, r, http.StatusNotFound, "BLOB_UPLOAD_UNKNOWN", m+" unknown upload")
		}
		// A session of one repository does not continue in another.
		r = p.do(http.MethodPost, "/v2/"+repo+"/blobs/uploads/", nil, nil)
		require.Equal(t, http.StatusAccepted, r.status, "%s", r)
		loc := p.location(r)
		elsewhere := strings.Replace(loc, "/v2/"+repo+"/", "/v2/e2e/stranger/", 1)
		require.NotEqual(t, loc, elsewhere)
		r = p.do(http.MethodGet, elsewhere, nil, nil)
		requireError(t, r, http.StatusNotFound, "BLOB_UPLOAD_UNKNOWN", "a session used under another repository")
		r = p.do(http.MethodDelete, loc, nil, nil)
		require.Equal(t, http.StatusNoContent, r.status, "cancel: %s", r)
		r = p.do(http.MethodGet, loc, nil, nil)
		requireError(t, r, http.StatusNotFound, "BLOB_UPLOAD_UNKNOWN", "a cancelled session")
	})

	t.Run("out-of-order chunks", func(t *testing.T) {
		data := randomBytes(t, 30)
		chunk := func(loc string, from, to int) response {
			return p.do(http.MethodPatch, loc, http.Header{
				"Content-Type":  {"application/octet-stream"},
				"Content-Range": {strconv.Itoa(from) + "-" + strconv.Itoa(to-1)},
			}, data[from:to])
		}
		r := p.do(http.MethodPost, "/v2/"+repo+"/blobs/uploads/", nil, nil)
		require.Equal(t, http.StatusAccepted, r.status, "%s", r)
		loc := p.location(r)
		r = chunk(loc, 0, 10)
		require.Equal(t, http.StatusAccepted, r.status, "first chunk: %s", r)
		require.Equal(t, "0-9", r.header.Get("Range"))
		loc = p.location(r)

		// A gap, then an overlap: both 416, and the session keeps its 10 bytes.
		for _, bad := range [][2]int{{20, 30}, {0, 10}, {5, 15}} {
			r = chunk(loc, bad[0], bad[1])
			requireError(t, r, http.StatusRequestedRangeNotSatisfiable, "", "chunk "+strconv.Itoa(bad[0])+"-"+strconv.Itoa(bad[1]-1)+" after 0-9")
			st := p.do(http.MethodGet, loc, nil, nil)
			require.Equal(t, http.StatusNoContent, st.status, "upload status: %s", st)
			require.Equal(t, "0-9", st.header.Get("Range"), "the session after a rejected chunk")
		}

		r = chunk(loc, 10, 30)
		require.Equal(t, http.StatusAccepted, r.status, "the right next chunk: %s", r)
		require.Equal(t, "0-29", r.header.Get("Range"))
		d := digest.FromBytes(data)
		r = p.do(http.MethodPut, withQuery(p.location(r), "digest", d.String()), nil, nil)
		require.Equal(t, http.StatusCreated, r.status, "finish: %s", r)
		r = p.do(http.MethodGet, "/v2/"+repo+"/blobs/"+d.String(), nil, nil)
		require.Equal(t, http.StatusOK, r.status, "%s", r)
		require.Equal(t, data, r.body, "the blob is exactly the accepted chunks")
	})

	t.Run("writes to an agent", func(t *testing.T) {
		a := newOCIClient(t, agent)
		for _, req := range []struct{ method, path string }{
			{http.MethodPost, "/v2/" + repo + "/blobs/uploads/"},
			{http.MethodPut, "/v2/" + repo + "/manifests/v1"},
			{http.MethodDelete, "/v2/" + repo + "/manifests/" + s.manifest.String()},
			{http.MethodDelete, "/v2/" + repo + "/blobs/" + config.String()},
		} {
			r := a.do(req.method, req.path, ociManifest, s.body)
			requireError(t, r, http.StatusMethodNotAllowed, "UNSUPPORTED", req.method+" "+req.path+" on an agent")
		}
	})

	// Nothing that was stored changed: the proxy and the agent serve the same image.
	s.requireIntact(t, proxy)
	s.requireIntact(t, agent)
}

func first(s []string) string {
	if len(s) == 0 {
		return ""
	}
	return s[0]
}
