package proxy

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/opencontainers/go-digest"
	"github.com/prometheus/client_golang/prometheus"
	dto "github.com/prometheus/client_model/go"
	"github.com/stretchr/testify/require"
	"golang.org/x/crypto/bcrypt"

	"github.com/krakenctl/krakenctl/server/auth"
	"github.com/krakenctl/krakenctl/server/config"
	"github.com/krakenctl/krakenctl/server/registry"
	"github.com/krakenctl/krakenctl/server/registry/errcode"
	"github.com/krakenctl/krakenctl/server/seed"
)

// fakeSeeder records the targets it is asked to seed and answers with fail's error for each.
// With block set, a seed waits for its context to end.
type fakeSeeder struct {
	mu    sync.Mutex
	got   []string
	fail  func(seed.Target) error
	block bool
	// started receives each target as its seed begins.
	started chan seed.Target
}

func (f *fakeSeeder) Seed(ctx context.Context, ts []seed.Target) (*seed.Report, error) {
	f.mu.Lock()
	for _, t := range ts {
		f.got = append(f.got, t.String())
	}
	f.mu.Unlock()
	if f.started != nil {
		f.started <- ts[0]
	}
	if f.block {
		<-ctx.Done()
		return &seed.Report{}, ctx.Err()
	}
	if f.fail != nil {
		if err := f.fail(ts[0]); err != nil {
			return &seed.Report{Failed: 1}, err
		}
	}
	return &seed.Report{Blobs: []*seed.Blob{{Digest: ts[0].Digest}}}, nil
}

func (f *fakeSeeder) seeded() []string {
	f.mu.Lock()
	defer f.mu.Unlock()
	return append([]string(nil), f.got...)
}

// logLines is a slog handler's output, safe to read while the queue logs.
type logLines struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (l *logLines) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.buf.Write(p)
}

func (l *logLines) count(s string) int {
	l.mu.Lock()
	defer l.mu.Unlock()
	return strings.Count(l.buf.String(), s)
}

func newTestQueue(t *testing.T, s seeder, size int) (*seedQueue, *seedMetrics, *logLines) {
	t.Helper()
	m, err := newSeedMetrics(prometheus.NewRegistry())
	require.NoError(t, err)
	logs := &logLines{}
	return newSeedQueue(s, size, slog.New(slog.NewTextHandler(logs, nil)), m), m, logs
}

// value reads a counter or gauge.
func value(t *testing.T, c prometheus.Metric) float64 {
	t.Helper()
	var m dto.Metric
	require.NoError(t, c.Write(&m))
	if m.Counter != nil {
		return m.Counter.GetValue()
	}
	return m.Gauge.GetValue()
}

func dig(i int) digest.Digest { return digest.FromString(fmt.Sprint(i)) }

func TestSeedQueueBoundedDropsCounted(t *testing.T) {
	q, m, logs := newTestQueue(t, &fakeSeeder{}, 2)
	now := time.Unix(1000, 0)
	q.now = func() time.Time { return now }

	require.True(t, q.Enqueue("a", dig(1)))
	require.True(t, q.Enqueue("a", dig(2)))
	// The same target again is already waiting: queued, no room taken.
	require.True(t, q.Enqueue("a", dig(1)))
	for i := 3; i < 8; i++ {
		require.False(t, q.Enqueue("a", dig(i)), "queue full")
	}
	require.Len(t, q.ch, 2)
	require.Len(t, q.pending, 2)
	require.Equal(t, 5.0, value(t, m.seeds.WithLabelValues("dropped")))
	require.Equal(t, 2.0, value(t, m.depth))
	require.Zero(t, q.oldest(), "just queued")
	// Five drops within the sampling period: one warning.
	require.Equal(t, 1, logs.count("seed queue full"))
	now = now.Add(dropLogEvery)
	require.False(t, q.Enqueue("a", dig(9)))
	require.Equal(t, 2, logs.count("seed queue full"))
	require.Equal(t, 1, logs.count("dropped=5"), "the second warning counts the drops since the first")
	require.Equal(t, dropLogEvery.Seconds(), q.oldest(), "the oldest seed has waited since the first enqueue")
	reg := prometheus.NewRegistry()
	m2, err := newSeedMetrics(reg)
	require.NoError(t, err)
	q2 := newSeedQueue(&fakeSeeder{}, 2, slog.New(slog.DiscardHandler), m2)
	q2.now = func() time.Time { return now }
	require.True(t, q2.Enqueue("a", dig(1)))
	now = now.Add(90 * time.Second)
	families, err := reg.Gather()
	require.NoError(t, err)
	found := false
	for _, f := range families {
		if f.GetName() == "krakenctl_proxy_seed_oldest_seconds" {
			found = true
			require.Equal(t, 90.0, f.GetMetric()[0].GetGauge().GetValue())
		}
	}
	require.True(t, found, "the oldest-age gauge is registered")
}

