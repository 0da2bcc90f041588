package agent_test

import (
	"bytes"
	"context"
	"net"
	"net/http"
	"path/filepath"
	"testing"
	"time"

	"github.com/opencontainers/go-digest"
	"github.com/stretchr/testify/require"

	"github.com/krakenctl/krakenctl/backend/memory"
	"github.com/krakenctl/krakenctl/ring"
	"github.com/krakenctl/krakenctl/server/agent"
	"github.com/krakenctl/krakenctl/server/buildindex"
	"github.com/krakenctl/krakenctl/server/client"
	originsrv "github.com/krakenctl/krakenctl/server/origin"
	"github.com/krakenctl/krakenctl/server/tracker"
)

// stack is a real cluster in this process: one origin (seeding the swarm), a tracker and a
// single-node build-index that checks content on the origin. Agents started with
// stack.agent pull through it.
type stack struct {
	origin     string
	tracker    string
	buildIndex string
	hc         *http.Client
	origins    *client.Cluster
	index      *client.BuildIndex
}

// run starts a role's Run in the background and stops it at cleanup, failing the test if it
// does not stop cleanly.
func run(t *testing.T, fn func(context.Context) error) {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- fn(ctx) }()
	t.Cleanup(func() {
		cancel()
		require.NoError(t, <-done)
	})
}

func listen(t *testing.T) net.Listener {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	return ln
}

func startStack(t *testing.T) *stack {
	t.Helper()
	tr := &http.Transport{}
	t.Cleanup(tr.CloseIdleConnections)
	s := &stack{hc: &http.Client{Transport: tr}}
	dir := t.TempDir()

	oln, pln := listen(t), listen(t)
	s.origin = oln.Addr().String()
	osrv, err := originsrv.New(originsrv.Config{
		Listen: s.origin, Advertise: s.origin,
		Store: originsrv.StoreConfig{Dir: filepath.Join(dir, "origin")},
		Ring:  ring.Config{Members: []string{s.origin}, Replicas: 1},
	}, originsrv.Deps{Listener: oln, PeerListener: pln, Backend: memory.New(), HTTPClient: s.hc})
	require.NoError(t, err)
	run(t, osrv.Run)

	tln := listen(t)
	s.tracker = tln.Addr().String()
	tsrv, err := tracker.New(tracker.Config{Listen: s.tracker, Origins: []string{s.origin}, Replicas: 1},
		tracker.Deps{Listener: tln, HTTPClient: s.hc})
	require.NoError(t, err)
	run(t, tsrv.Run)

	bln, rln := listen(t), listen(t)
	s.buildIndex = bln.Addr().String()
	verify := true
	bcfg := buildindex.Config{
		Listen: s.buildIndex, RaftListen: rln.Addr().String(), Dir: filepath.Join(dir, "build-index"),
		Origins: []string{s.origin}, VerifyContent: &verify,
	}
	bcfg.Raft.NodeID = "bi"
	bcfg.Raft.Bootstrap = true
	bcfg.Raft.HeartbeatTimeout = 300 * time.Millisecond
	bcfg.Raft.ElectionTimeout = 300 * time.Millisecond
	bcfg.Raft.LeaderLeaseTimeout = 150 * time.Millisecond
	bcfg.Raft.CommitTimeout = 5 * time.Millisecond
	bsrv, err := buildindex.New(bcfg, buildindex.Deps{Listener: bln, RaftListener: rln, HTTPClient: s.hc})
	require.NoError(t, err)
	run(t, bsrv.Run)

	s.origins = client.NewCluster([]string{s.origin}, s.hc)
	s.index = client.NewBuildIndex(s.buildIndex, s.hc)
	require.Eventually(t, func() bool {
		return client.NewOrigin(s.origin, s.hc).Ready(t.Context()) == nil && s.index.Ready(t.Context()) == nil
	}, 60*time.Second, 10*time.Millisecond, "the origin and the build-index are ready")
	return s
}

// agent starts an agent of the stack; tweak may change its config (its build_index is the
// stack's unless tweak changes it).
func (s *stack) agent(t *testing.T, tweak func(*agent.Config)) *testAgent {
	t.Helper()
	return startAgent(t, nil, func(c *agent.Config) {
		c.Trackers = []string{s.tracker}
		c.BuildIndex = []string{s.buildIndex}
		if tweak != nil {
			tweak(c)
		}
	})
}

// push uploads a blob to the origins under namespace repo and returns its digest.
func (s *stack) push(t *testing.T, repo string, b []byte) digest.Digest {
	t.Helper()
	d := digest.FromBytes(b)
	_, err := s.origins.Push(t.Context(), repo, d, bytes.NewReader(b), int64(len(b)), client.UploadOptions{})
	require.NoError(t, err)
	return d
}

// tag points repo:tag at d on the build-index.
func (s *stack) tag(t *testing.T, repo, tag string, d digest.Digest) {
	t.Helper()
	_, err := s.index.PutTag(t.Context(), repo, tag, d)
	require.NoError(t, err)
}
