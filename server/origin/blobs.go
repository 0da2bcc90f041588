package origin

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/opencontainers/go-digest"

	"github.com/krakenctl/krakenctl/backend"
	"github.com/krakenctl/krakenctl/server/api"
	"github.com/krakenctl/krakenctl/server/client"
	"github.com/krakenctl/krakenctl/server/registry"
	"github.com/krakenctl/krakenctl/server/registry/errcode"
	"github.com/krakenctl/krakenctl/server/swarmapi"
	"github.com/krakenctl/krakenctl/swarm/castore"
	"github.com/krakenctl/krakenctl/swarm/metainfo"
)

// pullTimeout bounds one pull-through; it is detached from the requests that wait for it so one
// impatient client does not cancel the fetch for the others.
const pullTimeout = 2 * time.Hour

func (s *Server) routes(mux *http.ServeMux) {
	mux.HandleFunc("GET /namespace/{ns}/blobs/{digest}", s.handleGetBlob)
	mux.HandleFunc("HEAD /namespace/{ns}/blobs/{digest}", s.handleHeadBlob)
	mux.HandleFunc("GET /namespace/{ns}/blobs/{digest}/metainfo", s.handleMetainfo)
	mux.HandleFunc("POST /namespace/{ns}/uploads", s.handleStartUpload)
	mux.HandleFunc("GET /namespace/{ns}/uploads/{id}", s.handleUploadStatus)
	mux.HandleFunc("PATCH /namespace/{ns}/uploads/{id}", s.handlePatchUpload)
	mux.HandleFunc("PUT /namespace/{ns}/uploads/{id}", s.handleCommitUpload)
	mux.HandleFunc("DELETE /namespace/{ns}/uploads/{id}", s.handleCancelUpload)
	mux.HandleFunc("PUT /internal/blobs/{digest}", s.handlePutReplica)
	mux.HandleFunc("GET /internal/blobs/{digest}", s.handleGetLocal)
	mux.HandleFunc("HEAD /internal/blobs/{digest}", s.handleGetLocal)
	mux.HandleFunc("GET "+api.RingPath, s.handleRing)
	mux.HandleFunc("GET "+api.PeerPath, s.handlePeer)
	// A nil scheduler in an interface would not be nil: pass none when the origin does not seed.
	var sw swarmapi.Swarm
	if s.swarm != nil {
		sw = s.swarm
	}
	swarmapi.Register(mux, "origin", sw)
}

// blobArgs parses and validates the namespace and digest of a request.
func blobArgs(r *http.Request) (string, digest.Digest, error) {
	ns, err := namespaceArg(r.PathValue("ns"))
	if err != nil {
		return "", "", err
	}
	d, err := registry.ParseDigest(r.PathValue("digest"))
	if err != nil {
		return "", "", err
	}
	return ns, d, nil
}

func namespaceArg(ns string) (string, error) {
	if err := backend.CheckNamespace(ns); err != nil {
		return "", &errcode.Error{Status: http.StatusBadRequest, Code: errcode.CodeNameInvalid, Message: err.Error(), Err: err}
	}
	return ns, nil
}

func (s *Server) handleGetBlob(w http.ResponseWriter, r *http.Request) {
	ns, d, err := blobArgs(r)
	if err != nil {
		registry.WriteError(w, r, err)
		return
	}
	// Held so a blob just pulled through is not evicted before it is opened for this request.
	defer s.store.Hold(d)()
	b, err := s.openLocal(r.Context(), ns, d)
	if err != nil {
		registry.WriteError(w, r, err)
		return
	}
	defer func() { _ = b.Close() }() // read-only handle
	s.serveBlob(w, r, d, b)
}

// openLocal opens d from the store, pulling it through first on a miss. A blob the store
// listed but whose file is gone (removed by hand under a running origin) is forgotten by the
// store's Open, then pulled through again like any miss: the client gets the blob or a 404,
// never a 500.
func (s *Server) openLocal(ctx context.Context, ns string, d digest.Digest) (*castore.Blob, error) {
	for attempt := 0; ; attempt++ {
		if err := s.ensureLocal(ctx, ns, d); err != nil {
			return nil, err
		}
		b, err := s.store.Open(ctx, d)
		if err == nil || !errors.Is(err, castore.ErrNotFound) || attempt == 1 {
			return b, err
		}
		s.log.Warn("stored blob vanished; fetching it again", "digest", d, "namespace", ns, "err", err)
	}
}