func TestSeedQueueWorkerDrains(t *testing.T) {
	fs := &fakeSeeder{fail: func(t seed.Target) error {
		if t.Repo == "bad" {
			return errors.New("origin refused")
		}
		return nil
	}}
	q, m, _ := newTestQueue(t, fs, 8)
	require.True(t, q.Enqueue("good", dig(1)))
	require.True(t, q.Enqueue("bad", dig(2)))
	require.True(t, q.Enqueue("good", dig(3)))

	ctx, cancel := context.WithCancel(t.Context())
	done := make(chan error, 1)
	go func() { done <- q.Run(ctx) }()
	require.Eventually(t, func() bool {
		return len(fs.seeded()) == 3 && value(t, m.seeds.WithLabelValues("ok")) == 2 &&
			value(t, m.seeds.WithLabelValues("failed")) == 1
	}, 10*time.Second, time.Millisecond)
	cancel()
	require.NoError(t, <-done)
	require.Equal(t, []string{"good@" + dig(1).String(), "bad@" + dig(2).String(), "good@" + dig(3).String()}, fs.seeded())
	require.Zero(t, value(t, m.depth))
	require.Empty(t, q.pending)
	// Once taken by the worker, a target may be queued again.
	require.True(t, q.Enqueue("good", dig(1)))
	require.Len(t, q.ch, 1)
}

func TestSeedQueueStopsWithContext(t *testing.T) {
	fs := &fakeSeeder{block: true, started: make(chan seed.Target, 1)}
	q, m, _ := newTestQueue(t, fs, 4)
	require.True(t, q.Enqueue("a", dig(1)))
	require.True(t, q.Enqueue("a", dig(2)))
	ctx, cancel := context.WithCancel(t.Context())
	done := make(chan error, 1)
	go func() { done <- q.Run(ctx) }()
	<-fs.started
	cancel()
	require.NoError(t, <-done)
	// The seed cut short is neither ok nor failed, and the one still waiting was not started.
	require.Zero(t, value(t, m.seeds.WithLabelValues("ok")))
	require.Zero(t, value(t, m.seeds.WithLabelValues("failed")))
	require.Equal(t, []string{"a@" + dig(1).String()}, fs.seeded())
}

// envelope renders a notification envelope of events (action, media type, repository, digest).
func envelope(events ...[4]string) []byte {
	type target struct {
		MediaType  string `json:"mediaType"`
		Digest     string `json:"digest"`
		Repository string `json:"repository"`
		Size       int    `json:"size"`
	}
	type event struct {
		ID     string `json:"id"`
		Action string `json:"action"`
		Target target `json:"target"`
	}
	var env struct {
		Events []event `json:"events"`
	}
	env.Events = []event{}
	for i, e := range events {
		env.Events = append(env.Events, event{ID: fmt.Sprint(i), Action: e[0], Target: target{MediaType: e[1], Repository: e[2], Digest: e[3], Size: 10}})
	}
	b, _ := json.Marshal(env)
	return b
}

const eventsType = "application/vnd.docker.distribution.events.v1+json"

func notify(t *testing.T, h http.Handler, body []byte, contentType, user, pw string) (*httptest.ResponseRecorder, NotificationResult, errcode.Code) {
	t.Helper()
	req := httptest.NewRequestWithContext(t.Context(), http.MethodPost, NotificationsPath, bytes.NewReader(body))
	req.Header.Set("Content-Type", contentType)
	if user != "" {
		req.SetBasicAuth(user, pw)
	}
	rec := httptest.NewRecorder()
	h.ServeHTTP(rec, req)
	var res NotificationResult
	var code errcode.Code
	if rec.Code == http.StatusAccepted {
		require.NoError(t, json.Unmarshal(rec.Body.Bytes(), &res))
	} else {
		code = errcode.DecodeError(rec.Code, rec.Body.Bytes()).Code
	}
	return rec, res, code
}

// queued takes what q holds, as its worker would.
func queued(q *seedQueue) []string {
	var out []string
	for len(q.ch) > 0 {
		t := (<-q.ch).String()
		q.mu.Lock()
		delete(q.pending, t)
		q.mu.Unlock()
		out = append(out, t)
	}
	return out
}

