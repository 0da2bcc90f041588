package cmdutil_test

import (
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/krakenctl/krakenctl/cli/cmdutil"
)

func TestCells(t *testing.T) {
	require.Equal(t, "-", cmdutil.OrDash(""))
	require.Equal(t, "x", cmdutil.OrDash("x"))
	require.Equal(t, "a b c", cmdutil.Truncate("a\nb\t c", 10), "one line")
	require.Equal(t, "ééé…", cmdutil.Truncate("éééééé", 4), "cut by runes, never inside one")
	require.Equal(t, "short", cmdutil.Truncate("short", 5))
}