// handleHeadBlob answers from the store, then from the other members, then from the backend,
// without fetching the blob.
func (s *Server) handleHeadBlob(w http.ResponseWriter, r *http.Request) {
	ns, d, err := blobArgs(r)
	if err != nil {
		registry.WriteError(w, r, err)
		return
	}
	size, err := s.statAnywhere(r.Context(), ns, d)
	if err != nil {
		registry.WriteError(w, r, err)
		return
	}
	w.Header().Set("Content-Length", strconv.FormatInt(size, 10))
	w.Header().Set("Content-Type", "application/octet-stream")
	w.Header().Set(api.HeaderContentDigest, d.String())
	w.Header().Set(api.HeaderServedBy, s.self)
	w.WriteHeader(http.StatusOK)
}

func (s *Server) statAnywhere(ctx context.Context, ns string, d digest.Digest) (int64, error) {
	// Open, not Stat: Stat reads the index, which still lists a blob whose file was removed
	// under the running origin (HEAD said 200 while GET failed); Open notices and forgets it.
	if b, err := s.store.Open(ctx, d); err == nil {
		size := b.Size()
		_ = b.Close() // read-only handle
		return size, nil
	}
	for _, m := range s.otherMembers(d) {
		if size, err := s.peer(m).StatLocal(ctx, ns, d); err == nil {
			return size, nil
		}
	}
	if s.backend == nil {
		return 0, fmt.Errorf("stat %s: %w", d, castore.ErrNotFound)
	}
	if s.neg.absent(ns, d) {
		s.metrics.negHits.Inc()
		return 0, fmt.Errorf("stat %s in backend: %w (remembered)", d, backend.ErrNotFound)
	}
	info, err := s.backend.Stat(ctx, ns, d.Encoded())
	if errors.Is(err, backend.ErrNotFound) {
		s.neg.add(ns, d)
	}
	if err != nil {
		return 0, fmt.Errorf("stat %s in backend: %w", d, err)
	}
	return info.Size, nil
}

// serveLocal streams a stored blob with Range support; the open handle pins it against eviction.
func (s *Server) serveLocal(w http.ResponseWriter, r *http.Request, d digest.Digest) {
	b, err := s.store.Open(r.Context(), d)
	if err != nil {
		registry.WriteError(w, r, err)
		return
	}
	defer func() { _ = b.Close() }() // read-only handle
	s.serveBlob(w, r, d, b)
}

// serveBlob streams the open blob b with Range support.
func (s *Server) serveBlob(w http.ResponseWriter, r *http.Request, d digest.Digest, b *castore.Blob) {
	w.Header().Set("Content-Type", "application/octet-stream")
	w.Header().Set(api.HeaderContentDigest, d.String())
	w.Header().Set(api.HeaderServedBy, s.self)
	w.Header().Set("Cache-Control", "max-age=31536000, immutable")
	w.Header().Set("ETag", `"`+d.String()+`"`)
	// The Range header is decided here, by the parser every role shares (416 for "bytes=-0",
	// one coalesced range, else the whole blob), and handed to ServeContent as that one range
	// or none: ServeContent alone answered "-0" with an invalid 206 and 20,000 "0-0" parts
	// with a multipart body 36 times the request. It still does If-Range and If-None-Match.
	rng, err := registry.ParseRange(r.Header.Get("Range"), b.Size())
	if err != nil {
		w.Header().Set("Content-Range", registry.UnsatisfiedRange(b.Size()))
		registry.WriteError(w, r, err)
		return
	}
	served := b.Size()
	if rng == nil {
		r.Header.Del("Range")
	} else {
		r.Header.Set("Range", fmt.Sprintf("bytes=%d-%d", rng.Start, rng.Start+rng.Length-1))
		served = rng.Length
	}
	http.ServeContent(w, r, "", time.Time{}, b)
	if r.Method == http.MethodGet {
		s.metrics.bytesServed.Add(float64(served))
	}
}

