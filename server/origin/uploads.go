package origin

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"strconv"
	"strings"
	"time"

	"github.com/opencontainers/go-digest"

	"github.com/krakenctl/krakenctl/backend"
	"github.com/krakenctl/krakenctl/server/api"
	"github.com/krakenctl/krakenctl/server/registry"
	"github.com/krakenctl/krakenctl/server/registry/errcode"
	"github.com/krakenctl/krakenctl/swarm/castore"
	"github.com/krakenctl/krakenctl/swarm/metainfo"
)

// The upload half of the origin's blob API (see docs/origin.md for the whole table):
//
//	POST   /namespace/{ns}/uploads?digest=D          monolithic upload: the body, verified against D
//	POST   /namespace/{ns}/uploads?mount=D[&from=F]  cross-namespace mount: no body (see handleMount)
//	POST   /namespace/{ns}/uploads                   start a chunked session: 202, Location
//	PATCH  /namespace/{ns}/uploads/{id}              append a chunk: 202 with Range and Upload-Offset
//	GET    /namespace/{ns}/uploads/{id}              the session's size: 204 with Range and Upload-Offset
//	PUT    /namespace/{ns}/uploads/{id}?digest=D     optional last chunk, verify, commit: 201
//	DELETE /namespace/{ns}/uploads/{id}              cancel: 204
//
// A chunk's start is checked against the session's size when the request says where it starts:
// with Content-Range "<start>-<end>" (the body must then be exactly that long), or, for a body
// of unknown length, with the request header Upload-Offset: <start>. Either answers 416
// RANGE_INVALID when start is not the session's size. A PATCH with neither is appended where
// the session ends.
//
// Digests: D may be sha256 or sha512. Everything an origin stores is named by its SHA-256: a
// sha512 upload is verified against D and also hashed with SHA-256, stored under that SHA-256,
// and the 201 answer's Docker-Content-Digest (and Location) carry the SHA-256 digest, not D.
// For a sha256 D the header is D. Clients that push by sha512 must remember the mapping (the
// proxy keeps it as a blob/<sha512> link).

// handleStartUpload starts a chunked upload, or with ?digest= takes the whole blob in the body,
// or with ?mount= adds a stored blob to the namespace.
func (s *Server) handleStartUpload(w http.ResponseWriter, r *http.Request) {
	ns, err := namespaceArg(r.PathValue("ns"))
	if err != nil {
		registry.WriteError(w, r, err)
		return
	}
	// Refused before any byte is taken: a blob pushed into a namespace whose backend cannot
	// write would be acknowledged, then its write-back dropped (an upload, a session and a
	// mount all end in a write-back under ns).
	if err := s.checkWritable(ns); err != nil {
		s.log.Info("push refused: the namespace's backend cannot write", "namespace", ns, "err", err)
		registry.WriteError(w, r, err)
		return
	}
	q := r.URL.Query()
	if m := q.Get("mount"); m != "" {
		s.handleMount(w, r, ns, m, q.Get("from"))
		return
	}
	if q := q.Get("digest"); q != "" {
		d, err := uploadDigest(q)
		if err != nil {
			registry.WriteError(w, r, err)
			return
		}
		if err := s.checkLength(r, 0); err != nil {
			registry.WriteError(w, r, err)
			return
		}
		body := http.MaxBytesReader(w, r.Body, int64(s.cfg.Store.MaxBlobSize))
		if d.Algorithm() != digest.SHA256 {
			s.ingestAsSHA256(w, r, ns, d, body)
			return
		}
		// Held from before the commit until its write-back is queued (which holds it again), so
		// a concurrent commit cannot evict it in between.
		defer s.store.Hold(d)()
		if _, err := s.store.IngestWith(r.Context(), d, body, castore.IngestOptions{
			Size: max(r.ContentLength, 0), Prepare: s.prepare(ns, true),
		}); err != nil {
			registry.WriteError(w, r, err)
			return
		}
		s.metrics.uploadBytes.Add(float64(r.ContentLength))
		s.committed(w, r, ns, d)
		return
	}
	id, err := s.store.CreateUploadLabeled(ns)
	if err != nil {
		registry.WriteError(w, r, err)
		return
	}
	s.writeUploadState(w, ns, id, 0, http.StatusAccepted)
}

