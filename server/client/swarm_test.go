package client

import (
	"net/http"
	"net/http/httptest"
	"net/url"
	"testing"

	"github.com/opencontainers/go-digest"
	"github.com/stretchr/testify/require"

	"github.com/krakenctl/krakenctl/server/api"
)

// The swarm methods ask for what they say (?digest=, ?history=1, the host path), decode the
// documents, and turn an error answer into an error.
func TestSwarmQueries(t *testing.T) {
	t.Parallel()
	var got []string
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		got = append(got, r.URL.RequestURI())
		w.Header().Set("Content-Type", "application/json")
		switch r.URL.Path {
		case api.SwarmTorrentsPath:
			_, _ = w.Write([]byte(`[{"digest":"sha256:ab","state":"seeding","retired":"2026-01-02T03:04:05Z"}]`))
		case api.SwarmHostPath:
			_, _ = w.Write([]byte(`{"role":"agent","peer_id":"00ff","bytes_in":7,"blacklisted":[{"addr":"127.0.0.2:1","reason":"stalled"}]}`))
		default:
			http.NotFound(w, r)
		}
	}))
	t.Cleanup(srv.Close)
	a := NewAgent(srv.URL, srv.Client())
	o := NewOrigin(srv.URL, srv.Client())
	d := digest.FromString("x")

	st, err := a.TorrentsHistory(t.Context(), d)
	require.NoError(t, err)
	require.Len(t, st, 1)
	require.NotNil(t, st[0].Retired)
	_, err = a.Torrents(t.Context(), "")
	require.NoError(t, err)
	_, err = o.Torrents(t.Context(), d)
	require.NoError(t, err)
	_, err = o.TorrentsHistory(t.Context(), "")
	require.NoError(t, err)
	h, err := a.Host(t.Context())
	require.NoError(t, err)
	require.Equal(t, "agent", h.Role)
	require.EqualValues(t, 7, h.BytesIn)
	require.Equal(t, "stalled", h.Blacklisted[0].Reason)

	q := url.Values{"digest": {d.String()}}
	require.Equal(t, []string{
		api.SwarmTorrentsPath + "?" + url.Values{"digest": {d.String()}, api.SwarmHistoryParam: {"1"}}.Encode(),
		api.SwarmTorrentsPath,
		api.SwarmTorrentsPath + "?" + q.Encode(),
		api.SwarmTorrentsPath + "?" + api.SwarmHistoryParam + "=1",
		api.SwarmHostPath,
	}, got)

	_, err = NewOrigin(srv.URL+"/nothing", srv.Client()).Host(t.Context())
	require.ErrorIs(t, err, ErrNotFound)
}

// An answer that never ends (a JSON array streamed forever) is cut at the document's bound
// and named malformed, rather than read until memory runs out.
func TestSwarmAnswerBounded(t *testing.T) {
	t.Parallel()
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		_, _ = w.Write([]byte("["))
		one := []byte(`{"digest":"sha256:ab","state":"seeding","peers":[]},`)
		for {
			if _, err := w.Write(one); err != nil {
				return
			}
		}
	}))
	t.Cleanup(srv.Close)
	_, err := NewAgent(srv.URL, srv.Client()).TorrentsHistory(t.Context(), "")
	require.ErrorIs(t, err, ErrMalformed)
	require.ErrorContains(t, err, "larger than")
	_, err = NewOrigin(srv.URL, srv.Client()).Host(t.Context())
	require.ErrorIs(t, err, ErrMalformed)
}