func TestNotificationsQueueManifestPushesOnly(t *testing.T) {
	q, m, _ := newTestQueue(t, &fakeSeeder{}, 2)
	h := &notifications{q: q, log: slog.New(slog.DiscardHandler)}
	body := envelope(
		[4]string{"push", registry.MediaTypeOCIManifest, "team/app", dig(1).String()},
		[4]string{"push", "application/vnd.oci.image.layer.v1.tar+gzip", "team/app", dig(2).String()}, // a blob
		[4]string{"pull", registry.MediaTypeOCIManifest, "team/app", dig(3).String()},
		[4]string{"delete", registry.MediaTypeDockerManifest, "team/app", dig(4).String()},
		[4]string{"push", registry.MediaTypeDockerList, "lib/x", dig(5).String()},
		[4]string{"push", registry.MediaTypeOCIIndex, "lib/y", dig(6).String()}, // the queue holds 2
	)
	rec, res, _ := notify(t, h, body, eventsType, "", "")
	require.Equal(t, http.StatusAccepted, rec.Code, rec.Body.String())
	require.Equal(t, NotificationResult{Events: 6, Queued: 2, Dropped: 1, Ignored: 3}, res)
	require.Equal(t, []string{"team/app@" + dig(1).String(), "lib/x@" + dig(5).String()}, queued(q))
	require.Equal(t, 1.0, value(t, m.seeds.WithLabelValues("dropped")))

	// application/json is accepted too.
	rec, res, _ = notify(t, h, envelope([4]string{"push", registry.MediaTypeOCIManifest, "a", dig(7).String()}), "application/json; charset=utf-8", "", "")
	require.Equal(t, http.StatusAccepted, rec.Code, rec.Body.String())
	require.Equal(t, 1, res.Queued)
	require.Len(t, queued(q), 1)
}

func TestNotificationsBadInput(t *testing.T) {
	q, _, _ := newTestQueue(t, &fakeSeeder{}, 8)
	h := &notifications{q: q, log: slog.New(slog.DiscardHandler)}
	many := make([][4]string, maxNotificationEvents+1)
	for i := range many {
		many[i] = [4]string{"pull", registry.MediaTypeOCIManifest, "a", dig(i).String()}
	}
	good := envelope([4]string{"push", registry.MediaTypeOCIManifest, "a", dig(1).String()})
	for _, tc := range []struct {
		name        string
		body        []byte
		contentType string
		status      int
		code        errcode.Code
	}{
		{"garbage", []byte("not json"), eventsType, http.StatusBadRequest, errcode.CodeBodyInvalid},
		{"truncated", good[:len(good)-3], eventsType, http.StatusBadRequest, errcode.CodeBodyInvalid},
		{"trailing data", append(append([]byte{}, good...), []byte(` {"events":[]}`)...), eventsType, http.StatusBadRequest, errcode.CodeBodyInvalid},
		{"events not a list", []byte(`{"events":{}}`), eventsType, http.StatusBadRequest, errcode.CodeBodyInvalid},
		{"bad digest", envelope([4]string{"push", registry.MediaTypeOCIManifest, "a", "sha256:xyz"}), eventsType, http.StatusBadRequest, errcode.CodeBodyInvalid},
		{"bad repository", envelope([4]string{"push", registry.MediaTypeOCIManifest, "A/../b", dig(1).String()}), eventsType, http.StatusBadRequest, errcode.CodeBodyInvalid},
		{"too many events", envelope(many...), eventsType, http.StatusBadRequest, errcode.CodeBodyInvalid},
		{"oversize", append([]byte(`{"events":[],"pad":"`), bytes.Repeat([]byte("x"), maxNotificationBody)...), eventsType, http.StatusRequestEntityTooLarge, errcode.CodeSizeInvalid},
		{"wrong content type", good, "text/plain", http.StatusUnsupportedMediaType, errcode.CodeUnsupported},
	} {
		t.Run(tc.name, func(t *testing.T) {
			rec, _, code := notify(t, h, tc.body, tc.contentType, "", "")
			require.Equal(t, tc.status, rec.Code, rec.Body.String())
			require.Equal(t, tc.code, code)
			require.Empty(t, queued(q), "nothing queued")
		})
	}
	// A bad event anywhere queues none of the good ones before it.
	body := envelope([4]string{"push", registry.MediaTypeOCIManifest, "a", dig(1).String()},
		[4]string{"push", registry.MediaTypeOCIManifest, "a", "md5:00"})
	rec, _, _ := notify(t, h, body, eventsType, "", "")
	require.Equal(t, http.StatusBadRequest, rec.Code)
	require.Empty(t, queued(q))

	// GET is refused; a proxy without seeding answers 503.
	req := httptest.NewRequestWithContext(t.Context(), http.MethodGet, NotificationsPath, nil)
	rec = httptest.NewRecorder()
	h.ServeHTTP(rec, req)
	require.Equal(t, http.StatusMethodNotAllowed, rec.Code)
	rec, _, code := notify(t, &notifications{log: slog.New(slog.DiscardHandler)}, good, eventsType, "", "")
	require.Equal(t, http.StatusServiceUnavailable, rec.Code)
	require.Equal(t, errcode.CodeUnavailable, code)
}

