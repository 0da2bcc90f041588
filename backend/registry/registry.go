// Package registry is a read-only backend over an upstream Docker/OCI distribution registry:
// krakenctl origins can pull blobs and manifests they do not have from, for example, Docker
// Hub or a private registry.
//
// A namespace is a repository name and an object name is a hex digest: 64 hex digits for
// sha256 or 128 for sha512 (any other valid name is simply not found). Stat and Download look the digest up as a blob of the repository
// first and as a manifest second, and Download verifies the digest of what it streams.
// Upload always fails with backend.ErrReadOnly. List fails with ErrListUnsupported because
// the distribution API cannot enumerate a repository's blobs; the repository's tags are
// available from Tags, and ResolveTag resolves one to its manifest digest (HEAD, falling back
// to GET and hashing when the registry sends no Docker-Content-Digest).
//
// Authentication follows the distribution token flow: anonymous first, then whatever the
// registry's 401 challenge asks for. For "Basic" the configured credentials go to the
// registry; for "Bearer" they go to the challenge's token endpoint, and the token is cached
// per (realm, service, scope) until 90% of its lifetime (expires_in, 60 s when absent) has
// passed, or until the registry rejects it with a 401, after which it is fetched again once.
package registry

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/opencontainers/go-digest"

	"github.com/krakenctl/krakenctl/backend"
)

// Sentinel errors, wrapped with %w.
var (
	// ErrListUnsupported is returned by List. It wraps errors.ErrUnsupported.
	ErrListUnsupported = fmt.Errorf("registry: the distribution API cannot list blobs (use Tags): %w", errors.ErrUnsupported)
	// ErrUnauthorized means the registry or its token service refused the credentials, or
	// asked for credentials the config does not have.
	ErrUnauthorized = errors.New("registry: unauthorized")
	// ErrDigestMismatch means the registry sent content whose digest is not the requested one.
	ErrDigestMismatch = errors.New("registry: digest mismatch")
	// ErrSizeMismatch means the registry sent a body whose length disagrees with its
	// Content-Length.
	ErrSizeMismatch = errors.New("registry: size mismatch")
	// ErrTimeout means the registry did not send response headers within Config.Timeout.
	// Errors wrapping it also wrap context.DeadlineExceeded.
	ErrTimeout = errors.New("registry: timed out waiting for response headers")
)

// manifestAccept lists the manifest media types a Stat or Download by digest accepts.
var manifestAccept = strings.Join([]string{
	"application/vnd.oci.image.manifest.v1+json",
	"application/vnd.oci.image.index.v1+json",
	"application/vnd.docker.distribution.manifest.v2+json",
	"application/vnd.docker.distribution.manifest.list.v2+json",
	"application/vnd.oci.artifact.manifest.v1+json",
	"application/vnd.docker.distribution.manifest.v1+prettyjws",
	"application/vnd.docker.distribution.manifest.v1+json",
}, ", ")

// maxTagsResponse bounds one page of a tag listing.
const maxTagsResponse = 16 << 20

// Deps are the optional collaborators of a Backend.
type Deps struct {
	// Transport sends the requests to the registry and its token service; nil means a clone
	// of http.DefaultTransport with transparent compression turned off.
	Transport http.RoundTripper
}

// Backend is a read-only backend.Backend over an upstream registry. It is safe for
// concurrent use.
type Backend struct {
	cfg    Config
	base   url.URL
	client *http.Client
	tokens tokenCache

	mu   sync.Mutex
	mode authMode
}

// New returns a Backend for cfg, after applying defaults and validating it. It does not
// contact the registry.
func New(cfg Config, deps Deps) (*Backend, error) {
	cfg.Defaults()
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	scheme := "https"
	if cfg.Insecure {
		scheme = "http"
	}
	rt := deps.Transport
	if rt == nil {
		t := http.DefaultTransport.(*http.Transport).Clone()
		t.DisableCompression = true
		rt = t
	}
	return &Backend{
		cfg:    cfg,
		base:   url.URL{Scheme: scheme, Host: cfg.Address},
		client: &http.Client{Transport: rt},
	}, nil
}

// CloseIdleConnections closes the connections kept open for reuse. The Backend stays
// usable; call it when dropping a Backend so its connections do not linger.
func (b *Backend) CloseIdleConnections() { b.client.CloseIdleConnections() }

// parseKey checks namespace and name and returns the digest name stands for.
func parseKey(namespace, name string) (digest.Digest, error) {
	if err := backend.CheckNamespace(namespace); err != nil {
		return "", err
	}
	if err := backend.CheckName(name); err != nil {
		return "", err
	}
	alg := digest.SHA256
	if len(name) == 128 {
		alg = digest.SHA512
	}
	d := digest.NewDigestFromEncoded(alg, name)
	if d.Validate() != nil {
		// A valid key, but a registry only holds content-addressed objects.
		return "", fmt.Errorf("%w: a registry holds only objects named by a lower-case sha256 or sha512 hex digest", backend.ErrNotFound)
	}
	return d, nil
}

