package registry

import (
	"errors"
	"io"
	"log/slog"
	"net/http"
	"slices"
	"strconv"
	"strings"

	"github.com/krakenctl/krakenctl/server/registry/errcode"
)

// Response headers of the distribution API.
const (
	HeaderAPIVersion     = "Docker-Distribution-API-Version"
	HeaderContentDigest  = "Docker-Content-Digest"
	HeaderUploadUUID     = "Docker-Upload-UUID"
	HeaderUploadSession  = "Blob-Upload-Session-ID"
	HeaderOCISubject     = "OCI-Subject"
	HeaderOCITag         = "OCI-Tag"
	HeaderFiltersApplied = "OCI-Filters-Applied"
)

// HandlerOptions configures a Handler. The zero value is valid.
type HandlerOptions struct {
	// Logger receives server faults (5xx answers) at Error and client errors at Debug; nil
	// discards.
	Logger *slog.Logger
	// MaxPage is the most tags or repositories one list response holds (default 1000); a
	// client asking for more, or for all (no n), gets a Link to the next page.
	MaxPage int
}

// Handler serves the OCI distribution API (spec v1.1) for the whole /v2/ tree on top of a
// Reader and, for a registry that takes pushes, a Writer:
//
//	GET    /v2/                                     ping
//	GET    /v2/_catalog?n=&last=                    repositories
//	GET    /v2/<name>/tags/list?n=&last=            tags
//	GET    /v2/<name>/referrers/<digest>?artifactType=
//	GET    /v2/<name>/manifests/<tag|digest>        also HEAD, PUT (?tag= on a push by digest), DELETE
//	GET    /v2/<name>/blobs/<digest>                also HEAD (both with Range), DELETE
//	POST   /v2/<name>/blobs/uploads/                ?digest= (monolithic), ?mount=&from=
//	GET    /v2/<name>/blobs/uploads/<id>            also PATCH, PUT ?digest=, DELETE
//
// Every read route also takes containerd's mirror query, ?ns=<upstream registry>, and ignores
// it: repositories are keyed by their path name alone, so "docker.io/library/x" and
// "ghcr.io/library/x" mirrored through the same registry are the same repository.
//
// Digests in URLs may be sha256 or sha512. Without a Writer every write answers 405
// UNSUPPORTED. Errors are the spec's JSON body (see WriteError). A Handler is safe for
// concurrent use; it keeps no state of its own (upload sessions live in the Writer).
type Handler struct {
	r       Reader
	w       Writer
	log     *slog.Logger
	maxPage int
}

// NewHandler returns a Handler serving r and, when w is not nil, pushes and deletes through w.
func NewHandler(r Reader, w Writer, opts HandlerOptions) *Handler {
	h := &Handler{r: r, w: w, log: opts.Logger, maxPage: opts.MaxPage}
	if h.log == nil {
		h.log = slog.New(slog.DiscardHandler)
	}
	if h.maxPage <= 0 {
		h.maxPage = 1000
	}
	return h
}

// Interface guards
var _ http.Handler = (*Handler)(nil)

// routeKind names the resource a request path addresses.
type routeKind int

const (
	routePing routeKind = iota + 1
	routeCatalog
	routeTags
	routeReferrers
	routeManifest
	routeBlob
	routeUploads // POST /v2/<name>/blobs/uploads/
	routeUpload  // /v2/<name>/blobs/uploads/<id>
)

// route is a parsed request path. arg is the reference, digest or upload id.
type route struct {
	kind routeKind
	name string
	arg  string
}

// parseRoute splits a /v2/ path into its route. Names contain slashes, so the resource is
// recognised from the end of the path.
func parseRoute(path string) (route, bool) {
	p, ok := strings.CutPrefix(path, "/v2")
	if !ok {
		return route{}, false
	}
	if p == "" || p == "/" {
		return route{kind: routePing}, true
	}
	rest, ok := strings.CutPrefix(p, "/")
	if !ok {
		return route{}, false
	}
	if rest == "_catalog" {
		return route{kind: routeCatalog}, true
	}
	segs := strings.Split(rest, "/")
	n := len(segs)
	name := func(k int) string { return strings.Join(segs[:n-k], "/") }
	switch {
	case n >= 3 && segs[n-2] == "tags" && segs[n-1] == "list":
		return route{kind: routeTags, name: name(2)}, true
	case n >= 3 && segs[n-2] == "manifests":
		return route{kind: routeManifest, name: name(2), arg: segs[n-1]}, true
	case n >= 3 && segs[n-2] == "referrers":
		return route{kind: routeReferrers, name: name(2), arg: segs[n-1]}, true
	case n >= 4 && segs[n-3] == "blobs" && segs[n-2] == "uploads":
		if segs[n-1] == "" {
			return route{kind: routeUploads, name: name(3)}, true
		}
		return route{kind: routeUpload, name: name(3), arg: segs[n-1]}, true
	case n >= 3 && segs[n-2] == "blobs" && segs[n-1] == "uploads":
		return route{kind: routeUploads, name: name(2)}, true
	case n >= 3 && segs[n-2] == "blobs":
		return route{kind: routeBlob, name: name(2), arg: segs[n-1]}, true
	}
	return route{}, false
}

// readMethods and writeMethods list the methods of each route; writes need the Writer.
var (
	readMethods = map[routeKind][]string{
		routePing:      {"GET", "HEAD"},
		routeCatalog:   {"GET", "HEAD"},
		routeTags:      {"GET", "HEAD"},
		routeReferrers: {"GET", "HEAD"},
		routeManifest:  {"GET", "HEAD"},
		routeBlob:      {"GET", "HEAD"},
	}
	writeMethods = map[routeKind][]string{
		routeManifest: {"PUT", "DELETE"},
		routeBlob:     {"DELETE"},
		routeUploads:  {"POST"},
		routeUpload:   {"GET", "PATCH", "PUT", "DELETE"},
	}
)

