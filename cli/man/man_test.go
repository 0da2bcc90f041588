package man

import (
	"bytes"
	"io"
	"os"
	"path/filepath"
	"sort"
	"testing"

	"github.com/spf13/cobra"
	"github.com/stretchr/testify/require"

	"github.com/krakenctl/krakenctl/cli/cmdutil"
	"github.com/krakenctl/krakenctl/cli/iostreams"
)

// newTree returns a small krakenctl-like tree with the man command attached.
func newTree() (*cobra.Command, *bytes.Buffer) {
	ios, _, _, errOut := iostreams.Test()
	f := &cmdutil.Factory{IOStreams: ios, Version: "1.2.3"}
	root := &cobra.Command{Use: "krakenctl", Short: "Distribute blobs", SilenceUsage: true, SilenceErrors: true}
	hello := &cobra.Command{Use: "hello NAME", Short: "Say hello", Run: func(*cobra.Command, []string) {}}
	hello.Flags().Bool("loud", false, "shout the greeting")
	root.AddCommand(hello, NewCmdMan(f, nil))
	root.SetOut(io.Discard)
	root.SetErr(io.Discard)
	return root, errOut
}

func generate(t *testing.T, dir string) *bytes.Buffer {
	t.Helper()
	root, errOut := newTree()
	root.SetArgs([]string{"man", "--dir", dir})
	require.NoError(t, root.Execute())
	return errOut
}

func listDir(t *testing.T, dir string) []string {
	t.Helper()
	entries, err := os.ReadDir(dir)
	require.NoError(t, err)
	var names []string
	for _, e := range entries {
		names = append(names, e.Name())
	}
	sort.Strings(names)
	return names
}

// Not parallel: t.Setenv.
func TestManWritesPages(t *testing.T) {
	t.Setenv("SOURCE_DATE_EPOCH", "1795176000") // 2026-11-20 12:00 UTC
	t.Setenv("TZ", "UTC")
	dir := filepath.Join(t.TempDir(), "new", "man") // created, parents included
	errOut := generate(t, dir)
	require.Contains(t, errOut.String(), "wrote man pages to "+dir)

	// One page per visible command (cobra adds completion); the hidden man command gets none.
	pages := listDir(t, dir)
	require.Subset(t, pages, []string{"krakenctl.1", "krakenctl-hello.1", "krakenctl-completion-bash.1"})
	require.NotContains(t, pages, "krakenctl-man.1")

	page, err := os.ReadFile(filepath.Join(dir, "krakenctl-hello.1"))
	require.NoError(t, err)
	require.Contains(t, string(page), `.TH "KRAKENCTL" "1" "Nov 2026" "krakenctl" "krakenctl manual"`)
	require.Contains(t, string(page), "krakenctl-hello - Say hello")
	require.Contains(t, string(page), "shout the greeting")
	require.NotContains(t, string(page), "Auto generated", "pages must not carry a generation stamp")

	// Same tree, same date: byte-identical output, so CI can diff the committed pages.
	again := filepath.Join(t.TempDir(), "man")
	generate(t, again)
	for _, name := range listDir(t, dir) {
		a, err := os.ReadFile(filepath.Join(dir, name))
		require.NoError(t, err)
		b, err := os.ReadFile(filepath.Join(again, name))
		require.NoError(t, err)
		require.Equal(t, string(a), string(b), name)
	}
}

func TestManDirRequired(t *testing.T) {
	t.Parallel()
	root, _ := newTree()
	root.SetArgs([]string{"man"})
	err := root.Execute()
	require.Error(t, err)
	require.Equal(t, cmdutil.ExitUsage, cmdutil.ExitCode(err))
	require.Contains(t, err.Error(), "--dir is required")
}

func TestManDirIsAFile(t *testing.T) {
	t.Parallel()
	file := filepath.Join(t.TempDir(), "file")
	require.NoError(t, os.WriteFile(file, []byte("keep me"), 0o644))

	root, _ := newTree()
	root.SetArgs([]string{"man", "--dir", file})
	err := root.Execute()
	require.Error(t, err)
	require.Equal(t, cmdutil.ExitError, cmdutil.ExitCode(err))
	require.Contains(t, err.Error(), "create man dir")

	data, err := os.ReadFile(file)
	require.NoError(t, err)
	require.Equal(t, "keep me", string(data), "the file in the way is left alone")
}

func TestManPassesOptions(t *testing.T) {
	t.Parallel()
	ios, _, _, _ := iostreams.Test()
	var got *Options
	cmd := NewCmdMan(&cmdutil.Factory{IOStreams: ios}, func(o *Options) error { got = o; return nil })
	cmd.SetArgs([]string{"--dir", "out/man"})
	cmd.SetOut(io.Discard)
	cmd.SetErr(io.Discard)
	require.NoError(t, cmd.Execute())
	require.Equal(t, &Options{Dir: "out/man"}, got)
	require.True(t, cmd.Hidden)
}