// Stat implements backend.Backend: a HEAD of the blob, then of the manifest.
func (b *Backend) Stat(ctx context.Context, namespace, name string) (backend.Info, error) {
	d, err := parseKey(namespace, name)
	if err != nil {
		return backend.Info{}, fmt.Errorf("stat %s/%s: %w", namespace, name, err)
	}
	resp, err := b.fetch(ctx, http.MethodHead, namespace, d)
	if err != nil {
		return backend.Info{}, fmt.Errorf("stat %s/%s: %w", namespace, name, err)
	}
	closeBody(resp)
	if resp.ContentLength < 0 {
		return backend.Info{}, fmt.Errorf("stat %s/%s: registry sent no Content-Length", namespace, name)
	}
	return backend.Info{Size: resp.ContentLength}, nil
}

// Download implements backend.Backend: a GET of the blob, then of the manifest, streamed to
// w while its digest is computed. When the content does not match the digest, Download
// returns an error wrapping ErrDigestMismatch and w has not received the final bytes, so it
// never holds the complete wrong content.
func (b *Backend) Download(ctx context.Context, namespace, name string, w io.Writer) error {
	d, err := parseKey(namespace, name)
	if err != nil {
		return fmt.Errorf("download %s/%s: %w", namespace, name, err)
	}
	resp, err := b.fetch(ctx, http.MethodGet, namespace, d)
	if err != nil {
		return fmt.Errorf("download %s/%s: %w", namespace, name, err)
	}
	defer closeBody(resp)
	if err := copyVerified(w, resp.Body, d, resp.ContentLength); err != nil {
		return fmt.Errorf("download %s/%s: %w", namespace, name, err)
	}
	return nil
}

// copyVerified copies r to w, holding back the last chunk until the digest and length
// (when size >= 0) are confirmed.
func copyVerified(w io.Writer, r io.Reader, d digest.Digest, size int64) error {
	h := d.Algorithm().Hash()
	bufs := [2][]byte{make([]byte, 32<<10), make([]byte, 32<<10)}
	var pending []byte
	var n int64
	for i := 0; ; i ^= 1 {
		m, err := io.ReadFull(r, bufs[i])
		if m > 0 {
			h.Write(bufs[i][:m])
			n += int64(m)
			if pending != nil {
				if _, werr := w.Write(pending); werr != nil {
					return fmt.Errorf("write: %w", werr)
				}
			}
			pending = bufs[i][:m]
		}
		if errors.Is(err, io.EOF) || errors.Is(err, io.ErrUnexpectedEOF) {
			break
		}
		if err != nil {
			return fmt.Errorf("read after %d bytes: %w", n, err)
		}
	}
	if size >= 0 && n != size {
		return fmt.Errorf("%w: got %d bytes, Content-Length %d", ErrSizeMismatch, n, size)
	}
	if got := digest.NewDigest(d.Algorithm(), h); got != d {
		return fmt.Errorf("%w: content has digest %s", ErrDigestMismatch, got)
	}
	if pending != nil {
		if _, err := w.Write(pending); err != nil {
			return fmt.Errorf("write: %w", err)
		}
	}
	return nil
}

// fetch requests d from the repository as a blob, then as a manifest; a 404 to both is
// backend.ErrNotFound. A 200 response is returned with its body open.
func (b *Backend) fetch(ctx context.Context, method, repo string, d digest.Digest) (*http.Response, error) {
	var resp *http.Response
	for _, kind := range []string{"blobs", "manifests"} {
		accept := ""
		if kind == "manifests" {
			accept = manifestAccept
		}
		var err error
		resp, err = b.do(ctx, method, repo, "/v2/"+repo+"/"+kind+"/"+d.String(), accept)
		if err != nil {
			return nil, err
		}
		if resp.StatusCode != http.StatusNotFound {
			break
		}
		closeBody(resp)
		resp = nil
	}
	if resp == nil {
		return nil, backend.ErrNotFound
	}
	if resp.StatusCode != http.StatusOK {
		defer closeBody(resp)
		return nil, statusError(resp)
	}
	if got := resp.Header.Get("Docker-Content-Digest"); got != "" && got != d.String() {
		closeBody(resp)
		return nil, fmt.Errorf("%w: registry labels the content %s", ErrDigestMismatch, got)
	}
	return resp, nil
}

// CheckWrite implements backend.WriteChecker: an upstream registry takes no uploads.
func (b *Backend) CheckWrite(string) error {
	return fmt.Errorf("%w: an upstream registry takes no uploads", backend.ErrReadOnly)
}

