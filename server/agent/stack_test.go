package agent_test

import (
	"bytes"
	"net"
	"net/http"
	"testing"

	"github.com/opencontainers/go-digest"
	"github.com/stretchr/testify/require"

	"github.com/krakenctl/krakenctl/backend/memory"
	"github.com/krakenctl/krakenctl/server/agent"
	"github.com/krakenctl/krakenctl/server/buildindex"
	"github.com/krakenctl/krakenctl/server/client"
	"github.com/krakenctl/krakenctl/server/cluster"
	"github.com/krakenctl/krakenctl/server/cluster/clustertest"
)

// stack is a real cluster in this process (server/cluster): one origin (seeding the swarm), a
// tracker and a single-node build-index that checks content on the origin. Agents started
// with stack.agent pull through it.
type stack struct {
	c          *cluster.Cluster
	origin     string
	tracker    string
	buildIndex string
	hc         *http.Client
	origins    *client.Cluster
	index      *client.BuildIndex
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
	c := clustertest.Start(t, cluster.Spec{
		Origins: 1, Backend: memory.New(), Trackers: 1, BuildIndexes: 1,
		BuildIndexConfig: func(_ int, c *buildindex.Config) { clustertest.FastRaft(c) },
	}, cluster.Deps{Logger: testLogger(t)})
	s := &stack{
		c: c, hc: &http.Client{Transport: tr},
		origin: c.Addr(cluster.Origin, 0), tracker: c.Addr(cluster.Tracker, 0), buildIndex: c.Addr(cluster.BuildIndex, 0),
	}
	s.origins = client.NewCluster([]string{s.origin}, s.hc)
	s.index = client.NewBuildIndex(s.buildIndex, s.hc)
	return s
}

// agent starts an agent of the stack; tweak may change its config (its tracker and
// build_index are the stack's unless tweak changes them). It does not wait for the agent to be
// ready: one given no reachable build-index never is.
func (s *stack) agent(t *testing.T, tweak func(*agent.Config)) *testAgent {
	t.Helper()
	i, err := s.c.AddAgent(tweak)
	require.NoError(t, err)
	return newTestAgent(t, s.c, i)
}

// push uploads a blob to the origins under namespace repo and returns its digest.
func (s *stack) push(t *testing.T, repo string, b []byte, link func(digest.Digest) string) digest.Digest {
	t.Helper()
	d := digest.FromBytes(b)
	_, err := s.origins.Push(t.Context(), repo, d, bytes.NewReader(b), int64(len(b)), client.UploadOptions{})
	require.NoError(t, err)
	// As the proxy does: the repository holds the content, so agents serve it under its name.
	_, err = s.index.PutLink(t.Context(), repo, link(d), d)
	require.NoError(t, err)
	return d
}

// tag points repo:tag at d on the build-index.
func (s *stack) tag(t *testing.T, repo, tag string, d digest.Digest) {
	t.Helper()
	_, err := s.index.PutTag(t.Context(), repo, tag, d)
	require.NoError(t, err)
}