// checkWritable says whether a blob pushed under ns can be written back: an error wrapping
// backend.ErrReadOnly (405 UNSUPPORTED) or backend.ErrNoRoute (404 NAME_UNKNOWN) naming the
// namespace and the backend when not. An origin without a backend keeps what it is given and
// writes nothing back, by configuration.
func (s *Server) checkWritable(ns string) error {
	if s.backend == nil {
		return nil
	}
	if err := backend.CheckWrite(s.backend, ns); err != nil {
		return fmt.Errorf("push to namespace %q refused: %w", ns, err)
	}
	return nil
}

// sessionArgs returns the namespace and session id of a request about an upload session. A
// session belongs to the namespace it was started in: under any other it is unknown, so a
// client cannot continue (and commit into its own namespace) another namespace's upload.
// Sessions started before sessions carried their namespace are accepted under any.
func (s *Server) sessionArgs(r *http.Request) (ns, id string, err error) {
	ns, err = namespaceArg(r.PathValue("ns"))
	if err != nil {
		return "", "", err
	}
	id = r.PathValue("id")
	label, err := s.store.UploadLabel(id)
	if err != nil {
		return "", "", err
	}
	if label != "" && label != ns {
		return "", "", fmt.Errorf("upload %s was started in another namespace: %w", id, castore.ErrUploadUnknown)
	}
	return ns, id, nil
}

// uploadDigest parses the digest an upload is verified with: sha256 (or bare hex), or sha512.
func uploadDigest(q string) (digest.Digest, error) {
	if strings.HasPrefix(q, string(digest.SHA512)+":") {
		return registry.ParseOCIDigest(q)
	}
	return registry.ParseDigest(q)
}

// ingestAsSHA256 stores a monolithic upload verified by a non-SHA-256 digest: through a
// session, so the bytes are hashed with both algorithms and stored under their SHA-256.
func (s *Server) ingestAsSHA256(w http.ResponseWriter, r *http.Request, ns string, d digest.Digest, body io.Reader) {
	id, err := s.store.CreateUpload()
	if err != nil {
		registry.WriteError(w, r, err)
		return
	}
	n, err := s.store.AppendUpload(r.Context(), id, 0, body)
	if err != nil {
		_ = s.store.CancelUpload(id)
		registry.WriteError(w, r, err)
		return
	}
	s.metrics.uploadBytes.Add(float64(n))
	s.commitAsSHA256(w, r, ns, id, d)
}

// prepare returns what a commit of a blob uploaded under ns runs before the blob becomes
// visible (castore.PrepareFunc): its metainfo and namespace staged beside it, and its
// write-back task queued durably (holding the blob). So after a crash at any step a blob is
// either absent or complete with its metainfo and write-back, never stored and served without
// them (a task queued for a blob that never appeared is dropped when it runs). primary is as
// for afterCommit, which still runs after the commit: it finds all this done and only fans out.
func (s *Server) prepare(ns string, primary bool) castore.PrepareFunc {
	return func(ctx context.Context, st *castore.Staged) error {
		mi, err := stagedMetainfo(ctx, st)
		if err != nil {
			return err
		}
		if err := st.PutMeta(metaMetainfo, mi); err != nil {
			return err
		}
		if err := st.PutMeta(metaNamespace, []byte(ns)); err != nil {
			return err
		}
		if s.backend == nil {
			return nil
		}
		delay := time.Duration(0)
		if !primary {
			delay = s.cfg.Writeback.ReplicaDelay
		}
		return s.enqueue(newTask(kindWriteback, ns, st.Digest(), "", time.Now().Add(delay)), st.Digest())
	}
}

