package buildindex

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"slices"
	"strings"
	"sync"

	"github.com/opencontainers/go-digest"
	"golang.org/x/sync/errgroup"

	"github.com/krakenctl/krakenctl/server/client"
	"github.com/krakenctl/krakenctl/server/registry"
)

// Manifest media types whose references the content check follows.
const (
	mediaTypeOCIManifest    = "application/vnd.oci.image.manifest.v1+json"
	mediaTypeOCIIndex       = "application/vnd.oci.image.index.v1+json"
	mediaTypeDockerManifest = "application/vnd.docker.distribution.manifest.v2+json"
	mediaTypeDockerList     = "application/vnd.docker.distribution.manifest.list.v2+json"
)

// statParallelism bounds the concurrent existence checks of one manifest's references.
const statParallelism = 8

// contentChecker verifies that a tag's digest names content the origin cluster holds.
type contentChecker struct {
	origins     []string
	cluster     *client.Cluster
	maxManifest int64
	metrics     *metrics
}

// check returns nil when d exists in the origin cluster under namespace repo and, when it is a
// manifest the checker can parse (OCI or Docker schema 2 image manifest, OCI index, Docker
// manifest list), so does every descriptor it references (config, layers, child manifests),
// except foreign layers that live outside registries. Otherwise: 404 MANIFEST_UNKNOWN when d is
// missing, 400 MANIFEST_BLOB_UNKNOWN when a reference is, 400 MANIFEST_INVALID when the
// manifest's references are malformed or their sizes disagree, 503 UNAVAILABLE when the
// origins cannot tell.
func (c *contentChecker) check(ctx context.Context, repo string, d digest.Digest) error {
	err := c.checkManifest(ctx, repo, d)
	result := "ok"
	if err != nil {
		result = "error"
		var re *registry.Error
		if errors.As(err, &re) {
			result = strings.ToLower(string(re.Code))
		}
	}
	c.metrics.contentChecks.WithLabelValues(result).Inc()
	return err
}

func (c *contentChecker) checkManifest(ctx context.Context, repo string, d digest.Digest) error {
	size, err := c.stat(ctx, repo, d)
	if errors.Is(err, client.ErrNotFound) {
		return &registry.Error{Status: http.StatusNotFound, Code: registry.CodeManifestUnknown,
			Message: fmt.Sprintf("manifest %s is not in the origin cluster under namespace %q", d, repo),
			Detail:  map[string]string{"digest": d.String()}, Err: err}
	}
	if err != nil {
		return err
	}
	if size > c.maxManifest {
		return nil // Too large for a manifest: some other artifact, checked for existence only.
	}
	var buf limitedBuffer
	buf.max = c.maxManifest
	if _, err := c.cluster.Pull(ctx, repo, d, &buf, nil); err != nil {
		if errors.Is(err, client.ErrNotFound) {
			return &registry.Error{Status: http.StatusNotFound, Code: registry.CodeManifestUnknown,
				Message: fmt.Sprintf("manifest %s is not in the origin cluster under namespace %q", d, repo),
				Detail:  map[string]string{"digest": d.String()}, Err: err}
		}
		return unavailable(fmt.Sprintf("fetch manifest %s from the origins", d), err)
	}
	refs, err := references(buf.Bytes())
	if err != nil {
		return &registry.Error{Status: http.StatusBadRequest, Code: registry.CodeManifestInvalid,
			Message: fmt.Sprintf("manifest %s: %v", d, err), Detail: map[string]string{"digest": d.String()}, Err: err}
	}
	return c.checkRefs(ctx, repo, d, refs)
}

// checkRefs stats every reference, reporting all the missing ones.
func (c *contentChecker) checkRefs(ctx context.Context, repo string, m digest.Digest, refs []descriptor) error {
	var (
		mu       sync.Mutex
		missing  []string
		badSizes []string
	)
	g, gctx := errgroup.WithContext(ctx)
	g.SetLimit(statParallelism)
	for _, ref := range refs {
		g.Go(func() error {
			size, err := c.stat(gctx, repo, ref.Digest)
			mu.Lock()
			defer mu.Unlock()
			switch {
			case errors.Is(err, client.ErrNotFound):
				missing = append(missing, ref.Digest.String())
			case err != nil:
				return err
			case ref.Size > 0 && size >= 0 && size != ref.Size:
				badSizes = append(badSizes, fmt.Sprintf("%s (manifest says %d bytes, stored %d)", ref.Digest, ref.Size, size))
			}
			return nil
		})
	}
	if err := g.Wait(); err != nil {
		return err
	}
	if len(missing) > 0 {
		slices.Sort(missing)
		return &registry.Error{Status: http.StatusBadRequest, Code: registry.CodeManifestBlobUnknown,
			Message: fmt.Sprintf("manifest %s references content missing from the origin cluster under namespace %q: %s", m, repo, strings.Join(missing, ", ")),
			Detail:  map[string]any{"manifest": m.String(), "missing": missing}}
	}
	if len(badSizes) > 0 {
		slices.Sort(badSizes)
		return &registry.Error{Status: http.StatusBadRequest, Code: registry.CodeManifestInvalid,
			Message: fmt.Sprintf("manifest %s: sizes disagree with the stored content: %s", m, strings.Join(badSizes, ", "))}
	}
	return nil
}

