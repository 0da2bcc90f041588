package swarmapi_test

import (
	"bufio"
	"context"
	"encoding/json"
	"io"
	"net/http"
	"net/http/httptest"
	"testing"
	"time"

	"github.com/opencontainers/go-digest"
	"github.com/stretchr/testify/require"

	"github.com/krakenctl/krakenctl/server/swarmapi"
	"github.com/krakenctl/krakenctl/swarm/snapshot"
)

// fakeSwarm is a scheduler in memory: two live torrents, one retired, and an event channel.
type fakeSwarm struct{ events chan snapshot.Event }

var a, b = digest.FromString("a"), digest.FromString("b")

func (fakeSwarm) Stats() []snapshot.TorrentStats {
	return []snapshot.TorrentStats{{Digest: a, State: "seeding"}, {Digest: b, State: "downloading"}}
}

func (fakeSwarm) History() []snapshot.TorrentStats {
	now := time.Now()
	return []snapshot.TorrentStats{{Digest: a, State: "seeding", Retired: &now}}
}

func (fakeSwarm) HostStats() snapshot.HostStats { return snapshot.HostStats{PeerID: "00ff", Conns: 3} }

func (f fakeSwarm) Subscribe(int) (<-chan snapshot.Event, func()) { return f.events, func() {} }

func get(t *testing.T, srv *httptest.Server, path string, out any) int {
	t.Helper()
	req, err := http.NewRequestWithContext(t.Context(), http.MethodGet, srv.URL+path, nil)
	require.NoError(t, err)
	resp, err := srv.Client().Do(req)
	require.NoError(t, err)
	defer func() { _ = resp.Body.Close() }()
	if out != nil && resp.StatusCode == http.StatusOK {
		require.NoError(t, json.NewDecoder(resp.Body).Decode(out))
	}
	return resp.StatusCode
}

func TestHandlers(t *testing.T) {
	events := make(chan snapshot.Event, 4)
	mux := http.NewServeMux()
	swarmapi.Register(mux, "origin", fakeSwarm{events})
	srv := httptest.NewServer(mux)
	defer srv.Close()

	var ts []snapshot.TorrentStats
	require.Equal(t, http.StatusOK, get(t, srv, "/swarm/torrents", &ts))
	require.Len(t, ts, 2)
	require.Equal(t, http.StatusOK, get(t, srv, "/swarm/torrents?history=1&digest="+a.String(), &ts))
	require.Len(t, ts, 2, "the live torrent of a and its retired one")
	require.NotNil(t, ts[1].Retired)
	require.Equal(t, http.StatusBadRequest, get(t, srv, "/swarm/torrents?history=maybe", nil))
	require.Equal(t, http.StatusBadRequest, get(t, srv, "/swarm/torrents?digest=nope", nil))

	var h snapshot.HostStats
	require.Equal(t, http.StatusOK, get(t, srv, "/swarm/host", &h))
	require.Equal(t, "origin", h.Role, "the role is the registering node's")
	require.Equal(t, 3, h.Conns)

	require.Equal(t, http.StatusBadRequest, get(t, srv, "/swarm/events?kind=piece_recieved", nil))

	// A filtered stream carries only the kinds asked for.
	ctx, cancel := context.WithCancel(t.Context())
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, srv.URL+"/swarm/events?kind=blacklist", nil)
	require.NoError(t, err)
	resp, err := srv.Client().Do(req)
	require.NoError(t, err)
	defer func() { _ = resp.Body.Close() }()
	require.Equal(t, "application/x-ndjson", resp.Header.Get("Content-Type"))
	events <- snapshot.Event{Kind: snapshot.EventPieceReceived, Digest: a}
	events <- snapshot.Event{Kind: snapshot.EventBlacklist, Digest: a, Err: "bad_piece"}
	line, err := bufio.NewReader(resp.Body).ReadBytes('\n')
	require.NoError(t, err)
	var e snapshot.Event
	require.NoError(t, json.Unmarshal(line, &e))
	require.Equal(t, snapshot.EventBlacklist, e.Kind)
}

// TestNoSwarm: an origin that does not seed lists nothing and has no host or event stream.
func TestNoSwarm(t *testing.T) {
	mux := http.NewServeMux()
	swarmapi.Register(mux, "origin", nil)
	srv := httptest.NewServer(mux)
	defer srv.Close()
	var ts []snapshot.TorrentStats
	require.Equal(t, http.StatusOK, get(t, srv, "/swarm/torrents", &ts))
	require.Empty(t, ts)
	require.NotNil(t, ts, "an empty list, not null")
	require.Equal(t, http.StatusNotFound, get(t, srv, "/swarm/host", nil))
	require.Equal(t, http.StatusNotFound, get(t, srv, "/swarm/events", nil))
}

// TestEventStreamsBounded: a flood of subscribers gets 503 beyond MaxEventStreams (each holds
// a buffer of events), and a stream that closes frees its place.
func TestEventStreamsBounded(t *testing.T) {
	mux := http.NewServeMux()
	swarmapi.Register(mux, "origin", fakeSwarm{make(chan snapshot.Event)})
	srv := httptest.NewServer(mux)
	defer srv.Close()
	open := func() (*http.Response, context.CancelFunc) {
		ctx, cancel := context.WithCancel(t.Context())
		req, err := http.NewRequestWithContext(ctx, http.MethodGet, srv.URL+"/swarm/events", nil)
		require.NoError(t, err)
		resp, err := srv.Client().Do(req)
		require.NoError(t, err)
		return resp, cancel
	}
	cancels := make([]context.CancelFunc, 0, swarmapi.MaxEventStreams)
	bodies := make([]io.Closer, 0, swarmapi.MaxEventStreams)
	defer func() {
		for _, b := range bodies {
			_ = b.Close()
		}
	}()
	for range swarmapi.MaxEventStreams {
		resp, cancel := open() //nolint:bodyclose // closed by the deferred loop over bodies
		bodies = append(bodies, resp.Body)
		require.Equal(t, http.StatusOK, resp.StatusCode)
		cancels = append(cancels, cancel)
	}
	resp, cancel := open()
	require.Equal(t, http.StatusServiceUnavailable, resp.StatusCode)
	_ = resp.Body.Close()
	cancel()

	cancels[0]() // one subscriber leaves
	require.Eventually(t, func() bool {
		resp, cancel := open()
		defer cancel()
		defer func() { _ = resp.Body.Close() }()
		return resp.StatusCode == http.StatusOK
	}, 10*time.Second, 20*time.Millisecond)
	for _, c := range cancels[1:] {
		c()
	}
}
