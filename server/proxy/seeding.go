package proxy

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"mime"
	"net/http"
	"sync"
	"sync/atomic"
	"time"

	"github.com/opencontainers/go-digest"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/krakenctl/krakenctl/server/auth"
	"github.com/krakenctl/krakenctl/server/registry"
	"github.com/krakenctl/krakenctl/server/registry/errcode"
	"github.com/krakenctl/krakenctl/server/seed"
)

// Bounds of seeding.
const (
	// maxSeedQueue bounds seed.queue: every waiting seed holds a little memory.
	maxSeedQueue = 100000
	// seedTimeout bounds one seed, so a stuck origin or agent cannot stop the queue for good.
	seedTimeout = time.Hour
	// dropLogEvery samples the warning about dropped seeds: a flood must not flood the log.
	dropLogEvery = 10 * time.Second
	// NotificationsPath is where registry notifications are posted.
	NotificationsPath = "/notifications"
	// maxNotificationBody and maxNotificationEvents bound one notification envelope
	// (distribution sends a few events per envelope).
	maxNotificationBody   = 1 << 20
	maxNotificationEvents = 1000
)

// seeder seeds targets: *seed.Seeder, or a fake in tests.
type seeder interface {
	Seed(ctx context.Context, targets []seed.Target) (*seed.Report, error)
}

// seedMetrics are the queue's metrics.
type seedMetrics struct {
	depth prometheus.Gauge
	seeds *prometheus.CounterVec
	// oldest is the queue's oldest-age function, set by newSeedQueue and read at scrape time.
	oldest atomic.Pointer[func() float64]
}

func newSeedMetrics(reg prometheus.Registerer) (*seedMetrics, error) {
	m := &seedMetrics{
		depth: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "krakenctl_proxy_seed_queue_depth", Help: "Seeds waiting for the proxy's seed worker.",
		}),
		seeds: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "krakenctl_proxy_seeds_total", Help: "Seeds of pushed images, by result (ok, failed, dropped: the queue was full).",
		}, []string{"result"}),
	}
	oldest := prometheus.NewGaugeFunc(prometheus.GaugeOpts{
		Name: "krakenctl_proxy_seed_oldest_seconds", Help: "How long the oldest seed waiting for the worker has waited; 0 when none waits.",
	}, func() float64 {
		if f := m.oldest.Load(); f != nil {
			return (*f)()
		}
		return 0
	})
	if reg != nil {
		for _, c := range []prometheus.Collector{m.depth, m.seeds, oldest} {
			if err := reg.Register(c); err != nil {
				return nil, err
			}
		}
	}
	return m, nil
}

// seedQueue is a bounded queue of seeds drained by one worker (Run). Enqueue never blocks:
// a full queue drops the seed and counts it, so neither a push nor a flood of notifications
// waits for seeding or grows memory. A seed already waiting is not queued twice.
type seedQueue struct {
	s   seeder
	log *slog.Logger
	m   *seedMetrics
	ch  chan seed.Target

	mu       sync.Mutex
	pending  map[string]time.Time // the targets in ch, by String, with when they were queued
	dropped  int                  // since the last warning
	lastWarn time.Time
	now      func() time.Time
}

func newSeedQueue(s seeder, size int, log *slog.Logger, m *seedMetrics) *seedQueue {
	q := &seedQueue{s: s, log: log, m: m, ch: make(chan seed.Target, size),
		pending: map[string]time.Time{}, now: time.Now}
	f := q.oldest
	m.oldest.Store(&f)
	return q
}

// oldest is how long the oldest waiting seed has waited, in seconds.
func (q *seedQueue) oldest() float64 {
	q.mu.Lock()
	defer q.mu.Unlock()
	now, age := q.now(), 0.0
	for _, at := range q.pending {
		age = max(age, now.Sub(at).Seconds())
	}
	return age
}