// stat returns the size of d in namespace ns, asking d's owners in rank order and pulling
// through from storage as origins do. ErrNotFound when every owner answered 404; 503
// UNAVAILABLE when none could answer.
func (c *contentChecker) stat(ctx context.Context, ns string, d digest.Digest) (int64, error) {
	st, err := c.cluster.Ring(ctx, d)
	if err != nil {
		if ctx.Err() != nil {
			return 0, ctx.Err()
		}
		return 0, unavailable("reach the origin cluster", err)
	}
	owners := st.Owners
	if len(owners) == 0 {
		owners = c.origins
	}
	var errs []error
	for _, a := range owners {
		size, err := c.cluster.Origin(a).Stat(ctx, ns, d)
		if err == nil {
			return size, nil
		}
		if ctx.Err() != nil {
			return 0, ctx.Err()
		}
		if !client.IsNotFound(err) {
			errs = append(errs, fmt.Errorf("%s: %w", a, err))
		}
	}
	if len(errs) == 0 {
		return 0, fmt.Errorf("stat %s: %w", d, client.ErrNotFound)
	}
	return 0, unavailable(fmt.Sprintf("check %s in the origin cluster", d), errors.Join(errs...))
}

func unavailable(what string, err error) error {
	return &registry.Error{Status: http.StatusServiceUnavailable, Code: registry.CodeUnavailable,
		Message: "cannot " + what + "; retry", Err: err}
}

// descriptor is the part of an OCI descriptor the check reads.
type descriptor struct {
	MediaType string        `json:"mediaType"`
	Digest    digest.Digest `json:"digest"`
	Size      int64         `json:"size"`
	URLs      []string      `json:"urls"`
}

// manifestDoc holds the fields of image manifests and indexes that carry references.
type manifestDoc struct {
	SchemaVersion int          `json:"schemaVersion"`
	MediaType     string       `json:"mediaType"`
	Config        *descriptor  `json:"config"`
	Layers        []descriptor `json:"layers"`
	Manifests     []descriptor `json:"manifests"`
}

// references returns the descriptors a manifest requires to be present, or nil for content
// that is not a manifest this checker understands. It errs only for a recognised manifest
// whose references are malformed.
func references(b []byte) ([]descriptor, error) {
	var m manifestDoc
	if err := json.Unmarshal(b, &m); err != nil {
		return nil, nil // Not JSON: some other artifact.
	}
	var refs []descriptor
	switch {
	case m.MediaType == mediaTypeOCIManifest || m.MediaType == mediaTypeDockerManifest ||
		m.MediaType == "" && m.SchemaVersion == 2 && m.Config != nil:
		if m.Config == nil {
			return nil, errors.New("image manifest without config")
		}
		refs = append(refs, *m.Config)
		for _, l := range m.Layers {
			if isForeign(l) {
				continue
			}
			refs = append(refs, l)
		}
	case m.MediaType == mediaTypeOCIIndex || m.MediaType == mediaTypeDockerList ||
		m.MediaType == "" && m.SchemaVersion == 2 && m.Manifests != nil:
		refs = append(refs, m.Manifests...)
	default:
		return nil, nil
	}
	seen := map[digest.Digest]bool{}
	out := refs[:0]
	for _, r := range refs {
		if err := r.Digest.Validate(); err != nil {
			return nil, fmt.Errorf("reference %q: %w", r.Digest, err)
		}
		if r.Digest.Algorithm() != digest.SHA256 {
			return nil, fmt.Errorf("reference %s: only sha256 content is stored", r.Digest)
		}
		if !seen[r.Digest] {
			seen[r.Digest] = true
			out = append(out, r)
		}
	}
	return out, nil
}

// isForeign reports a layer that registries do not store (Windows base layers and other
// non-distributable content, fetched from its URLs).
func isForeign(d descriptor) bool {
	return len(d.URLs) > 0 || strings.Contains(d.MediaType, "foreign") || strings.Contains(d.MediaType, "nondistributable")
}

// limitedBuffer is a bytes.Buffer that refuses to grow past max.
type limitedBuffer struct {
	bytes.Buffer
	max int64
}

func (b *limitedBuffer) Write(p []byte) (int, error) {
	if int64(b.Len()+len(p)) > b.max {
		return 0, fmt.Errorf("manifest larger than %d bytes", b.max)
	}
	return b.Buffer.Write(p)
}
