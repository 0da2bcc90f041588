package memory_test

import (
	"bytes"
	"errors"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/krakenctl/krakenctl/backend"
	"github.com/krakenctl/krakenctl/backend/backendtest"
	"github.com/krakenctl/krakenctl/backend/memory"
)

func TestConformance(t *testing.T) {
	backendtest.Run(t, func(t *testing.T) backend.Backend { return memory.New() })
}

func TestFailureAndRecovery(t *testing.T) {
	t.Parallel()
	b := memory.New()
	ctx := t.Context()
	require.NoError(t, b.Upload(ctx, "ns", "a", bytes.NewReader([]byte("old")), 3))

	errDown := errors.New("storage down")
	b.SetFailure(errDown)
	_, err := b.Stat(ctx, "ns", "a")
	require.ErrorIs(t, err, errDown)
	var buf bytes.Buffer
	require.ErrorIs(t, b.Download(ctx, "ns", "a", &buf), errDown)
	require.Zero(t, buf.Len())
	require.ErrorIs(t, b.Upload(ctx, "ns", "a", bytes.NewReader([]byte("new")), 3), errDown)
	require.ErrorIs(t, b.Upload(ctx, "ns", "b", bytes.NewReader([]byte("new")), 3), errDown)
	_, err = b.List(ctx, "ns", "")
	require.ErrorIs(t, err, errDown)
	// Key checks come before the fault.
	_, err = b.Stat(ctx, "../ns", "a")
	require.ErrorIs(t, err, backend.ErrInvalidKey)

	b.SetFailure(nil)
	got, ok := b.Peek("ns", "a")
	require.True(t, ok)
	require.Equal(t, "old", string(got), "failed upload must not change the object")
	_, ok = b.Peek("ns", "b")
	require.False(t, ok)
	require.NoError(t, b.Upload(ctx, "ns", "b", bytes.NewReader([]byte("new")), 3))
	require.Equal(t, 2, b.Len())

	require.Equal(t, 4, b.Calls(memory.OpUpload))
	require.Equal(t, 2, b.Calls(memory.OpStat))
	require.Equal(t, 1, b.Calls(memory.OpDownload))
	require.Equal(t, 1, b.Calls(memory.OpList))
}

func TestSetFaultPerOperation(t *testing.T) {
	t.Parallel()
	b := memory.New()
	ctx := t.Context()
	errUpload := errors.New("uploads refused")
	b.SetFault(func(op memory.Op, ns, name string) error {
		if op == memory.OpUpload && name == "bad" {
			return errUpload
		}
		return nil
	})
	require.ErrorIs(t, b.Upload(ctx, "ns", "bad", bytes.NewReader(nil), 0), errUpload)
	require.NoError(t, b.Upload(ctx, "ns", "good", bytes.NewReader(nil), 0))
	_, err := b.Stat(ctx, "ns", "bad")
	require.ErrorIs(t, err, backend.ErrNotFound)
	b.SetFault(nil)
	require.NoError(t, b.Upload(ctx, "ns", "bad", bytes.NewReader(nil), 0))
}

func TestPeekReturnsCopy(t *testing.T) {
	t.Parallel()
	b := memory.New()
	require.NoError(t, b.Upload(t.Context(), "ns", "a", bytes.NewReader([]byte("abc")), 3))
	got, _ := b.Peek("ns", "a")
	got[0] = 'X'
	again, _ := b.Peek("ns", "a")
	require.Equal(t, "abc", string(again))
}
