package agent_test

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/opencontainers/go-digest"
	"github.com/stretchr/testify/require"

	"github.com/krakenctl/krakenctl/server/agent"
	"github.com/krakenctl/krakenctl/server/api"
	"github.com/krakenctl/krakenctl/server/client"
	"github.com/krakenctl/krakenctl/server/registry/errcode"
	"github.com/krakenctl/krakenctl/swarm/announce/announcetest"
	"github.com/krakenctl/krakenctl/swarm/snapshot"
)

const ns = "library/test"

// reply is an answer whose body get has read and closed: its status and headers.
type reply struct {
	StatusCode int
	Header     http.Header
}

// get sends a request to the agent's API and returns the answer and its body.
func (a *testAgent) get(t *testing.T, method, path string, hdr map[string]string) (reply, []byte) {
	t.Helper()
	return a.send(t, method, a.url+path, hdr)
}

// getAdmin sends a GET to the agent's admin listener.
func (a *testAgent) getAdmin(t *testing.T, path string) (reply, []byte) {
	t.Helper()
	return a.send(t, http.MethodGet, a.admin+path, nil)
}

func (a *testAgent) send(t *testing.T, method, url string, hdr map[string]string) (reply, []byte) {
	t.Helper()
	req, err := http.NewRequestWithContext(t.Context(), method, url, nil)
	require.NoError(t, err)
	for k, v := range hdr {
		req.Header.Set(k, v)
	}
	resp, err := a.hc.Do(req)
	require.NoError(t, err)
	body, err := io.ReadAll(resp.Body)
	require.NoError(t, err)
	require.NoError(t, resp.Body.Close())
	return reply{StatusCode: resp.StatusCode, Header: resp.Header}, body
}

// waitSeeding waits until the agent has committed d to its store.
func (a *testAgent) waitSeeding(t *testing.T, d digest.Digest) {
	t.Helper()
	require.Eventually(t, func() bool {
		st, err := a.cl.Torrents(t.Context(), d)
		return err == nil && len(st) == 1 && st[0].State == "seeding"
	}, 10*time.Second, 5*time.Millisecond)
}

func requireCode(t *testing.T, resp reply, body []byte, status int, code errcode.Code) {
	t.Helper()
	require.Equal(t, status, resp.StatusCode, "%s", body)
	require.Equal(t, code, errcode.DecodeError(resp.StatusCode, body).Code, "%s", body)
}

func TestGetWholeBlob(t *testing.T) {
	t.Parallel()
	tr := announcetest.New()
	blob := randomBlob(t, 1<<20+12345)
	d := digest.FromBytes(blob)
	startOrigin(t, tr, nil, blob)
	a := startAgent(t, tr, nil)

	resp, body := a.get(t, http.MethodGet, api.BlobPath(ns, d), nil)
	require.Equal(t, http.StatusOK, resp.StatusCode, "%s", body)
	require.True(t, bytes.Equal(blob, body), "the body is the blob")
	require.Equal(t, strconv.Itoa(len(blob)), resp.Header.Get("Content-Length"))
	require.Equal(t, "application/octet-stream", resp.Header.Get("Content-Type"))
	require.Equal(t, "bytes", resp.Header.Get("Accept-Ranges"))
	require.Equal(t, d.String(), resp.Header.Get(api.HeaderContentDigest))

	// Once the blob is committed, GETs are served from the store.
	a.waitSeeding(t, d)
	resp, body = a.get(t, http.MethodGet, api.BlobPath(ns, d), nil)
	require.Equal(t, http.StatusOK, resp.StatusCode)
	require.True(t, bytes.Equal(blob, body))

	var buf bytes.Buffer
	n, err := a.cl.Pull(t.Context(), ns, d, &buf, nil)
	require.NoError(t, err)
	require.Equal(t, int64(len(blob)), n)
	require.True(t, bytes.Equal(blob, buf.Bytes()))
}