// handleGetLocal serves GET and HEAD of /internal/blobs/{digest}: the local store only.
func (s *Server) handleGetLocal(w http.ResponseWriter, r *http.Request) {
	d, err := registry.ParseDigest(r.PathValue("digest"))
	if err != nil {
		registry.WriteError(w, r, err)
		return
	}
	s.serveLocal(w, r, d)
}

func (s *Server) handleMetainfo(w http.ResponseWriter, r *http.Request) {
	ns, d, err := blobArgs(r)
	if err != nil {
		registry.WriteError(w, r, err)
		return
	}
	defer s.store.Hold(d)()
	if err := s.ensureLocal(r.Context(), ns, d); err != nil {
		registry.WriteError(w, r, err)
		return
	}
	data, err := s.metainfo(r.Context(), d)
	if err != nil {
		registry.WriteError(w, r, err)
		return
	}
	w.Header().Set("Content-Type", "application/json")
	w.Header().Set(api.HeaderServedBy, s.self)
	_, _ = w.Write(data)
}

// metainfo returns the blob's encoded metainfo, generating and storing it when missing.
func (s *Server) metainfo(ctx context.Context, d digest.Digest) ([]byte, error) {
	if data, err := s.store.GetMeta(d, metaMetainfo); err == nil {
		return data, nil
	}
	b, err := s.store.Open(ctx, d)
	if err != nil {
		return nil, err
	}
	defer func() { _ = b.Close() }() // read-only handle
	mi, err := metainfo.Generate(ctx, io.NewSectionReader(b, 0, b.Size()), b.Size())
	if err != nil {
		return nil, fmt.Errorf("generate metainfo for %s: %w", d, err)
	}
	if mi.Digest != d {
		// The store verified this blob when it was committed; a mismatch now is disk corruption.
		return nil, fmt.Errorf("generate metainfo for %s: stored bytes hash to %s", d, mi.Digest)
	}
	data, err := mi.Encode()
	if err != nil {
		return nil, fmt.Errorf("encode metainfo for %s: %w", d, err)
	}
	if err := s.store.PutMeta(d, metaMetainfo, data); err != nil {
		return nil, fmt.Errorf("store metainfo for %s: %w", d, err)
	}
	return data, nil
}

// ensureLocal makes d present in the local store, pulling it through on a miss. Concurrent
// misses for one digest share a single fetch.
func (s *Server) ensureLocal(ctx context.Context, ns string, d digest.Digest) error {
	if _, err := s.store.Stat(d); err == nil {
		return nil
	}
	ch := s.pulls.DoChan(d.String(), func() (any, error) {
		pctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), pullTimeout)
		defer cancel()
		return nil, s.pullThrough(pctx, ns, d)
	})
	select {
	case res := <-ch:
		return res.Err
	case <-ctx.Done():
		return ctx.Err()
	}
}

// pullThrough fetches d from another member that holds it, else from the backend.
func (s *Server) pullThrough(ctx context.Context, ns string, d digest.Digest) error {
	if _, err := s.store.Stat(d); err == nil {
		return nil
	}
	var errs []error
	for _, m := range s.otherMembers(d) {
		err := s.pullFromPeer(ctx, m, ns, d)
		if err == nil {
			s.metrics.pulls.WithLabelValues("origin").Inc()
			return s.afterFetch(ctx, ns, d)
		}
		if !client.IsNotFound(err) {
			errs = append(errs, err)
			s.log.Warn("pull from origin failed", "peer", m, "digest", d, "err", err)
		}
	}
	if s.backend == nil {
		return fmt.Errorf("pull %s: %w", d, errors.Join(append([]error{castore.ErrNotFound}, errs...)...))
	}
	if s.neg.absent(ns, d) {
		s.metrics.negHits.Inc()
		return fmt.Errorf("pull %s from backend: %w (remembered)", d, backend.ErrNotFound)
	}
	if err := s.pullFromBackend(ctx, ns, d); err != nil {
		if errors.Is(err, backend.ErrNotFound) {
			s.neg.add(ns, d)
		}
		s.metrics.pullErrors.Inc()
		return err
	}
	s.metrics.pulls.WithLabelValues("backend").Inc()
	return s.afterFetch(ctx, ns, d)
}

