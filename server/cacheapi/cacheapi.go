// Package cacheapi is the cache cleanup of agents and origins: the loop that applies a role's
// cleanup policy (Config) to its content-addressed store, and the cache API (server/api's
// CachePath and CacheEvictPath) that shows what the store holds and what the policy would
// remove, and evicts by hand. One implementation for both roles, so `krakenctl cache` reads
// the same documents from each. The decisions are castore.Store.Cleanup's: this package keeps
// what the role must keep (Keep: the swarm's active blobs) and turns requests into options.
package cacheapi

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/opencontainers/go-digest"

	"github.com/krakenctl/krakenctl/server/api"
	"github.com/krakenctl/krakenctl/server/registry"
	"github.com/krakenctl/krakenctl/server/registry/errcode"
	"github.com/krakenctl/krakenctl/swarm/castore"
)

// Store is what cleanup needs of a castore.Store.
type Store interface {
	Cleanup(castore.CleanupOptions) (castore.CleanupReport, error)
	List() []castore.Info
	LeastRecentlyUsed(n int) []castore.BlobState
	Usage() (used, capacity int64)
	Reserved() int64
	DiskUsage() (total, used int64, err error)
}

// Cache runs one role's cleanup and serves its cache API.
type Cache struct {
	role  string
	store Store
	cfg   Config
	keep  func(digest.Digest) bool
	allow func(*http.Request) error
	log   *slog.Logger
	now   func() time.Time
}

// Options are a Cache's collaborators.
type Options struct {
	// Keep reports the blobs the role must keep besides those open or held: the agent and
	// origin pass their swarm scheduler's Active. Nil keeps none. It is called with the store's
	// lock held (castore.CleanupOptions.Keep).
	Keep func(digest.Digest) bool
	// Allow refuses a caller of the API (a non-nil error is answered 403 DENIED); nil admits
	// everyone the role's own guards let through.
	Allow func(*http.Request) error
	// Logger receives a line per failed run; castore logs every run that removed anything.
	Logger *slog.Logger
	// Now is the clock of the status's ages; nil means time.Now. Cleanup uses the store's.
	Now func() time.Time
}

// New returns the cleanup of role ("agent" or "origin") over store with cfg, whose defaults
// have been filled and validated.
func New(role string, store Store, cfg Config, opts Options) *Cache {
	c := &Cache{role: role, store: store, cfg: cfg, keep: opts.Keep, allow: opts.Allow, log: opts.Logger, now: opts.Now}
	if c.log == nil {
		c.log = slog.New(slog.DiscardHandler)
	}
	if c.now == nil {
		c.now = time.Now
	}
	return c
}

// Run applies the policy shortly after start and then every interval until ctx ends. With a
// negative interval it returns at once: only manual evictions (and capacity eviction) remove.
func (c *Cache) Run(ctx context.Context) error {
	if c.cfg.Interval < 0 {
		return nil
	}
	t := time.NewTimer(min(firstRunDelay, c.cfg.Interval))
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return nil
		case <-t.C:
			if _, err := c.RunPolicy(false); err != nil {
				c.log.Warn("cache cleanup", "err", err)
			}
			t.Reset(c.cfg.Interval)
		}
	}
}

// RunPolicy applies the role's policy once (or, dry, says what it would remove).
func (c *Cache) RunPolicy(dryRun bool) (castore.CleanupReport, error) {
	return c.store.Cleanup(castore.CleanupOptions{Policy: c.cfg.Policy(), Keep: c.keep, DryRun: dryRun})
}

// Register adds GET CachePath and POST CacheEvictPath to mux.
func (c *Cache) Register(mux *http.ServeMux) {
	mux.HandleFunc("GET "+api.CachePath, c.guard(c.status))
	mux.HandleFunc("POST "+api.CacheEvictPath, c.guard(c.evict))
}

