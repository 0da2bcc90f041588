package snapshot_test

import (
	"encoding/json"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/krakenctl/krakenctl/swarm/snapshot"
)

// TestWireNames pins the JSON documents of the swarm API: agents, origins and their clients
// (krakenctl and older builds of it) agree on these names, so renaming a field or a tag breaks
// them all at once.
func TestWireNames(t *testing.T) {
	t.Parallel()
	at := time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC)
	st := snapshot.TorrentStats{
		Digest: "sha256:ab", Namespace: "ns", State: "seeding", Size: 1, PieceLength: 2, Pieces: 3,
		Have: 4, Resumed: 5, Verified: 6, BytesIn: 7, BytesInOrigin: 8, BytesOut: 9, Wasted: 10,
		BadPieces: 11, Started: at, Downloaded: &at, Checked: &at, Finished: &at, Error: "e",
		Peers: []snapshot.PeerStats{{ID: "p", Addr: "a", Origin: true, Outbound: true, Have: 12,
			Pending: 13, BytesIn: 14, BytesOut: 15, Opened: at}},
	}
	b, err := json.Marshal(st)
	require.NoError(t, err)
	const ts = `"2026-01-02T03:04:05Z"`
	require.JSONEq(t, `{"digest":"sha256:ab","namespace":"ns","state":"seeding","size_bytes":1,
		"piece_length":2,"pieces":3,"have":4,"resumed":5,"verified_prefix_bytes":6,"bytes_in":7,
		"bytes_in_origin":8,"bytes_out":9,"wasted_bytes":10,"bad_pieces":11,"started":`+ts+`,
		"downloaded":`+ts+`,"checked":`+ts+`,"finished":`+ts+`,"error":"e",
		"peers":[{"peer_id":"p","addr":"a","origin":true,"outbound":true,"have":12,"pending":13,
		"bytes_in":14,"bytes_out":15,"opened":`+ts+`}]}`, string(b))

	e := snapshot.Event{
		Time: at, Kind: snapshot.EventPieceReceived, Digest: "sha256:ab", Peer: "p", Addr: "a",
		Origin: true, Outbound: true, Piece: 1, Pieces: 2, Bytes: 3, Sent: 4, Duration: 5, Err: "e",
	}
	b, err = json.Marshal(e)
	require.NoError(t, err)
	require.JSONEq(t, `{"time":`+ts+`,"kind":"piece_received","digest":"sha256:ab","peer":"p",
		"addr":"a","origin":true,"outbound":true,"piece":1,"pieces":2,"bytes":3,"sent":4,
		"duration":5,"error":"e"}`, string(b))

	// Fields that do not apply are left out, except the ones every snapshot has.
	b, err = json.Marshal(snapshot.TorrentStats{Started: at})
	require.NoError(t, err)
	require.JSONEq(t, `{"digest":"","state":"","size_bytes":0,"piece_length":0,"pieces":0,"have":0,
		"verified_prefix_bytes":0,"bytes_in":0,"bytes_in_origin":0,"bytes_out":0,"wasted_bytes":0,
		"bad_pieces":0,"started":`+ts+`,"peers":null}`, string(b))
	b, err = json.Marshal(snapshot.Event{Time: at, Kind: snapshot.EventConnOpen})
	require.NoError(t, err)
	require.JSONEq(t, `{"time":`+ts+`,"kind":"conn_open"}`, string(b))
}