// Enqueue queues a seed of repo@d. It reports false when the queue is full and the seed was
// dropped; a seed of repo@d already waiting counts as queued.
func (q *seedQueue) Enqueue(repo string, d digest.Digest) bool {
	t := seed.Target{Repo: repo, Digest: d}
	key := t.String()
	q.mu.Lock()
	defer q.mu.Unlock()
	if _, ok := q.pending[key]; ok {
		return true
	}
	select {
	case q.ch <- t:
		q.pending[key] = q.now()
		q.m.depth.Set(float64(len(q.ch)))
		return true
	default:
	}
	q.m.seeds.WithLabelValues("dropped").Inc()
	q.dropped++
	if now := q.now(); now.Sub(q.lastWarn) >= dropLogEvery {
		q.log.Warn("seed queue full: seeds dropped (raise seed.queue, or seed them with krakenctl seed)",
			"dropped", q.dropped, "last", key, "queue", cap(q.ch))
		q.lastWarn, q.dropped = now, 0
	}
	return false
}

// Run seeds what is queued, one target at a time, until ctx ends. Seeds still waiting then
// are abandoned (the images stay pullable: seeding only makes them hot sooner).
func (q *seedQueue) Run(ctx context.Context) error {
	for {
		var t seed.Target
		select {
		case <-ctx.Done():
			return nil
		case t = <-q.ch:
		}
		q.mu.Lock()
		delete(q.pending, t.String())
		q.m.depth.Set(float64(len(q.ch)))
		q.mu.Unlock()
		if ctx.Err() != nil {
			return nil // select picks at random when both are ready
		}
		q.seed(ctx, t)
	}
}

func (q *seedQueue) seed(ctx context.Context, t seed.Target) {
	ctx, cancel := context.WithTimeout(ctx, seedTimeout)
	defer cancel()
	start := time.Now()
	rep, err := q.s.Seed(ctx, []seed.Target{t})
	blobs := 0
	if rep != nil {
		blobs = len(rep.Blobs)
	}
	if err != nil {
		if ctx.Err() != nil && errors.Is(err, context.Canceled) {
			return // shutting down: neither ok nor failed
		}
		q.m.seeds.WithLabelValues("failed").Inc()
		q.log.Warn("seed failed", "target", t.String(), "blobs", blobs, "err", err)
		return
	}
	q.m.seeds.WithLabelValues("ok").Inc()
	q.log.Info("seeded", "target", t.String(), "blobs", blobs, "duration", time.Since(start))
}

// notificationEnvelope is distribution's notification envelope; only the fields used are
// decoded (a registry sends many more: id, timestamp, actor, request, source...).
type notificationEnvelope struct {
	Events []notificationEvent `json:"events"`
}

type notificationEvent struct {
	Action string `json:"action"`
	Target struct {
		MediaType  string `json:"mediaType"`
		Digest     string `json:"digest"`
		Repository string `json:"repository"`
		Tag        string `json:"tag"`
	} `json:"target"`
}

// NotificationResult is the answer to a notification envelope (202 Accepted).
type NotificationResult struct {
	// Events is how many events the envelope held.
	Events int `json:"events"`
	// Queued counts the manifest pushes queued for seeding (or already waiting).
	Queued int `json:"queued"`
	// Dropped counts the manifest pushes dropped because the queue was full.
	Dropped int `json:"dropped"`
	// Ignored counts the other events (pulls, deletes, blob pushes...).
	Ignored int `json:"ignored"`
}

// notifications serves POST /notifications: registry notifications whose manifest pushes are
// queued for seeding. guard is nil without auth.
type notifications struct {
	q     *seedQueue // nil: seeding is not configured
	guard *auth.Guard
	log   *slog.Logger
}

// isManifest reports whether mt is the media type of an image manifest or index.
func isManifest(mt string) bool {
	switch mt {
	case registry.MediaTypeOCIManifest, registry.MediaTypeOCIIndex, registry.MediaTypeDockerManifest, registry.MediaTypeDockerList:
		return true
	}
	return false
}

