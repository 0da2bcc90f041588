package registry

import (
	"context"
	"errors"
	"io"
	"net/http"
	"strconv"

	"github.com/opencontainers/go-digest"

	"github.com/krakenctl/krakenctl/server/registry/errcode"
)

// maxUploadIDLength bounds an upload id taken from a URL.
const maxUploadIDLength = 256

// validUploadID reports whether id can be an upload id a Writer handed out: URL-safe
// characters only ([A-Za-z0-9._~-]), so it is used in Location as is.
func validUploadID(id string) bool {
	if id == "" || len(id) > maxUploadIDLength {
		return false
	}
	for i := 0; i < len(id); i++ {
		if !uploadIDByte(id[i]) {
			return false
		}
	}
	return true
}

func uploadIDByte(c byte) bool {
	return c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == '.' || c == '_' || c == '~' || c == '-'
}

func uploadLocation(name, id string) string { return "/v2/" + name + "/blobs/uploads/" + id }
func blobLocation(name string, d digest.Digest) string {
	return "/v2/" + name + "/blobs/" + d.String()
}

// uploadRange is the Range header of an upload session holding size bytes: "0-<last byte>",
// and "0-0" for an empty session, as distribution answers.
func uploadRange(size int64) string {
	return "0-" + strconv.FormatInt(max(size-1, 0), 10)
}

// setUploadHeaders sets the headers every answer about a live session carries.
func setUploadHeaders(w http.ResponseWriter, name, id string, size int64) {
	hd := w.Header()
	hd.Set("Location", uploadLocation(name, id))
	hd.Set("Range", uploadRange(size))
	hd.Set(HeaderUploadUUID, id)
	hd.Set(HeaderUploadSession, id)
}

// writeBlobCreated answers 201 for a blob now in the repository.
func writeBlobCreated(w http.ResponseWriter, name string, d digest.Digest) {
	hd := w.Header()
	hd.Set("Location", blobLocation(name, d))
	hd.Set(HeaderContentDigest, d.String())
	hd.Set("Content-Length", "0")
	w.WriteHeader(http.StatusCreated)
}

// startUpload answers POST /v2/<name>/blobs/uploads/: a mount (?mount=&from=), a monolithic
// upload (?digest= with the blob as the body), or a new session.
func (h *Handler) startUpload(w http.ResponseWriter, r *http.Request, name string) {
	ctx := r.Context()
	q := r.URL.Query()
	if q.Has("mount") {
		// The spec: a mount that cannot happen (bad arguments, no such blob) falls back to a
		// new session, which is what a registry that does not know mounts answers.
		d, err := ParseOCIDigest(q.Get("mount"))
		from := q.Get("from")
		if err == nil && (from == "" || ValidateName(from) == nil) {
			ok, err := h.w.MountBlob(ctx, name, from, d)
			if err != nil {
				h.fail(w, r, err)
				return
			}
			if ok {
				writeBlobCreated(w, name, d)
				return
			}
		}
	} else if q.Has("digest") {
		h.monolithicUpload(w, r, name, q.Get("digest"))
		return
	}
	id, err := h.w.StartUpload(ctx, name)
	if err != nil {
		h.fail(w, r, err)
		return
	}
	if !validUploadID(id) {
		h.fail(w, r, errors.New("start upload: the writer returned an id that is not URL-safe"))
		return
	}
	setUploadHeaders(w, name, id, 0)
	w.Header().Set("Content-Length", "0")
	w.WriteHeader(http.StatusAccepted)
}

// monolithicUpload is POST ?digest=: the whole blob in one request.
func (h *Handler) monolithicUpload(w http.ResponseWriter, r *http.Request, name, digestParam string) {
	ctx := r.Context()
	d, err := ParseOCIDigest(digestParam)
	if err != nil {
		h.fail(w, r, err)
		return
	}
	id, err := h.w.StartUpload(ctx, name)
	if err != nil {
		h.fail(w, r, err)
		return
	}
	if _, err := h.w.AppendUpload(ctx, name, id, 0, &requestBody{r: r.Body, want: r.ContentLength}, r.ContentLength); err != nil {
		h.cancel(ctx, name, id)
		h.fail(w, r, err)
		return
	}
	if err := h.w.CommitUpload(ctx, name, id, d); err != nil {
		// A commit that fails for another reason than the digest may leave the session.
		if !errors.Is(err, ErrDigestMismatch) {
			h.cancel(ctx, name, id)
		}
		h.fail(w, r, err)
		return
	}
	writeBlobCreated(w, name, d)
}

