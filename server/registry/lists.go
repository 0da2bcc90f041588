package registry

import (
	"encoding/json"
	"net/http"
	"net/url"
	"strconv"

	ocispec "github.com/opencontainers/image-spec/specs-go/v1"

	"github.com/krakenctl/krakenctl/server/registry/errcode"
)

// TagList is the body of GET /v2/<name>/tags/list.
type TagList struct {
	Name string   `json:"name"`
	Tags []string `json:"tags"`
}

// Catalog is the body of GET /v2/_catalog.
type Catalog struct {
	Repositories []string `json:"repositories"`
}

// page is a list request's pagination: at most n entries after last.
type page struct {
	n    int
	last string
}

// parsePage reads ?n= and ?last=. Without n the client wants everything, which it gets in
// pages of at most maxPage entries linked by Link headers; n above maxPage is lowered to it.
func (h *Handler) parsePage(q url.Values) (page, error) {
	p := page{n: h.maxPage, last: q.Get("last")}
	if q.Has("n") {
		n, err := strconv.Atoi(q.Get("n"))
		if err != nil || n < 0 {
			return page{}, errcode.Errorf(http.StatusBadRequest, errcode.CodePaginationNumberInvalid, "invalid n %q: want a non-negative integer", q.Get("n"))
		}
		p.n = min(n, h.maxPage)
	}
	return p, nil
}

// setNextLink adds the RFC 5988 Link header to the page after the one ending at last.
func setNextLink(w http.ResponseWriter, r *http.Request, path, last string, n int) {
	q := url.Values{}
	q.Set("last", last)
	q.Set("n", strconv.Itoa(n))
	if ns := r.URL.Query().Get("ns"); ns != "" {
		q.Set("ns", ns)
	}
	w.Header().Set("Link", "<"+path+"?"+q.Encode()+`>; rel="next"`)
}

// writeJSON answers 200 with v as JSON.
func (h *Handler) writeJSON(w http.ResponseWriter, r *http.Request, contentType string, v any) {
	b, err := json.Marshal(v)
	if err != nil {
		h.fail(w, r, err)
		return
	}
	w.Header().Set("Content-Type", contentType)
	w.Header().Set("Content-Length", strconv.Itoa(len(b)))
	w.WriteHeader(http.StatusOK)
	if r.Method != http.MethodHead {
		_, _ = w.Write(b)
	}
}

// serveTags answers GET /v2/<name>/tags/list?n=&last=.
func (h *Handler) serveTags(w http.ResponseWriter, r *http.Request, name string) {
	h.serveList(w, r, "/v2/"+name+"/tags/list",
		func(last string, n int) ([]string, bool, error) { return h.r.Tags(r.Context(), name, last, n) },
		func(tags []string) any { return TagList{Name: name, Tags: tags} })
}

// serveCatalog answers GET /v2/_catalog?n=&last=.
func (h *Handler) serveCatalog(w http.ResponseWriter, r *http.Request) {
	h.serveList(w, r, "/v2/_catalog",
		func(last string, n int) ([]string, bool, error) { return h.r.Catalog(r.Context(), last, n) },
		func(repos []string) any { return Catalog{Repositories: repos} })
}

// serveList answers a paginated list request at path: the page read asks list for (never
// called for n=0), a Link to the next one when there are more, and body(entries) as JSON, with
// an empty list rather than null.
func (h *Handler) serveList(w http.ResponseWriter, r *http.Request, path string,
	list func(last string, n int) ([]string, bool, error), body func([]string) any) {
	p, err := h.parsePage(r.URL.Query())
	if err != nil {
		h.fail(w, r, err)
		return
	}
	entries := []string{}
	more := false
	if p.n > 0 {
		entries, more, err = list(p.last, p.n)
		if err != nil {
			h.fail(w, r, err)
			return
		}
		if entries == nil {
			entries = []string{}
		}
	}
	if more && len(entries) > 0 {
		setNextLink(w, r, path, entries[len(entries)-1], p.n)
	}
	h.writeJSON(w, r, "application/json", body(entries))
}

// serveReferrers answers GET /v2/<name>/referrers/<digest>?artifactType=: an OCI index of the
// manifests whose subject is digest, filtered by artifact type when asked (and then saying so
// in OCI-Filters-Applied).
func (h *Handler) serveReferrers(w http.ResponseWriter, r *http.Request, name, arg string) {
	d, err := ParseOCIDigest(arg)
	if err != nil {
		h.fail(w, r, err)
		return
	}
	descs, err := h.r.Referrers(r.Context(), name, d)
	if err != nil {
		h.fail(w, r, err)
		return
	}
	manifests := make([]ocispec.Descriptor, 0, len(descs))
	q := r.URL.Query()
	if q.Has("artifactType") {
		at := q.Get("artifactType")
		for _, desc := range descs {
			if desc.ArtifactType == at {
				manifests = append(manifests, desc)
			}
		}
		w.Header().Set(HeaderFiltersApplied, "artifactType")
	} else {
		manifests = append(manifests, descs...)
	}
	idx := ocispec.Index{MediaType: ocispec.MediaTypeImageIndex, Manifests: manifests}
	idx.SchemaVersion = 2
	h.writeJSON(w, r, ocispec.MediaTypeImageIndex, idx)
}
