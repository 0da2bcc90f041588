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
	"github.com/krakenctl/krakenctl/server/registry/errcode"
	"github.com/krakenctl/krakenctl/tagstore"
)

// Manifest media types whose references the content check follows.
const (
	mediaTypeOCIManifest    = "application/vnd.oci.image.manifest.v1+json"
	mediaTypeOCIIndex       = "application/vnd.oci.image.index.v1+json"
	mediaTypeDockerManifest = "application/vnd.docker.distribution.manifest.v2+json"
	mediaTypeDockerList     = "application/vnd.docker.distribution.manifest.list.v2+json"
	mediaTypeOCIArtifact    = "application/vnd.oci.artifact.manifest.v1+json"
)

// statParallelism bounds the concurrent existence checks of one manifest's references.
const statParallelism = 8

// contentChecker verifies that a tag's digest names content the origin cluster holds, and that
// a link's value does.
//
// The origins store everything under its SHA-256 digest. Content the registry addressed by
// another digest (sha512) is found through the repository's links: manifest/<digest> for a
// tag's manifest and an index's children, blob/<digest> for a config or layer, whose value is
// the SHA-256 digest to look up. The links are read from this node's own state: the checks
// run on the leader, where the write happens.
type contentChecker struct {
	cluster     *client.Cluster
	store       Store
	maxManifest int64
	metrics     *metrics
}

// check returns nil when d exists in the origin cluster under namespace repo and, when it is a
// manifest the checker can parse (OCI or Docker schema 2 image manifest, OCI index, Docker
// manifest list), so does every descriptor it references (config, layers, child manifests),
// except foreign layers that live outside registries. A digest that is not sha256 is first
// resolved through the repository's manifest/ (tag, child manifests) or blob/ (config,
// layers) link. Otherwise: 404 MANIFEST_UNKNOWN when d is missing (or has no link), 400
// MANIFEST_BLOB_UNKNOWN when a reference is, 400 MANIFEST_INVALID when the manifest's
// references are malformed or their sizes disagree, 503 UNAVAILABLE when the origins cannot
// tell.
//
// A tag names a manifest: content that is not an image manifest or index (a layer, a config,
// some other blob) is refused with 400 MANIFEST_INVALID, so a tag never hands a puller
// something to parse as a manifest that is not one.
func (c *contentChecker) check(ctx context.Context, repo string, d digest.Digest) error {
	return c.count(c.checkManifest(ctx, repo, d))
}

// checkLink returns nil when the value d of link l may be stored in repo: for a blob/ or
// manifest/ link, d (a sha256 digest) exists in the origin cluster under namespace repo
// (existence only; the content is not parsed), else 400 BLOB_UNKNOWN or MANIFEST_BLOB_UNKNOWN;
// for a referrer/ link, repo holds a manifest/<d> link, else 400 MANIFEST_UNKNOWN. 503
// UNAVAILABLE when the origins cannot tell.
func (c *contentChecker) checkLink(ctx context.Context, repo string, l linkRef, d digest.Digest) error {
	return c.count(c.checkLinkValue(ctx, repo, l, d))
}

func (c *contentChecker) checkLinkValue(ctx context.Context, repo string, l linkRef, d digest.Digest) error {
	if l.kind == tagstore.LinkKindReferrer {
		_, err := c.link(ctx, repo, registry.ManifestLink(d))
		if errors.Is(err, tagstore.ErrNotFound) {
			return &errcode.Error{Status: http.StatusBadRequest, Code: errcode.CodeManifestUnknown,
				Message: fmt.Sprintf("link %s: repository %q holds no manifest %s", l.name, repo, d),
				Detail:  map[string]string{"digest": d.String()}, Err: err}
		}
		return err
	}
	_, err := c.stat(ctx, repo, d)
	if errors.Is(err, client.ErrNotFound) {
		code := errcode.CodeBlobUnknown
		if l.kind == tagstore.LinkKindManifest {
			code = errcode.CodeManifestBlobUnknown
		}
		return &errcode.Error{Status: http.StatusBadRequest, Code: code,
			Message: fmt.Sprintf("link %s: %s is not in the origin cluster under namespace %q", l.name, d, repo),
			Detail:  map[string]string{"digest": d.String()}, Err: err}
	}
	return err
}