func (n *notifications) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	fail := func(status int, code errcode.Code, format string, a ...any) {
		errcode.Write(w, r, errcode.Errorf(status, code, format, a...))
	}
	if r.Method != http.MethodPost {
		w.Header().Set("Allow", http.MethodPost)
		fail(http.StatusMethodNotAllowed, errcode.CodeUnsupported, "notifications are POSTed")
		return
	}
	if n.q == nil {
		fail(http.StatusServiceUnavailable, errcode.CodeUnavailable, "seeding is not configured on this proxy (seed: in its config)")
		return
	}
	// Authenticate before reading anything: an anonymous flood costs one refusal each.
	var permit auth.Permit
	if n.guard != nil {
		var ok bool
		if permit, ok = n.guard.Authenticate(w, r); !ok {
			return
		}
	}
	if mt, _, err := mime.ParseMediaType(r.Header.Get("Content-Type")); err != nil ||
		mt != "application/vnd.docker.distribution.events.v1+json" && mt != "application/json" {
		fail(http.StatusUnsupportedMediaType, errcode.CodeUnsupported,
			"Content-Type must be application/vnd.docker.distribution.events.v1+json or application/json")
		return
	}
	body, err := io.ReadAll(http.MaxBytesReader(w, r.Body, maxNotificationBody))
	var tooBig *http.MaxBytesError
	switch {
	case errors.As(err, &tooBig):
		fail(http.StatusRequestEntityTooLarge, errcode.CodeSizeInvalid, "notification envelope over %d bytes", maxNotificationBody)
		return
	case err != nil:
		fail(http.StatusBadRequest, errcode.CodeBodyInvalid, "reading the envelope failed: %v", err)
		return
	}
	targets, res, err := parseEnvelope(body)
	if err != nil {
		fail(http.StatusBadRequest, errcode.CodeBodyInvalid, "%v", err)
		return
	}
	if n.guard != nil {
		// All or nothing: an envelope naming a repository the caller may not push to queues
		// nothing, so a refusal is never half applied.
		for _, t := range targets {
			if !permit.Allows(t.Repo, auth.Push) {
				permit.Deny(w, r, t.Repo, auth.Push)
				return
			}
		}
	}
	for _, t := range targets {
		if n.q.Enqueue(t.Repo, t.Digest) {
			res.Queued++
		} else {
			res.Dropped++
		}
	}
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(http.StatusAccepted)
	_ = json.NewEncoder(w).Encode(res)
}

// parseEnvelope decodes an envelope and returns the manifest pushes it names, each checked
// (repository name, digest), in order; res counts the events and those ignored.
func parseEnvelope(body []byte) ([]seed.Target, NotificationResult, error) {
	var env notificationEnvelope
	dec := json.NewDecoder(bytes.NewReader(body))
	if err := dec.Decode(&env); err != nil {
		return nil, NotificationResult{}, fmt.Errorf("the envelope is not valid JSON: %w", err)
	}
	if dec.More() {
		return nil, NotificationResult{}, errors.New("the envelope is followed by more data")
	}
	if len(env.Events) > maxNotificationEvents {
		return nil, NotificationResult{}, fmt.Errorf("the envelope holds %d events, more than %d", len(env.Events), maxNotificationEvents)
	}
	res := NotificationResult{Events: len(env.Events)}
	var out []seed.Target
	for i, ev := range env.Events {
		if ev.Action != "push" || !isManifest(ev.Target.MediaType) {
			res.Ignored++
			continue
		}
		if err := registry.ValidateName(ev.Target.Repository); err != nil {
			return nil, res, fmt.Errorf("events[%d].target.repository: %w", i, err)
		}
		d, err := digest.Parse(ev.Target.Digest)
		if err != nil {
			return nil, res, fmt.Errorf("events[%d].target.digest %q: %w", i, ev.Target.Digest, err)
		}
		out = append(out, seed.Target{Repo: ev.Target.Repository, Digest: d})
	}
	return out, res, nil
}
