package swarmview_test

import (
	"encoding/json"
	"reflect"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/krakenctl/krakenctl/server/api"
	"github.com/krakenctl/krakenctl/server/swarmview"
	"github.com/krakenctl/krakenctl/swarm/scheduler"
)

// fill sets every field of the struct v points to, recursively, to a value that is not zero
// and differs from field to field, so a field the conversion forgets shows in the JSON.
func fill(t *testing.T, v reflect.Value, n *int) {
	t.Helper()
	*n++
	switch v.Kind() {
	case reflect.Struct:
		if v.Type() == reflect.TypeFor[time.Time]() {
			v.Set(reflect.ValueOf(time.Date(2026, 1, 2, 3, 4, *n, 0, time.UTC)))
			return
		}
		for i := range v.NumField() {
			fill(t, v.Field(i), n)
		}
	case reflect.Pointer:
		v.Set(reflect.New(v.Type().Elem()))
		fill(t, v.Elem(), n)
	case reflect.Slice:
		v.Set(reflect.MakeSlice(v.Type(), 2, 2))
		for i := range v.Len() {
			fill(t, v.Index(i), n)
		}
	case reflect.String:
		v.SetString(v.Type().Name() + "-" + string(rune('a'+*n%26)))
	case reflect.Int, reflect.Int64:
		v.SetInt(int64(*n))
	case reflect.Bool:
		v.SetBool(true)
	default:
		t.Fatalf("fill: add a case for %s", v.Type())
	}
}

func jsonOf(t *testing.T, v any) string {
	t.Helper()
	b, err := json.Marshal(v)
	require.NoError(t, err)
	return string(b)
}

// TestTorrentsWire: the documents served are exactly what serving the scheduler's values was,
// field for field, so clients of either see no change.
func TestTorrentsWire(t *testing.T) {
	t.Parallel()
	var st scheduler.TorrentStats
	n := 0
	fill(t, reflect.ValueOf(&st).Elem(), &n)
	stats := []scheduler.TorrentStats{st, {Digest: "sha256:00", State: "starting", Peers: []scheduler.PeerStats{}}}
	require.JSONEq(t, jsonOf(t, stats), jsonOf(t, swarmview.Torrents(stats)))
	require.Equal(t, jsonOf(t, stats), jsonOf(t, swarmview.Torrents(stats)), "same bytes, same field order")

	require.Equal(t, "[]", jsonOf(t, swarmview.Torrents(nil)), "an idle swarm is [], not null")
	require.Contains(t, jsonOf(t, swarmview.Torrents(stats[1:])), `"peers":[]`)
}

func TestEventWire(t *testing.T) {
	t.Parallel()
	var e scheduler.Event
	n := 0
	fill(t, reflect.ValueOf(&e).Elem(), &n)
	require.Equal(t, jsonOf(t, e), jsonOf(t, swarmview.Event(e)))
	require.Equal(t, jsonOf(t, scheduler.Event{Kind: scheduler.EventConnOpen}), jsonOf(t, swarmview.Event(scheduler.Event{Kind: scheduler.EventConnOpen})))
}

// TestEventKinds: api's kinds name the scheduler's, so a client comparing e.Kind with an api
// constant sees what the scheduler reported.
func TestEventKinds(t *testing.T) {
	t.Parallel()
	for s, a := range map[scheduler.EventKind]api.EventKind{
		scheduler.EventTorrentStart:  api.EventTorrentStart,
		scheduler.EventTorrentResume: api.EventTorrentResume,
		scheduler.EventTorrentSeed:   api.EventTorrentSeed,
		scheduler.EventTorrentDone:   api.EventTorrentDone,
		scheduler.EventTorrentFailed: api.EventTorrentFailed,
		scheduler.EventConnOpen:      api.EventConnOpen,
		scheduler.EventConnClose:     api.EventConnClose,
		scheduler.EventConnRejected:  api.EventConnRejected,
		scheduler.EventDialFailed:    api.EventDialFailed,
		scheduler.EventBlacklist:     api.EventBlacklist,
		scheduler.EventPieceReceived: api.EventPieceReceived,
		scheduler.EventPieceSent:     api.EventPieceSent,
		scheduler.EventPieceBad:      api.EventPieceBad,
	} {
		require.Equal(t, a, swarmview.Event(scheduler.Event{Kind: s}).Kind)
	}
}