func (c *Cache) guard(h http.HandlerFunc) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		if c.allow != nil {
			if err := c.allow(r); err != nil {
				registry.WriteError(w, r, &errcode.Error{Status: http.StatusForbidden, Code: errcode.CodeDenied, Message: err.Error(), Err: err})
				return
			}
		}
		h(w, r)
	}
}

func badRequest(code errcode.Code, format string, a ...any) *errcode.Error {
	return errcode.Errorf(http.StatusBadRequest, code, format, a...)
}

// buckets are the bounds of the status's idle and age histograms.
var buckets = []time.Duration{time.Hour, 6 * time.Hour, 24 * time.Hour, 7 * 24 * time.Hour, 30 * 24 * time.Hour}

func (c *Cache) status(w http.ResponseWriter, r *http.Request) {
	n := 0
	if v := r.URL.Query().Get(api.CacheBlobsParam); v != "" {
		var err error
		if n, err = strconv.Atoi(v); err != nil || n < 0 || n > api.CacheMaxBlobs {
			registry.WriteError(w, r, badRequest(errcode.CodeUnsupported, "%s=%q: want a number from 0 to %d", api.CacheBlobsParam, v, api.CacheMaxBlobs))
			return
		}
	}
	st, err := c.Status(n)
	if err != nil {
		registry.WriteError(w, r, err)
		return
	}
	writeJSON(w, st)
}

// Status describes the store: usage, the policy, ages, what the policy would remove now, and
// the n least recently used blobs.
func (c *Cache) Status(n int) (api.CacheStatus, error) {
	dry, err := c.RunPolicy(true)
	if err != nil {
		return api.CacheStatus{}, err
	}
	now := dry.Now
	used, capacity := c.store.Usage()
	st := api.CacheStatus{
		Role: c.role, Now: now, UsedBytes: used, ReservedBytes: c.store.Reserved(), CapacityBytes: capacity,
		Policy: api.CachePolicy{
			Interval: durationOrOff(c.cfg.Interval), TTI: durationOrOff(c.cfg.TTI), TTL: durationOrOff(c.cfg.TTL),
			HighWatermark: max(c.cfg.HighWatermark, 0), LowWatermark: max(c.cfg.LowWatermark, 0),
		},
		WouldRemove: []api.CacheReasonTotal{}, WouldKeep: []api.CacheReasonTotal{},
	}
	if total, fsUsed, err := c.store.DiskUsage(); err == nil {
		st.Filesystem = &api.CacheFilesystem{TotalBytes: total, UsedBytes: fsUsed}
	}
	switch {
	case capacity > 0:
		st.Basis = "capacity"
		st.UsagePercent = percent(used+st.ReservedBytes, capacity)
	case st.Filesystem != nil:
		st.Basis = "filesystem"
		st.UsagePercent = percent(st.Filesystem.UsedBytes, st.Filesystem.TotalBytes)
	}
	infos := c.store.List()
	st.BlobCount = len(infos)
	st.IdleBuckets, st.AgeBuckets = newBuckets(), newBuckets()
	for _, in := range infos {
		if st.Oldest == nil || in.Created.Before(st.Oldest.Created) {
			st.Oldest = new(blob(in))
		}
		if st.Idlest == nil || in.LastAccess.Before(st.Idlest.LastUsed) {
			st.Idlest = new(blob(in))
		}
		count(st.IdleBuckets, now.Sub(in.LastAccess), in.Size)
		count(st.AgeBuckets, now.Sub(in.Created), in.Size)
	}
	st.WouldRemove = totals(dry.Removed, func(b castore.CleanupBlob) string { return b.Reason })
	st.WouldKeep = totals(dry.Kept, func(b castore.CleanupBlob) string { return b.Kept })
	if n > 0 {
		for _, b := range c.store.LeastRecentlyUsed(n) {
			cb := blob(b.Info)
			switch {
			case b.Open:
				cb.InUse = api.CacheKeptOpen
			case b.Held:
				cb.InUse = api.CacheKeptHeld
			case c.keep != nil && c.keep(b.Digest):
				cb.InUse = api.CacheKeptActive
			}
			st.Blobs = append(st.Blobs, cb)
		}
	}
	return st, nil
}

