package registry

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"mime"
	"net/http"
	"strings"

	"github.com/opencontainers/go-digest"
	ocispec "github.com/opencontainers/image-spec/specs-go/v1"
	"golang.org/x/sync/errgroup"

	"github.com/krakenctl/krakenctl/server/registry/errcode"
)

// Manifest media types the handler accepts on push.
const (
	MediaTypeOCIManifest    = ocispec.MediaTypeImageManifest
	MediaTypeOCIIndex       = ocispec.MediaTypeImageIndex
	MediaTypeDockerManifest = "application/vnd.docker.distribution.manifest.v2+json"
	MediaTypeDockerList     = "application/vnd.docker.distribution.manifest.list.v2+json"
	// MediaTypeDockerForeignLayer is a Docker layer that is never pushed to a registry.
	MediaTypeDockerForeignLayer = "application/vnd.docker.image.rootfs.foreign.diff.tar.gzip"
	// mediaTypeOCINondistributablePrefix begins the OCI layer types that are never pushed.
	mediaTypeOCINondistributablePrefix = "application/vnd.oci.image.layer.nondistributable."
)

// IsIndexMediaType reports whether mt is a manifest type whose children are manifests (an OCI
// index or a Docker manifest list).
func IsIndexMediaType(mt string) bool {
	return mt == MediaTypeOCIIndex || mt == MediaTypeDockerList
}

// IsManifestMediaType reports whether mt is one of the manifest types ParseManifest accepts.
func IsManifestMediaType(mt string) bool {
	switch mt {
	case MediaTypeOCIManifest, MediaTypeOCIIndex, MediaTypeDockerManifest, MediaTypeDockerList:
		return true
	}
	return false
}

// isNondistributable reports whether a layer of media type mt is never pushed to a registry
// (Docker foreign layers, OCI non-distributable layers), so a manifest may name it without the
// repository holding it.
func isNondistributable(mt string) bool {
	return mt == MediaTypeDockerForeignLayer || strings.HasPrefix(mt, mediaTypeOCINondistributablePrefix)
}

// rawManifest is the union of the fields of the manifest types ParseManifest reads. Unknown
// fields are allowed (the spec lets manifests carry them) and stay only in Body.
type rawManifest struct {
	SchemaVersion *int                 `json:"schemaVersion"`
	MediaType     string               `json:"mediaType"`
	ArtifactType  string               `json:"artifactType"`
	Config        *ocispec.Descriptor  `json:"config"`
	Layers        []ocispec.Descriptor `json:"layers"`
	Manifests     []ocispec.Descriptor `json:"manifests"`
	Subject       *ocispec.Descriptor  `json:"subject"`
	Annotations   map[string]string    `json:"annotations"`
}

// detectMediaType is the media type of a manifest pushed or stored without one: its mediaType
// field, else an OCI index when it has a "manifests" field, else an OCI image manifest.
func (raw *rawManifest) detectMediaType() string {
	switch {
	case raw.MediaType != "":
		return raw.MediaType
	case raw.Manifests != nil:
		return MediaTypeOCIIndex
	}
	return MediaTypeOCIManifest
}

