package agent

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"strconv"
	"strings"
	"time"

	"github.com/opencontainers/go-digest"

	"github.com/krakenctl/krakenctl/server/api"
	"github.com/krakenctl/krakenctl/server/registry"
	"github.com/krakenctl/krakenctl/server/registry/errcode"
	"github.com/krakenctl/krakenctl/server/swarmapi"
	"github.com/krakenctl/krakenctl/swarm/announce"
)

func (s *Server) routes(mux *http.ServeMux) {
	mux.HandleFunc("GET /namespace/{ns}/blobs/{digest}", s.handleBlob)
	mux.HandleFunc("HEAD /namespace/{ns}/blobs/{digest}", s.handleBlob)
	swarmapi.Register(mux, "agent", s.sched)
	// Every method goes to the registry handler, which answers writes with 405 UNSUPPORTED.
}

// blobArgs parses and validates the namespace and digest of a request.
func blobArgs(r *http.Request) (string, digest.Digest, error) {
	ns := r.PathValue("ns")
	if err := announce.CheckNamespace(ns); err != nil {
		return "", "", &errcode.Error{Status: http.StatusBadRequest, Code: errcode.CodeNameInvalid, Message: err.Error(), Err: err}
	}
	d, err := registry.ParseDigest(r.PathValue("digest"))
	if err != nil {
		return "", "", err
	}
	return ns, d, nil
}

// handleBlob serves GET and HEAD of a blob, streaming it while it downloads.
func (s *Server) handleBlob(w http.ResponseWriter, r *http.Request) {
	start := time.Now()
	ns, d, err := blobArgs(r)
	if err != nil {
		registry.WriteError(w, r, err)
		return
	}
	ctx := r.Context()
	dl, err := s.sched.Open(ctx, ns, d)
	if err != nil {
		s.requestFailed(r, d, err)
		registry.WriteError(w, r, err)
		return
	}
	defer func() { _ = dl.Close() }() // read side
	size := dl.Size()
	h := w.Header()
	h.Set("Content-Type", "application/octet-stream")
	h.Set("Accept-Ranges", "bytes")
	h.Set(api.HeaderContentDigest, d.String())
	h.Set("ETag", `"`+d.String()+`"`)
	h.Set("Cache-Control", "max-age=31536000, immutable")

	off, n, partial, err := parseRange(r.Header.Get("Range"), size)
	if err != nil {
		h.Set("Content-Range", fmt.Sprintf("bytes */%d", size))
		registry.WriteError(w, r, err)
		return
	}
	if r.Method == http.MethodGet && n > 0 {
		// Headers wait for the first byte: a download that fails before it still gets a
		// proper error status.
		if _, err := dl.Wait(ctx, off); err != nil {
			s.requestFailed(r, d, err)
			registry.WriteError(w, r, err)
			return
		}
		s.metrics.firstByte.Observe(time.Since(start).Seconds())
	}
	h.Set("Content-Length", strconv.FormatInt(n, 10))
	status := http.StatusOK
	if partial {
		status = http.StatusPartialContent
		h.Set("Content-Range", fmt.Sprintf("bytes %d-%d/%d", off, off+n-1, size))
	}
	w.WriteHeader(status)
	if r.Method == http.MethodHead || n == 0 {
		return
	}
	sent, err := dl.CopyRange(ctx, w, off, n)
	s.metrics.served.Add(float64(sent))
	if err != nil {
		// The status line is gone: cut the connection so the client sees a truncated body,
		// not a short response that looks complete.
		if ctx.Err() == nil {
			s.metrics.aborted.Inc()
			s.log.Warn("blob stream aborted", "digest", d, "sent", sent, "of", n, "err", err)
		}
		panic(http.ErrAbortHandler)
	}
}

// requestFailed logs a failure worth an operator's attention (not a client that went away or
// a blob that does not exist).
func (s *Server) requestFailed(r *http.Request, d digest.Digest, err error) {
	if r.Context().Err() != nil || errors.Is(err, context.Canceled) || errors.Is(err, announce.ErrNotFound) {
		return
	}
	s.log.Warn("blob request failed", "digest", d, "method", r.Method, "err", err)
}

// errRange is a Range header that no byte of the blob satisfies.
func errRange(format string, a ...any) error {
	return errcode.Errorf(http.StatusRequestedRangeNotSatisfiable, errcode.CodeRangeInvalid, format, a...)
}

// parseRange interprets a Range header for a blob of size bytes and returns the bytes to send:
// [off, off+n), and whether that is a part of the blob (206) rather than all of it (200).
// Only a single bytes range is honoured: a header with another unit or several ranges is
// ignored (the whole blob is sent), as RFC 9110 lets a server do. A malformed bytes range or
// one that no byte satisfies is an error that maps to 416.
func parseRange(header string, size int64) (off, n int64, partial bool, err error) {
	header = strings.TrimSpace(header)
	unit, spec, ok := strings.Cut(header, "=")
	if header == "" || !ok || !strings.EqualFold(strings.TrimSpace(unit), "bytes") || strings.Contains(spec, ",") {
		return 0, size, false, nil
	}
	spec = strings.TrimSpace(spec)
	first, last, ok := strings.Cut(spec, "-")
	first, last = strings.TrimSpace(first), strings.TrimSpace(last)
	if !ok {
		return 0, 0, false, errRange("invalid range %q: want bytes=FIRST-LAST, bytes=FIRST- or bytes=-SUFFIX", header)
	}
	if first == "" {
		// A suffix: the last n bytes.
		k, err := parseOffset(last)
		if err != nil {
			return 0, 0, false, errRange("invalid range %q: %v", header, err)
		}
		if k == 0 || size == 0 {
			return 0, 0, false, errRange("range %q is not satisfiable: the blob has %d bytes", header, size)
		}
		k = min(k, size)
		return size - k, k, true, nil
	}
	a, err := parseOffset(first)
	if err != nil {
		return 0, 0, false, errRange("invalid range %q: %v", header, err)
	}
	end := size - 1
	if last != "" {
		b, err := parseOffset(last)
		if err != nil {
			return 0, 0, false, errRange("invalid range %q: %v", header, err)
		}
		if b < a {
			return 0, 0, false, errRange("invalid range %q: the last byte is before the first", header)
		}
		end = min(b, size-1)
	}
	if a >= size {
		return 0, 0, false, errRange("range %q is not satisfiable: the blob has %d bytes", header, size)
	}
	return a, end - a + 1, true, nil
}

// parseOffset parses a non-negative decimal byte position.
func parseOffset(s string) (int64, error) {
	if s == "" || strings.TrimLeft(s, "0123456789") != "" {
		return 0, fmt.Errorf("%q is not a byte position", s)
	}
	v, err := strconv.ParseInt(s, 10, 64)
	if err != nil {
		return 0, fmt.Errorf("%q is not a byte position", s)
	}
	return v, nil
}
