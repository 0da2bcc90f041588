package registry

import (
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"strconv"

	"github.com/krakenctl/krakenctl/server/registry/errcode"
)

// serveManifest answers GET, HEAD, PUT and DELETE /v2/<name>/manifests/<reference>.
func (h *Handler) serveManifest(w http.ResponseWriter, r *http.Request, name, arg string) {
	ref, err := ParseReference(arg)
	if err != nil {
		h.fail(w, r, err)
		return
	}
	switch r.Method {
	case http.MethodGet, http.MethodHead:
		h.getManifest(w, r, name, ref)
	case http.MethodPut:
		h.putManifest(w, r, name, ref)
	case http.MethodDelete:
		if ref.Digest != "" {
			err = h.w.DeleteManifest(r.Context(), name, ref.Digest)
		} else {
			err = h.w.DeleteTag(r.Context(), name, ref.Tag)
		}
		if err != nil {
			h.fail(w, r, err)
			return
		}
		w.Header().Set("Content-Length", "0")
		w.WriteHeader(http.StatusAccepted)
	}
}

// getManifest serves a manifest with its stored media type and its digest in the algorithm the
// client addressed it with (for a tag, the one it was pushed with).
func (h *Handler) getManifest(w http.ResponseWriter, r *http.Request, name string, ref Reference) {
	m, err := h.r.Manifest(r.Context(), name, ref)
	if err != nil {
		h.fail(w, r, err)
		return
	}
	d := m.Digest
	if ref.Digest != "" {
		d = ref.Digest
	}
	if len(m.Body) > MaxManifestSize {
		h.fail(w, r, fmt.Errorf("get manifest %s of %s: stored manifest is %d bytes, over the limit of %d", ref, name, len(m.Body), MaxManifestSize))
		return
	}
	if err := d.Validate(); err != nil {
		h.fail(w, r, fmt.Errorf("get manifest %s of %s: stored digest %q: %w", ref, name, d, err))
		return
	}
	if d.Algorithm().FromBytes(m.Body) != d {
		// Never serve bytes that are not what the client asked for.
		h.fail(w, r, fmt.Errorf("get manifest %s of %s: stored content does not match digest %s", ref, name, d))
		return
	}
	mt := m.MediaType
	if mt == "" {
		mt = DetectMediaType(m.Body)
	}
	hd := w.Header()
	hd.Set("Content-Type", mt)
	hd.Set("Content-Length", strconv.Itoa(len(m.Body)))
	hd.Set(HeaderContentDigest, d.String())
	w.WriteHeader(http.StatusOK)
	if r.Method == http.MethodGet {
		if _, err := w.Write(m.Body); err != nil {
			h.log.DebugContext(r.Context(), "manifest response cut short", "repo", name, "ref", ref.String(), "err", err)
		}
	}
}

// putManifest stores a pushed manifest: by tag, or by digest with optional ?tag= parameters
// (spec 1.1.1), each echoed in an OCI-Tag header.
func (h *Handler) putManifest(w http.ResponseWriter, r *http.Request, name string, ref Reference) {
	tags := r.URL.Query()["tag"]
	if len(tags) > 0 && ref.Digest == "" {
		h.fail(w, r, errcode.Errorf(http.StatusBadRequest, errcode.CodeTagInvalid, "tag query parameters are only allowed on a push by digest"))
		return
	}
	for _, t := range tags {
		if err := ValidateTag(t); err != nil {
			h.fail(w, r, err)
			return
		}
	}
	if ref.Tag != "" {
		tags = []string{ref.Tag}
	}
	tags = dedupe(tags)

	if r.ContentLength > MaxManifestSize {
		h.fail(w, r, manifestTooLarge(r.ContentLength))
		return
	}
	body, err := io.ReadAll(io.LimitReader(r.Body, MaxManifestSize+1))
	if err != nil {
		h.fail(w, r, &errcode.Error{Status: http.StatusBadRequest, Code: errcode.CodeManifestInvalid, Message: "reading the manifest failed", Err: err})
		return
	}
	if len(body) > MaxManifestSize {
		h.fail(w, r, manifestTooLarge(-1))
		return
	}
	m, err := ParseManifest(r.Header.Get("Content-Type"), body)
	if err != nil {
		h.fail(w, r, err)
		return
	}
	if ref.Digest != "" {
		if got := ref.Digest.Algorithm().FromBytes(body); got != ref.Digest {
			h.fail(w, r, errcode.Errorf(http.StatusBadRequest, errcode.CodeDigestInvalid,
				"manifest digest is %s, not the %s in the URL", got, ref.Digest))
			return
		}
		m.Digest = ref.Digest
	}
	if err := h.w.PutManifest(r.Context(), name, m, tags); err != nil {
		h.fail(w, r, err)
		return
	}
	hd := w.Header()
	hd.Set("Location", "/v2/"+name+"/manifests/"+m.Digest.String())
	hd.Set(HeaderContentDigest, m.Digest.String())
	if m.Subject != nil {
		hd.Set(HeaderOCISubject, m.Subject.Digest.String())
	}
	if ref.Digest != "" {
		for _, t := range tags {
			hd.Add(HeaderOCITag, t)
		}
	}
	hd.Set("Content-Length", "0")
	w.WriteHeader(http.StatusCreated)
}

func manifestTooLarge(n int64) *errcode.Error {
	if n < 0 {
		return errcode.Errorf(http.StatusRequestEntityTooLarge, errcode.CodeManifestInvalid, "manifest is larger than the limit of %d bytes", MaxManifestSize)
	}
	return errcode.Errorf(http.StatusRequestEntityTooLarge, errcode.CodeManifestInvalid, "manifest is %d bytes, larger than the limit of %d bytes", n, MaxManifestSize)
}

// DetectMediaType guesses the media type of a manifest stored without one, as ParseManifest
// does for a push without Content-Type: its mediaType field, else an OCI index when it has
// "manifests", else an OCI image manifest.
func DetectMediaType(body []byte) string {
	var raw rawManifest
	if err := json.Unmarshal(body, &raw); err != nil {
		return MediaTypeOCIManifest
	}
	return raw.detectMediaType()
}

// dedupe drops repeated strings, keeping the first of each.
func dedupe(ss []string) []string {
	out := ss[:0:0]
	seen := make(map[string]bool, len(ss))
	for _, s := range ss {
		if !seen[s] {
			seen[s] = true
			out = append(out, s)
		}
	}
	return out
}
