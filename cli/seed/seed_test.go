package seed

import (
	"bytes"
	"context"
	"encoding/json"
	"log/slog"
	"net/http"
	"path/filepath"
	"strings"
	"testing"

	"github.com/google/go-containerregistry/pkg/name"
	"github.com/google/go-containerregistry/pkg/v1/random"
	"github.com/google/go-containerregistry/pkg/v1/remote"
	"github.com/opencontainers/go-digest"
	"github.com/spf13/cobra"
	"github.com/stretchr/testify/require"
	"go.uber.org/goleak"

	"github.com/krakenctl/krakenctl/cli/cmdutil"
	"github.com/krakenctl/krakenctl/cli/iostreams"
	"github.com/krakenctl/krakenctl/server/client"
	"github.com/krakenctl/krakenctl/server/dev"
	"github.com/krakenctl/krakenctl/server/dev/devtest"
	"github.com/krakenctl/krakenctl/server/seed"
)

func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m)
}

const hex64 = "4a5c1e6f0d2b3a4c5d6e7f8091a2b3c4d5e6f708192a3b4c5d6e7f8091a2b3c4"

func testFactory() *cmdutil.Factory {
	ios, _, _, _ := iostreams.Test()
	return &cmdutil.Factory{IOStreams: ios, HTTPClient: func() *http.Client { return &http.Client{} },
		Logger: func() *slog.Logger { return slog.New(slog.DiscardHandler) }}
}

func Test_NewCmdSeed(t *testing.T) {
	t.Parallel()
	d := digest.Digest("sha256:" + hex64)
	tests := []struct {
		name    string
		args    []string
		want    []seed.Target
		check   func(t *testing.T, o *Options)
		wantErr string
	}{
		{name: "tag", args: []string{"team/app:v1"}, want: []seed.Target{{Repo: "team/app", Tag: "v1"}},
			check: func(t *testing.T, o *Options) {
				require.Equal(t, seed.DefaultParallel, o.Parallel)
				require.Equal(t, "table", o.Output)
				require.Empty(t, o.Agents)
			}},
		{name: "latest and registry port-free repo", args: []string{"app"}, want: []seed.Target{{Repo: "app", Tag: "latest"}}},
		{name: "by digest", args: []string{"team/app@" + d.String()}, want: []seed.Target{{Repo: "team/app", Digest: d}}},
		{name: "bare digest", args: []string{hex64}, want: []seed.Target{{Repo: DefaultNamespace, Digest: d, Blob: true}}},
		{name: "bare digest as manifest in a namespace", args: []string{d.String(), "--manifest", "--namespace", "team/x"},
			want: []seed.Target{{Repo: "team/x", Digest: d}}},
		{name: "several, agents, referrers, json", args: []string{"a:1", "b@" + d.String(), "--agents", "all", "--referrers", "--parallel", "2", "-o", "json"},
			want: []seed.Target{{Repo: "a", Tag: "1"}, {Repo: "b", Digest: d}},
			check: func(t *testing.T, o *Options) {
				require.Equal(t, []string{"all"}, o.Agents)
				require.True(t, o.Referrers)
				require.Equal(t, 2, o.Parallel)
				require.Equal(t, "json", o.Output)
			}},
		{name: "agent list", args: []string{"a:1", "--agents", "127.0.0.1:1,127.0.0.2:1"}, want: []seed.Target{{Repo: "a", Tag: "1"}},
			check: func(t *testing.T, o *Options) { require.Equal(t, []string{"127.0.0.1:1", "127.0.0.2:1"}, o.Agents) }},
		{name: "no argument", wantErr: "at least one REF or DIGEST"},
		{name: "upper-case repository", args: []string{"Team/app:v1"}, wantErr: `invalid argument "Team/app:v1": repository`},
		{name: "bad tag", args: []string{"team/app:-x"}, wantErr: `invalid argument "team/app:-x": tag`},
		{name: "bad digest", args: []string{"team/app@sha256:xyz"}, wantErr: `invalid argument "team/app@sha256:xyz": digest`},
		{name: "bad bare digest", args: []string{"sha256:abc"}, wantErr: `is not a sha256 digest`},
		{name: "zero parallel", args: []string{"a:1", "--parallel", "0"}, wantErr: "invalid --parallel 0"},
		{name: "all and addresses", args: []string{"a:1", "--agents", "all,127.0.0.1:1"}, wantErr: `invalid --agents: "all" means`},
		{name: "bad namespace", args: []string{hex64, "--namespace", "Bad"}, wantErr: `invalid --namespace "Bad"`},
		{name: "bad output", args: []string{"a:1", "-o", "wide"}, wantErr: `invalid --output "wide"`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			var got *Options
			cmd := NewCmdSeed(testFactory(), func(_ context.Context, o *Options) error { got = o; return nil })
			cmd.SetArgs(tt.args)
			cmd.SetOut(&bytes.Buffer{})
			cmd.SetErr(&bytes.Buffer{})
			cmd.SetFlagErrorFunc(func(c *cobra.Command, err error) error { return &cmdutil.FlagError{Err: err} })
			err := cmd.ExecuteContext(t.Context())
			if tt.wantErr != "" {
				require.ErrorContains(t, err, tt.wantErr)
				require.Nil(t, got)
				require.Equal(t, cmdutil.ExitUsage, cmdutil.ExitCode(err))
				return
			}
			require.NoError(t, err)
			require.Equal(t, tt.want, got.Targets)
			if tt.check != nil {
				tt.check(t, got)
			}
		})
	}
}