// count records the result of a check in the metrics and returns err.
func (c *contentChecker) count(err error) error {
	result := "ok"
	if err != nil {
		result = "error"
		var re *errcode.Error
		if errors.As(err, &re) {
			result = strings.ToLower(string(re.Code))
		}
	}
	c.metrics.contentChecks.WithLabelValues(result).Inc()
	return err
}

// link reads a link of repo from this node's state (the leader's: the checks run where the
// write happens). A link that is not there is looked up again linearizably before it is
// reported missing: a leader elected moments ago may not have applied every committed write
// yet, such as the link a client wrote just before this request. Off the leader that second
// read fails with *tagstore.NotLeaderError, and the request is forwarded.
func (c *contentChecker) link(ctx context.Context, repo, name string) (tagstore.Link, error) {
	l, err := c.store.GetLink(ctx, repo, name, tagstore.Stale)
	if errors.Is(err, tagstore.ErrNotFound) {
		l, err = c.store.GetLink(ctx, repo, name, tagstore.Linearizable)
	}
	return l, err
}

// resolve returns the SHA-256 digest under which content addressed by d is stored: d itself
// when it is sha256, else the value of repo's link kind/d. ErrNotFound (tagstore's) when there
// is no such link.
func (c *contentChecker) resolve(ctx context.Context, repo, kind string, d digest.Digest) (digest.Digest, error) {
	if d.Algorithm() == digest.SHA256 {
		return d, nil
	}
	l, err := c.link(ctx, repo, kind+"/"+d.String())
	if err != nil {
		return "", err
	}
	if l.Digest.Algorithm() != digest.SHA256 {
		// The link API refuses such values; a link imported from elsewhere could hold one.
		return "", fmt.Errorf("link %s/%s of %s holds %s, not a sha256 digest: %w", kind, d, repo, l.Digest, tagstore.ErrNotFound)
	}
	return l.Digest, nil
}