func (s *Server) pullFromPeer(ctx context.Context, peer, ns string, d digest.Digest) error {
	body, size, err := s.peer(peer).OpenLocal(ctx, ns, d)
	if err != nil {
		return err
	}
	defer func() { _ = body.Close() }() // read side
	if err := s.ingestFetched(ctx, ns, d, body, size, "origin "+peer); err != nil {
		return fmt.Errorf("pull %s from origin %s: %w", d, peer, err)
	}
	return nil
}

// pullFromBackend fetches d from ns's backend, whose Stat gives the size to reserve up front.
// A Stat that fails other than "not found" (a server that sends no Content-Length to a HEAD)
// leaves the size unknown: the download still runs, reserving as it goes.
func (s *Server) pullFromBackend(ctx context.Context, ns string, d digest.Digest) error {
	info, err := s.backend.Stat(ctx, ns, d.Encoded())
	switch {
	case err != nil && (errors.Is(err, backend.ErrNotFound) || errors.Is(err, backend.ErrNoRoute) || ctx.Err() != nil):
		return fmt.Errorf("pull %s from backend: %w", d, err)
	case err != nil:
		s.log.Debug("backend stat failed; pulling with the size unknown", "namespace", ns, "digest", d, "err", err)
		info.Size = -1
	}
	dl := &lazyDownload{start: func(w *io.PipeWriter) error { return s.backend.Download(ctx, ns, d.Encoded(), w) }}
	ierr := s.ingestFetched(ctx, ns, d, dl, info.Size, "the storage backend")
	derr := dl.finish()
	if ierr != nil {
		return fmt.Errorf("pull %s from backend: %w", d, ierr)
	}
	if derr != nil {
		return fmt.Errorf("pull %s from backend: %w", d, derr)
	}
	return nil
}

// lazyDownload is a download read through a pipe, started by the first Read: a fetch the
// store refuses before reading (no room for the announced size) downloads nothing.
type lazyDownload struct {
	start func(w *io.PipeWriter) error
	pr    *io.PipeReader
	done  chan error
}

func (l *lazyDownload) Read(p []byte) (int, error) {
	if l.pr == nil {
		pr, pw := io.Pipe()
		l.pr, l.done = pr, make(chan error, 1)
		go func() {
			err := l.start(pw)
			pw.CloseWithError(err)
			l.done <- err
		}()
	}
	return l.pr.Read(p)
}

// finish stops a download the reader gave up on and returns its error (nil if it never
// started).
func (l *lazyDownload) finish() error {
	if l.pr == nil {
		return nil
	}
	l.pr.CloseWithError(errors.New("ingest finished")) // unblock the downloader if ingest stopped early
	return <-l.done
}

// ingestFetched commits a blob fetched from another origin or the backend (from names it)
// into the store: size bytes reserved up front (size < 0: unknown, reserved as bytes arrive),
// and its metainfo and namespace staged with it (fetchPrepare), so after a crash at any step
// the blob is either absent or complete with both. A source that sends another number of
// bytes than it announced fails the fetch and commits nothing.
func (s *Server) ingestFetched(ctx context.Context, ns string, d digest.Digest, r io.Reader, size int64, from string) error {
	opts := castore.IngestOptions{Prepare: s.fetchPrepare(ns)}
	if size >= 0 {
		opts.Size = size
		r = &sizedReader{r: r, left: size, size: size, from: from}
	}
	_, err := s.store.IngestWith(ctx, d, r, opts)
	return err
}

// fetchPrepare stages what a fetched blob needs before it becomes visible: its metainfo and
// the namespace it was fetched under. No write-back: it is in storage, or on the origin it came
// from, which writes it back.
func (s *Server) fetchPrepare(ns string) castore.PrepareFunc {
	return func(ctx context.Context, st *castore.Staged) error {
		mi, err := stagedMetainfo(ctx, st)
		if err != nil {
			return err
		}
		if err := st.PutMeta(metaMetainfo, mi); err != nil {
			return err
		}
		return st.PutMeta(metaNamespace, []byte(ns))
	}
}

