package tag

import (
	"bytes"
	"log/slog"
	"net/http"
	"testing"
	"time"

	"github.com/google/go-containerregistry/pkg/authn"
	"github.com/google/go-containerregistry/pkg/name"
	"github.com/google/go-containerregistry/pkg/v1/random"
	"github.com/google/go-containerregistry/pkg/v1/remote"
	"github.com/stretchr/testify/require"
	"golang.org/x/crypto/bcrypt"

	"github.com/krakenctl/krakenctl/cli/cmdutil"
	"github.com/krakenctl/krakenctl/cli/iostreams"
	"github.com/krakenctl/krakenctl/server/auth"
	"github.com/krakenctl/krakenctl/server/buildindex"
	"github.com/krakenctl/krakenctl/server/client"
	"github.com/krakenctl/krakenctl/server/cluster"
	"github.com/krakenctl/krakenctl/server/cluster/clustertest"
	"github.com/krakenctl/krakenctl/server/proxy"
)

// authProxy starts an origin, a build-index node and a proxy with auth on: pusher may do
// everything, reader may pull team/**. It returns the proxy's address once it is ready, and
// an HTTP client for it.
func authProxy(t *testing.T) (string, *http.Client) {
	t.Helper()
	c := clustertest.Start(t, cluster.Spec{
		Origins: 1, Replicas: 1, BuildIndexes: 1,
		BuildIndexConfig: func(_ int, c *buildindex.Config) { clustertest.FastRaft(c) },
	}, cluster.Deps{})
	line := func(user, pw string) string {
		l, err := auth.HtpasswdLine(user, pw, bcrypt.MinCost)
		require.NoError(t, err)
		return l
	}
	i, err := c.AddProxy(func(pc *proxy.Config) {
		pc.OriginHealth = proxy.HealthConfig{Interval: 200 * time.Millisecond, Timeout: 200 * time.Millisecond}
		pc.Auth = &auth.Config{
			Htpasswd: line("pusher", "pusher-pw") + line("reader", "reader-pw"),
			Rules: []auth.Rule{
				{Repositories: []string{"**"}, Users: []string{"pusher"}, Actions: []string{"pull", "push", "delete"}},
				{Repositories: []string{"team/**"}, Users: []string{"reader"}, Actions: []string{"pull"}},
			},
		}
	})
	require.NoError(t, err)
	addr := c.Addr(cluster.Proxy, i)
	tr := &http.Transport{}
	t.Cleanup(tr.CloseIdleConnections)
	hc := &http.Client{Transport: tr}
	require.Eventually(t, func() bool {
		req, err := http.NewRequestWithContext(t.Context(), http.MethodGet, "http://"+addr+"/readyz", nil)
		if err != nil {
			return false
		}
		resp, err := hc.Do(req)
		if err != nil {
			return false
		}
		_ = resp.Body.Close()
		return resp.StatusCode == http.StatusOK
	}, 10*time.Second, 10*time.Millisecond, "proxy ready")
	return addr, hc
}

// tagCmd runs `tag ARGS` as the root command would, with stdin, and returns stdout.
func tagCmd(t *testing.T, hc *http.Client, stdin string, args ...string) (string, error) {
	t.Helper()
	ios, in, out, _ := iostreams.Test()
	in.WriteString(stdin)
	f := &cmdutil.Factory{IOStreams: ios, HTTPClient: func() *http.Client { return hc },
		Logger: func() *slog.Logger { return slog.New(slog.DiscardHandler) }}
	cmd := NewCmdTag(f)
	cmd.SetArgs(args)
	cmd.SetOut(&bytes.Buffer{})
	cmd.SetErr(&bytes.Buffer{})
	cmd.SilenceErrors, cmd.SilenceUsage = true, true
	err := cmd.ExecuteContext(t.Context())
	return out.String(), err
}

// TestTagsThroughRegistry: the tag commands talk the distribution API to the proxy with
// credentials, and the proxy's rules decide: the reader may read and list, not move or delete.
func TestTagsThroughRegistry(t *testing.T) {
	t.Parallel()
	addr, hc := authProxy(t)
	img, err := random.Image(1024, 1)
	require.NoError(t, err)
	ref, err := name.ParseReference(addr+"/team/app:v1", name.Insecure)
	require.NoError(t, err)
	require.NoError(t, remote.Write(ref, img, remote.WithContext(t.Context()), remote.WithTransport(hc.Transport),
		remote.WithAuth(&authn.Basic{Username: "pusher", Password: "pusher-pw"})))
	d, err := img.Digest()
	require.NoError(t, err)

	reg := []string{"--registry", "http://" + addr, "--password-stdin", "--username"}
	pusher := func(args ...string) (string, error) {
		return tagCmd(t, hc, "pusher-pw\n", append(args, append(reg, "pusher")...)...)
	}
	reader := func(args ...string) (string, error) {
		return tagCmd(t, hc, "reader-pw\n", append(args, append(reg, "reader")...)...)
	}

	out, err := pusher("put", "team/app:prod", d.String())
	require.NoError(t, err)
	require.Equal(t, "team/app:prod -> "+d.String()+"\n", out)
	out, err = reader("get", "team/app:prod")
	require.NoError(t, err)
	require.Equal(t, d.String()+"\n", out)
	out, err = reader("list", "team/app")
	require.NoError(t, err)
	require.Equal(t, "TAG\nprod\nv1\n", out)
	out, err = reader("list", "team/app", "--n", "1", "--last", "prod")
	require.NoError(t, err)
	require.Equal(t, "TAG\nv1\n", out)
	out, err = reader("list")
	require.NoError(t, err)
	require.Equal(t, "REPOSITORY\nteam/app\n", out)

	_, err = reader("put", "team/app:evil", d.String())
	require.ErrorContains(t, err, "does not allow this user to do that")
	_, err = reader("delete", "team/app:prod")
	require.ErrorContains(t, err, "does not allow this user to do that")
	_, err = tagCmd(t, hc, "", "get", "team/app:prod", "--registry", "http://"+addr)
	require.ErrorContains(t, err, "wants credentials")

	out, err = pusher("delete", "team/app:prod")
	require.NoError(t, err)
	require.Equal(t, "deleted team/app:prod (was "+d.String()+")\n", out)
	_, err = reader("get", "team/app:prod")
	require.ErrorIs(t, err, client.ErrNotFound)
	require.EqualError(t, err, "tag team/app:prod not found")
	_, err = pusher("put", "team/app:x", "sha256:"+hex64)
	require.ErrorIs(t, err, client.ErrNotFound, "no such manifest in the repository")

	_, err = reader("get", "team/app:v1", "--stale")
	require.Equal(t, cmdutil.ExitUsage, cmdutil.ExitCode(err))
	_, err = reader("get", "team/app:v1", "--build-index", "127.0.0.1:1")
	require.Equal(t, cmdutil.ExitUsage, cmdutil.ExitCode(err))
}