func (c *contentChecker) checkManifest(ctx context.Context, repo string, d digest.Digest) error {
	stored, err := c.resolve(ctx, repo, tagstore.LinkKindManifest, d)
	if errors.Is(err, tagstore.ErrNotFound) {
		return &errcode.Error{Status: http.StatusNotFound, Code: errcode.CodeManifestUnknown,
			Message: fmt.Sprintf("manifest %s is not sha256 and repository %q has no manifest link for it", d, repo),
			Detail:  map[string]string{"digest": d.String()}, Err: err}
	}
	if err != nil {
		return err
	}
	size, err := c.stat(ctx, repo, stored)
	if errors.Is(err, client.ErrNotFound) {
		return &errcode.Error{Status: http.StatusNotFound, Code: errcode.CodeManifestUnknown,
			Message: fmt.Sprintf("manifest %s is not in the origin cluster under namespace %q", d, repo),
			Detail:  map[string]string{"digest": d.String()}, Err: err}
	}
	if err != nil {
		return err
	}
	if size > c.maxManifest {
		return &errcode.Error{Status: http.StatusBadRequest, Code: errcode.CodeManifestInvalid,
			Message: fmt.Sprintf("%s is not a manifest: %d bytes, more than max_manifest_size %d", d, size, c.maxManifest),
			Detail:  map[string]string{"digest": d.String()}}
	}
	var buf limitedBuffer
	buf.max = c.maxManifest
	if _, err := c.cluster.Pull(ctx, repo, stored, &buf, nil); err != nil {
		if errors.Is(err, client.ErrNotFound) {
			return &errcode.Error{Status: http.StatusNotFound, Code: errcode.CodeManifestUnknown,
				Message: fmt.Sprintf("manifest %s is not in the origin cluster under namespace %q", d, repo),
				Detail:  map[string]string{"digest": d.String()}, Err: err}
		}
		return unavailable(fmt.Sprintf("fetch manifest %s from the origins", d), err)
	}
	refs, err := references(buf.Bytes())
	if err != nil {
		return &errcode.Error{Status: http.StatusBadRequest, Code: errcode.CodeManifestInvalid,
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
			kind := tagstore.LinkKindBlob
			if ref.child {
				kind = tagstore.LinkKindManifest
			}
			var size int64
			stored, err := c.resolve(gctx, repo, kind, ref.Digest)
			if err == nil {
				size, err = c.stat(gctx, repo, stored)
			}
			mu.Lock()
			defer mu.Unlock()
			switch {
			case errors.Is(err, client.ErrNotFound), errors.Is(err, tagstore.ErrNotFound):
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
		return &errcode.Error{Status: http.StatusBadRequest, Code: errcode.CodeManifestBlobUnknown,
			Message: fmt.Sprintf("manifest %s references content missing from the origin cluster under namespace %q: %s", m, repo, strings.Join(missing, ", ")),
			Detail:  map[string]any{"manifest": m.String(), "missing": missing}}
	}
	if len(badSizes) > 0 {
		slices.Sort(badSizes)
		return &errcode.Error{Status: http.StatusBadRequest, Code: errcode.CodeManifestInvalid,
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
		owners = c.cluster.Addrs()
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
	return &errcode.Error{Status: http.StatusServiceUnavailable, Code: errcode.CodeUnavailable,
		Message: "cannot " + what + "; retry", Err: err}
}

// descriptor is the part of an OCI descriptor the check reads.
type descriptor struct {
	MediaType string        `json:"mediaType"`
	Digest    digest.Digest `json:"digest"`
	Size      int64         `json:"size"`
	URLs      []string      `json:"urls"`
	// child marks a manifest of an index (found through manifest/ links), as opposed to a
	// config or layer (blob/ links).
	child bool
}

// manifestDoc holds the fields of image manifests and indexes that carry references.
type manifestDoc struct {
	SchemaVersion int          `json:"schemaVersion"`
	MediaType     string       `json:"mediaType"`
	Config        *descriptor  `json:"config"`
	Layers        []descriptor `json:"layers"`
	Manifests     []descriptor `json:"manifests"`
}

// errNotManifest is content that is not a manifest references knows.
var errNotManifest = errors.New("not an image manifest or index")

// references returns the descriptors a manifest requires to be present. It errs for content
// that is not a manifest (errNotManifest) and for a manifest whose references are malformed.
// Docker schema 1 and the withdrawn OCI artifact manifest are manifests without references
// it follows.
func references(b []byte) ([]descriptor, error) {
	var m manifestDoc
	if err := json.Unmarshal(b, &m); err != nil {
		return nil, fmt.Errorf("%w: %v", errNotManifest, err) //nolint:errorlint // the JSON error is detail
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
		for _, d := range m.Manifests {
			d.child = true
			refs = append(refs, d)
		}
	case m.SchemaVersion == 1 || m.MediaType == mediaTypeOCIArtifact:
		return nil, nil
	default:
		if m.MediaType != "" {
			return nil, fmt.Errorf("%w: media type %q", errNotManifest, m.MediaType)
		}
		return nil, errNotManifest
	}
	type key struct {
		d     digest.Digest
		child bool
	}
	seen := map[key]bool{}
	out := refs[:0]
	for _, r := range refs {
		if err := tagstore.ValidateDigest(r.Digest); err != nil {
			return nil, fmt.Errorf("reference %q: %w", r.Digest, err)
		}
		if k := (key{r.Digest, r.child}); !seen[k] {
			seen[k] = true
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
