package origin

import (
	"errors"
	"fmt"
	"net/http"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/opencontainers/go-digest"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/krakenctl/krakenctl/backend"
	"github.com/krakenctl/krakenctl/server/api"
	"github.com/krakenctl/krakenctl/server/pki"
	"github.com/krakenctl/krakenctl/server/registry"
	"github.com/krakenctl/krakenctl/server/registry/errcode"
	"github.com/krakenctl/krakenctl/swarm/castore"
)

// This file is the origin's side of garbage collection (server/gc, docs/gc.md): a paged listing
// of the local store, a touch that a manifest push sends for every blob it references, and
// deletes that are conditional on the blob having been idle since the run's cutoff. The
// protocol rests on two rules enforced here, under one lock per digest:
//
//   - a local copy is deleted only if nothing used it (commit, read, touch) at or after the
//     cutoff, decided by the store under its own lock (castore.DeleteIdle);
//   - a backend copy is deleted only while this origin holds no local copy, so a touch that
//     pulled it back in first keeps the backend copy, and a touch after the delete finds
//     nothing and fails the push instead of linking a manifest to a lost blob.

// gcMetrics count what garbage collection deleted here, by where the copy was ("local" or
// "backend"), and the touches manifest pushes sent.
type gcMetrics struct {
	blobs   *prometheus.CounterVec
	bytes   *prometheus.CounterVec
	touches prometheus.Counter
}

func newGCMetrics(reg prometheus.Registerer) (*gcMetrics, error) {
	m := &gcMetrics{
		blobs: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "krakenctl_origin_gc_deleted_blobs_total",
			Help: "Unreferenced blobs garbage collection deleted through this origin, by where the copy was (local, backend)."}, []string{"where"}),
		bytes: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "krakenctl_origin_gc_deleted_bytes_total",
			Help: "Bytes of the blobs garbage collection deleted through this origin, by where the copy was (local, backend)."}, []string{"where"}),
		touches: prometheus.NewCounter(prometheus.CounterOpts{Name: "krakenctl_origin_gc_touches_total",
			Help: "Blobs marked used by a manifest push (so a running garbage collection keeps them)."}),
	}
	if reg != nil {
		for _, c := range []prometheus.Collector{m.blobs, m.bytes, m.touches} {
			if err := reg.Register(c); err != nil {
				return nil, err
			}
		}
	}
	return m, nil
}

func (m *gcMetrics) deleted(where string, n int64) {
	m.blobs.WithLabelValues(where).Inc()
	m.bytes.WithLabelValues(where).Add(float64(n))
}

// gcMaxPage bounds one listing page.
const gcMaxPage = 10000

func (s *Server) gcRoutes(mux *http.ServeMux) {
	mux.HandleFunc("GET "+api.GCBlobsPath, s.handleGCList)
	mux.HandleFunc("POST "+api.GCBlobsPath+"/{digest}/touch", s.handleGCTouch)
	mux.HandleFunc("DELETE "+api.GCBlobsPath+"/{digest}", s.handleGCDelete)
	mux.HandleFunc("GET "+api.GCBackendPath+"/{ns}", s.handleGCBackendList)
	mux.HandleFunc("DELETE "+api.GCBackendPath+"/{ns}/{digest}", s.handleGCBackendDelete)
}

// gcLock takes the lock of d and returns its unlock.
func (s *Server) gcLock(d digest.Digest) func() { return s.gcLocks.lock(d) }

// digestLocks is one mutex per digest, made on first use and dropped when its last holder
// lets go: touches and deletes of one digest exclude each other, and a touch that spends
// minutes pulling its blob from the backend holds up nothing else (striped locks made every
// digest sharing its stripe wait for that pull).
type digestLocks struct {
	mu sync.Mutex
	m  map[digest.Digest]*digestLock
}

type digestLock struct {
	mu   sync.Mutex
	refs int // holders and waiters; guarded by digestLocks.mu
}

// lock takes d's mutex and returns its unlock.
func (l *digestLocks) lock(d digest.Digest) func() {
	l.mu.Lock()
	if l.m == nil {
		l.m = map[digest.Digest]*digestLock{}
	}
	e := l.m[d]
	if e == nil {
		e = &digestLock{}
		l.m[d] = e
	}
	e.refs++
	l.mu.Unlock()
	e.mu.Lock()
	return func() {
		e.mu.Unlock()
		l.mu.Lock()
		if e.refs--; e.refs == 0 {
			delete(l.m, d)
		}
		l.mu.Unlock()
	}
}

// held counts the digests whose lock is held or waited for (tests).
func (l *digestLocks) held() int {
	l.mu.Lock()
	defer l.mu.Unlock()
	return len(l.m)
}

// gcAllowed refuses, under TLS, a caller outside groups. Without TLS the origin trusts its
// network (as every other route does).
func (s *Server) gcAllowed(w http.ResponseWriter, r *http.Request, groups ...string) bool {
	if !s.cfg.TLS.Enabled() {
		return true
	}
	if err := pki.Allowed(r.TLS, r.Method+" "+r.URL.Path, groups...); err != nil {
		registry.WriteError(w, r, &errcode.Error{Status: http.StatusForbidden, Code: errcode.CodeDenied, Message: err.Error(), Err: err})
		return false
	}
	return true
}

