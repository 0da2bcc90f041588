package e2e

import (
	"context"
	"encoding/json"
	"errors"
	"io"
	"io/fs"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/google/go-containerregistry/pkg/name"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/mutate"
	"github.com/google/go-containerregistry/pkg/v1/random"
	"github.com/google/go-containerregistry/pkg/v1/remote"
	"github.com/google/go-containerregistry/pkg/v1/validate"
	"github.com/opencontainers/go-digest"
	"github.com/stretchr/testify/require"

	"github.com/krakenctl/krakenctl/server/api"
	"github.com/krakenctl/krakenctl/server/client"
	"github.com/krakenctl/krakenctl/server/httpserve"
	"github.com/krakenctl/krakenctl/server/pki"
)

// restart starts the same dev up again (same state directory, same endpoints file, new
// ephemeral ports) after it stopped or was killed, and waits for its new endpoints file.
func (c *devCluster) restart() {
	t := c.t
	t.Helper()
	<-c.exited
	// A killed dev up leaves its endpoints file behind: wait for the new one.
	if err := os.Remove(c.file()); err != nil && !errors.Is(err, fs.ErrNotExist) {
		require.NoError(t, err, "remove the stale endpoints file")
	}
	out, err := os.OpenFile(c.out, os.O_WRONLY|os.O_APPEND, 0o644)
	require.NoError(t, err)
	stdout, err := os.OpenFile(c.stdout, os.O_WRONLY|os.O_APPEND, 0o644)
	require.NoError(t, err)
	c.cmd = exec.Command(c.cmd.Path, c.cmd.Args[1:]...)
	c.cmd.Stdout, c.cmd.Stderr = stdout, out
	c.exited = make(chan struct{})
	require.NoError(t, c.cmd.Start())
	exited := c.exited
	go func() { _ = c.cmd.Wait(); _ = out.Close(); _ = stdout.Close(); close(exited) }()
	require.Eventually(t, func() bool {
		e, err := api.ReadEndpoints(c.file())
		if err != nil {
			return false
		}
		c.ep = e
		return true
	}, 2*time.Minute, 20*time.Millisecond, "dev up did not come back")
}

// kill ends dev up with SIGKILL, as a crash or an OOM kill does: nothing is shut down cleanly.
func (c *devCluster) kill() {
	c.t.Helper()
	require.NoError(c.t, c.cmd.Process.Kill())
	<-c.exited
}

func (c *devCluster) file() string { return filepath.Join(c.dir, "endpoints.yaml") }

// tagOn reads repo:tag on c's build-index; "" when it has no such tag.
func (c *devCluster) tagOn(ctx context.Context, repo, tag string) digest.Digest {
	c.t.Helper()
	var hc *http.Client
	if c.ep.TLS != nil {
		p, err := pki.Load(pki.Config{CAFile: c.ep.TLS.CAFile, CertFile: c.ep.TLS.CertFile, KeyFile: c.ep.TLS.KeyFile})
		require.NoError(c.t, err)
		hc = httpserve.NewClient(httpserve.ClientOptions{DialTLS: p.DialTLS})
	}
	bi := client.NewBuildIndexes(c.ep.BuildIndex, hc, client.BuildIndexesOptions{})
	got, err := bi.GetTag(ctx, repo, tag, false)
	if client.IsNotFound(err) {
		return ""
	}
	require.NoError(c.t, err)
	return got.Digest
}

// replication is c's build-index's replication status.
func (c *devCluster) replication(ctx context.Context) api.ReplicationStatus {
	c.t.Helper()
	st, err := client.NewBuildIndex(c.ep.BuildIndex[0], nil).ReplicationStatus(ctx)
	require.NoError(c.t, err)
	return st
}