// stagedMetainfo generates the encoded metainfo of a verified blob about to be committed.
func stagedMetainfo(ctx context.Context, st *castore.Staged) ([]byte, error) {
	f, err := st.Open()
	if err != nil {
		return nil, err
	}
	defer func() { _ = f.Close() }() // read-only
	mi, err := metainfo.Generate(ctx, io.NewSectionReader(f, 0, st.Size()), st.Size())
	if err != nil {
		return nil, fmt.Errorf("generate metainfo for %s: %w", st.Digest(), err)
	}
	if mi.Digest != st.Digest() {
		// The store verified these bytes a moment ago; a mismatch now is disk corruption.
		return nil, fmt.Errorf("generate metainfo for %s: staged bytes hash to %s", st.Digest(), mi.Digest)
	}
	data, err := mi.Encode()
	if err != nil {
		return nil, fmt.Errorf("encode metainfo for %s: %w", st.Digest(), err)
	}
	return data, nil
}

// commitAsSHA256 commits session id verified by d and stored under its SHA-256, then finishes
// as committed does.
func (s *Server) commitAsSHA256(w http.ResponseWriter, r *http.Request, ns, id string, d digest.Digest) {
	info, err := s.store.CommitUploadWith(r.Context(), id, d, castore.CommitOptions{AsSHA256: true, Prepare: s.prepare(ns, true)})
	if err != nil {
		registry.WriteError(w, r, err)
		return
	}
	// The SHA-256 was unknown before the commit, so the hold starts only now: make sure no
	// concurrent commit evicted the blob in between.
	defer s.store.Hold(info.Digest)()
	if _, err := s.store.Stat(info.Digest); err != nil {
		registry.WriteError(w, r, fmt.Errorf("commit %s: evicted right after the commit; upload it again: %w", d, err))
		return
	}
	s.committed(w, r, ns, info.Digest)
}

// handleMount adds blob m, which the origin holds or can fetch, to namespace ns without a
// body: the blob is fetched (from the other origins, else from from's storage backend; from
// defaults to ns) unless the origin has it, recorded under ns, written back to ns's backend
// and copied to its owners, as if it had been uploaded under ns. 201 as for an upload; 404
// BLOB_UNKNOWN when no origin and no backend has it. Only sha256 digests can be mounted.
func (s *Server) handleMount(w http.ResponseWriter, r *http.Request, ns, m, from string) {
	d, err := registry.ParseDigest(m)
	if err != nil {
		registry.WriteError(w, r, err)
		return
	}
	if from == "" {
		from = ns
	} else if from, err = namespaceArg(from); err != nil {
		registry.WriteError(w, r, err)
		return
	}
	defer s.store.Hold(d)() // see handleStartUpload
	if err := s.ensureLocal(r.Context(), from, d); err != nil {
		registry.WriteError(w, r, err)
		return
	}
	s.committed(w, r, ns, d)
}

// checkLength rejects a declared body length that would push the blob past the size limit
// before any byte is read.
func (s *Server) checkLength(r *http.Request, offset int64) error {
	if r.ContentLength > 0 && offset+r.ContentLength > int64(s.cfg.Store.MaxBlobSize) {
		return errcode.Errorf(http.StatusRequestEntityTooLarge, errcode.CodeSizeInvalid,
			"blob would be %d bytes, over the limit of %d", offset+r.ContentLength, s.cfg.Store.MaxBlobSize)
	}
	return nil
}

func (s *Server) writeUploadState(w http.ResponseWriter, ns, id string, size int64, status int) {
	w.Header().Set(api.HeaderLocation, api.UploadPath(ns, id))
	w.Header().Set(api.HeaderUploadUUID, id)
	w.Header().Set(api.HeaderRange, fmt.Sprintf("0-%d", max(size-1, 0)))
	w.Header().Set(api.HeaderUploadOffset, strconv.FormatInt(size, 10))
	w.Header().Set("Content-Length", "0")
	w.WriteHeader(status)
}

func (s *Server) handleUploadStatus(w http.ResponseWriter, r *http.Request) {
	ns, id, err := s.sessionArgs(r)
	if err != nil {
		registry.WriteError(w, r, err)
		return
	}
	size, err := s.store.UploadSize(id)
	if err != nil {
		registry.WriteError(w, r, err)
		return
	}
	s.writeUploadState(w, ns, id, size, http.StatusNoContent)
}

