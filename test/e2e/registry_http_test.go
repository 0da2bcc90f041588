package e2e

import (
	"bytes"
	"crypto/rand"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strings"
	"testing"

	"github.com/opencontainers/go-digest"
	ocispec "github.com/opencontainers/image-spec/specs-go/v1"
	"github.com/stretchr/testify/require"
)

// ociClient speaks the distribution API over plain HTTP, with nothing clever in between, so
// that tests see exactly what the registry answers.
type ociClient struct {
	t    *testing.T
	base string // http://host:port
	hc   *http.Client
}

func newOCIClient(t *testing.T, addr string) *ociClient {
	tr := &http.Transport{}
	t.Cleanup(tr.CloseIdleConnections)
	return &ociClient{t: t, base: "http://" + addr, hc: &http.Client{
		Transport: tr,
		// Redirects are the registry's answer too: tests look at them.
		CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse },
	}}
}

// response is an answer read in full.
type response struct {
	status int
	header http.Header
	body   []byte
}

// errorCodes are the codes of an OCI error body, empty when the body is not one.
func (r response) errorCodes() []string {
	var e struct {
		Errors []struct {
			Code string `json:"code"`
		} `json:"errors"`
	}
	if json.Unmarshal(r.body, &e) != nil {
		return nil
	}
	var codes []string
	for _, x := range e.Errors {
		codes = append(codes, x.Code)
	}
	return codes
}

func (r response) String() string {
	return fmt.Sprintf("%d %s %s", r.status, r.header, tail(r.body, 2048))
}

// do sends a request; path is absolute ("/v2/...") or a Location the registry returned.
func (c *ociClient) do(method, path string, header http.Header, body []byte) response {
	c.t.Helper()
	u := path
	if !strings.HasPrefix(path, "http://") {
		u = c.base + path
	}
	var rd io.Reader
	if body != nil {
		rd = bytes.NewReader(body)
	}
	req, err := http.NewRequestWithContext(c.t.Context(), method, u, rd)
	require.NoError(c.t, err)
	for k, v := range header {
		req.Header[k] = v
	}
	if body != nil {
		req.ContentLength = int64(len(body))
	}
	resp, err := c.hc.Do(req)
	require.NoError(c.t, err, "%s %s", method, u)
	defer func() { _ = resp.Body.Close() }()
	b, err := io.ReadAll(resp.Body)
	require.NoError(c.t, err)
	return response{status: resp.StatusCode, header: resp.Header, body: b}
}

// location resolves a Location header against the registry.
func (c *ociClient) location(r response) string {
	c.t.Helper()
	loc := r.header.Get("Location")
	require.NotEmpty(c.t, loc, "no Location in %s", r)
	u, err := url.Parse(c.base)
	require.NoError(c.t, err)
	l, err := u.Parse(loc)
	require.NoError(c.t, err)
	return l.String()
}

// withQuery appends k=v to a URL that may have a query already.
func withQuery(u, k, v string) string {
	sep := "?"
	if strings.Contains(u, "?") {
		sep = "&"
	}
	return u + sep + url.QueryEscape(k) + "=" + url.QueryEscape(v)
}

// pushBlob uploads b to repo with POST then PUT and returns its digest.
func (c *ociClient) pushBlob(repo string, b []byte) digest.Digest {
	c.t.Helper()
	d := digest.FromBytes(b)
	r := c.do(http.MethodPost, "/v2/"+repo+"/blobs/uploads/", nil, nil)
	require.Equal(c.t, http.StatusAccepted, r.status, "start upload: %s", r)
	r = c.do(http.MethodPut, withQuery(c.location(r), "digest", d.String()),
		http.Header{"Content-Type": {"application/octet-stream"}}, b)
	require.Equal(c.t, http.StatusCreated, r.status, "finish upload: %s", r)
	return d
}

// putManifest stores a manifest under ref (a tag or a digest) and returns its digest.
func (c *ociClient) putManifest(repo, ref, mediaType string, body []byte) digest.Digest {
	c.t.Helper()
	r := c.do(http.MethodPut, "/v2/"+repo+"/manifests/"+ref, http.Header{"Content-Type": {mediaType}}, body)
	require.Equal(c.t, http.StatusCreated, r.status, "put manifest %s:%s: %s", repo, ref, r)
	return digest.FromBytes(body)
}

// getManifest fetches a manifest, accepting the OCI and Docker types.
func (c *ociClient) getManifest(repo, ref string) response {
	c.t.Helper()
	return c.do(http.MethodGet, "/v2/"+repo+"/manifests/"+ref, http.Header{"Accept": {
		ocispec.MediaTypeImageManifest, ocispec.MediaTypeImageIndex,
		"application/vnd.docker.distribution.manifest.v2+json",
		"application/vnd.docker.distribution.manifest.list.v2+json",
	}}, nil)
}

func randomBytes(t *testing.T, n int) []byte {
	t.Helper()
	b := make([]byte, n)
	_, err := rand.Read(b)
	require.NoError(t, err)
	return b
}

// seeded is an image and an artifact referring to it, pushed with plain HTTP.
type seeded struct {
	repo, tag string
	manifest  digest.Digest // the image manifest, tagged
	body      []byte        // its bytes
	referrer  digest.Digest // an artifact manifest whose subject is the image
	blobs     map[digest.Digest][]byte
}

