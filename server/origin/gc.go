package origin

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"slices"
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
// protocol rests on these rules, enforced here under one lock per digest:
//
//   - a local copy is deleted only if nothing used it (commit, read, touch) at or after the
//     cutoff, decided by the store under its own lock (castore.DeleteIdle);
//   - a backend copy is deleted only while no ring member holds a copy, or touched the blob at
//     or after its cutoff (touches are journaled, so an evicted copy's touch still counts),
//     and every member answered; a touch after the delete finds nothing and fails the push
//     instead of linking a manifest to a lost blob;
//   - a touch holds its copy and queues a durable check of the backend object, due
//     writeback.touch_hold (H) later, that writes the copy back if the object is missing; the
//     deciding origin takes the time before it asks the members and deletes only within H/2
//     of it (a monotonic clock, no two hosts' clocks compared). A touch after a member's
//     answer is after that time, so its check runs after any delete the answer allowed, and
//     puts back what a copy fetched between the question and the delete (a push whose touch
//     failed over from the owner to another origin) needs. The deleting origin also asks
//     every member again after a delete, which writes such a copy back at once.

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
	mux.HandleFunc("GET "+api.GCBlobsPath+"/{digest}/use", s.handleGCUse)
	mux.HandleFunc("POST "+api.GCBlobsPath+"/{digest}/writeback", s.handleGCWriteback)
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
//
// The touch is also journaled (touchJournal) and followed by a durable write-back of the blob,
// due writeback.touch_hold later and holding the copy until it ran (touchTask: every touch
// renews it). This origin may not be the blob's first owner (the proxy fails over when the
// owner does not answer), and its copy may be only a cache copy pulled from the backend: the
// journal makes the owner deciding about the backend copy keep it (it asks every member), and
// the write-back puts the object back should that owner have deleted it between its question
// and its delete (which it does within half of touch_hold of the question, gcBackendDelete).
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
	if err := s.touches.record(d, time.Now()); err != nil {
		registry.WriteError(w, r, err)
		return
	}
	if s.backend != nil {
		t := touchTask(ns, d, time.Now(), s.cfg.Writeback.TouchHold)
		if err := s.enqueue(t, d); err != nil {
			registry.WriteError(w, r, fmt.Errorf("touch %s: queue its write-back: %w", d, err))
			return
		}
	}
	s.gcMetrics.touches.Inc()
	w.WriteHeader(http.StatusNoContent)
}

// handleGCUse answers another origin deciding about a blob's backend copy: does this origin
// hold it (in a dry run: a copy its own sweep at the cutoff would keep), or did it touch it at
// or after the cutoff (its own clock, as the run took it)?
func (s *Server) handleGCUse(w http.ResponseWriter, r *http.Request) {
	if !s.gcAllowed(w, r, pki.GroupOrigin, pki.GroupAdmin) {
		return
	}
	d, cutoff, dry, err := gcDeleteArgs(r)
	if err != nil {
		registry.WriteError(w, r, err)
		return
	}
	defer s.gcLock(d)() // a touch under way finishes first, and is seen
	u, err := s.gcUse(d, cutoff, dry)
	if err != nil {
		registry.WriteError(w, r, err)
		return
	}
	writeJSON(w, http.StatusOK, u)
}

// gcUse says whether this origin needs the backend copy of d kept: it holds d, or touched it at
// or after cutoff, or cannot tell (its touch journal starts after cutoff). In a dry run a local
// copy the origins' sweep (which runs before the backends') would delete counts as gone, so the
// dry run answers as the run will. The caller holds d's GC lock.
func (s *Server) gcUse(d digest.Digest, cutoff time.Time, dry bool) (api.GCUse, error) {
	if _, err := s.store.Stat(d); err == nil {
		if _, err := s.store.DeleteIdle(d, cutoff, true); !dry || err != nil {
			return api.GCUse{Used: true, Reason: api.GCKeptLocal}, nil
		}
	}
	touched, known, err := s.touches.touchedSince(d, cutoff)
	switch {
	case err != nil:
		return api.GCUse{}, err
	case touched:
		return api.GCUse{Used: true, Reason: api.GCKeptTouched}, nil
	case !known:
		return api.GCUse{Used: true, Reason: api.GCKeptUnknown}, nil
	}
	return api.GCUse{}, nil
}