func TestEmptyBlob(t *testing.T) {
	t.Parallel()
	tr := announcetest.New()
	startOrigin(t, tr, nil, []byte{})
	a := startAgent(t, tr, nil)
	d := digest.FromBytes(nil)
	resp, body := a.get(t, http.MethodGet, api.BlobPath(ns, d), nil)
	require.Equal(t, http.StatusOK, resp.StatusCode, "%s", body)
	require.Empty(t, body)
	require.Equal(t, "0", resp.Header.Get("Content-Length"))
	a.waitSeeding(t, d)
	// Served whole whatever the Range, as every role does: no range of it can be written.
	resp, body = a.get(t, http.MethodGet, api.BlobPath(ns, d), map[string]string{"Range": "bytes=0-"})
	require.Equal(t, http.StatusOK, resp.StatusCode, "%s", body)
	require.Empty(t, body)
	require.Empty(t, resp.Header.Get("Content-Range"))
}

func TestRanges(t *testing.T) {
	t.Parallel()
	tr := announcetest.New()
	blob := randomBlob(t, 300<<10+7)
	size := int64(len(blob))
	d := digest.FromBytes(blob)
	startOrigin(t, tr, nil, blob)
	a := startAgent(t, tr, nil)
	path := api.BlobPath(ns, d)

	for _, tc := range []struct {
		rng        string
		status     int
		first, end int64 // expected bytes [first, end)
	}{
		{"bytes=100-199", 206, 100, 200},
		{"bytes=0-0", 206, 0, 1},
		{"bytes=200000-", 206, 200000, size},
		{"bytes=-50", 206, size - 50, size},
		{"bytes=-99999999", 206, 0, size},
		{"bytes=10-99999999", 206, 10, size},
		{fmt.Sprintf("bytes=%d-%d", size-1, size-1), 206, size - 1, size},
		{"bytes=1-2,5-6", 200, 0, size}, // several ranges: the whole blob
		{"items=1-2", 200, 0, size},     // another unit: ignored
		{" bytes = 5 - 9 ", 206, 5, 10}, // whitespace tolerated
	} {
		resp, body := a.get(t, http.MethodGet, path, map[string]string{"Range": tc.rng})
		require.Equal(t, tc.status, resp.StatusCode, "%s: %s", tc.rng, body)
		require.True(t, bytes.Equal(blob[tc.first:tc.end], body), tc.rng)
		require.Equal(t, strconv.FormatInt(tc.end-tc.first, 10), resp.Header.Get("Content-Length"), tc.rng)
		if tc.status == 206 {
			require.Equal(t, fmt.Sprintf("bytes %d-%d/%d", tc.first, tc.end-1, size), resp.Header.Get("Content-Range"), tc.rng)
		}
		require.Equal(t, d.String(), resp.Header.Get(api.HeaderContentDigest))
	}

	for _, rng := range []string{
		fmt.Sprintf("bytes=%d-", size), fmt.Sprintf("bytes=%d-%d", size+10, size+20), "bytes=-0",
		"bytes=5-4", "bytes=a-b", "bytes=--5", "bytes=5", "bytes=-", "bytes=+1-2", "bytes=99999999999999999999-",
	} {
		resp, body := a.get(t, http.MethodGet, path, map[string]string{"Range": rng})
		requireCode(t, resp, body, http.StatusRequestedRangeNotSatisfiable, errcode.CodeRangeInvalid)
		require.Equal(t, fmt.Sprintf("bytes */%d", size), resp.Header.Get("Content-Range"), rng)
	}

	// Open at an offset (how client.Agent.Pull resumes).
	body, total, err := a.cl.Open(t.Context(), ns, d, 1000)
	require.NoError(t, err)
	got, err := io.ReadAll(body)
	require.NoError(t, err)
	require.NoError(t, body.Close())
	require.Equal(t, size, total)
	require.True(t, bytes.Equal(blob[1000:], got))
}

func TestHead(t *testing.T) {
	t.Parallel()
	tr := announcetest.New()
	blob := randomBlob(t, 200<<10)
	d := digest.FromBytes(blob)
	startOrigin(t, tr, nil, blob)
	a := startAgent(t, tr, nil)

	resp, body := a.get(t, http.MethodHead, api.BlobPath(ns, d), nil)
	require.Equal(t, http.StatusOK, resp.StatusCode)
	require.Empty(t, body)
	require.Equal(t, strconv.Itoa(len(blob)), resp.Header.Get("Content-Length"))
	require.Equal(t, d.String(), resp.Header.Get(api.HeaderContentDigest))
	require.Equal(t, "bytes", resp.Header.Get("Accept-Ranges"))

	size, err := a.cl.Stat(t.Context(), ns, d)
	require.NoError(t, err)
	require.Equal(t, int64(len(blob)), size)

	unknown := digest.FromString("nobody has this")
	resp, body = a.get(t, http.MethodHead, api.BlobPath(ns, unknown), nil)
	require.Equal(t, http.StatusNotFound, resp.StatusCode)
	require.Empty(t, body)
	_, err = a.cl.Stat(t.Context(), ns, unknown)
	require.ErrorIs(t, err, client.ErrNotFound)
}