func (s seeded) blobStrings() []string {
	var out []string
	for d := range s.blobs {
		out = append(out, d.String())
	}
	return out
}

// seedImage pushes an image of two blobs (a config and a 64 KiB random layer) to repo:tag,
// and an artifact (an empty config and a small layer) whose subject is the image.
func seedImage(t *testing.T, addr, repo, tag string) seeded {
	t.Helper()
	c := newOCIClient(t, addr)
	s := seeded{repo: repo, tag: tag, blobs: map[digest.Digest][]byte{}}
	blob := func(mediaType string, b []byte) ocispec.Descriptor {
		d := c.pushBlob(repo, b)
		s.blobs[d] = b
		return ocispec.Descriptor{MediaType: mediaType, Digest: d, Size: int64(len(b))}
	}
	config := []byte(`{"architecture":"amd64","os":"linux","rootfs":{"type":"layers","diff_ids":[]},"config":{}}`)
	m := ocispec.Manifest{
		MediaType: ocispec.MediaTypeImageManifest,
		Config:    blob(ocispec.MediaTypeImageConfig, config),
		Layers:    []ocispec.Descriptor{blob(ocispec.MediaTypeImageLayer, randomBytes(t, 64<<10))},
	}
	m.SchemaVersion = 2
	body, err := json.Marshal(m)
	require.NoError(t, err)
	s.manifest = c.putManifest(repo, tag, ocispec.MediaTypeImageManifest, body)
	s.body = body

	a := ocispec.Manifest{
		MediaType:    ocispec.MediaTypeImageManifest,
		ArtifactType: "application/vnd.krakenctl.e2e.signature",
		Config:       blob(ocispec.MediaTypeEmptyJSON, []byte("{}")),
		Layers:       []ocispec.Descriptor{blob("application/vnd.krakenctl.e2e.signature.v1", []byte("signed: "+s.manifest.String()))},
		Subject:      &ocispec.Descriptor{MediaType: ocispec.MediaTypeImageManifest, Digest: s.manifest, Size: int64(len(body))},
	}
	a.SchemaVersion = 2
	ab, err := json.Marshal(a)
	require.NoError(t, err)
	d := digest.FromBytes(ab)
	r := c.do(http.MethodPut, "/v2/"+repo+"/manifests/"+d.String(), http.Header{"Content-Type": {ocispec.MediaTypeImageManifest}}, ab)
	require.Equal(t, http.StatusCreated, r.status, "put referrer: %s", r)
	require.Equal(t, s.manifest.String(), r.header.Get("OCI-Subject"), "a registry that knows the subject says so")
	s.referrer = d
	return s
}

// requireIntact checks that everything seeded is served unchanged by addr: the tag, the
// manifest bytes by tag and by digest, and every blob.
func (s seeded) requireIntact(t *testing.T, addr string) {
	t.Helper()
	c := newOCIClient(t, addr)
	for _, ref := range []string{s.tag, s.manifest.String()} {
		r := c.getManifest(s.repo, ref)
		require.Equal(t, http.StatusOK, r.status, "%s manifest %s: %s", addr, ref, r)
		require.Equal(t, s.body, r.body, "%s manifest %s changed", addr, ref)
		require.Equal(t, s.manifest.String(), r.header.Get("Docker-Content-Digest"))
		// containerd resolves a tag with HEAD alone, and needs the digest header there.
		h := c.do(http.MethodHead, "/v2/"+s.repo+"/manifests/"+ref, http.Header{"Accept": {ocispec.MediaTypeImageManifest}}, nil)
		require.Equal(t, http.StatusOK, h.status, "%s HEAD manifest %s: %s", addr, ref, h)
		require.Equal(t, s.manifest.String(), h.header.Get("Docker-Content-Digest"), "%s HEAD manifest %s", addr, ref)
		require.Equal(t, ocispec.MediaTypeImageManifest, h.header.Get("Content-Type"))
	}
	for d, b := range s.blobs {
		r := c.do(http.MethodGet, "/v2/"+s.repo+"/blobs/"+d.String(), nil, nil)
		require.Equal(t, http.StatusOK, r.status, "%s blob %s: %s", addr, d, r)
		require.True(t, bytes.Equal(b, r.body), "%s blob %s changed", addr, d)
		if len(b) > 20 {
			r = c.do(http.MethodGet, "/v2/"+s.repo+"/blobs/"+d.String(), http.Header{"Range": {"bytes=10-19"}}, nil)
			require.Equal(t, http.StatusPartialContent, r.status, "%s blob %s range: %s", addr, d, r)
			require.Equal(t, fmt.Sprintf("bytes 10-19/%d", len(b)), r.header.Get("Content-Range"))
			require.Equal(t, b[10:20], r.body, "%s blob %s range", addr, d)
		}
	}
	r := c.do(http.MethodGet, "/v2/"+s.repo+"/referrers/"+s.manifest.String(), nil, nil)
	require.Equal(t, http.StatusOK, r.status, "%s referrers: %s", addr, r)
	var idx ocispec.Index
	require.NoError(t, json.Unmarshal(r.body, &idx))
	require.Len(t, idx.Manifests, 1, "referrers of the seeded image at %s", addr)
	require.Equal(t, s.referrer, idx.Manifests[0].Digest)
}