// TestRunSeedsImageOnOriginsAndAgents runs the command against a dev cluster named by its
// endpoints file: a multi-arch image pushed through the proxy is seeded by tag on every agent,
// the table and the JSON say so, and an unknown tag next to it fails the run after the image
// was seeded.
func TestRunSeedsImageOnOriginsAndAgents(t *testing.T) {
	dir := t.TempDir()
	ep := filepath.Join(dir, "endpoints.yaml")
	c := devtest.StartConfig(t, dev.Config{Origins: 2, Agents: 2, BuildIndex: true, Proxy: true, Dir: filepath.Join(dir, "state"), EndpointsFile: ep})
	idx, err := random.Index(8<<10, 1, 2)
	require.NoError(t, err)
	ref, err := name.ParseReference(c.ProxyAddr()+"/team/app:v1", name.Insecure)
	require.NoError(t, err)
	require.NoError(t, remote.WriteIndex(ref, idx, remote.WithContext(t.Context())))

	runCmd := func(args ...string) (string, error) {
		f := testFactory()
		cmd := NewCmdSeed(f, nil)
		cmd.SetArgs(append(args, "--endpoints-file", ep))
		cmd.SetOut(&bytes.Buffer{})
		cmd.SetErr(&bytes.Buffer{})
		err := cmd.ExecuteContext(t.Context())
		return f.IOStreams.Out.(*bytes.Buffer).String(), err
	}

	out, err := runCmd("team/app:v1", "--agents", "all", "-o", "json")
	require.NoError(t, err)
	var rep seed.Report
	require.NoError(t, json.Unmarshal([]byte(out), &rep))
	require.Len(t, rep.Blobs, 1+2*(1+1+1))
	kinds := map[seed.Kind]int{}
	for _, b := range rep.Blobs {
		kinds[b.Kind]++
		require.Len(t, b.Agents, 2)
		require.Equal(t, 2, seed.Warmed(b.Agents))
		require.Equal(t, len(b.Origins), seed.Warmed(b.Origins))
		for _, a := range c.Agents() {
			ts, err := client.NewAgent(a, nil).Torrents(t.Context(), b.Digest)
			require.NoError(t, err)
			require.Len(t, ts, 1)
			require.Equal(t, "seeding", ts[0].State)
		}
	}
	require.Equal(t, map[seed.Kind]int{seed.KindIndex: 1, seed.KindManifest: 2, seed.KindConfig: 2, seed.KindLayer: 2}, kinds)

	out, err = runCmd("team/app:v1", "team/app:nope")
	require.ErrorContains(t, err, "team/app:nope")
	require.ErrorContains(t, err, "no tag")
	require.Equal(t, cmdutil.ExitError, cmdutil.ExitCode(err))
	require.Contains(t, out, "DIGEST")
	require.Contains(t, out, "7 blobs seeded, 0 failed.")
	require.NotContains(t, out, "AGENTS", "no agents column without --agents")
	d, err := idx.Digest()
	require.NoError(t, err)
	line := lineWith(out, d.String())
	require.Contains(t, line, "index")
	require.Contains(t, line, "2/2")

	missing := digest.FromString("not anywhere")
	out, err = runCmd(missing.String())
	require.Error(t, err)
	require.ErrorContains(t, err, "1 of 1 blob failed")
	require.ErrorContains(t, err, missing.String())
	require.Contains(t, lineWith(out, missing.String()), "0/2")
}

func lineWith(s, sub string) string {
	for l := range strings.SplitSeq(s, "\n") {
		if strings.Contains(l, sub) {
			return l
		}
	}
	return ""
}