// cancel drops a session the client never saw, logging a failure (the session then expires in
// the Writer).
func (h *Handler) cancel(ctx context.Context, name, id string) {
	if err := h.w.CancelUpload(context.WithoutCancel(ctx), name, id); err != nil && !errors.Is(err, ErrUploadUnknown) {
		h.log.WarnContext(ctx, "cancel upload", "repo", name, "upload", id, "err", err)
	}
}

// serveUpload answers GET (status), PATCH (a chunk), PUT (the last chunk and the digest) and
// DELETE (cancel) on /v2/<name>/blobs/uploads/<id>.
func (h *Handler) serveUpload(w http.ResponseWriter, r *http.Request, name, id string) {
	ctx := r.Context()
	if !validUploadID(id) {
		h.fail(w, r, errcode.Errorf(http.StatusNotFound, errcode.CodeBlobUploadUnknown, "blob upload unknown to registry: invalid upload id"))
		return
	}
	switch r.Method {
	case http.MethodGet:
		size, err := h.w.UploadOffset(ctx, name, id)
		if err != nil {
			h.fail(w, r, err)
			return
		}
		setUploadHeaders(w, name, id, size)
		w.WriteHeader(http.StatusNoContent)
	case http.MethodDelete:
		if err := h.w.CancelUpload(ctx, name, id); err != nil {
			h.fail(w, r, err)
			return
		}
		w.WriteHeader(http.StatusNoContent)
	case http.MethodPatch:
		size, err := h.appendChunk(w, r, name, id, true)
		if err != nil {
			h.fail(w, r, err)
			return
		}
		setUploadHeaders(w, name, id, size)
		w.Header().Set("Content-Length", "0")
		w.WriteHeader(http.StatusAccepted)
	case http.MethodPut:
		if !r.URL.Query().Has("digest") {
			h.fail(w, r, errcode.Errorf(http.StatusBadRequest, errcode.CodeDigestInvalid, "missing digest query parameter: PUT ?digest=<digest> completes an upload"))
			return
		}
		d, err := ParseOCIDigest(r.URL.Query().Get("digest"))
		if err != nil {
			h.fail(w, r, err)
			return
		}
		if _, err := h.appendChunk(w, r, name, id, false); err != nil {
			h.fail(w, r, err)
			return
		}
		if err := h.w.CommitUpload(ctx, name, id, d); err != nil {
			h.fail(w, r, err)
			return
		}
		writeBlobCreated(w, name, d)
	}
}

// appendChunk appends the request body to the session and returns the session's new size.
// With Content-Range the chunk must start at the session's end; without it the body is
// appended at the end (a streamed PATCH, or a PUT's last chunk). An empty body of a PUT
// appends nothing. A chunk that does not start at the end answers 416 with the session's Range
// so the client can resume.
func (h *Handler) appendChunk(w http.ResponseWriter, r *http.Request, name, id string, patch bool) (int64, error) {
	ctx := r.Context()
	length := r.ContentLength
	var start int64
	if cr := r.Header.Get("Content-Range"); cr != "" {
		s, n, err := ParseContentRange(cr)
		if err != nil {
			h.setRangeOnError(ctx, w, name, id)
			return 0, err
		}
		if length >= 0 && length != n {
			return 0, errcode.Errorf(http.StatusBadRequest, errcode.CodeSizeInvalid,
				"Content-Length %d does not match Content-Range %q (%d bytes)", length, cr, n)
		}
		start, length = s, n
	} else {
		size, err := h.w.UploadOffset(ctx, name, id)
		if err != nil {
			return 0, err
		}
		if !patch && length == 0 {
			return size, nil
		}
		start = size
	}
	body := &requestBody{r: r.Body, want: length}
	size, err := h.w.AppendUpload(ctx, name, id, start, body, length)
	if err != nil {
		if errors.Is(err, ErrUploadOffset) {
			h.setRangeOnError(ctx, w, name, id)
		}
		return 0, err
	}
	if length >= 0 && r.ContentLength < 0 {
		// A chunked body with a Content-Range: the range has been stored; more bytes than it
		// announced are an error the client must see.
		var one [1]byte
		if n, _ := io.ReadFull(r.Body, one[:]); n > 0 {
			return 0, errcode.Errorf(http.StatusBadRequest, errcode.CodeSizeInvalid,
				"request body is longer than its Content-Range; the upload holds %d bytes", size)
		}
	}
	return size, nil
}

// setRangeOnError adds the session's Location and Range to a 416 answer.
func (h *Handler) setRangeOnError(ctx context.Context, w http.ResponseWriter, name, id string) {
	if size, err := h.w.UploadOffset(ctx, name, id); err == nil {
		setUploadHeaders(w, name, id, size)
	}
}