func badRequest(msg string, err error) *errcode.Error {
	return &errcode.Error{Status: http.StatusBadRequest, Code: errcode.CodeNameInvalid, Message: msg, Err: err}
}

// gcDigest parses the {digest} path value: only sha256, the only algorithm blobs are stored under.
func gcDigest(r *http.Request) (digest.Digest, error) {
	d, err := registry.ParseDigest(r.PathValue("digest"))
	if err != nil {
		return "", err
	}
	if d.Algorithm() != digest.SHA256 {
		return "", &errcode.Error{Status: http.StatusBadRequest, Code: errcode.CodeDigestInvalid, Message: "origins store blobs under sha256 digests"}
	}
	return d, nil
}

// gcDeleteArgs parses what every GC delete takes: the {digest}, ?cutoff= and ?dry_run=.
func gcDeleteArgs(r *http.Request) (digest.Digest, time.Time, bool, error) {
	d, err := gcDigest(r)
	if err != nil {
		return "", time.Time{}, false, err
	}
	cutoff, dry, err := gcCutoff(r)
	return d, cutoff, dry, err
}

// gcCutoff parses ?cutoff= and ?dry_run=. A cutoff is required: a delete without one could
// remove a blob pushed a moment ago.
func gcCutoff(r *http.Request) (time.Time, bool, error) {
	q := r.URL.Query()
	c, err := time.Parse(time.RFC3339Nano, q.Get(api.QueryCutoff))
	if err != nil {
		return time.Time{}, false, badRequest("cutoff: want an RFC 3339 time", err)
	}
	dry := false
	if v := q.Get(api.QueryDryRun); v != "" {
		if dry, err = strconv.ParseBool(v); err != nil {
			return time.Time{}, false, badRequest("dry_run: want true or false", err)
		}
	}
	return c, dry, nil
}

func (s *Server) handleGCList(w http.ResponseWriter, r *http.Request) {
	if !s.gcAllowed(w, r, pki.GroupAdmin) {
		return
	}
	q := r.URL.Query()
	n := api.GCDefaultPageLimit
	if v := q.Get("n"); v != "" {
		var err error
		if n, err = strconv.Atoi(v); err != nil || n < 0 || n > gcMaxPage {
			registry.WriteError(w, r, badRequest(fmt.Sprintf("n: want 0 to %d", gcMaxPage), err))
			return
		}
	}
	var after digest.Digest
	if v := q.Get(api.QueryAfter); v != "" {
		d, err := registry.ParseDigest(v)
		if err != nil {
			registry.WriteError(w, r, err)
			return
		}
		after = d
	}
	page := api.GCBlobPage{Now: time.Now(), Blobs: []api.GCBlob{}}
	infos := s.store.Page(after, n)
	for _, in := range infos {
		b := api.GCBlob{Digest: in.Digest, Size: in.Size, LastUsed: in.LastAccess}
		if ns, err := s.namespaceOf(in.Digest); err == nil && ns != "" {
			b.Namespaces = strings.Split(ns, "\n")
		}
		page.Blobs = append(page.Blobs, b)
	}
	if n > 0 && len(infos) == n {
		page.Next = infos[n-1].Digest.String()
	}
	writeJSON(w, http.StatusOK, page)
}

// handleGCTouch makes a blob count as used now, pulling it through first when this origin
// lacks it: the proxy touches every blob a manifest references before it links the manifest,
// so a GC run that started earlier keeps them (or the push fails if one was already collected).
func (s *Server) handleGCTouch(w http.ResponseWriter, r *http.Request) {
	if !s.gcAllowed(w, r, pki.GroupProxy, pki.GroupAdmin) {
		return
	}
	d, err := gcDigest(r)
	if err != nil {
		registry.WriteError(w, r, err)
		return
	}
	ns, err := namespaceArg(r.URL.Query().Get(api.QueryNS))
	if err != nil {
		registry.WriteError(w, r, err)
		return
	}
	defer s.gcLock(d)()
	defer s.store.Hold(d)() // not evicted between the pull and the touch
	if err := s.ensureLocal(r.Context(), ns, d); err != nil {
		registry.WriteError(w, r, err)
		return
	}
	if !s.store.Touch(d) {
		registry.WriteError(w, r, fmt.Errorf("touch %s: %w", d, castore.ErrNotFound))
		return
	}
	s.gcMetrics.touches.Inc()
	w.WriteHeader(http.StatusNoContent)
}