// Upload implements backend.Backend; the registry is read-only.
func (b *Backend) Upload(_ context.Context, namespace, name string, _ io.Reader, _ int64) error {
	return fmt.Errorf("upload %s/%s: %w: upstream registry", namespace, name, backend.ErrReadOnly)
}

// List implements backend.Backend. The distribution API has no way to enumerate blobs, so
// it returns an error wrapping ErrListUnsupported (and errors.ErrUnsupported); see Tags.
func (b *Backend) List(_ context.Context, namespace, _ string) ([]string, error) {
	if err := backend.CheckNamespace(namespace); err != nil {
		return nil, fmt.Errorf("list %s: %w", namespace, err)
	}
	return nil, fmt.Errorf("list %s: %w", namespace, ErrListUnsupported)
}

// MaxTags bounds the tags Tags collects from one repository: a registry that pages on forever
// must not grow the caller's memory without end.
const MaxTags = 100_000

// Tags returns the repository's tags in lexical order, following the registry's
// pagination. A repository the registry does not know is an error wrapping
// backend.ErrNotFound.
func (b *Backend) Tags(ctx context.Context, repo string) ([]string, error) {
	if err := backend.CheckNamespace(repo); err != nil {
		return nil, fmt.Errorf("list tags of %s: %w", repo, err)
	}
	var tags []string
	next := "/v2/" + repo + "/tags/list?n=1000"
	for pages := 0; next != ""; pages++ {
		if pages == 10000 {
			return nil, fmt.Errorf("list tags of %s: more than %d pages", repo, pages)
		}
		resp, err := b.do(ctx, http.MethodGet, repo, next, "application/json")
		if err != nil {
			return nil, fmt.Errorf("list tags of %s: %w", repo, err)
		}
		page, link, err := readTagsPage(resp)
		closeBody(resp)
		if err != nil {
			return nil, fmt.Errorf("list tags of %s: %w", repo, err)
		}
		tags = append(tags, page...)
		if len(tags) > MaxTags {
			return nil, fmt.Errorf("list tags of %s: more than %d tags", repo, MaxTags)
		}
		next = link
	}
	slices.Sort(tags)
	return slices.Compact(tags), nil
}

// readTagsPage decodes one page of a tag listing and returns the path of the next page, if
// the registry sent a Link to one on the same host. The caller closes the body.
func readTagsPage(resp *http.Response) ([]string, string, error) {
	switch resp.StatusCode {
	case http.StatusOK:
	case http.StatusNotFound:
		return nil, "", backend.ErrNotFound
	default:
		return nil, "", statusError(resp)
	}
	var body struct {
		Tags []string `json:"tags"`
	}
	if err := json.NewDecoder(io.LimitReader(resp.Body, maxTagsResponse)).Decode(&body); err != nil {
		return nil, "", fmt.Errorf("decode tag list: %w", err)
	}
	link := resp.Header.Get("Link")
	if link == "" {
		return body.Tags, "", nil
	}
	// Link: </v2/repo/tags/list?last=x&n=1000>; rel="next"
	start, end := strings.IndexByte(link, '<'), strings.IndexByte(link, '>')
	if start < 0 || end < start || !strings.Contains(link[end:], `rel="next"`) {
		return body.Tags, "", nil
	}
	u, err := resp.Request.URL.Parse(link[start+1 : end])
	if err != nil {
		return nil, "", fmt.Errorf("parse Link header: %w", err)
	}
	if u.Host != resp.Request.URL.Host || !strings.HasPrefix(u.Path, "/v2/") {
		return nil, "", fmt.Errorf("tag list Link %q leaves the registry", u)
	}
	return body.Tags, u.RequestURI(), nil
}

// do sends method to path (with its query) on the registry, authenticating for pulls from
// repo as the registry's challenges demand. Responses other than 401 are returned with their
// bodies open; a 401 after authenticating is an error wrapping ErrUnauthorized.
func (b *Backend) do(ctx context.Context, method, repo, path, accept string) (*http.Response, error) {
	scope := "repository:" + repo + ":pull"
	for attempt := 0; ; attempt++ {
		authz, key, tok, err := b.authorization(ctx, scope)
		if err != nil {
			return nil, err
		}
		resp, err := b.send(ctx, method, path, authz, accept)
		if err != nil {
			return nil, err
		}
		if resp.StatusCode != http.StatusUnauthorized {
			return resp, nil
		}
		chs := parseChallenges(resp.Header.Values("WWW-Authenticate"))
		desc := describe(resp)
		closeBody(resp)
		switch {
		case b.cfg.Token != "":
			return nil, fmt.Errorf("%w: registry rejected the configured token: %s", ErrUnauthorized, desc)
		case attempt > 0, strings.HasPrefix(authz, "Basic "):
			return nil, fmt.Errorf("%w: %s", ErrUnauthorized, desc)
		}
		if tok != "" {
			b.tokens.drop(key, tok)
		}
		if err := b.learn(chs); err != nil {
			return nil, err
		}
	}
}