func TestErrors(t *testing.T) {
	t.Parallel()
	tr := announcetest.New()
	blob := randomBlob(t, 100)
	d := digest.FromBytes(blob)
	startOrigin(t, tr, nil, blob)
	a := startAgent(t, tr, nil)

	for _, tc := range []struct {
		path   string
		status int
		code   errcode.Code
	}{
		{"/namespace/lib/blobs/sha256:abc", 400, errcode.CodeDigestInvalid},
		{"/namespace/lib/blobs/sha256:" + strings.Repeat("A", 64), 400, errcode.CodeDigestInvalid},
		{"/namespace/lib/blobs/sha512:" + strings.Repeat("a", 128), 400, errcode.CodeUnsupported},
		{"/namespace/Bad%20NS/blobs/" + d.String(), 400, errcode.CodeNameInvalid},
		{"/namespace/a%2F%2Fb/blobs/" + d.String(), 400, errcode.CodeNameInvalid},
		{api.BlobPath(ns, digest.FromString("unknown")), 404, errcode.CodeBlobUnknown},
		{"/swarm/torrents?digest=nope", 400, errcode.CodeDigestInvalid},
	} {
		resp, body := a.get(t, http.MethodGet, tc.path, nil)
		requireCode(t, resp, body, tc.status, tc.code)
		require.Equal(t, "application/json", resp.Header.Get("Content-Type"))
	}

	var buf bytes.Buffer
	_, err := a.cl.Pull(t.Context(), ns, digest.FromString("unknown"), &buf, nil)
	require.ErrorIs(t, err, client.ErrNotFound)
	require.Zero(t, buf.Len())

	// No tracker: 503, and the next request after it is back succeeds (the failed download
	// does not stick).
	tr.SetDown(true)
	resp, body := a.get(t, http.MethodGet, api.BlobPath(ns, d), nil)
	requireCode(t, resp, body, http.StatusServiceUnavailable, errcode.CodeUnavailable)
	tr.SetDown(false)
	resp, body = a.get(t, http.MethodGet, api.BlobPath(ns, d), nil)
	require.Equal(t, http.StatusOK, resp.StatusCode, "%s", body)
	require.True(t, bytes.Equal(blob, body))
}

// TestStreamsWhileDownloading: the client gets the first bytes while the agent is still
// downloading. The origin holds back the blob's last piece until the client has read its first
// bytes, so the order of events is fixed, not timed.
func TestStreamsWhileDownloading(t *testing.T) {
	t.Parallel()
	tr := announcetest.New()
	blob := randomBlob(t, 4<<20+999)
	d := digest.FromBytes(blob)
	g := newGate(t, blob)
	o := startOrigin(t, tr, g, blob)
	a := startAgent(t, tr, nil)

	req, err := http.NewRequestWithContext(t.Context(), http.MethodGet, a.url+api.BlobPath(ns, d), nil)
	require.NoError(t, err)
	resp, err := a.hc.Do(req)
	require.NoError(t, err)
	defer func() { _ = resp.Body.Close() }()
	require.Equal(t, http.StatusOK, resp.StatusCode)
	require.Equal(t, int64(len(blob)), resp.ContentLength)
	first := make([]byte, 64<<10)
	_, err = io.ReadFull(resp.Body, first)
	require.NoError(t, err)
	require.True(t, bytes.Equal(blob[:len(first)], first))

	stats, err := a.cl.Torrents(t.Context(), d)
	require.NoError(t, err)
	require.Len(t, stats, 1)
	require.Equal(t, "downloading", stats[0].State, "the client got bytes before the blob was in")
	require.Less(t, stats[0].Have, stats[0].Pieces)

	g.release()
	rest, err := io.ReadAll(resp.Body)
	require.NoError(t, err)
	require.True(t, bytes.Equal(blob, append(first, rest...)))
	require.Equal(t, int64(len(blob)), o.bytesOut())
}