// sizedReader passes r through and fails when r ends before size bytes or goes on after
// them: a fetch that does not match the size its source announced (and that was reserved) is
// refused before anything is committed, whatever its bytes hash to.
type sizedReader struct {
	r          io.Reader
	left, size int64
	from       string
}

func (z *sizedReader) Read(p []byte) (int, error) {
	if z.left == 0 {
		// Read one byte past the announced end: EOF is the only right answer.
		var b [1]byte
		n, err := z.r.Read(b[:])
		if n > 0 {
			return 0, sizeMismatch(z.from, z.size, "more")
		}
		return 0, err
	}
	if int64(len(p)) > z.left {
		p = p[:z.left]
	}
	n, err := z.r.Read(p)
	z.left -= int64(n)
	if errors.Is(err, io.EOF) && z.left > 0 {
		return n, sizeMismatch(z.from, z.size, fmt.Sprintf("only %d", z.size-z.left))
	}
	return n, err
}

// sizeMismatch is a fetch whose source sent another length than it announced: 502, since the
// fault is the source's, not the client's, and nothing was stored.
func sizeMismatch(from string, size int64, got string) error {
	return &errcode.Error{Status: http.StatusBadGateway, Code: errcode.CodeUnknown,
		Message: fmt.Sprintf("%s announced %d bytes and sent %s; nothing was stored", from, size, got)}
}

// afterFetch records what a fetched blob needs: its namespace and metainfo. A blob this fetch
// committed has both already (fetchPrepare); one that was stored meanwhile under another
// namespace gains this one. It is already in storage (or on another origin), so no write-back
// is queued.
func (s *Server) afterFetch(ctx context.Context, ns string, d digest.Digest) error {
	if err := s.addNamespace(d, ns); err != nil {
		return err
	}
	_, err := s.metainfo(ctx, d)
	return err
}

// addNamespace records ns among the namespaces a stored blob was written under.
func (s *Server) addNamespace(d digest.Digest, ns string) error {
	var list []string
	if b, err := s.store.GetMeta(d, metaNamespace); err == nil {
		list = strings.Split(string(b), "\n")
	}
	if slices.Contains(list, ns) {
		return nil
	}
	list = append(list, ns)
	if err := s.store.PutMeta(d, metaNamespace, []byte(strings.Join(list, "\n"))); err != nil {
		return fmt.Errorf("record namespace of %s: %w", d, err)
	}
	return nil
}

// otherMembers returns the ring members other than this origin, owners of d first, healthy ones
// before unhealthy ones.
func (s *Server) otherMembers(d digest.Digest) []string {
	return slices.DeleteFunc(s.ring.RankHealthyFirst(d.String()), func(m string) bool { return m == s.self })
}

func (s *Server) handleRing(w http.ResponseWriter, r *http.Request) {
	st := api.RingStatus{Self: s.self, Replicas: s.ring.Replicas()}
	for _, m := range s.ring.Members() {
		st.Members = append(st.Members, api.RingMember{
			Addr: m.Addr, Healthy: m.Healthy, ConsecutiveFailures: m.ConsecutiveFailures,
			LastCheck: m.LastCheck, LastError: m.LastError,
		})
	}
	if q := r.URL.Query().Get("digest"); q != "" {
		d, err := registry.ParseDigest(q)
		if err != nil {
			registry.WriteError(w, r, err)
			return
		}
		st.Digest = d
		st.Owners = s.ring.Owners(d.String())
		st.Locations = s.ring.Locations(d.String())
		_, err = s.store.Stat(d)
		local := err == nil
		st.Local = &local
	}
	writeJSON(w, http.StatusOK, st)
}

// handlePeer tells trackers where the origin seeds: its swarm peer id and address.
func (s *Server) handlePeer(w http.ResponseWriter, r *http.Request) {
	if s.swarm == nil {
		http.Error(w, "this origin does not seed: no peer listener configured", http.StatusNotFound)
		return
	}
	w.Header().Set("Content-Type", "application/json")
	_ = json.NewEncoder(w).Encode(api.PeerInfo{ID: s.swarm.PeerID().String(), Addr: s.swarm.Addr()})
}