// handleGCDelete deletes the local copy of a blob if it has been idle since the cutoff.
func (s *Server) handleGCDelete(w http.ResponseWriter, r *http.Request) {
	if !s.gcAllowed(w, r, pki.GroupAdmin) {
		return
	}
	d, cutoff, dry, err := gcDeleteArgs(r)
	if err != nil {
		registry.WriteError(w, r, err)
		return
	}
	defer s.gcLock(d)()
	var res api.GCDeleteResult
	n, err := s.store.DeleteIdle(d, cutoff, dry)
	switch {
	case err == nil:
		res = api.GCDeleteResult{Deleted: true, Bytes: n}
		if !dry {
			s.gcMetrics.deleted("local", n)
			s.log.Info("gc: deleted unreferenced blob", "digest", d, "bytes", n)
		}
	case errors.Is(err, castore.ErrNotFound):
		res.Kept = api.GCKeptAbsent
	case errors.Is(err, castore.ErrRecentlyUsed):
		res.Kept = api.GCKeptRecent
	case errors.Is(err, castore.ErrInUse):
		res.Kept = api.GCKeptInUse
	default:
		registry.WriteError(w, r, err)
		return
	}
	writeJSON(w, http.StatusOK, res)
}

func (s *Server) handleGCBackendList(w http.ResponseWriter, r *http.Request) {
	if !s.gcAllowed(w, r, pki.GroupAdmin) {
		return
	}
	ns, err := namespaceArg(r.PathValue("ns"))
	if err != nil {
		registry.WriteError(w, r, err)
		return
	}
	if s.backend == nil {
		writeJSON(w, http.StatusOK, api.GCBackendList{Names: []string{}})
		return
	}
	names, err := s.backend.List(r.Context(), ns, r.URL.Query().Get(api.QueryPrefix))
	switch {
	case errors.Is(err, backend.ErrNoRoute), errors.Is(err, errors.ErrUnsupported):
		names = []string{} // nothing this origin can enumerate (or delete) there
	case err != nil:
		registry.WriteError(w, r, fmt.Errorf("list backend %s: %w", ns, err))
		return
	}
	if names == nil {
		names = []string{}
	}
	writeJSON(w, http.StatusOK, api.GCBackendList{Names: names})
}

// handleGCBackendDelete deletes a blob's object in a namespace's backend, unless this origin
// holds a local copy (it may have been pulled back by a touch, or await write-back) or the
// object changed at or after the cutoff (or the backend does not say when it changed).
func (s *Server) handleGCBackendDelete(w http.ResponseWriter, r *http.Request) {
	if !s.gcAllowed(w, r, pki.GroupAdmin) {
		return
	}
	ns, err := namespaceArg(r.PathValue("ns"))
	if err != nil {
		registry.WriteError(w, r, err)
		return
	}
	d, cutoff, dry, err := gcDeleteArgs(r)
	if err != nil {
		registry.WriteError(w, r, err)
		return
	}
	defer s.gcLock(d)()
	res, err := s.gcBackendDelete(r, ns, d, cutoff, dry)
	if err != nil {
		registry.WriteError(w, r, err)
		return
	}
	writeJSON(w, http.StatusOK, res)
}

func (s *Server) gcBackendDelete(r *http.Request, ns string, d digest.Digest, cutoff time.Time, dry bool) (api.GCDeleteResult, error) {
	if s.backend == nil {
		return api.GCDeleteResult{Kept: api.GCKeptUnsupported}, nil
	}
	if _, err := s.store.Stat(d); err == nil {
		// A dry run has not deleted the local copy that the origins' sweep, which runs first,
		// would have: ask the store whether it would, so the dry run agrees with the real one.
		if _, err := s.store.DeleteIdle(d, cutoff, true); !dry || err != nil {
			return api.GCDeleteResult{Kept: api.GCKeptLocal}, nil
		}
	}
	info, err := s.backend.Stat(r.Context(), ns, d.Encoded())
	switch {
	case errors.Is(err, backend.ErrNotFound):
		return api.GCDeleteResult{Kept: api.GCKeptAbsent}, nil
	case errors.Is(err, backend.ErrNoRoute):
		return api.GCDeleteResult{Kept: api.GCKeptUnsupported}, nil
	case err != nil:
		return api.GCDeleteResult{}, fmt.Errorf("stat %s in backend %s: %w", d, ns, err)
	case info.ModTime.IsZero() || !info.ModTime.Before(cutoff):
		return api.GCDeleteResult{Kept: api.GCKeptRecent}, nil
	}
	if dry {
		if _, ok := s.backend.(backend.Deleter); !ok {
			return api.GCDeleteResult{Kept: api.GCKeptUnsupported}, nil
		}
		return api.GCDeleteResult{Deleted: true, Bytes: info.Size}, nil
	}
	err = backend.Delete(r.Context(), s.backend, ns, d.Encoded())
	switch {
	case errors.Is(err, errors.ErrUnsupported):
		return api.GCDeleteResult{Kept: api.GCKeptUnsupported}, nil
	case errors.Is(err, backend.ErrNotFound):
		return api.GCDeleteResult{Kept: api.GCKeptAbsent}, nil
	case err != nil:
		return api.GCDeleteResult{}, fmt.Errorf("delete %s from backend %s: %w", d, ns, err)
	}
	s.gcMetrics.deleted("backend", info.Size)
	s.log.Info("gc: deleted unreferenced blob from the backend", "namespace", ns, "digest", d, "bytes", info.Size)
	return api.GCDeleteResult{Deleted: true, Bytes: info.Size}, nil
}
