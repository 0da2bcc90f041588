package test

import (
	"testing"

	"github.com/krakenctl/krakenctl/swarm/metainfo"
	"github.com/krakenctl/krakenctl/swarm/wire"
)

// TestWireLimitsMatchMetainfo: swarm/wire imports nothing internal, so it copies the piece
// limits of swarm/metainfo. A blob metainfo accepts must fit the wire protocol's handshake.
func TestWireLimitsMatchMetainfo(t *testing.T) {
	if wire.MaxPieces != metainfo.MaxPieces {
		t.Errorf("wire.MaxPieces = %d, metainfo.MaxPieces = %d", wire.MaxPieces, metainfo.MaxPieces)
	}
	if wire.MaxPieceLength != metainfo.MaxPieceLength {
		t.Errorf("wire.MaxPieceLength = %d, metainfo.MaxPieceLength = %d", wire.MaxPieceLength, metainfo.MaxPieceLength)
	}
}