// ParseManifest parses and validates a pushed manifest. mediaType is the request's Content-Type
// (parameters are ignored); "" means detect the type from the content: its mediaType field, else
// an OCI index when it has a "manifests" field, else an OCI image manifest. The supported types
// are the OCI image manifest and index and the Docker schema 2 manifest and manifest list; an
// OCI manifest may be an artifact (artifactType, any config media type).
//
// The returned Manifest holds body (not copied), the resolved media type, the SHA-256 digest of
// body (a handler serving a push by sha512 digest replaces it) and the parsed fields. Blobs has
// the config first, then the layers, without foreign or non-distributable layers.
//
// Errors are *errcode.Error: MANIFEST_INVALID (400) naming the problem, or MANIFEST_INVALID
// with status 413 when body is larger than MaxManifestSize.
func ParseManifest(mediaType string, body []byte) (*Manifest, error) {
	if len(body) > MaxManifestSize {
		return nil, errcode.Errorf(http.StatusRequestEntityTooLarge, errcode.CodeManifestInvalid,
			"manifest is %d bytes, larger than the limit of %d bytes", len(body), MaxManifestSize)
	}
	ct, err := baseMediaType(mediaType)
	if err != nil {
		return nil, err
	}
	var raw rawManifest
	if err := json.Unmarshal(body, &raw); err != nil {
		return nil, &errcode.Error{Status: http.StatusBadRequest, Code: errcode.CodeManifestInvalid,
			Message: "manifest is not a valid JSON manifest: " + jsonProblem(err), Err: err}
	}
	if bytes.Equal(bytes.TrimSpace(body), []byte("null")) {
		return nil, errcode.Errorf(http.StatusBadRequest, errcode.CodeManifestInvalid, "manifest is JSON null, not an object")
	}
	if raw.SchemaVersion == nil {
		return nil, errcode.Errorf(http.StatusBadRequest, errcode.CodeManifestInvalid, "manifest has no schemaVersion (want 2)")
	}
	if *raw.SchemaVersion != 2 {
		return nil, errcode.Errorf(http.StatusBadRequest, errcode.CodeManifestInvalid, "manifest schemaVersion is %d, want 2", *raw.SchemaVersion)
	}

	mt := ct
	switch {
	case ct != "" && raw.MediaType != "" && raw.MediaType != ct:
		return nil, errcode.Errorf(http.StatusBadRequest, errcode.CodeManifestInvalid,
			"manifest mediaType %q does not match the Content-Type %q", raw.MediaType, ct)
	case ct == "":
		mt = raw.detectMediaType()
	}
	if !IsManifestMediaType(mt) {
		return nil, errcode.Errorf(http.StatusBadRequest, errcode.CodeManifestInvalid,
			"unsupported manifest media type %q: want %s, %s, %s or %s", mt,
			MediaTypeOCIManifest, MediaTypeOCIIndex, MediaTypeDockerManifest, MediaTypeDockerList)
	}

	m := &Manifest{
		Digest:       digest.SHA256.FromBytes(body),
		MediaType:    mt,
		Body:         body,
		ArtifactType: raw.ArtifactType,
		Annotations:  raw.Annotations,
	}
	if raw.ArtifactType != "" {
		if err := checkMediaType("artifactType", raw.ArtifactType); err != nil {
			return nil, err
		}
	}
	if IsIndexMediaType(mt) {
		if raw.Config != nil || raw.Layers != nil {
			return nil, errcode.Errorf(http.StatusBadRequest, errcode.CodeManifestInvalid,
				"manifest of type %s has config or layers; an index lists only manifests", mt)
		}
		for i := range raw.Manifests {
			if err := checkDescriptor(fmt.Sprintf("manifests[%d]", i), &raw.Manifests[i]); err != nil {
				return nil, err
			}
		}
		m.Manifests = raw.Manifests
	} else {
		if raw.Manifests != nil {
			return nil, errcode.Errorf(http.StatusBadRequest, errcode.CodeManifestInvalid,
				"manifest of type %s has a manifests field; only an index has one", mt)
		}
		if raw.Config == nil {
			return nil, errcode.Errorf(http.StatusBadRequest, errcode.CodeManifestInvalid, "image manifest has no config")
		}
		if err := checkDescriptor("config", raw.Config); err != nil {
			return nil, err
		}
		m.Config = raw.Config
		m.Blobs = make([]ocispec.Descriptor, 0, 1+len(raw.Layers))
		m.Blobs = append(m.Blobs, *raw.Config)
		for i := range raw.Layers {
			if err := checkDescriptor(fmt.Sprintf("layers[%d]", i), &raw.Layers[i]); err != nil {
				return nil, err
			}
			if !isNondistributable(raw.Layers[i].MediaType) {
				m.Blobs = append(m.Blobs, raw.Layers[i])
			}
		}
	}
	if raw.Subject != nil {
		if err := checkDescriptor("subject", raw.Subject); err != nil {
			return nil, err
		}
		m.Subject = raw.Subject
	}
	return m, nil
}

// Descriptor is the descriptor of m as the referrers API lists it: media type, digest, size,
// artifact type (the artifactType field, else the config's media type for an image manifest)
// and annotations.
func (m *Manifest) Descriptor() ocispec.Descriptor {
	at := m.ArtifactType
	if at == "" && m.Config != nil {
		at = m.Config.MediaType
	}
	return ocispec.Descriptor{
		MediaType:    m.MediaType,
		Digest:       m.Digest,
		Size:         int64(len(m.Body)),
		ArtifactType: at,
		Annotations:  m.Annotations,
	}
}