// handlePatchUpload appends a chunk. With Content-Range the chunk must start where the session
// ends (else 416) and carry exactly the declared bytes; without it the body is appended.
func (s *Server) handlePatchUpload(w http.ResponseWriter, r *http.Request) {
	ns, id, err := s.sessionArgs(r)
	if err != nil {
		registry.WriteError(w, r, err)
		return
	}
	size, err := s.appendChunk(r.Context(), w, r, id)
	if err != nil {
		registry.WriteError(w, r, err)
		return
	}
	s.writeUploadState(w, ns, id, size, http.StatusAccepted)
}

// appendChunk appends the request body to upload id and returns the session's new size. A chunk
// that fails validation leaves the session as it was.
func (s *Server) appendChunk(ctx context.Context, w http.ResponseWriter, r *http.Request, id string) (int64, error) {
	cur, err := s.store.UploadSize(id)
	if err != nil {
		return 0, err
	}
	offset, length := cur, int64(-1)
	if uo := r.Header.Get(api.HeaderUploadOffset); uo != "" && r.Header.Get(api.HeaderContentRange) == "" {
		offset, err = strconv.ParseInt(uo, 10, 64)
		if err != nil || offset < 0 {
			return 0, errcode.Errorf(http.StatusBadRequest, errcode.CodeBlobUploadInvalid, "invalid %s %q", api.HeaderUploadOffset, uo)
		}
		if offset != cur {
			return 0, &errcode.Error{
				Status: http.StatusRequestedRangeNotSatisfiable, Code: errcode.CodeRangeInvalid,
				Message: fmt.Sprintf("chunk starts at %d but the upload holds %d bytes", offset, cur),
			}
		}
	}
	if cr := r.Header.Get(api.HeaderContentRange); cr != "" {
		offset, length, err = registry.ParseContentRange(cr)
		if err != nil {
			return 0, err
		}
		if offset != cur {
			return 0, &errcode.Error{
				Status: http.StatusRequestedRangeNotSatisfiable, Code: errcode.CodeRangeInvalid,
				Message: fmt.Sprintf("chunk starts at %d but the upload holds %d bytes", offset, cur),
			}
		}
		if r.ContentLength >= 0 && r.ContentLength != length {
			return 0, errcode.Errorf(http.StatusBadRequest, errcode.CodeBlobUploadInvalid,
				"Content-Range covers %d bytes but Content-Length is %d", length, r.ContentLength)
		}
	}
	if err := s.checkLength(r, offset); err != nil {
		return 0, err
	}
	if length > 0 && offset+length > int64(s.cfg.Store.MaxBlobSize) {
		return 0, errcode.Errorf(http.StatusRequestEntityTooLarge, errcode.CodeSizeInvalid,
			"blob would be %d bytes, over the limit of %d", offset+length, s.cfg.Store.MaxBlobSize)
	}
	var body io.Reader = http.MaxBytesReader(w, r.Body, int64(s.cfg.Store.MaxBlobSize)-offset)
	if length >= 0 {
		body = &exactReader{r: body, want: length}
	}
	size, err := s.store.AppendUpload(ctx, id, offset, body)
	if err != nil {
		var ee *exactError
		if errors.As(err, &ee) {
			return 0, errcode.Errorf(http.StatusBadRequest, errcode.CodeBlobUploadInvalid, "%s", ee.msg)
		}
		return 0, err
	}
	s.metrics.uploadBytes.Add(float64(size - offset))
	return size, nil
}

// exactReader yields exactly want bytes from r and fails if r has fewer or more, so a chunk
// that disagrees with its Content-Range is rejected (and rolled back by the store) instead of
// silently shifting every later byte.
type exactReader struct {
	r    io.Reader
	want int64
	got  int64
}

type exactError struct{ msg string }

func (e *exactError) Error() string { return e.msg }