func durationOrOff(d time.Duration) string { return max(d, 0).String() }

func percent(part, whole int64) float64 {
	if whole <= 0 {
		return 0
	}
	return 100 * float64(part) / float64(whole)
}

func blob(in castore.Info) api.CacheBlob {
	return api.CacheBlob{Digest: in.Digest, Size: in.Size, Created: in.Created, LastUsed: in.LastAccess}
}

func newBuckets() []api.CacheBucket {
	out := make([]api.CacheBucket, 0, len(buckets)+1)
	for _, b := range buckets {
		out = append(out, api.CacheBucket{Below: b.String()})
	}
	return append(out, api.CacheBucket{})
}

func count(bs []api.CacheBucket, age time.Duration, size int64) {
	i, _ := slices.BinarySearch(buckets, age+1) // the first bound above age
	bs[i].Blobs++
	bs[i].Bytes += size
}

// totals sums blobs by key, in the order castore.Reasons, then the kept reasons, gives.
func totals(bs []castore.CleanupBlob, key func(castore.CleanupBlob) string) []api.CacheReasonTotal {
	order := append(slices.Clone(castore.Reasons), castore.KeptOpen, castore.KeptHeld, castore.KeptActive, castore.KeptAbsent)
	out := []api.CacheReasonTotal{}
	for _, k := range order {
		t := api.CacheReasonTotal{Reason: k}
		for _, b := range bs {
			if key(b) == k {
				t.Blobs++
				t.Bytes += b.Size
			}
		}
		if t.Blobs > 0 {
			out = append(out, t)
		}
	}
	return out
}

func (c *Cache) evict(w http.ResponseWriter, r *http.Request) {
	req, err := decodeEvict(w, r)
	if err != nil {
		registry.WriteError(w, r, err)
		return
	}
	opts := castore.CleanupOptions{Keep: c.keep, DryRun: req.DryRun, Policy: c.cfg.Policy()}
	if req.Policy && (len(req.Digests) > 0 || req.IdleOver != "" || req.OlderThan != "" || req.DownToBytes != nil || req.DownToPercent != nil) {
		// Running the policy would ignore the criteria: refuse rather than remove more than asked.
		registry.WriteError(w, r, badRequest(errcode.CodeBodyInvalid, "policy: runs the node's own policy; give it alone, or criteria without it"))
		return
	}
	if !req.Policy {
		if opts.Manual, err = manual(req); err != nil {
			registry.WriteError(w, r, err)
			return
		}
	}
	rep, err := c.store.Cleanup(opts)
	if err != nil && rep.Now.IsZero() {
		if errors.Is(err, castore.ErrBadPolicy) || errors.Is(err, castore.ErrInvalidDigest) {
			registry.WriteError(w, r, badRequest(errcode.CodeBodyInvalid, "%s", err))
			return
		}
		registry.WriteError(w, r, err)
		return
	}
	// A removal that failed is in rep.Kept with its error: the report is the answer either way.
	writeJSON(w, c.report(rep))
}

// decodeEvict reads a CacheEvictRequest: one JSON object, no unknown fields, at most
// api.CacheMaxRequest bytes.
func decodeEvict(w http.ResponseWriter, r *http.Request) (api.CacheEvictRequest, error) {
	var req api.CacheEvictRequest
	dec := json.NewDecoder(http.MaxBytesReader(w, r.Body, api.CacheMaxRequest))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&req); err != nil {
		var mbe *http.MaxBytesError
		if errors.As(err, &mbe) {
			return req, badRequest(errcode.CodeBodyInvalid, "eviction request larger than %d bytes", api.CacheMaxRequest)
		}
		return req, badRequest(errcode.CodeBodyInvalid, "eviction request: %s", err)
	}
	if _, err := dec.Token(); !errors.Is(err, io.EOF) {
		return req, badRequest(errcode.CodeBodyInvalid, "eviction request: one JSON object, nothing after it")
	}
	return req, nil
}

