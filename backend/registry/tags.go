package registry

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"regexp"

	"github.com/opencontainers/go-digest"

	"github.com/krakenctl/krakenctl/backend"
)

// ErrInvalidResponse means the registry answered a request with something that cannot be
// right: a Docker-Content-Digest that is not a digest, or a manifest larger than any
// registry accepts.
var ErrInvalidResponse = errors.New("registry: invalid response")

// MaxManifestSize bounds the manifest ResolveTag reads when it has to hash one itself; the
// OCI distribution spec lets registries refuse manifests over 4 MiB.
const MaxManifestSize = 4 << 20

// tagPattern is the distribution spec's tag grammar.
var tagPattern = regexp.MustCompile(`^[a-zA-Z0-9_][a-zA-Z0-9._-]{0,127}$`)

// ResolveTag returns the digest of the manifest that tag names in repo upstream: a HEAD of
// the manifest with every manifest media type accepted, read from its Docker-Content-Digest
// header. A registry that sends no such header is asked again with a GET, and the manifest
// (at most MaxManifestSize bytes) is hashed with sha256. A tag or repository the registry
// does not know is an error wrapping backend.ErrNotFound; a header that is not a valid
// digest, or an oversized manifest, wraps ErrInvalidResponse; refused credentials wrap
// ErrUnauthorized.
//
// The digest is the registry's word: whoever fetches the manifest by it still verifies the
// content (Download does).
func (b *Backend) ResolveTag(ctx context.Context, repo, tag string) (digest.Digest, error) {
	if err := backend.CheckNamespace(repo); err != nil {
		return "", fmt.Errorf("resolve tag %s:%s: %w", repo, tag, err)
	}
	if !tagPattern.MatchString(tag) {
		return "", fmt.Errorf("resolve tag %s:%q: %w: not a valid tag", repo, tag, backend.ErrInvalidKey)
	}
	path := "/v2/" + repo + "/manifests/" + tag
	for _, method := range []string{http.MethodHead, http.MethodGet} {
		resp, err := b.do(ctx, method, repo, path, manifestAccept)
		if err != nil {
			return "", fmt.Errorf("resolve tag %s:%s: %w", repo, tag, err)
		}
		d, err := tagDigest(resp)
		closeBody(resp)
		if err != nil {
			return "", fmt.Errorf("resolve tag %s:%s: %w", repo, tag, err)
		}
		if d != "" {
			return d, nil
		}
	}
	return "", fmt.Errorf("resolve tag %s:%s: %w: a GET of the manifest gave no digest", repo, tag, ErrInvalidResponse)
}

// tagDigest reads the digest of a manifest response: the Docker-Content-Digest header, or
// for a GET without one the sha256 of the body. It returns "" for a HEAD without the header,
// so the caller asks again with a GET. The caller closes the body.
func tagDigest(resp *http.Response) (digest.Digest, error) {
	switch resp.StatusCode {
	case http.StatusOK:
	case http.StatusNotFound:
		return "", fmt.Errorf("%w: the registry has no manifest by that tag", backend.ErrNotFound)
	default:
		return "", statusError(resp)
	}
	if h := resp.Header.Get("Docker-Content-Digest"); h != "" {
		return parseContentDigest(h)
	}
	if resp.Request.Method == http.MethodHead {
		return "", nil
	}
	if resp.ContentLength > MaxManifestSize {
		return "", fmt.Errorf("%w: the manifest is %d bytes, more than %d", ErrInvalidResponse, resp.ContentLength, MaxManifestSize)
	}
	dg := digest.SHA256.Digester()
	n, err := io.Copy(dg.Hash(), io.LimitReader(resp.Body, MaxManifestSize+1))
	if err != nil {
		return "", fmt.Errorf("read manifest after %d bytes: %w", n, err)
	}
	if n > MaxManifestSize {
		return "", fmt.Errorf("%w: the manifest is more than %d bytes", ErrInvalidResponse, MaxManifestSize)
	}
	if resp.ContentLength >= 0 && n != resp.ContentLength {
		return "", fmt.Errorf("%w: got %d bytes of the manifest, Content-Length %d", ErrSizeMismatch, n, resp.ContentLength)
	}
	return dg.Digest(), nil
}

// parseContentDigest checks a Docker-Content-Digest header: a digest of a known algorithm in
// canonical form (sha256 or sha512, lower-case hex of the right length).
func parseContentDigest(h string) (digest.Digest, error) {
	d, err := digest.Parse(h)
	if err != nil {
		return "", fmt.Errorf("%w: Docker-Content-Digest %.100q: %w", ErrInvalidResponse, h, err)
	}
	if a := d.Algorithm(); a != digest.SHA256 && a != digest.SHA512 {
		return "", fmt.Errorf("%w: Docker-Content-Digest %.100q: algorithm %s is not sha256 or sha512", ErrInvalidResponse, h, a)
	}
	return d, nil
}
