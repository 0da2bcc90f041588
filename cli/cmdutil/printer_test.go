package cmdutil_test

import (
	"bytes"
	"errors"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/krakenctl/krakenctl/cli/cmdutil"
)

func TestTable(t *testing.T) {
	t.Parallel()
	var out bytes.Buffer
	tb := cmdutil.NewTable(&out, "name", "size")
	tb.Row("a", 1)
	tb.Row("longer", 22)
	require.NoError(t, tb.Flush())
	require.Equal(t, "NAME    SIZE\na       1\nlonger  22\n", out.String())
}

var errDiskFull = errors.New("disk full")

type failingWriter struct{}

func (failingWriter) Write([]byte) (int, error) { return 0, errDiskFull }

func TestTableWriteError(t *testing.T) {
	t.Parallel()
	// One column: tabwriter writes each line through as it comes, before Flush.
	tb := cmdutil.NewTable(failingWriter{}, "repository")
	tb.Row("a")
	require.ErrorIs(t, tb.Flush(), errDiskFull)
}