// manual turns a request's criteria into a castore.Manual, refusing bad values.
func manual(req api.CacheEvictRequest) (*castore.Manual, error) {
	m := &castore.Manual{}
	for _, s := range req.Digests {
		d, err := digest.Parse(strings.TrimSpace(s))
		if err != nil {
			return nil, badRequest(errcode.CodeDigestInvalid, "digests: %q: %s", s, err)
		}
		m.Digests = append(m.Digests, d)
	}
	var err error
	if m.IdleOver, err = parseDuration("idle_over", req.IdleOver); err != nil {
		return nil, err
	}
	if m.OlderThan, err = parseDuration("older_than", req.OlderThan); err != nil {
		return nil, err
	}
	switch {
	case req.DownToBytes != nil && req.DownToPercent != nil:
		return nil, badRequest(errcode.CodeBodyInvalid, "down_to_bytes and down_to_percent: give one, not both")
	case req.DownToBytes != nil:
		if *req.DownToBytes < 0 {
			return nil, badRequest(errcode.CodeBodyInvalid, "down_to_bytes: %d is negative", *req.DownToBytes)
		}
		m.DownTo = &castore.Target{Bytes: req.DownToBytes}
	case req.DownToPercent != nil:
		if p := *req.DownToPercent; !(p >= 0 && p <= 100) {
			return nil, badRequest(errcode.CodeBodyInvalid, "down_to_percent: %v is not between 0 and 100", p)
		}
		m.DownTo = &castore.Target{Percent: req.DownToPercent}
	}
	if len(m.Digests) == 0 && m.IdleOver == 0 && m.OlderThan == 0 && m.DownTo == nil {
		return nil, badRequest(errcode.CodeBodyInvalid, "nothing to evict: give digests, idle_over, older_than, down_to_bytes, down_to_percent, or policy: true")
	}
	return m, nil
}

func parseDuration(key, v string) (time.Duration, error) {
	if v == "" {
		return 0, nil
	}
	d, err := time.ParseDuration(v)
	if err != nil {
		return 0, badRequest(errcode.CodeBodyInvalid, "%s: %q is not a duration (like 36h)", key, v)
	}
	if d <= 0 {
		return 0, badRequest(errcode.CodeBodyInvalid, "%s: %s: want a positive duration", key, v)
	}
	return d, nil
}

func (c *Cache) report(rep castore.CleanupReport) api.CacheEvictReport {
	used, _ := c.store.Usage()
	out := api.CacheEvictReport{Role: c.role, DryRun: rep.DryRun, Now: rep.Now, Removed: []api.CacheBlob{}, Kept: []api.CacheBlob{},
		UsedBytes: used, Basis: rep.Basis.Name, TargetBytes: rep.Target}
	if rep.Basis.Err != nil {
		out.Note = fmt.Sprintf("no watermark or percentage applied: %s", rep.Basis.Err)
	}
	for _, b := range rep.Removed {
		cb := blob(b.Info)
		cb.Reason = b.Reason
		out.Removed = append(out.Removed, cb)
		out.FreedBytes += b.Size
	}
	for _, b := range rep.Kept {
		cb := blob(b.Info)
		cb.Reason, cb.Kept = b.Reason, b.Kept
		if b.Err != nil {
			cb.Kept, cb.Error = "error", b.Err.Error()
		}
		out.Kept = append(out.Kept, cb)
	}
	return out
}

func writeJSON(w http.ResponseWriter, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.Header().Set("Cache-Control", "no-store")
	_ = json.NewEncoder(w).Encode(v)
}