// waitFor polls cond until it holds or timeout passes, then fails with what and the
// replication status of src as it was last seen (testify's messages are evaluated once, at
// the start).
func waitFor(t *testing.T, src *devCluster, timeout time.Duration, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for !cond() {
		if time.Now().After(deadline) {
			js, _ := json.MarshalIndent(src.replication(t.Context()), "", "  ")
			t.Fatalf("%s (after %s); replication status of the source:\n%s", what, timeout, js)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// linuxImage is a random image docker can pull on this machine: layers of size bytes, a config
// that names linux/amd64.
func linuxImage(t *testing.T, size int64, layers int64) v1.Image {
	t.Helper()
	img, err := random.Image(size, layers)
	require.NoError(t, err)
	cf, err := img.ConfigFile()
	require.NoError(t, err)
	cf = cf.DeepCopy()
	cf.OS, cf.Architecture = "linux", "amd64"
	img, err = mutate.ConfigFile(img, cf)
	require.NoError(t, err)
	return img
}

func pushImage(t *testing.T, ref string, img v1.Image) digest.Digest {
	t.Helper()
	r, err := name.ParseReference(ref, name.Insecure)
	require.NoError(t, err)
	require.NoError(t, remote.Write(r, img, remote.WithContext(t.Context())))
	d, err := img.Digest()
	require.NoError(t, err)
	return digest.Digest(d.String())
}

// Replication by rule between two dev clusters: a tag pushed to A reaches B with all its
// content (docker pulls it from B's agent, nothing pushed to B); a repository no rule matches
// stays home; a remote that is down gets the last of two moves of a tag when it is back; and a
// source killed mid-copy resumes after its restart, leaving the remote whole.
func TestReplicationRules(t *testing.T) {
	t.Parallel()
	ctx := t.Context()
	b := devUp(t, 1)
	a := devUp(t, 1, "--replicate", "^team/="+b.file())

	// 1. A tag put on A reaches B; docker pulls it from B's agent.
	img := linuxImage(t, 256<<10, 2)
	v1d := pushImage(t, a.proxy()+"/team/app:v1", img)
	pushImage(t, a.proxy()+"/other/app:v1", linuxImage(t, 1024, 1))
	waitFor(t, a, 2*time.Minute, "team/app:v1 did not reach B", func() bool { return b.tagOn(ctx, "team/app", "v1") == v1d })
	// A marker pushed after other/app shows the queue has moved past it.
	marker := pushImage(t, a.proxy()+"/team/app:marker", linuxImage(t, 1024, 1))
	waitFor(t, a, 2*time.Minute, "team/app:marker did not reach B", func() bool { return b.tagOn(ctx, "team/app", "marker") == marker })
	require.Empty(t, b.tagOn(ctx, "other/app", "v1"), "no rule matches other/: it stays on A")
	st := a.replication(ctx)
	require.Len(t, st.Remotes, 1)
	require.Equal(t, "endpoints", st.Remotes[0].Name)
	require.GreaterOrEqual(t, st.Remotes[0].Replicated, int64(2))
	require.Positive(t, st.Remotes[0].Bytes)

	if os.Getenv("DOCKER_HOST") != "" || os.Getenv("KRAKENCTL_REQUIRE_REAL_SERVERS") == "1" {
		d := newDockerCLI(t)
		ref := b.ep.Agents[0] + "/team/app:v1"
		d.run("pull", ref)
		cfg, err := img.ConfigName()
		require.NoError(t, err)
		require.Equal(t, cfg.String(), d.imageID(ref), "B's agent serves the image pushed to A")
		d.run("rmi", "-f", ref) // here, not in a cleanup: t.Context() is done by then
	}

	// 2. B goes down; the tag moves twice on A; B comes back and ends on the last value.
	b.stop()
	pushImage(t, a.proxy()+"/team/app:v2", linuxImage(t, 64<<10, 1))
	last := pushImage(t, a.proxy()+"/team/app:v2", linuxImage(t, 64<<10, 1))
	waitFor(t, a, time.Minute, "A queues the tag while B is down, and says why it waits", func() bool {
		r := a.replication(ctx).Remotes[0]
		return r.Pending > 0 && r.LastError != ""
	})
	r := a.replication(ctx).Remotes[0]
	require.Zero(t, r.Parked, "a remote that is down is retried, not parked: %+v", r)
	b.restart()
	waitFor(t, a, 2*time.Minute, "B did not converge on the last value", func() bool { return b.tagOn(ctx, "team/app", "v2") == last })
	require.Equal(t, v1d, b.tagOn(ctx, "team/app", "v1"), "B kept what it had")
	waitFor(t, a, time.Minute, "A's queue did not drain", func() bool { return a.replication(ctx).Remotes[0].Pending == 0 })

	// 3. A is killed while it copies a large image to B; after A's restart B gets all of it.
	b.stop()
	big := linuxImage(t, 16<<20, 8)
	bigD := pushImage(t, a.proxy()+"/team/big:v1", big)
	layers, err := big.Layers()
	require.NoError(t, err)
	b.restart()
	bOrigins := client.NewCluster(b.ep.Origins, nil)
	arrived := func() bool {
		for _, l := range layers {
			ld, err := l.Digest()
			require.NoError(t, err)
			if _, err := bOrigins.Origin(b.ep.Origins[0]).Stat(ctx, "team/big", digest.Digest(ld.String())); err == nil {
				return true
			}
		}
		return false
	}
	require.Eventually(t, arrived, 2*time.Minute, 5*time.Millisecond, "no layer of team/big reached B")
	a.kill()
	require.Empty(t, b.tagOn(ctx, "team/big", "v1"), "A died before the tag, which goes last, was sent")
	a.restart()
	waitFor(t, a, 3*time.Minute, "the copy did not resume after A's restart", func() bool { return b.tagOn(ctx, "team/big", "v1") == bigD })
	pulled, err := remote.Image(mustRef(t, b.ep.Agents[0]+"/team/big:v1"), remote.WithContext(ctx))
	require.NoError(t, err)
	require.NoError(t, validate.Image(pulled), "every blob of the image is whole on B")
	st = a.replication(ctx)
	require.Zero(t, st.Remotes[0].Parked)
	js, err := json.Marshal(st)
	require.NoError(t, err)
	t.Logf("A's replication status after the restart: %s", js)
}

// Replication that cannot succeed parks, says why, and succeeds after `replicate retry` once
// the cause is fixed: here the source lost a layer of the image (every origin's copy and the
// storage backend's), so no retry could send it until the layer is pushed again.
func TestReplicationParksAndRetries(t *testing.T) {
	t.Parallel()
	ctx := t.Context()
	b := devUp(t, 0)
	// The remote's endpoints file does not exist yet: A queues and waits for it.
	remoteFile := filepath.Join(t.TempDir(), "dc2.yaml")
	a := devUp(t, 0, "--replicate", remoteFile)

	img := linuxImage(t, 4096, 2)
	d := pushImage(t, a.proxy()+"/team/app:v1", img)
	waitFor(t, a, time.Minute, "A waits for the remote's endpoints file", func() bool {
		r := a.replication(ctx).Remotes[0]
		return r.Pending == 1 && strings.Contains(r.LastError, "endpoints file")
	})

	// The source loses a layer: every origin's copy and the backend's, while A is down (an
	// origin notices a blob gone from its disk only when it opens its store).
	a.stop()
	layers, err := img.Layers()
	require.NoError(t, err)
	lost, err := layers[0].Digest()
	require.NoError(t, err)
	var copies []string
	require.NoError(t, filepath.WalkDir(filepath.Join(a.dir, "state"), func(p string, e fs.DirEntry, err error) error {
		if err == nil && e.Name() == lost.Hex {
			copies = append(copies, p)
		}
		return err
	}))
	require.NotEmpty(t, copies)
	for _, p := range copies {
		require.NoError(t, os.RemoveAll(p))
	}
	a.restart()

	src, err := os.ReadFile(b.file())
	require.NoError(t, err)
	require.NoError(t, os.WriteFile(remoteFile, src, 0o644))
	waitFor(t, a, 2*time.Minute, "an image the source cannot send whole is parked", func() bool { return a.replication(ctx).Remotes[0].Parked == 1 })
	r := a.replication(ctx).Remotes[0]
	require.Equal(t, "dc2", r.Name)
	require.Zero(t, r.Pending)
	require.Len(t, r.Items, 1)
	require.True(t, r.Items[0].Parked)
	require.Equal(t, "team/app", r.Items[0].Repo)
	require.Equal(t, "v1", r.Items[0].Tag)
	require.Contains(t, r.Items[0].LastError, lost.Hex)
	require.Contains(t, r.LastError, "lacks")
	require.Empty(t, b.tagOn(ctx, "team/app", "v1"), "B has no tag whose content it lacks")

	// The operator's view: replicate status, as a table and as JSON.
	table := runCmd(t, nil, bin, "replicate", "status", "--endpoints-file", a.file())
	require.Regexp(t, `dev \S+ \(leader\) +dc2 +0 +1 `, table, "node, remote, pending 0, parked 1")
	var nodes []struct {
		Address string `json:"address"`
		api.ReplicationStatus
	}
	js := runCmd(t, nil, bin, "replicate", "status", "--endpoints-file", a.file(), "-o", "json")
	require.NoError(t, json.Unmarshal([]byte(js), &nodes), js)
	require.Len(t, nodes, 1)
	require.Equal(t, a.ep.BuildIndex[0], nodes[0].Address)
	require.Equal(t, 1, nodes[0].Remotes[0].Parked)

	// A retry of a remote no rule names is a clear error and changes nothing.
	_, err = tryCmd(t, nil, bin, "replicate", "retry", "--remote", "nope", "--endpoints-file", a.file())
	require.ErrorContains(t, err, `no replication rule names remote "nope"`, "stderr names the problem")
	require.Equal(t, 1, a.replication(ctx).Remotes[0].Parked)

	// The layer comes back (pushed again, no tag touched); the retried item goes through.
	repo, err := name.NewRepository(a.proxy()+"/team/app", name.Insecure)
	require.NoError(t, err)
	require.NoError(t, remote.WriteLayer(repo, layers[0], remote.WithContext(ctx)))
	var retried []struct {
		Requeued int `json:"requeued"`
	}
	js = runCmd(t, nil, bin, "replicate", "retry", "--remote", "dc2", "team/app:v1", "--endpoints-file", a.file(), "-o", "json")
	require.NoError(t, json.Unmarshal([]byte(js), &retried), js)
	require.Len(t, retried, 1)
	require.Equal(t, 1, retried[0].Requeued)
	waitFor(t, a, 2*time.Minute, "the retried item did not land", func() bool { return b.tagOn(ctx, "team/app", "v1") == d })
	// The tag lands on B a moment before A's queue lets the item go.
	waitFor(t, a, time.Minute, "A's queue did not drain", func() bool {
		r := a.replication(ctx).Remotes[0]
		return r.Pending == 0 && r.Parked == 0
	})

	// The metrics say the same.
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, "http://"+a.ep.Admin.BuildIndex[0]+"/metrics", nil)
	require.NoError(t, err)
	resp, err := http.DefaultClient.Do(req)
	require.NoError(t, err)
	defer func() { _ = resp.Body.Close() }()
	body, err := io.ReadAll(io.LimitReader(resp.Body, 4<<20))
	require.NoError(t, err)
	for _, m := range []string{
		`krakenctl_buildindex_replication_attempts_total{remote="dc2",result="parked"} 1`,
		`krakenctl_buildindex_replication_attempts_total{remote="dc2",result="ok"} 1`,
		`krakenctl_buildindex_replication_parked{remote="dc2"} 0`,
		`krakenctl_buildindex_replication_pending{remote="dc2"} 0`,
	} {
		require.Contains(t, string(body), m)
	}
}

// Replication to a cluster that runs with TLS presents the certificate its endpoints file
// names: a certificate the remote's build-index does not let write (an origin's: it may store
// blobs on the origins, not links or tags) parks the item with the remote's 403 and leaves no
// tag; the admin's, after a retry, lands it.
func TestReplicationToATLSCluster(t *testing.T) {
	t.Parallel()
	ctx := t.Context()
	b := devUp(t, 0, "--tls")
	tlsDir := filepath.Join(b.dir, "state", "tls")
	remoteFile := filepath.Join(t.TempDir(), "secure.yaml")
	withCert := func(base string) {
		ep := b.ep
		ep.Admin = nil
		ep.TLS = &api.EndpointsTLS{CAFile: filepath.Join(tlsDir, "ca.pem"), CertFile: filepath.Join(tlsDir, base+".pem"), KeyFile: filepath.Join(tlsDir, base+"-key.pem")}
		require.NoError(t, api.WriteEndpoints(remoteFile, ep))
	}
	withCert("origin-0")
	a := devUp(t, 0, "--replicate", remoteFile)

	d := pushImage(t, a.proxy()+"/team/app:v1", linuxImage(t, 4096, 1))
	waitFor(t, a, 2*time.Minute, "a remote that refuses the certificate parks the item", func() bool { return a.replication(ctx).Remotes[0].Parked == 1 })
	r := a.replication(ctx).Remotes[0]
	require.Contains(t, r.LastError, "DENIED", "the remote's refusal is in the status")
	require.Empty(t, b.tagOn(ctx, "team/app", "v1"))

	withCert("admin")
	rr, err := client.NewBuildIndex(a.ep.BuildIndex[0], nil).ReplicationRetry(ctx, api.RetryRequest{Repo: "team/app", Tag: "v1"})
	require.NoError(t, err)
	require.Equal(t, 1, rr.Requeued)
	waitFor(t, a, 2*time.Minute, "the retried item did not land over TLS", func() bool { return b.tagOn(ctx, "team/app", "v1") == d })
}

func mustRef(t *testing.T, s string) name.Reference {
	t.Helper()
	r, err := name.ParseReference(s, name.Insecure)
	require.NoError(t, err)
	return r
}