// TestOneDownloadForConcurrentClients: two clients of one blob share one download, and the
// origin sends one copy.
func TestOneDownloadForConcurrentClients(t *testing.T) {
	t.Parallel()
	tr := announcetest.New()
	blob := randomBlob(t, 2<<20+5)
	d := digest.FromBytes(blob)
	g := newGate(t, blob)
	o := startOrigin(t, tr, g, blob)
	a := startAgent(t, tr, nil)

	bodies := make([]io.ReadCloser, 2)
	for i := range bodies {
		body, total, err := a.cl.Open(t.Context(), ns, d, 0)
		require.NoError(t, err)
		require.Equal(t, int64(len(blob)), total)
		defer func() { _ = body.Close() }()
		// Both clients are reading the same download, held at the gate.
		b := make([]byte, 1000)
		_, err = io.ReadFull(body, b)
		require.NoError(t, err)
		require.True(t, bytes.Equal(blob[:1000], b))
		bodies[i] = body
	}
	stats, err := a.cl.Torrents(t.Context(), "")
	require.NoError(t, err)
	require.Len(t, stats, 1, "one torrent for the blob")
	require.Equal(t, "downloading", stats[0].State)

	g.release()
	var wg sync.WaitGroup
	errs := make([]error, len(bodies))
	for i, body := range bodies {
		wg.Go(func() {
			rest, err := io.ReadAll(body)
			if err == nil && !bytes.Equal(blob[1000:], rest) {
				err = fmt.Errorf("client %d: wrong bytes", i)
			}
			errs[i] = err
		})
	}
	wg.Wait()
	require.NoError(t, errors.Join(errs...))
	require.Equal(t, int64(len(blob)), o.bytesOut(), "the origin sent one copy")
	stats, err = a.cl.Torrents(t.Context(), d)
	require.NoError(t, err)
	require.Len(t, stats, 1)
	require.Equal(t, int64(len(blob)), stats[0].BytesInOrigin)
}

// TestAbortedDownloadTruncates: when the download stops after the headers were sent, the
// client sees a broken transfer, not a short body that looks complete.
func TestAbortedDownloadTruncates(t *testing.T) {
	t.Parallel()
	tr := announcetest.New()
	blob := randomBlob(t, 2<<20)
	d := digest.FromBytes(blob)
	g := newGate(t, blob)
	startOrigin(t, tr, g, blob)
	a := startAgent(t, tr, nil)

	body, _, err := a.cl.Open(t.Context(), ns, d, 0)
	require.NoError(t, err)
	defer func() { _ = body.Close() }()
	_, err = io.ReadFull(body, make([]byte, 1000))
	require.NoError(t, err)
	// The agent stops while the gate is still closed: the download in flight has its grace
	// period, then its connection is cut, and the client sees a short body, never a clean end.
	require.NoError(t, a.stop())
	_, err = io.ReadAll(body)
	require.ErrorIs(t, err, io.ErrUnexpectedEOF)
}

func TestTorrentsJSON(t *testing.T) {
	t.Parallel()
	tr := announcetest.New()
	blob := randomBlob(t, 256<<10)
	d := digest.FromBytes(blob)
	startOrigin(t, tr, nil, blob)
	a := startAgent(t, tr, nil)

	resp, body := a.get(t, http.MethodGet, "/swarm/torrents", nil)
	require.Equal(t, http.StatusOK, resp.StatusCode)
	require.Equal(t, "application/json", resp.Header.Get("Content-Type"))
	require.JSONEq(t, "[]", string(body))

	_, err := a.cl.Pull(t.Context(), ns, d, io.Discard, nil)
	require.NoError(t, err)
	resp, body = a.get(t, http.MethodGet, "/swarm/torrents?digest="+d.String(), nil)
	require.Equal(t, http.StatusOK, resp.StatusCode)
	var raw []map[string]any
	require.NoError(t, json.Unmarshal(body, &raw))
	require.Len(t, raw, 1)
	require.Equal(t, d.String(), raw[0]["digest"])
	require.Equal(t, ns, raw[0]["namespace"])
	require.EqualValues(t, len(blob), raw[0]["size_bytes"])
	require.EqualValues(t, len(blob), raw[0]["bytes_in_origin"])
	require.Contains(t, []any{"downloading", "seeding"}, raw[0]["state"])

	other, err := a.cl.Torrents(t.Context(), digest.FromString("other"))
	require.NoError(t, err)
	require.Empty(t, other)
}

