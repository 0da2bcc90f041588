package ringtest_test

import (
	"context"
	"errors"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/krakenctl/krakenctl/ring/ringtest"
)

func TestChecker(t *testing.T) {
	t.Parallel()
	var c ringtest.Checker
	ctx := t.Context()
	require.NoError(t, c.Check(ctx, "a:1"), "members start healthy")

	c.SetDown("a:1")
	require.ErrorIs(t, c.Check(ctx, "a:1"), ringtest.ErrDown)
	require.NoError(t, c.Check(ctx, "b:1"), "only the member set down fails")

	boom := errors.New("boom")
	c.SetError("a:1", boom)
	require.ErrorIs(t, c.Check(ctx, "a:1"), boom)

	c.SetUp("a:1")
	require.NoError(t, c.Check(ctx, "a:1"))
	require.Equal(t, 4, c.Checks("a:1"))
	require.Equal(t, 1, c.Checks("b:1"))
	require.Zero(t, c.Checks("c:1"))

	done, cancel := context.WithCancel(ctx)
	cancel()
	require.ErrorIs(t, c.Check(done, "a:1"), context.Canceled)
}
