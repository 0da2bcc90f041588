package cacheapi_test

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"testing/synctest"
	"time"

	"github.com/opencontainers/go-digest"
	"github.com/stretchr/testify/require"
	"go.uber.org/goleak"

	"github.com/krakenctl/krakenctl/server/api"
	"github.com/krakenctl/krakenctl/server/cacheapi"
	"github.com/krakenctl/krakenctl/server/client"
	"github.com/krakenctl/krakenctl/server/registry/errcode"
	"github.com/krakenctl/krakenctl/swarm/castore"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

type clock struct {
	mu  sync.Mutex
	now time.Time
}

func (c *clock) Now() time.Time { c.mu.Lock(); defer c.mu.Unlock(); return c.now }

func (c *clock) advance(d time.Duration) { c.mu.Lock(); c.now = c.now.Add(d); c.mu.Unlock() }

// node is a store with blobs of 100, 200, ... bytes arriving an hour apart, behind the cache
// API of an agent with the default policy, and a client of it.
type node struct {
	store  *castore.Store
	clock  *clock
	blobs  []digest.Digest // oldest first
	active map[digest.Digest]bool
	cli    *client.Agent
	url    string
}

func newNode(t *testing.T, n int, capacity int64, cfg cacheapi.Config, allow func(*http.Request) error) *node {
	t.Helper()
	c := &clock{now: time.Date(2026, 12, 8, 0, 0, 0, 0, time.UTC)}
	s, err := castore.Open(t.TempDir(), castore.Options{Capacity: capacity, Now: c.Now})
	require.NoError(t, err)
	t.Cleanup(func() { require.NoError(t, s.Close()) })
	nd := &node{store: s, clock: c, active: map[digest.Digest]bool{}}
	for i := range n {
		data := bytes.Repeat([]byte{byte(i)}, 100*(i+1))
		d := digest.FromBytes(data)
		_, err := s.Ingest(t.Context(), d, bytes.NewReader(data))
		require.NoError(t, err)
		nd.blobs = append(nd.blobs, d)
		c.advance(time.Hour)
	}
	cfg.AgentDefaults()
	require.Empty(t, cfg.Problems(""))
	var mu sync.Mutex
	cache := cacheapi.New("agent", s, cfg, cacheapi.Options{
		Keep:  func(d digest.Digest) bool { mu.Lock(); defer mu.Unlock(); return nd.active[d] },
		Allow: allow, Now: c.Now,
	})
	mux := http.NewServeMux()
	cache.Register(mux)
	srv := httptest.NewServer(mux)
	t.Cleanup(srv.Close)
	nd.url = srv.URL
	nd.cli = client.NewAgent(srv.URL, srv.Client())
	return nd
}