func TestEventsStream(t *testing.T) {
	t.Parallel()
	for _, sse := range []bool{false, true} {
		t.Run(fmt.Sprintf("sse=%v", sse), func(t *testing.T) {
			t.Parallel()
			tr := announcetest.New()
			blob := randomBlob(t, 256<<10)
			other := randomBlob(t, 1000)
			d := digest.FromBytes(blob)
			startOrigin(t, tr, nil, blob, other)
			a := startAgent(t, tr, nil)

			// The stream is subscribed once its headers arrive.
			req, err := http.NewRequestWithContext(t.Context(), http.MethodGet, a.url+"/swarm/events?digest="+d.String(), nil)
			require.NoError(t, err)
			want := "application/x-ndjson"
			if sse {
				req.Header.Set("Accept", "text/event-stream")
				want = "text/event-stream"
			}
			resp, err := a.hc.Do(req)
			require.NoError(t, err)
			defer func() { _ = resp.Body.Close() }()
			require.Equal(t, http.StatusOK, resp.StatusCode)
			require.Equal(t, want, resp.Header.Get("Content-Type"))

			_, err = a.cl.Pull(t.Context(), ns, digest.FromBytes(other), io.Discard, nil) // filtered out
			require.NoError(t, err)
			_, err = a.cl.Pull(t.Context(), ns, d, io.Discard, nil)
			require.NoError(t, err)

			sc := bufio.NewScanner(resp.Body)
			var kinds []snapshot.EventKind
			for sc.Scan() {
				line := sc.Text()
				var kind string
				if sse {
					if line == "" {
						continue
					}
					var ok bool
					kind, ok = strings.CutPrefix(line, "event: ")
					require.True(t, ok, "%q", line)
					require.True(t, sc.Scan())
					line, ok = strings.CutPrefix(sc.Text(), "data: ")
					require.True(t, ok, "%q", sc.Text())
				}
				var e snapshot.Event
				require.NoError(t, json.Unmarshal([]byte(line), &e))
				require.Equal(t, d, e.Digest, "the filter holds")
				if sse {
					require.Equal(t, kind, string(e.Kind))
				}
				kinds = append(kinds, e.Kind)
				if e.Kind == snapshot.EventTorrentDone {
					break
				}
			}
			require.Contains(t, kinds, snapshot.EventTorrentStart)
			require.Contains(t, kinds, snapshot.EventPieceReceived)
			require.Contains(t, kinds, snapshot.EventTorrentDone)
		})
	}
}

// TestEventsClient reads the stream through client.Agent.Events. The subscription starts at
// some point after Events is called, so the test pulls fresh blobs until one's events arrive.
func TestEventsClient(t *testing.T) {
	t.Parallel()
	tr := announcetest.New()
	blobs := make([][]byte, 40)
	for i := range blobs {
		blobs[i] = randomBlob(t, 1000+i)
	}
	startOrigin(t, tr, nil, blobs...)
	a := startAgent(t, tr, nil)

	ctx, cancel := context.WithCancel(t.Context())
	defer cancel()
	got := make(chan snapshot.Event, 4096)
	errc := make(chan error, 1)
	go func() {
		errc <- a.cl.Events(ctx, "", func(e snapshot.Event) error {
			select {
			case got <- e:
			default:
			}
			return nil
		})
	}()
	var seen *snapshot.Event
	for i := 0; seen == nil && i < len(blobs); i++ {
		_, err := a.cl.Pull(t.Context(), ns, digest.FromBytes(blobs[i]), io.Discard, nil)
		require.NoError(t, err)
		select {
		case e := <-got:
			seen = &e
		default:
		}
	}
	if seen == nil {
		select {
		case e := <-got:
			seen = &e
		case err := <-errc:
			t.Fatalf("event stream ended: %v", err)
		}
	}
	require.NotEmpty(t, seen.Kind)
	require.NotEmpty(t, seen.Digest)
	cancel()
	require.NoError(t, <-errc, "Events returns nil when its context ends")

	err := a.cl.Events(t.Context(), "bad", func(snapshot.Event) error { return nil })
	var re *errcode.Error
	require.ErrorAs(t, err, &re)
	require.Equal(t, errcode.CodeDigestInvalid, re.Code)

	err = a.cl.EventsOf(t.Context(), "", []snapshot.EventKind{"torrent_dnoe"}, func(snapshot.Event) error { return nil })
	require.ErrorAs(t, err, &re)
	require.Equal(t, http.StatusBadRequest, re.Status)
	require.Contains(t, re.Message, "torrent_dnoe")
}

