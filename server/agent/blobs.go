package agent

import (
	"context"
	"errors"
	"net/http"
	"strconv"
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
	s.cache.Register(mux)
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

	rng, err := registry.ParseRange(r.Header.Get("Range"), size)
	if err != nil {
		h.Set("Content-Range", registry.UnsatisfiedRange(size))
		registry.WriteError(w, r, err)
		return
	}
	off, n := int64(0), size
	if rng != nil {
		off, n = rng.Start, rng.Length
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
	if rng != nil {
		status = http.StatusPartialContent
		h.Set("Content-Range", rng.ContentRange(size))
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
