package wire_test

import (
	"bytes"
	"flag"
	"os"
	"path/filepath"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/krakenctl/krakenctl/swarm/wire"
)

var update = flag.Bool("update", false, "rewrite the golden files in testdata/")

// TestGolden pins the byte layout: every sample encodes to the bytes in testdata/<name>.bin
// and those bytes decode back to the sample. Run with -update after a deliberate format change
// (which also needs a new Version, see docs/protocol.md).
func TestGolden(t *testing.T) {
	t.Parallel()
	check := func(name string, got []byte) []byte {
		path := filepath.Join("testdata", name+".bin")
		if *update {
			require.NoError(t, os.WriteFile(path, got, 0o644))
		}
		want, err := os.ReadFile(path)
		require.NoError(t, err, "missing golden file; run go test -run TestGolden -update")
		require.Equal(t, want, got, "%s: encoding differs from %s", name, path)
		return want
	}
	for _, tc := range sampleMessages() {
		want := check(tc.name, encode(t, tc.msg))
		m, err := wire.NewDecoder(bytes.NewReader(want)).ReadMessage()
		require.NoError(t, err, tc.name)
		require.Equal(t, tc.msg, m, tc.name)
	}
	for _, tc := range sampleHandshakes() {
		b, err := wire.AppendHandshake(nil, tc.h)
		require.NoError(t, err)
		want := check(tc.name, b)
		h, err := wire.ReadHandshake(bytes.NewReader(want))
		require.NoError(t, err, tc.name)
		require.Equal(t, tc.h.Digest, h.Digest, tc.name)
		require.True(t, tc.h.Bitfield.Equal(h.Bitfield), tc.name)
	}
}