// The status counts what is held, its ages, and what the policy would remove now and why;
// ?blobs=N lists the least recently used with what keeps each.
func TestStatus(t *testing.T) {
	nd := newNode(t, 8, 10000, cacheapi.Config{}, nil) // 3600 bytes; idle 1h..8h
	b, err := nd.store.Open(t.Context(), nd.blobs[0])
	require.NoError(t, err)
	defer func() { require.NoError(t, b.Close()) }()
	// blobs[0] is now the most recently used, and open. Held and active ones among the idle:
	defer nd.store.Hold(nd.blobs[1])()
	nd.active[nd.blobs[2]] = true

	st, err := nd.cli.CacheStatus(t.Context(), 4)
	require.NoError(t, err)
	require.Equal(t, "agent", st.Role)
	require.Equal(t, 8, st.BlobCount)
	require.Equal(t, int64(3600), st.UsedBytes)
	require.Equal(t, int64(10000), st.CapacityBytes)
	require.Equal(t, "capacity", st.Basis)
	require.InDelta(t, 36.0, st.UsagePercent, 0.01)
	require.Equal(t, api.CachePolicy{Interval: "5m0s", TTI: "6h0m0s", TTL: "0s", HighWatermark: 90, LowWatermark: 80}, st.Policy)
	require.Equal(t, nd.blobs[0], st.Oldest.Digest)
	require.Equal(t, nd.blobs[1], st.Idlest.Digest)
	// Idle 7h (blobs[1]) and 6h (blobs[2]) pass tti 6h, but are held and active; blobs[0] was read.
	require.Equal(t, []api.CacheReasonTotal{}, st.WouldRemove)
	require.Equal(t, []api.CacheReasonTotal{{Reason: "held", Blobs: 1, Bytes: 200}, {Reason: "active", Blobs: 1, Bytes: 300}}, st.WouldKeep)
	nd.clock.advance(time.Hour) // now blobs[3] is idle 6h too
	st, err = nd.cli.CacheStatus(t.Context(), 4)
	require.NoError(t, err)
	require.Equal(t, []api.CacheReasonTotal{{Reason: "tti", Blobs: 1, Bytes: 400}}, st.WouldRemove)

	require.Len(t, st.Blobs, 4)
	require.Equal(t, []digest.Digest{nd.blobs[1], nd.blobs[2], nd.blobs[3], nd.blobs[4]},
		[]digest.Digest{st.Blobs[0].Digest, st.Blobs[1].Digest, st.Blobs[2].Digest, st.Blobs[3].Digest})
	require.Equal(t, []string{"held", "active", "", ""}, []string{st.Blobs[0].InUse, st.Blobs[1].InUse, st.Blobs[2].InUse, st.Blobs[3].InUse})
	total := 0
	for _, b := range st.IdleBuckets {
		total += b.Blobs
	}
	require.Equal(t, 8, total)
	require.Equal(t, "1h0m0s", st.IdleBuckets[0].Below)
	// Idle 1h (blobs[0], at the bound: counted above it), 2h..5h: under 6h; 6h, 7h, 8h: under 24h.
	require.Equal(t, []int{0, 5, 3, 0, 0, 0}, []int{st.IdleBuckets[0].Blobs, st.IdleBuckets[1].Blobs,
		st.IdleBuckets[2].Blobs, st.IdleBuckets[3].Blobs, st.IdleBuckets[4].Blobs, st.IdleBuckets[5].Blobs})
	require.NotNil(t, st.Filesystem, "the temp dir's file system is measured")
	// Nothing was removed by asking.
	require.Len(t, nd.store.List(), 8)
}

// A dry run reports exactly what the eviction then removes; a blob being read stays, named.
func TestEvictDryRunThenReal(t *testing.T) {
	nd := newNode(t, 6, 0, cacheapi.Config{}, nil)
	b, err := nd.store.Open(t.Context(), nd.blobs[1])
	require.NoError(t, err)
	nd.clock.advance(3 * time.Hour)
	req := api.CacheEvictRequest{IdleOver: "6h30m", Digests: []string{nd.blobs[5].String()}, DryRun: true}
	dry, err := nd.cli.CacheEvict(t.Context(), req)
	require.NoError(t, err)
	require.True(t, dry.DryRun)
	req.DryRun = false
	real, err := nd.cli.CacheEvict(t.Context(), req)
	require.NoError(t, err)
	require.NoError(t, b.Close())
	require.Equal(t, dry.Removed, real.Removed)
	require.Equal(t, dry.Kept, real.Kept)
	// Idle over 6h30m: blobs[0] (9h), blobs[2] (7h); blobs[1] was opened 3h ago; and blobs[5] by name.
	got := map[digest.Digest]string{}
	for _, r := range real.Removed {
		got[r.Digest] = r.Reason
	}
	require.Equal(t, map[digest.Digest]string{nd.blobs[0]: "manual", nd.blobs[2]: "manual", nd.blobs[5]: "manual"}, got)
	require.Equal(t, int64(100+300+600), real.FreedBytes)
	require.Len(t, nd.store.List(), 3)

	// The policy, now: nothing is idle 6h any more but blobs[3] (idle 6h after 3h).
	pol, err := nd.cli.CacheEvict(t.Context(), api.CacheEvictRequest{Policy: true})
	require.NoError(t, err)
	require.Len(t, pol.Removed, 1)
	require.Equal(t, nd.blobs[3], pol.Removed[0].Digest)
	require.Equal(t, "tti", pol.Removed[0].Reason)
}