func TestNotificationsAuth(t *testing.T) {
	line := func(user, pw string) string {
		h, err := bcrypt.GenerateFromPassword([]byte(pw), bcrypt.MinCost)
		require.NoError(t, err)
		return user + ":" + string(h) + "\n"
	}
	cfg := &auth.Config{
		Mode:     auth.ModeBasic,
		Htpasswd: line("ci", "ci-pw") + line("reader", "reader-pw") + line("root", "root-pw"),
		Groups:   map[string][]string{auth.GroupAdmin: {"root"}},
		Rules: []auth.Rule{
			{Repositories: []string{"team/**"}, Users: []string{"ci"}, Actions: []string{"pull", "push"}},
			{Repositories: []string{"**"}, Users: []string{"reader"}, Actions: []string{"pull"}},
		},
	}
	cfg.Defaults()
	require.Empty(t, cfg.Problems())
	g, err := auth.New(cfg, auth.Options{})
	require.NoError(t, err)
	q, _, _ := newTestQueue(t, &fakeSeeder{}, 8)
	h := &notifications{q: q, guard: g, log: slog.New(slog.DiscardHandler)}
	team := envelope([4]string{"push", registry.MediaTypeOCIManifest, "team/app", dig(1).String()})
	both := envelope([4]string{"push", registry.MediaTypeOCIManifest, "team/app", dig(1).String()},
		[4]string{"push", registry.MediaTypeOCIManifest, "other/app", dig(2).String()})

	for _, tc := range []struct {
		name, user, pw string
		body           []byte
		status         int
		queued         int
	}{
		{"anonymous", "", "", team, http.StatusUnauthorized, 0},
		{"wrong password", "ci", "nope", team, http.StatusUnauthorized, 0},
		{"pull only", "reader", "reader-pw", team, http.StatusForbidden, 0},
		{"push on one repository of two", "ci", "ci-pw", both, http.StatusForbidden, 0},
		{"push", "ci", "ci-pw", team, http.StatusAccepted, 1},
		{"admin", "root", "root-pw", both, http.StatusAccepted, 2},
		// Events that queue nothing need no right: a blob push of another repository.
		{"ignored events", "ci", "ci-pw", envelope([4]string{"push", "application/octet-stream", "other/app", dig(3).String()}), http.StatusAccepted, 0},
	} {
		t.Run(tc.name, func(t *testing.T) {
			rec, _, _ := notify(t, h, tc.body, eventsType, tc.user, tc.pw)
			require.Equal(t, tc.status, rec.Code, rec.Body.String())
			require.Len(t, queued(q), tc.queued)
		})
	}
	// An anonymous caller is refused before its body is read: even garbage gets the 401.
	rec, _, code := notify(t, h, []byte("garbage"), eventsType, "", "")
	require.Equal(t, http.StatusUnauthorized, rec.Code)
	require.Equal(t, errcode.CodeUnauthorized, code)
	require.NotEmpty(t, rec.Header().Get("WWW-Authenticate"))
}

func TestSeedConfig(t *testing.T) {
	load := func(seedYAML string) (Config, error) {
		var c Config
		err := config.Decode(strings.NewReader("origins: [127.0.0.1:1]\nbuild_index: [127.0.0.1:2]\n"+seedYAML), &c)
		if err != nil {
			return c, err
		}
		c.Defaults()
		return c, c.Validate()
	}
	c, err := load("seed: {on_push: true, agents: [127.0.0.1:16000]}\n")
	require.NoError(t, err)
	require.Equal(t, &SeedConfig{OnPush: true, Agents: []string{"127.0.0.1:16000"}, Parallel: DefaultSeedParallel, Queue: DefaultSeedQueue}, c.Seed)
	c, err = load("")
	require.NoError(t, err)
	require.Nil(t, c.Seed, "no section: no seeding")

	_, err = load("seed: {on_pushh: true}\n")
	require.ErrorContains(t, err, "on_pushh", "unknown keys are refused")
	_, err = load("seed: {queue: -1, parallel: -2, agents: [nowhere]}\n")
	require.ErrorContains(t, err, "seed.queue")
	require.ErrorContains(t, err, "seed.parallel")
	require.ErrorContains(t, err, "seed.agents[0]")
	_, err = load("seed: {queue: 100001}\n")
	require.ErrorContains(t, err, "seed.queue")
}