// ServeHTTP implements http.Handler.
func (h *Handler) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	w.Header().Set(HeaderAPIVersion, "registry/2.0")
	rt, ok := parseRoute(r.URL.Path)
	if !ok {
		h.fail(w, r, errcode.Errorf(http.StatusNotFound, errcode.CodeUnsupported, "no such endpoint: %s %s", r.Method, r.URL.Path))
		return
	}
	isRead := slices.Contains(readMethods[rt.kind], r.Method)
	isWrite := slices.Contains(writeMethods[rt.kind], r.Method)
	switch {
	case !isRead && !isWrite:
		allow := readMethods[rt.kind]
		if h.w != nil {
			allow = append(append([]string(nil), allow...), writeMethods[rt.kind]...)
		}
		h.methodNotAllowed(w, r, allow, false)
		return
	case isWrite && h.w == nil:
		h.methodNotAllowed(w, r, readMethods[rt.kind], true)
		return
	}
	if rt.kind != routePing && rt.kind != routeCatalog {
		if err := ValidateName(rt.name); err != nil {
			h.fail(w, r, err)
			return
		}
	}
	switch rt.kind {
	case routePing:
		w.Header().Set("Content-Type", "application/json")
		w.Header().Set("Content-Length", "2")
		w.WriteHeader(http.StatusOK)
		if r.Method != http.MethodHead {
			_, _ = io.WriteString(w, "{}")
		}
	case routeCatalog:
		h.serveCatalog(w, r)
	case routeTags:
		h.serveTags(w, r, rt.name)
	case routeReferrers:
		h.serveReferrers(w, r, rt.name, rt.arg)
	case routeManifest:
		h.serveManifest(w, r, rt.name, rt.arg)
	case routeBlob:
		h.serveBlob(w, r, rt.name, rt.arg)
	case routeUploads:
		h.startUpload(w, r, rt.name)
	case routeUpload:
		h.serveUpload(w, r, rt.name, rt.arg)
	}
}

// methodNotAllowed answers 405 UNSUPPORTED with the route's Allow list; readOnly says the
// method is a write this registry does not take.
func (h *Handler) methodNotAllowed(w http.ResponseWriter, r *http.Request, allow []string, readOnly bool) {
	w.Header().Set("Allow", strings.Join(allow, ", "))
	msg := "method " + r.Method + " is not allowed here"
	if readOnly {
		msg = "this registry is read-only (pull only): " + msg
	}
	h.fail(w, r, errcode.Errorf(http.StatusMethodNotAllowed, errcode.CodeUnsupported, "%s", msg))
}

// fail writes err as the spec's error body, logging server faults.
func (h *Handler) fail(w http.ResponseWriter, r *http.Request, err error) {
	e := FromError(err)
	if e.Status >= 500 {
		h.log.ErrorContext(r.Context(), "registry request failed", "method", r.Method, "path", r.URL.Path, "status", e.Status, "code", e.Code, "err", err)
	} else {
		h.log.DebugContext(r.Context(), "registry request rejected", "method", r.Method, "path", r.URL.Path, "status", e.Status, "code", e.Code, "err", err)
	}
	WriteError(w, r, e)
}

// requestBody is an upload's request body. Its read errors are the client's (a body that ends
// before its declared length is SIZE_INVALID, a broken one BLOB_UPLOAD_INVALID), so a Writer
// that wraps them with %w lets FromError answer 400 rather than 500.
type requestBody struct {
	r io.Reader
	// want is the number of bytes still due, or -1 when the length is not known.
	want int64
	read int64
}

func (b *requestBody) Read(p []byte) (int, error) {
	n, err := b.r.Read(p)
	b.read += int64(n)
	if b.want >= 0 {
		b.want -= int64(n)
	}
	switch {
	case err == nil:
		return n, nil
	case (errors.Is(err, io.EOF) || errors.Is(err, io.ErrUnexpectedEOF)) && b.want > 0:
		// net/http's server reports a body cut short of its Content-Length as
		// io.ErrUnexpectedEOF; a plain reader (httptest) as io.EOF.
		return n, &errcode.Error{Status: http.StatusBadRequest, Code: errcode.CodeSizeInvalid,
			Message: "request body ended " + strconv.FormatInt(b.want, 10) + " bytes short of its declared length", Err: io.ErrUnexpectedEOF}
	case errors.Is(err, io.EOF):
		return n, err
	default:
		var mbe *http.MaxBytesError
		if errors.As(err, &mbe) {
			return n, err
		}
		return n, &errcode.Error{Status: http.StatusBadRequest, Code: errcode.CodeBlobUploadInvalid,
			Message: "reading the request body failed after " + strconv.FormatInt(b.read, 10) + " bytes", Err: err}
	}
}

// Mount returns an http.Handler that sends every request under /v2 to h and the rest to other.
// Roles use it instead of registering h on an http.ServeMux: a ServeMux cleans paths and
// answers "/v2/a//b/manifests/t" with a 307 to "/v2/a/b/manifests/t", another repository,
// which a client follows with its method and body. h rejects such names with NAME_INVALID.
func Mount(h *Handler, other http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if p := r.URL.Path; p == "/v2" || strings.HasPrefix(p, "/v2/") {
			h.ServeHTTP(w, r)
			return
		}
		other.ServeHTTP(w, r)
	})
}
