package gc

import (
	"bytes"
	"context"
	"encoding/json"
	"log/slog"
	"net/http"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/google/go-containerregistry/pkg/name"
	"github.com/google/go-containerregistry/pkg/v1/random"
	"github.com/google/go-containerregistry/pkg/v1/remote"
	"github.com/spf13/cobra"
	"github.com/stretchr/testify/require"
	"go.uber.org/goleak"

	"github.com/krakenctl/krakenctl/cli/cmdutil"
	"github.com/krakenctl/krakenctl/cli/iostreams"
	"github.com/krakenctl/krakenctl/server/dev"
	"github.com/krakenctl/krakenctl/server/dev/devtest"
	"github.com/krakenctl/krakenctl/server/gc"
)

func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m)
}

func testFactory() *cmdutil.Factory {
	ios, _, _, _ := iostreams.Test()
	return &cmdutil.Factory{IOStreams: ios, HTTPClient: func() *http.Client { return &http.Client{} },
		Logger: func() *slog.Logger { return slog.New(slog.DiscardHandler) }}
}

func Test_NewCmdGC(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name    string
		args    []string
		check   func(t *testing.T, o *Options)
		wantErr string
	}{
		{name: "defaults", check: func(t *testing.T, o *Options) {
			require.False(t, o.DryRun)
			require.Equal(t, gc.DefaultGrace, o.Grace)
			require.True(t, o.Backends)
			require.Equal(t, gc.DefaultParallel, o.Parallel)
			require.Equal(t, cmdutil.OutputTable, o.Output)
		}},
		{name: "everything", args: []string{"--dry-run", "--grace", "168h", "--backends=false", "--parallel", "8", "-o", "json"},
			check: func(t *testing.T, o *Options) {
				require.True(t, o.DryRun)
				require.Equal(t, 168*time.Hour, o.Grace)
				require.False(t, o.Backends)
				require.Equal(t, 8, o.Parallel)
				require.Equal(t, cmdutil.OutputJSON, o.Output)
			}},
		{name: "zero grace", args: []string{"--grace", "0s"}, check: func(t *testing.T, o *Options) { require.Zero(t, o.Grace) }},
		{name: "negative grace", args: []string{"--grace", "-1h"}, wantErr: "invalid --grace -1h0m0s"},
		{name: "zero parallel", args: []string{"--parallel", "0"}, wantErr: "invalid --parallel 0"},
		{name: "bad output", args: []string{"-o", "wide"}, wantErr: `invalid --output "wide"`},
		{name: "an argument", args: []string{"team/app"}, wantErr: "unknown command"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			var got *Options
			cmd := NewCmdGC(testFactory(), func(_ context.Context, o *Options) error { got = o; return nil })
			cmd.SetArgs(tt.args)
			cmd.SetOut(&bytes.Buffer{})
			cmd.SetErr(&bytes.Buffer{})
			cmd.SetFlagErrorFunc(func(c *cobra.Command, err error) error { return &cmdutil.FlagError{Err: err} })
			err := cmd.ExecuteContext(t.Context())
			if tt.wantErr != "" {
				require.ErrorContains(t, err, tt.wantErr)
				require.Nil(t, got)
				return
			}
			require.NoError(t, err)
			tt.check(t, got)
		})
	}
}

// TestRunCollectsDeletedImage runs the command against a dev cluster named by its endpoints
// file: after a manifest is deleted, the dry run's table names what would go, the JSON run
// collects that from both origins and the backend, the tagged image still pulls, and a third
// run has nothing left to do.
func TestRunCollectsDeletedImage(t *testing.T) {
	dir := t.TempDir()
	ep := filepath.Join(dir, "endpoints.yaml")
	c := devtest.StartConfig(t, dev.Config{Origins: 1, BuildIndex: true, Proxy: true, Dir: filepath.Join(dir, "state"), EndpointsFile: ep})
	keep, err := random.Image(1024, 1)
	require.NoError(t, err)
	drop, err := random.Image(1024, 1)
	require.NoError(t, err)
	ref := func(s string) name.Reference {
		r, err := name.ParseReference(c.ProxyAddr()+"/"+s, name.Insecure)
		require.NoError(t, err)
		return r
	}
	require.NoError(t, remote.Write(ref("team/keep:v1"), keep, remote.WithContext(t.Context())))
	require.NoError(t, remote.Write(ref("team/drop:v1"), drop, remote.WithContext(t.Context())))
	dd, err := drop.Digest()
	require.NoError(t, err)
	require.NoError(t, remote.Delete(ref("team/drop@"+dd.String()), remote.WithContext(t.Context())))

	runCmd := func(args ...string) (string, error) {
		f := testFactory()
		cmd := NewCmdGC(f, nil)
		cmd.SetArgs(append(args, "--endpoints-file", ep, "--grace", "0s"))
		cmd.SetOut(&bytes.Buffer{})
		cmd.SetErr(&bytes.Buffer{})
		err := cmd.ExecuteContext(t.Context())
		return f.IOStreams.Out.(*bytes.Buffer).String(), err
	}
	// The write-backs of what was just pushed (the commit's, and the one each manifest push's
	// touch queues, writeback.touch_delay later) may still hold a blob ("in use"): wait until
	// a dry run finds all three of the deleted image's blobs collectable, on the origin and in
	// the backend (the total row's WOULD COLLECT column: REFERENCED is 6 too).
	var out string
	require.Eventually(t, func() bool {
		out, err = runCmd("--dry-run")
		require.NoError(t, err)
		f := strings.Fields(lineWith(out, "total"))
		return len(f) > 3 && f[3] == "6"
	}, time.Minute, 50*time.Millisecond)
	t.Log(out)
	require.Contains(t, out, "WOULD COLLECT")
	require.Contains(t, out, "Dry run: nothing was deleted.")
	require.Contains(t, lineWith(out, "backend"), " 3 ")

	out, err = runCmd("-o", "json")
	require.NoError(t, err)
	var rep gc.Report
	require.NoError(t, json.Unmarshal([]byte(out), &rep), out)
	require.False(t, rep.DryRun)
	require.Equal(t, 6, rep.Totals().Collected, out)
	require.Equal(t, 3, rep.Marked, "the kept image: manifest, config, layer")

	img, err := remote.Image(ref("team/keep:v1"), remote.WithContext(t.Context()))
	require.NoError(t, err)
	layers, err := img.Layers()
	require.NoError(t, err)
	rc, err := layers[0].Compressed()
	require.NoError(t, err)
	require.NoError(t, rc.Close())

	out, err = runCmd()
	require.NoError(t, err)
	require.Contains(t, lineWith(out, "total"), " 0 ")
}

func lineWith(s, sub string) string {
	for l := range strings.SplitSeq(s, "\n") {
		if strings.Contains(l, sub) {
			return l
		}
	}
	return ""
}
