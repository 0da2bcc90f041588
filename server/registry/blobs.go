package registry

import (
	"io"
	"net/http"
	"strconv"
)

// serveBlob answers GET, HEAD and DELETE /v2/<name>/blobs/<digest>.
func (h *Handler) serveBlob(w http.ResponseWriter, r *http.Request, name, arg string) {
	d, err := ParseOCIDigest(arg)
	if err != nil {
		h.fail(w, r, err)
		return
	}
	if r.Method == http.MethodDelete {
		if err := h.w.DeleteBlob(r.Context(), name, d); err != nil {
			h.fail(w, r, err)
			return
		}
		w.Header().Set("Content-Length", "0")
		w.WriteHeader(http.StatusAccepted)
		return
	}

	br, err := h.r.Blob(r.Context(), name, d)
	if err != nil {
		h.fail(w, r, err)
		return
	}
	defer func() { _ = br.Close() }()
	size := br.Size()
	rng, err := ParseRange(r.Header.Get("Range"), size)
	if err != nil {
		w.Header().Set("Content-Range", UnsatisfiedRange(size))
		h.fail(w, r, err)
		return
	}
	status, start, length := http.StatusOK, int64(0), size
	if rng != nil {
		status, start, length = http.StatusPartialContent, rng.Start, rng.Length
	}

	var body io.ReadCloser
	if r.Method == http.MethodGet && length > 0 {
		// Open before the headers go out: an agent still downloading the blob may fail here,
		// and the client should get that status rather than a cut body.
		body, err = br.Open(r.Context(), start)
		if err != nil {
			h.fail(w, r, err)
			return
		}
		defer func() { _ = body.Close() }()
	}
	hd := w.Header()
	hd.Set("Content-Type", "application/octet-stream")
	hd.Set("Content-Length", strconv.FormatInt(length, 10))
	hd.Set("Accept-Ranges", "bytes")
	hd.Set(HeaderContentDigest, d.String())
	if rng != nil {
		hd.Set("Content-Range", rng.ContentRange(size))
	}
	w.WriteHeader(status)
	if body == nil {
		return
	}
	var n int64
	if start+length == size {
		// The body ends where the response does (every whole-blob GET): io.Copy lets it use
		// its WriterTo, which the agent implements by sending from the file (sendfile);
		// io.CopyN's LimitedReader would hide it and copy through a buffer.
		n, err = io.Copy(w, body)
		if err == nil && n != length {
			err = io.ErrUnexpectedEOF
		}
	} else {
		n, err = io.CopyN(w, body, length)
	}
	if err != nil {
		// The status is out; all that is left is to cut the response short, which the client
		// sees as a body shorter than Content-Length.
		h.log.WarnContext(r.Context(), "blob response cut short", "repo", name, "digest", d, "sent", n, "want", length, "err", err)
	}
}