// An open blob named for eviction is kept and the report says why.
func TestEvictKeepsOpenBlob(t *testing.T) {
	nd := newNode(t, 2, 0, cacheapi.Config{}, nil)
	b, err := nd.store.Open(t.Context(), nd.blobs[0])
	require.NoError(t, err)
	defer func() { require.NoError(t, b.Close()) }()
	absent := digest.FromString("absent")
	rep, err := nd.cli.CacheEvict(t.Context(), api.CacheEvictRequest{Digests: []string{nd.blobs[0].String(), absent.String()}})
	require.NoError(t, err)
	require.Empty(t, rep.Removed)
	require.Len(t, rep.Kept, 2)
	require.Equal(t, "open", rep.Kept[0].Kept)
	require.Equal(t, "absent", rep.Kept[1].Kept)
	require.Len(t, nd.store.List(), 2)
}

func post(t *testing.T, url, body string) (int, errcode.Body) {
	t.Helper()
	req, err := http.NewRequestWithContext(t.Context(), http.MethodPost, url+api.CacheEvictPath, strings.NewReader(body))
	require.NoError(t, err)
	resp, err := http.DefaultClient.Do(req)
	require.NoError(t, err)
	defer func() { _ = resp.Body.Close() }()
	var errs errcode.Body
	data, err := io.ReadAll(resp.Body)
	require.NoError(t, err)
	if resp.StatusCode != http.StatusOK {
		require.NoError(t, json.Unmarshal(data, &errs), string(data))
	}
	return resp.StatusCode, errs
}

// Bad and hostile requests are 400 with the registry's error body, and remove nothing.
func TestEvictRefusesBadInput(t *testing.T) {
	nd := newNode(t, 3, 0, cacheapi.Config{}, nil)
	for name, body := range map[string]string{
		"empty":               ``,
		"not json":            `digests`,
		"unknown field":       `{"digest": ["sha256:00"]}`,
		"trailing":            `{"policy": true} {"policy": true}`,
		"nothing":             `{}`,
		"nothing dry":         `{"dry_run": true}`,
		"policy and criteria": `{"policy": true, "idle_over": "1h"}`,
		"bad digest":          `{"digests": ["sha256:xyz"]}`,
		"digest algorithm":    `{"digests": ["md5:d41d8cd98f00b204e9800998ecf8427e"]}`,
		"negative idle":       `{"idle_over": "-1h"}`,
		"zero age":            `{"older_than": "0s"}`,
		"not a duration":      `{"idle_over": "a week"}`,
		"negative bytes":      `{"down_to_bytes": -1}`,
		"percent over":        `{"down_to_percent": 100.5}`,
		"percent under":       `{"down_to_percent": -1}`,
		"both targets":        `{"down_to_bytes": 1, "down_to_percent": 1}`,
		"huge":                `{"digests": ["` + strings.Repeat("a", api.CacheMaxRequest) + `"]}`,
		"wrong type":          `{"down_to_bytes": "10GiB"}`,
	} {
		status, errs := post(t, nd.url, body)
		require.Equal(t, http.StatusBadRequest, status, name)
		require.NotEmpty(t, errs.Errors, name)
		require.NotEmpty(t, errs.Errors[0].Message, name)
	}
	require.Len(t, nd.store.List(), 3)

	resp, err := http.Get(nd.url + api.CachePath + "?blobs=-1") //nolint:noctx // a test's one-off request
	require.NoError(t, err)
	_ = resp.Body.Close()
	require.Equal(t, http.StatusBadRequest, resp.StatusCode)
}

// The role's Allow refuses a caller with 403 DENIED, on both routes.
func TestAllow(t *testing.T) {
	nd := newNode(t, 1, 0, cacheapi.Config{}, func(*http.Request) error { return errors.New("not an admin") })
	_, err := nd.cli.CacheStatus(t.Context(), 0)
	var e *errcode.Error
	require.ErrorAs(t, err, &e)
	require.Equal(t, http.StatusForbidden, e.Status)
	require.Equal(t, errcode.CodeDenied, e.Code)
	status, _ := post(t, nd.url, `{"policy": true}`)
	require.Equal(t, http.StatusForbidden, status)
	require.Len(t, nd.store.List(), 1)
}

