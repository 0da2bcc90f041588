package cmdutil_test

import (
	"strings"
	"testing"

	"github.com/opencontainers/go-digest"
	"github.com/stretchr/testify/require"

	"github.com/krakenctl/krakenctl/cli/cmdutil"
)

func TestParseDigest(t *testing.T) {
	t.Parallel()
	hex64 := strings.Repeat("0123456789abcdef", 4)
	for _, in := range []string{hex64, "sha256:" + hex64} {
		d, err := cmdutil.ParseDigest(in)
		require.NoError(t, err, in)
		require.Equal(t, digest.Digest("sha256:"+hex64), d)
	}
	for _, bad := range []string{"", "sha256:", "sha256:" + hex64[:63], hex64 + "0", " " + hex64, "sha256:" + strings.ToUpper(hex64), "sha384:" + strings.Repeat("a", 96)} {
		_, err := cmdutil.ParseDigest(bad)
		require.Error(t, err, "%q", bad)
		require.ErrorContains(t, err, "is not a sha256 digest", "%q", bad)
	}
}