// handleGCWriteback queues a write-back of this origin's copy of a blob, at once: the origin
// that deleted the blob's backend copy asks it of every member that touched or fetched the
// blob between its question and its delete.
func (s *Server) handleGCWriteback(w http.ResponseWriter, r *http.Request) {
	if !s.gcAllowed(w, r, pki.GroupOrigin, pki.GroupAdmin) {
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
	if err := s.gcWriteback(ns, d); err != nil {
		registry.WriteError(w, r, err)
		return
	}
	w.WriteHeader(http.StatusAccepted)
}

// gcWriteback queues a write-back of d to ns's backend now, holding the local copy until it
// ran; castore.ErrNotFound when there is no local copy. The caller holds d's GC lock.
func (s *Server) gcWriteback(ns string, d digest.Digest) error {
	release := s.store.Hold(d)
	defer release() // the task holds it from here
	if _, err := s.store.Stat(d); err != nil {
		return fmt.Errorf("write back %s: %w", d, err)
	}
	if s.backend == nil {
		return nil
	}
	if err := s.enqueue(newTask(kindWriteback, ns, d, writebackAfterDelete, time.Now()), d); err != nil {
		return fmt.Errorf("write back %s: %w", d, err)
	}
	return nil
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
			s.confirmed.forget(d) // if it comes back, its other owners are asked anew
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

// handleGCBackendDelete deletes a blob's object in a namespace's backend, unless a ring member
// needs it (gcBackendDelete).
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
	members, err := gcMembers(r)
	if err != nil {
		registry.WriteError(w, r, err)
		return
	}
	defer s.gcLock(d)()
	res, err := s.gcBackendDelete(r.Context(), ns, d, cutoff, members, dry)
	if err != nil {
		registry.WriteError(w, r, err)
		return
	}
	writeJSON(w, http.StatusOK, res)
}

// gcMembers parses the ?member=ADDR@T cutoffs of the other ring members.
func gcMembers(r *http.Request) (map[string]time.Time, error) {
	out := map[string]time.Time{}
	for _, v := range r.URL.Query()[api.QueryMember] {
		i := strings.LastIndexByte(v, '@')
		if i <= 0 {
			return nil, badRequest("member: want ADDR@CUTOFF", nil)
		}
		t, err := time.Parse(time.RFC3339Nano, v[i+1:])
		if err != nil {
			return nil, badRequest("member: want ADDR@CUTOFF with an RFC 3339 cutoff", err)
		}
		out[v[:i]] = t
	}
	return out, nil
}

// gcBackendDelete decides about, and deletes, ns's backend object of d. It keeps the object
// when this origin or any other ring member needs it (gcUse: holds it, or touched it since its
// own cutoff, or cannot tell), when a member cannot be asked, and when the object changed at or
// after cutoff (or the backend does not say when it changed).
//
// A member that fetched or touched d after it answered (a push whose touch failed over to it)
// holds its copy and checks the backend object writeback.touch_hold (H) after its touch: the
// delete is issued only within H/2 of the time taken before asking (the decision is abandoned,
// GCKeptSlow, when the answers came later, and the delete's context ends then), so that check
// comes after the delete and puts the object back. After a delete it also asks every member
// again and makes one that needs d write its copy back at once, which makes the window
// shorter but is not what the guarantee rests on: the member may not answer, or this origin
// may fail first. The caller holds d's GC lock.
func (s *Server) gcBackendDelete(ctx context.Context, ns string, d digest.Digest, cutoff time.Time, members map[string]time.Time, dry bool) (api.GCDeleteResult, error) {
	if s.backend == nil {
		return api.GCDeleteResult{Kept: api.GCKeptUnsupported}, nil
	}
	if u, err := s.gcUse(d, cutoff, dry); err != nil || u.Used {
		return api.GCDeleteResult{Kept: u.Reason}, err
	}
	info, err := s.backend.Stat(ctx, ns, d.Encoded())
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
	asked := time.Now() // before any member answers; monotonic
	limit := asked.Add(s.cfg.Writeback.TouchHold / 2)
	actx, cancel := context.WithDeadline(ctx, limit) // an answer after it is of no use
	u := s.askMembers(actx, d, members, dry)
	cancel()
	if u.Used {
		return api.GCDeleteResult{Kept: u.Reason}, nil
	}
	if !time.Now().Before(limit) {
		s.log.Warn("gc: the members answered too late to delete a backend object safely; it stays", "namespace", ns, "digest", d, "took", time.Since(asked))
		return api.GCDeleteResult{Kept: api.GCKeptSlow}, nil
	}
	if dry {
		if _, ok := s.backend.(backend.Deleter); !ok {
			return api.GCDeleteResult{Kept: api.GCKeptUnsupported}, nil
		}
		return api.GCDeleteResult{Deleted: true, Bytes: info.Size}, nil
	}
	dctx, cancel := context.WithDeadline(ctx, limit)
	err = backend.Delete(dctx, s.backend, ns, d.Encoded())
	cancel()
	switch {
	case err != nil && ctx.Err() == nil && errors.Is(err, context.DeadlineExceeded):
		// Not deleted, or deleted at the last moment: a member's touch since its answer is
		// checked after this either way.
		s.log.Warn("gc: a backend delete did not finish within half of touch_hold of asking the members; the object may stay", "namespace", ns, "digest", d)
		if err := s.rescueAfterDelete(ctx, ns, d, cutoff, members); err != nil { // in case it went
			s.log.Warn("gc: after a backend delete that may have happened, a member that may need the blob could not be made to write it back", "namespace", ns, "digest", d, "err", err)
		}
		return api.GCDeleteResult{Kept: api.GCKeptSlow}, nil
	case errors.Is(err, errors.ErrUnsupported):
		return api.GCDeleteResult{Kept: api.GCKeptUnsupported}, nil
	case errors.Is(err, backend.ErrNotFound):
		return api.GCDeleteResult{Kept: api.GCKeptAbsent}, nil
	case err != nil:
		return api.GCDeleteResult{}, fmt.Errorf("delete %s from backend %s: %w", d, ns, err)
	}
	s.gcMetrics.deleted("backend", info.Size)
	s.log.Info("gc: deleted unreferenced blob from the backend", "namespace", ns, "digest", d, "bytes", info.Size)
	res := api.GCDeleteResult{Deleted: true, Bytes: info.Size}
	if err := s.rescueAfterDelete(ctx, ns, d, cutoff, members); err != nil {
		s.log.Error("gc: after deleting a backend object, a member that may need it could not be made to write it back", "namespace", ns, "digest", d, "err", err)
		res.Error = err.Error()
	}
	return res, nil
}

// askMembers asks every other member (gcMembers) whether it needs d's backend copy kept, each
// with its own cutoff, and returns the first "used" answer in member order. A member that is
// not among members (not in the run) or does not answer counts as used: it may have touched d
// (GCKeptSlow when ctx's deadline, the decision's, ended the wait).
func (s *Server) askMembers(ctx context.Context, d digest.Digest, members map[string]time.Time, dry bool) api.GCUse {
	others := s.gcMembers(members)
	answers := make([]api.GCUse, len(others))
	var wg sync.WaitGroup
	for i, m := range others {
		cutoff, ok := members[m]
		if !ok {
			s.log.Warn("gc: a ring member is not among the origins of the run; the backend copy stays", "member", m, "digest", d)
			answers[i] = api.GCUse{Used: true, Reason: api.GCKeptUnasked}
			continue
		}
		wg.Go(func() {
			u, err := s.peer(m).GCUse(ctx, d, cutoff, dry)
			switch {
			case err != nil && errors.Is(ctx.Err(), context.DeadlineExceeded):
				s.log.Warn("gc: a member did not answer within half of touch_hold; the backend copy stays", "member", m, "digest", d)
				u = api.GCUse{Used: true, Reason: api.GCKeptSlow}
			case err != nil:
				s.log.Warn("gc: a ring member could not be asked about a blob; the backend copy stays", "member", m, "digest", d, "err", err)
				u = api.GCUse{Used: true, Reason: api.GCKeptUnasked}
			}
			answers[i] = u
		})
	}
	wg.Wait()
	for _, u := range answers {
		if u.Used {
			return u
		}
	}
	return api.GCUse{}
}

// rescueAfterDelete asks every member (this origin too) the question again after d's backend
// object was deleted; each that now needs it gets its copy written back.
func (s *Server) rescueAfterDelete(ctx context.Context, ns string, d digest.Digest, cutoff time.Time, members map[string]time.Time) error {
	var errs []error
	if u, err := s.gcUse(d, cutoff, false); err != nil {
		errs = append(errs, err)
	} else if u.Used {
		s.log.Warn("gc: this origin fetched a blob while its backend copy was being deleted; writing it back", "namespace", ns, "digest", d)
		if err := s.gcWriteback(ns, d); err != nil {
			errs = append(errs, err)
		}
	}
	var mu sync.Mutex
	var wg sync.WaitGroup
	for _, m := range s.gcMembers(members) {
		cutoff, ok := members[m]
		if !ok {
			continue // asked before the delete: it was, so it is in members
		}
		wg.Go(func() {
			err := s.rescueFrom(ctx, m, ns, d, cutoff)
			if err != nil {
				mu.Lock()
				errs = append(errs, fmt.Errorf("%s: %w", m, err))
				mu.Unlock()
			}
		})
	}
	wg.Wait()
	return errors.Join(errs...)
}

func (s *Server) rescueFrom(ctx context.Context, m, ns string, d digest.Digest, cutoff time.Time) error {
	p := s.peer(m)
	u, err := p.GCUse(ctx, d, cutoff, false)
	if err != nil || !u.Used {
		return err
	}
	s.log.Warn("gc: a ring member touched or fetched a blob while its backend copy was being deleted; it writes it back", "member", m, "namespace", ns, "digest", d, "reason", u.Reason)
	return p.GCWriteback(ctx, ns, d)
}

// gcMembers are the origins other than this one whose use of a blob a backend delete must
// rule out, sorted: the ring's members, healthy or not, and the run's (members' keys). An
// origin that left the ring since it touched a blob may still hold the only copy a push
// relied on; while it answers it is asked, and when the run names it but it cannot be
// reached, the object stays.
func (s *Server) gcMembers(members map[string]time.Time) []string {
	var out []string
	for _, m := range s.ring.Members() {
		if m.Addr != s.self {
			out = append(out, m.Addr)
		}
	}
	for m := range members {
		if m != s.self && !slices.Contains(out, m) {
			out = append(out, m)
		}
	}
	slices.Sort(out)
	return out
}