// Run applies the policy shortly after start, then every interval; a negative interval runs
// nothing.
func TestRunAppliesThePolicy(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		s, err := castore.Open(t.TempDir(), castore.Options{})
		require.NoError(t, err)
		defer func() { require.NoError(t, s.Close()) }()
		ingest := func(b byte) digest.Digest {
			data := []byte{b, b, b}
			d := digest.FromBytes(data)
			_, err := s.Ingest(t.Context(), d, bytes.NewReader(data))
			require.NoError(t, err)
			return d
		}
		old := ingest(1)
		time.Sleep(2 * time.Hour)
		young := ingest(2)

		cfg := cacheapi.Config{Interval: time.Hour, TTI: 90 * time.Minute}
		cfg.AgentDefaults()
		ctx, cancel := context.WithCancel(t.Context())
		done := make(chan error, 1)
		go func() { done <- cacheapi.New("agent", s, cfg, cacheapi.Options{}).Run(ctx) }()
		time.Sleep(11 * time.Second) // the first run, shortly after start
		synctest.Wait()
		_, err = s.Stat(old)
		require.ErrorIs(t, err, castore.ErrNotFound, "idle 2h: removed by the first run")
		_, err = s.Stat(young)
		require.NoError(t, err)
		time.Sleep(time.Hour) // young is idle 1h: still kept
		synctest.Wait()
		_, err = s.Stat(young)
		require.NoError(t, err)
		time.Sleep(time.Hour) // the next run sees it idle 2h
		synctest.Wait()
		_, err = s.Stat(young)
		require.ErrorIs(t, err, castore.ErrNotFound)
		cancel()
		require.NoError(t, <-done)

		off := cfg
		off.Interval = -1
		require.NoError(t, cacheapi.New("agent", s, off, cacheapi.Options{}).Run(t.Context()))
	})
}

// Config: role defaults, negative turns a rule off, and problems name their keys.
func TestConfig(t *testing.T) {
	var a, o cacheapi.Config
	a.AgentDefaults()
	o.OriginDefaults()
	require.Equal(t, castore.Policy{TTI: 6 * time.Hour, HighWatermark: 90, LowWatermark: 80}, a.Policy())
	require.Equal(t, castore.Policy{HighWatermark: 90, LowWatermark: 80}, o.Policy())
	off := cacheapi.Config{TTI: -1, TTL: -1, HighWatermark: -1, LowWatermark: -1}
	off.AgentDefaults()
	require.Empty(t, off.Problems("cleanup."))
	require.Equal(t, castore.Policy{}, off.Policy())
	// One watermark given takes the other's default; one turned off turns both off.
	for _, tc := range []struct {
		in        cacheapi.Config
		high, low int
	}{
		{cacheapi.Config{HighWatermark: 95}, 95, 80},
		{cacheapi.Config{LowWatermark: 50}, 90, 50},
		{cacheapi.Config{HighWatermark: 90, LowWatermark: -1}, 0, 0},
	} {
		c := tc.in
		c.AgentDefaults()
		require.Empty(t, c.Problems("cleanup."), "%+v", tc.in)
		p := c.Policy()
		require.Equal(t, [2]int{tc.high, tc.low}, [2]int{p.HighWatermark, p.LowWatermark}, "%+v", tc.in)
	}
	for _, c := range []cacheapi.Config{
		{HighWatermark: 80, LowWatermark: 80},
		{HighWatermark: 101, LowWatermark: 80},
		{HighWatermark: 70},
	} {
		c.AgentDefaults()
		errs := c.Problems("cleanup.")
		require.Len(t, errs, 1, "%+v", c)
		require.ErrorContains(t, errs[0], "cleanup.high_watermark, cleanup.low_watermark")
	}
	bad := cacheapi.Config{Interval: time.Millisecond}
	bad.AgentDefaults()
	require.ErrorContains(t, errors.Join(bad.Problems("store.cleanup.")...), "store.cleanup.interval")
}