func (e *exactReader) Read(p []byte) (int, error) {
	if e.got == e.want {
		var one [1]byte
		n, err := io.ReadFull(e.r, one[:])
		if n > 0 {
			return 0, &exactError{fmt.Sprintf("body is longer than the %d bytes Content-Range declares", e.want)}
		}
		if err != nil && !errors.Is(err, io.EOF) && !errors.Is(err, io.ErrUnexpectedEOF) {
			return 0, err
		}
		return 0, io.EOF
	}
	if int64(len(p)) > e.want-e.got {
		p = p[:e.want-e.got]
	}
	n, err := e.r.Read(p)
	e.got += int64(n)
	if errors.Is(err, io.EOF) {
		if e.got < e.want {
			return n, &exactError{fmt.Sprintf("body has %d bytes but Content-Range declares %d", e.got, e.want)}
		}
		err = nil
	}
	return n, err
}

// handleCommitUpload appends an optional last chunk, verifies the digest and commits the blob
// (under its SHA-256 when the digest is sha512).
func (s *Server) handleCommitUpload(w http.ResponseWriter, r *http.Request) {
	ns, id, err := s.sessionArgs(r)
	if err != nil {
		registry.WriteError(w, r, err)
		return
	}
	d, err := uploadDigest(r.URL.Query().Get("digest"))
	if err != nil {
		registry.WriteError(w, r, err)
		return
	}
	if r.ContentLength != 0 {
		if _, err := s.appendChunk(r.Context(), w, r, id); err != nil {
			registry.WriteError(w, r, err)
			return
		}
	}
	if d.Algorithm() != digest.SHA256 {
		s.commitAsSHA256(w, r, ns, id, d)
		return
	}
	defer s.store.Hold(d)() // see handleStartUpload
	if _, err := s.store.CommitUploadWith(r.Context(), id, d, castore.CommitOptions{Prepare: s.prepare(ns, true)}); err != nil {
		registry.WriteError(w, r, err)
		return
	}
	s.committed(w, r, ns, d)
}

func (s *Server) handleCancelUpload(w http.ResponseWriter, r *http.Request) {
	_, id, err := s.sessionArgs(r)
	if err != nil {
		registry.WriteError(w, r, err)
		return
	}
	if err := s.store.CancelUpload(id); err != nil {
		registry.WriteError(w, r, err)
		return
	}
	w.WriteHeader(http.StatusNoContent)
}

// committed finishes a client upload: it records the namespace and metainfo, queues the
// write-back, copies the blob to the other owners, and answers 201.
func (s *Server) committed(w http.ResponseWriter, r *http.Request, ns string, d digest.Digest) {
	if err := s.afterCommit(r.Context(), ns, d, true); err != nil {
		registry.WriteError(w, r, err)
		return
	}
	w.Header().Set(api.HeaderLocation, api.BlobPath(ns, d))
	w.Header().Set(api.HeaderContentDigest, d.String())
	w.Header().Set("Content-Length", "0")
	w.WriteHeader(http.StatusCreated)
}

// handlePutReplica stores a blob sent by another origin: no fan-out, a delayed write-back.
func (s *Server) handlePutReplica(w http.ResponseWriter, r *http.Request) {
	d, err := registry.ParseDigest(r.PathValue("digest"))
	if err != nil {
		registry.WriteError(w, r, err)
		return
	}
	ns, err := namespaceArg(r.URL.Query().Get("namespace"))
	if err != nil {
		registry.WriteError(w, r, err)
		return
	}
	if err := s.checkLength(r, 0); err != nil {
		registry.WriteError(w, r, err)
		return
	}
	defer s.store.Hold(d)() // see handleStartUpload
	body := http.MaxBytesReader(w, r.Body, int64(s.cfg.Store.MaxBlobSize))
	if _, err := s.store.IngestWith(r.Context(), d, body, castore.IngestOptions{
		Size: max(r.ContentLength, 0), Prepare: s.prepare(ns, false),
	}); err != nil {
		registry.WriteError(w, r, err)
		return
	}
	if err := s.afterCommit(r.Context(), ns, d, false); err != nil {
		registry.WriteError(w, r, err)
		return
	}
	w.Header().Set(api.HeaderContentDigest, d.String())
	w.WriteHeader(http.StatusCreated)
}

func writeJSON(w http.ResponseWriter, status int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	_ = json.NewEncoder(w).Encode(v)
}