// authorization returns the Authorization header for a request needing scope and, for a
// bearer token, the cache key and token used.
func (b *Backend) authorization(ctx context.Context, scope string) (string, tokenKey, string, error) {
	if b.cfg.Token != "" {
		return "Bearer " + b.cfg.Token, tokenKey{}, "", nil
	}
	b.mu.Lock()
	mode := b.mode
	b.mu.Unlock()
	switch mode.scheme {
	case "basic":
		req := http.Request{Header: http.Header{}}
		req.SetBasicAuth(b.cfg.Username, b.cfg.Password)
		return req.Header.Get("Authorization"), tokenKey{}, "", nil
	case "bearer":
		k := tokenKey{realm: mode.realm, service: mode.service, scope: scope}
		tok, err := b.token(ctx, k)
		if err != nil {
			return "", tokenKey{}, "", err
		}
		return "Bearer " + tok, k, tok, nil
	default:
		return "", tokenKey{}, "", nil
	}
}

// send performs one request to the registry. Config.Timeout bounds the wait for response
// headers. The returned response's body must be closed.
func (b *Backend) send(ctx context.Context, method, path, authz, accept string) (*http.Response, error) {
	u := b.base.String() + path
	rctx, cancel := context.WithCancel(ctx)
	req, err := http.NewRequestWithContext(rctx, method, u, nil)
	if err != nil {
		cancel()
		return nil, fmt.Errorf("build request: %w", err)
	}
	if authz != "" {
		req.Header.Set("Authorization", authz)
	}
	if accept != "" {
		req.Header.Set("Accept", accept)
	}
	timer := time.AfterFunc(b.cfg.Timeout, cancel)
	resp, err := b.client.Do(req)
	if !timer.Stop() && ctx.Err() == nil {
		if err == nil {
			closeBody(resp)
		}
		cancel()
		return nil, fmt.Errorf("%s %s: %w after %s: %w", method, u, ErrTimeout, b.cfg.Timeout, context.DeadlineExceeded)
	}
	if err != nil {
		cancel()
		return nil, err
	}
	resp.Body = &cancelOnClose{ReadCloser: resp.Body, cancel: cancel}
	return resp, nil
}

// describe summarizes an unexpected response: its status and, for a distribution error
// body, the error codes and messages.
func describe(resp *http.Response) string {
	var sb strings.Builder
	sb.WriteString("unexpected status " + resp.Status)
	data, _ := io.ReadAll(io.LimitReader(resp.Body, 4<<10))
	var body struct {
		Errors []struct {
			Code    string `json:"code"`
			Message string `json:"message"`
		} `json:"errors"`
	}
	if json.Unmarshal(data, &body) == nil && len(body.Errors) > 0 {
		for _, e := range body.Errors {
			sb.WriteString(": " + e.Code)
			if e.Message != "" {
				sb.WriteString(" " + e.Message)
			}
		}
	} else if msg := strings.Join(strings.Fields(string(data)), " "); msg != "" {
		sb.WriteString(": " + msg[:min(len(msg), 256)])
	}
	return sb.String()
}

// statusError is the error of an unexpected answer: a *backend.Throttled, with the registry's
// Retry-After, for 429 (Docker Hub's pull rate limit among others) and 503, so a limits
// wrapper (backend/limit) waits as asked; otherwise the description.
func statusError(resp *http.Response) error {
	err := errors.New(describe(resp))
	if backend.ThrottledStatus(resp.StatusCode) {
		return &backend.Throttled{RetryAfter: backend.ParseRetryAfter(resp.Header.Get("Retry-After"), time.Now()), Err: err}
	}
	return err
}

// closeBody drains a little of resp's body, so the connection can be reused, and closes it.
func closeBody(resp *http.Response) {
	// Errors here only mean the connection cannot be reused; the transport then drops it.
	_, _ = io.Copy(io.Discard, io.LimitReader(resp.Body, 64<<10))
	_ = resp.Body.Close()
}

// cancelOnClose releases a request's context when its response body is closed.
type cancelOnClose struct {
	io.ReadCloser
	cancel context.CancelFunc
}

func (c *cancelOnClose) Close() error {
	err := c.ReadCloser.Close()
	c.cancel()
	return err
}

// Interface guards
var (
	_ backend.Backend      = (*Backend)(nil)
	_ backend.WriteChecker = (*Backend)(nil)
)