// TestEventsOfKinds: a stream filtered to torrent_done carries only those, one per blob pulled,
// while the same pulls make many piece and connection events.
func TestEventsOfKinds(t *testing.T) {
	t.Parallel()
	tr := announcetest.New()
	blobs := make([][]byte, 20)
	for i := range blobs {
		blobs[i] = randomBlob(t, 3000+i)
	}
	startOrigin(t, tr, nil, blobs...)
	a := startAgent(t, tr, nil)
	ctx, cancel := context.WithCancel(t.Context())
	defer cancel()
	got := make(chan snapshot.Event, 4096)
	errc := make(chan error, 1)
	go func() {
		errc <- a.cl.EventsOf(ctx, "", []snapshot.EventKind{snapshot.EventTorrentDone}, func(e snapshot.Event) error {
			got <- e
			return nil
		})
	}()
	// The subscription starts at some point after EventsOf is called: pull until a done
	// event arrives, then check every event that came.
	for i := 0; i < len(blobs) && len(got) == 0; i++ {
		_, err := a.cl.Pull(t.Context(), ns, digest.FromBytes(blobs[i]), io.Discard, nil)
		require.NoError(t, err)
		if i == len(blobs)-1 {
			select {
			case e := <-got:
				got <- e
			case err := <-errc:
				t.Fatalf("event stream ended: %v", err)
			}
		}
	}
	require.Eventually(t, func() bool { return len(got) > 0 }, 10*time.Second, 10*time.Millisecond)
	cancel()
	require.NoError(t, <-errc)
	close(got)
	for e := range got {
		require.Equal(t, snapshot.EventTorrentDone, e.Kind, "%+v", e)
	}
}

// TestAgentsTrade: a second agent downloads from the first one's peer port, which the first
// announces while it seeds; the origin is no longer handed out, so every byte comes from the
// first agent.
func TestAgentsTrade(t *testing.T) {
	t.Parallel()
	tr := announcetest.New()
	blob := randomBlob(t, 1<<20+99)
	d := digest.FromBytes(blob)
	startOrigin(t, tr, nil, blob)
	a := startAgent(t, tr, nil)
	b := startAgent(t, tr, nil)

	_, err := a.cl.Pull(t.Context(), ns, d, io.Discard, nil)
	require.NoError(t, err)
	a.waitSeeding(t, d)
	tr.RemoveOrigins()

	var got bytes.Buffer
	_, err = b.cl.Pull(t.Context(), ns, d, &got, nil)
	require.NoError(t, err)
	require.True(t, bytes.Equal(blob, got.Bytes()))
	stats, err := b.cl.Torrents(t.Context(), d)
	require.NoError(t, err)
	require.Len(t, stats, 1)
	require.Zero(t, stats[0].BytesInOrigin)
	require.Equal(t, int64(len(blob)), stats[0].BytesIn)
	stats, err = a.cl.Torrents(t.Context(), d)
	require.NoError(t, err)
	require.Equal(t, int64(len(blob)), stats[0].BytesOut, "the first agent seeded the blob")
}