// baseMediaType returns the media type of a Content-Type header without its parameters.
func baseMediaType(ct string) (string, error) {
	if strings.TrimSpace(ct) == "" {
		return "", nil
	}
	mt, _, err := mime.ParseMediaType(ct)
	if err != nil {
		return "", &errcode.Error{Status: http.StatusBadRequest, Code: errcode.CodeManifestInvalid,
			Message: fmt.Sprintf("invalid Content-Type %q", ct), Err: err}
	}
	return mt, nil
}

// checkMediaType checks that a media type field is a type/subtype.
func checkMediaType(field, mt string) error {
	if got, _, err := mime.ParseMediaType(mt); err != nil || got != strings.ToLower(mt) || !strings.Contains(mt, "/") {
		return errcode.Errorf(http.StatusBadRequest, errcode.CodeManifestInvalid, "manifest %s: invalid media type %q", field, mt)
	}
	return nil
}

// checkDescriptor validates one descriptor of a manifest; field names it in the error.
func checkDescriptor(field string, d *ocispec.Descriptor) error {
	if d.MediaType == "" {
		return errcode.Errorf(http.StatusBadRequest, errcode.CodeManifestInvalid, "manifest %s: missing mediaType", field)
	}
	if err := checkMediaType(field+".mediaType", d.MediaType); err != nil {
		return err
	}
	if d.Digest == "" {
		return errcode.Errorf(http.StatusBadRequest, errcode.CodeManifestInvalid, "manifest %s: missing digest", field)
	}
	if err := d.Digest.Validate(); err != nil {
		return &errcode.Error{Status: http.StatusBadRequest, Code: errcode.CodeManifestInvalid,
			Message: fmt.Sprintf("manifest %s: invalid digest %q", field, d.Digest), Err: err}
	}
	if d.Size < 0 {
		return errcode.Errorf(http.StatusBadRequest, errcode.CodeManifestInvalid, "manifest %s: negative size %d", field, d.Size)
	}
	if d.Data != nil {
		if int64(len(d.Data)) != d.Size {
			return errcode.Errorf(http.StatusBadRequest, errcode.CodeManifestInvalid,
				"manifest %s: data is %d bytes but size is %d", field, len(d.Data), d.Size)
		}
		if d.Digest.Algorithm().FromBytes(d.Data) != d.Digest {
			return errcode.Errorf(http.StatusBadRequest, errcode.CodeManifestInvalid, "manifest %s: data does not match digest %s", field, d.Digest)
		}
	}
	return nil
}

// jsonProblem describes a JSON decoding error without Go type names.
func jsonProblem(err error) string {
	var se *json.SyntaxError
	var te *json.UnmarshalTypeError
	switch {
	case errors.As(err, &se):
		return fmt.Sprintf("syntax error at byte %d: %v", se.Offset, se)
	case errors.As(err, &te):
		if te.Field != "" {
			return fmt.Sprintf("field %s has the wrong type (a JSON %s)", te.Field, te.Value)
		}
		return fmt.Sprintf("want a JSON object, got a JSON %s", te.Value)
	default:
		return err.Error()
	}
}

// DescribeReferrers describes the referrers of a subject: for each digest in refs (the values
// of the subject's referrer links, in order) the descriptor of the manifest that manifest
// returns, fetching up to limit at once. A manifest that is gone (ErrManifestUnknown: deleted
// while its link was being removed) is left out; any other error ends the listing.
func DescribeReferrers(ctx context.Context, refs []digest.Digest, limit int,
	manifest func(context.Context, digest.Digest) (*Manifest, error)) ([]ocispec.Descriptor, error) {
	descs := make([]*ocispec.Descriptor, len(refs))
	g, gctx := errgroup.WithContext(ctx)
	g.SetLimit(limit)
	for i, d := range refs {
		g.Go(func() error {
			m, err := manifest(gctx, d)
			if errors.Is(err, ErrManifestUnknown) {
				return nil
			}
			if err != nil {
				return err
			}
			desc := m.Descriptor()
			descs[i] = &desc
			return nil
		})
	}
	if err := g.Wait(); err != nil {
		return nil, err
	}
	out := make([]ocispec.Descriptor, 0, len(descs))
	for _, desc := range descs {
		if desc != nil {
			out = append(out, *desc)
		}
	}
	return out, nil
}