func TestMetricsAndHealth(t *testing.T) {
	t.Parallel()
	tr := announcetest.New()
	blob := randomBlob(t, 100<<10)
	d := digest.FromBytes(blob)
	startOrigin(t, tr, nil, blob)
	a := startAgent(t, tr, nil)
	_, err := a.cl.Pull(t.Context(), ns, d, io.Discard, nil)
	require.NoError(t, err)

	// Metrics and profiles are on the admin listener only.
	for _, p := range []string{"/metrics", "/debug/pprof/"} {
		resp, _ := a.get(t, http.MethodGet, p, nil)
		require.Equal(t, http.StatusNotFound, resp.StatusCode, p)
	}
	resp, body := a.getAdmin(t, "/metrics")
	require.Equal(t, http.StatusOK, resp.StatusCode)
	for _, m := range []string{
		`krakenctl_agent_request_duration_seconds_count{code="200",method="GET"}`,
		"krakenctl_agent_served_bytes_total 102400",
		"krakenctl_agent_first_byte_seconds_count 1",
		"krakenctl_swarm_piece_bytes_total",
	} {
		require.Contains(t, string(body), m)
	}
	for _, p := range []string{"/health", "/readyz"} {
		resp, body = a.get(t, http.MethodGet, p, nil)
		require.Equal(t, http.StatusOK, resp.StatusCode, "%s: %s", p, body)
		resp, body = a.getAdmin(t, p)
		require.Equal(t, http.StatusOK, resp.StatusCode, "admin %s: %s", p, body)
	}
}

// TestHostAndHistory: the agent serves its host stats, and with ?history=1 the torrents it
// retired after the live ones (none live here: the torrent seeded its SeedTime and went).
func TestHostAndHistory(t *testing.T) {
	t.Parallel()
	tr := announcetest.New()
	blob := randomBlob(t, 256<<10)
	d := digest.FromBytes(blob)
	startOrigin(t, tr, nil, blob)
	a := startAgent(t, tr, func(cfg *agent.Config) { cfg.SeedTime = time.Millisecond })

	_, err := a.cl.Pull(t.Context(), ns, d, io.Discard, nil)
	require.NoError(t, err)
	var hist []snapshot.TorrentStats
	require.Eventually(t, func() bool {
		hist, err = a.cl.TorrentsHistory(t.Context(), d)
		return err == nil && len(hist) == 1 && hist[0].Retired != nil
	}, 30*time.Second, 10*time.Millisecond, "the agent retires the torrent after its seed time (%v)", err)
	require.Equal(t, d, hist[0].Digest)
	require.Equal(t, "seeding", hist[0].State)
	require.EqualValues(t, len(blob), hist[0].BytesInOrigin)
	require.Positive(t, hist[0].OriginReasons[snapshot.ReasonNoPeers])
	live, err := a.cl.Torrents(t.Context(), d)
	require.NoError(t, err)
	require.Empty(t, live, "without ?history=1 only live torrents")
	other, err := a.cl.TorrentsHistory(t.Context(), digest.FromString("other"))
	require.NoError(t, err)
	require.Empty(t, other, "the digest filter applies to the history too")

	resp, body := a.get(t, http.MethodGet, api.SwarmTorrentsPath+"?"+api.SwarmHistoryParam+"=1", nil)
	require.Equal(t, http.StatusOK, resp.StatusCode)
	var raw []map[string]any
	require.NoError(t, json.Unmarshal(body, &raw))
	require.Len(t, raw, 1)
	require.Contains(t, raw[0], "retired")
	resp, _ = a.get(t, http.MethodGet, api.SwarmTorrentsPath+"?"+api.SwarmHistoryParam+"=maybe", nil)
	require.Equal(t, http.StatusBadRequest, resp.StatusCode)

	h, err := a.cl.Host(t.Context())
	require.NoError(t, err)
	require.Equal(t, "agent", h.Role)
	require.Equal(t, a.srv.PeerAddr(), h.Addr)
	require.Len(t, h.PeerID, 40, "hex of the 20-byte peer id")
	require.EqualValues(t, len(blob), h.BytesIn)
	require.Zero(t, h.Torrents)
	require.NotNil(t, h.Blacklisted)
	require.False(t, h.Time.IsZero())
	resp, body = a.get(t, http.MethodGet, api.SwarmHostPath, nil)
	require.Equal(t, http.StatusOK, resp.StatusCode)
	require.Equal(t, "application/json", resp.Header.Get("Content-Type"))
	require.NoError(t, json.Unmarshal(body, &map[string]any{}))
}
