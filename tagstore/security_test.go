package tagstore_test

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"sync/atomic"
	"testing"
	"time"

	"github.com/hashicorp/raft"
	"github.com/stretchr/testify/require"

	"github.com/krakenctl/krakenctl/tagstore"
	"github.com/krakenctl/krakenctl/tagstore/tagstoretest"
)

// The attacks of issue 12 against the Raft port and membership, reproduced against real
// clusters on loopback, each followed by the checks that the cluster still serves and lost
// nothing it acknowledged.

// dialStream is a raft.StreamLayer that dials with dial: an attacker's NetworkTransport.
type dialStream struct {
	net.Listener
	dial func(addr string, timeout time.Duration) (net.Conn, error)
}

func (d dialStream) Dial(addr raft.ServerAddress, timeout time.Duration) (net.Conn, error) {
	return d.dial(string(addr), timeout)
}

// attacker returns hashicorp/raft's own NetworkTransport over dial (plain TCP when nil).
func attacker(t *testing.T, dial func(addr string, timeout time.Duration) (net.Conn, error)) raft.Transport {
	t.Helper()
	if dial == nil {
		trans, err := raft.NewTCPTransport("127.0.0.1:0", nil, 2, 5*time.Second, io.Discard)
		require.NoError(t, err)
		t.Cleanup(func() { _ = trans.Close() })
		return trans
	}
	ln, err := new(net.ListenConfig).Listen(t.Context(), "tcp", "127.0.0.1:0")
	require.NoError(t, err)
	trans := raft.NewNetworkTransport(dialStream{Listener: ln, dial: dial}, 2, 5*time.Second, io.Discard)
	t.Cleanup(func() { _ = trans.Close() })
	return trans
}

// tlsDialer dials with cfg (an attacker skips verifying the server: it only wants in).
func tlsDialer(cfg *tls.Config) func(string, time.Duration) (net.Conn, error) {
	cfg = cfg.Clone()
	cfg.InsecureSkipVerify = true
	return func(addr string, timeout time.Duration) (net.Conn, error) {
		ctx, cancel := context.WithTimeout(context.Background(), timeout)
		defer cancel()
		return (&tls.Dialer{Config: cfg}).DialContext(ctx, "tcp", addr)
	}
}

var forgedHeader = raft.RPCHeader{ProtocolVersion: raft.ProtocolVersionMax, ID: []byte("x"), Addr: []byte("127.0.0.1:1")}

// forgeAppend is attack X7/X8: learn the victim's term and last index, then send one
// AppendEntries with a much higher term whose entry carries data, committed at once.
func forgeAppend(trans raft.Transport, victim *tagstoretest.Node, typ raft.LogType, data []byte) error {
	var r raft.AppendEntriesResponse
	id, addr := raft.ServerID(victim.ID), raft.ServerAddress(victim.RaftAddr)
	if err := trans.AppendEntries(id, addr, &raft.AppendEntriesRequest{RPCHeader: forgedHeader}, &r); err != nil {
		return fmt.Errorf("probe: %w", err)
	}
	req := &raft.AppendEntriesRequest{
		RPCHeader: forgedHeader, Term: r.Term + 100, PrevLogEntry: r.LastLog, PrevLogTerm: r.Term,
		Entries:           []*raft.Log{{Index: r.LastLog + 1, Term: r.Term + 100, Type: typ, Data: data}},
		LeaderCommitIndex: r.LastLog + 1,
	}
	if err := trans.AppendEntries(id, addr, req, &r); err != nil {
		return err
	}
	if !r.Success {
		return errors.New("append refused by raft")
	}
	return nil
}

// forgeVote asks the victim for its vote in a far-future term: accepted, it would depose the
// leader.
func forgeVote(trans raft.Transport, victim *tagstoretest.Node) error {
	var r raft.RequestVoteResponse
	return trans.RequestVote(raft.ServerID(victim.ID), raft.ServerAddress(victim.RaftAddr), &raft.RequestVoteRequest{
		RPCHeader: forgedHeader, Term: 1 << 40, LastLogIndex: 1 << 40, LastLogTerm: 1 << 40,
	}, &r)
}

func forgedPut(t *testing.T) []byte {
	t.Helper()
	cmd, err := json.Marshal(map[string]any{"repo": "app", "tag": "forged", "digest": dg("forged"), "time": time.Now().UTC()})
	require.NoError(t, err)
	return append([]byte{1}, cmd...)
}

// requireUndisturbed checks that no forged term took hold, that the forged tag is nowhere,
// and that every acknowledged tag is everywhere.
func requireUndisturbed(t *testing.T, c *tagstoretest.Cluster, termBefore uint64, acked map[string]tagstore.Tag) {
	t.Helper()
	requireTags(t, c, acked)
	for _, n := range c.Nodes() {
		if s := n.Store(); s != nil {
			require.Less(t, s.Status().Term, termBefore+50, "a forged term took hold on %s", n)
			_, err := s.Get(t.Context(), "app", "forged", tagstore.Stale)
			require.ErrorIs(t, err, tagstore.ErrNotFound, "forged tag on %s", n)
		}
	}
}

func TestForgedRPCsWithoutClusterCertificateRefused(t *testing.T) {
	t.Parallel()
	c := tagstoretest.Start(t, tagstoretest.Options{Network: tagstoretest.MutualTLS})
	acked := putAll(t, c, "before", 10)
	c.WaitConverged()
	term := c.Leader().Store().Status().Term
	victim := c.Followers()[0]

	foreign := tagstoretest.NewCA(t, "someone else's CA")
	for name, trans := range map[string]raft.Transport{
		"plain TCP":                            attacker(t, nil),
		"foreign CA, naming the victim's peer": attacker(t, tlsDialer(foreign.ClientConfig(foreign.Issue(c.Leader().ID, tagstore.GroupBuildIndex)))),
		"no client certificate":                attacker(t, tlsDialer(&tls.Config{MinVersion: tls.VersionTLS13})),
		"cluster CA, not a build-index node":   attacker(t, tlsDialer(c.CA().ClientConfig(c.CA().Issue("node7", "agent")))),
	} {
		require.Error(t, forgeAppend(trans, victim, raft.LogCommand, forgedPut(t)), name)
		require.Error(t, forgeVote(trans, victim), name)
		require.Error(t, forgeVote(trans, c.Leader()), name)
	}

	requireUndisturbed(t, c, term, acked)
	for k, v := range putAll(t, c, "after", 5) {
		acked[k] = v
	}
	requireTags(t, c, acked)
}

func TestUnknownEntryFromClusterPeerRefused(t *testing.T) {
	t.Parallel()
	c := tagstoretest.Start(t, tagstoretest.Options{Network: tagstoretest.MutualTLS})
	acked := putAll(t, c, "before", 10)
	c.WaitConverged()
	term := c.Leader().Store().Status().Term

	// A peer with a proper build-index certificate of this cluster (a buggy or newer node, or a
	// stolen key) sends entries this node cannot apply: a command of unknown type (X8), and a
	// configuration that does not decode (hashicorp/raft panics on one).
	peer := attacker(t, tlsDialer(c.CA().ClientConfig(c.CA().Issue("node9", tagstore.GroupBuildIndex))))
	for _, victim := range append(c.Followers(), c.Leader()) {
		for name, e := range map[string]struct {
			typ  raft.LogType
			data []byte
		}{
			"unknown command":      {raft.LogCommand, []byte{0x05, '{', '}'}},
			"empty command":        {raft.LogCommand, nil},
			"garbled put":          {raft.LogCommand, []byte{1, '{'}},
			"garbled config":       {raft.LogConfiguration, []byte{0xc1, 0xff}},
			"deprecated peer type": {raft.LogAddPeerDeprecated, []byte{0x90}},
		} {
			err := forgeAppend(peer, victim, e.typ, e.data)
			require.ErrorContains(t, err, "refused entries this node cannot apply", "%s to %s", name, victim)
		}
	}
	requireUndisturbed(t, c, term, acked)

	// Nothing of it is in any log: every node restarts and the cluster carries on.
	for _, n := range c.Nodes() {
		c.Kill(n)
		c.Restart(n)
		requireTags(t, c, acked)
	}
	for k, v := range putAll(t, c, "after", 5) {
		acked[k] = v
	}
	requireUndisturbed(t, c, term, acked)
}

func TestOwnCertificateMustNameServerID(t *testing.T) {
	t.Parallel()
	ca := tagstoretest.NewCA(t, "test CA")
	open := func(server, client *tls.Config) error {
		ln, err := new(net.ListenConfig).Listen(t.Context(), "tcp", "127.0.0.1:0")
		require.NoError(t, err)
		s, err := tagstore.Open(tagstoretest.Config("bi-1", t.TempDir()), tagstore.Deps{Listener: ln, ServerTLS: server, ClientTLS: client})
		if err == nil {
			require.NoError(t, s.Close())
		}
		return err
	}
	good := ca.Issue("bi-1", tagstore.GroupBuildIndex)
	require.NoError(t, open(ca.ServerConfig(good), ca.ClientConfig(good)))

	for name, cert := range map[string]tls.Certificate{
		"another id":      ca.Issue("bi-2", tagstore.GroupBuildIndex),
		"not build-index": ca.Issue("bi-1", "agent"),
	} {
		err := open(ca.ServerConfig(cert), ca.ClientConfig(cert))
		require.ErrorIs(t, err, tagstore.ErrInvalid, name)
		require.ErrorContains(t, err, `does not name its server id "bi-1" in group "build-index"`, name)
	}
	other := ca.Issue("bi-2", tagstore.GroupBuildIndex)
	require.ErrorContains(t, open(ca.ServerConfig(good), ca.ClientConfig(other)), `CN="bi-2"`, "the client side presents another certificate")
	require.ErrorContains(t, open(ca.ServerConfig(good), nil), "needs both a server and a client configuration")

	// Certificates given through callbacks, as a reloading PKI does, are found and checked.
	srv := &tls.Config{GetConfigForClient: func(*tls.ClientHelloInfo) (*tls.Config, error) { return ca.ServerConfig(other), nil }}
	cli := &tls.Config{RootCAs: ca.Pool(), GetClientCertificate: func(*tls.CertificateRequestInfo) (*tls.Certificate, error) { return &good, nil }}
	require.ErrorContains(t, open(srv, cli), `CN="bi-2"`)
	srv = &tls.Config{GetCertificate: func(*tls.ClientHelloInfo) (*tls.Certificate, error) { return &good, nil }, ClientCAs: ca.Pool()}
	require.NoError(t, open(srv, cli))
}

// impostor serves TLS with cert on 127.0.0.1 and completes every handshake it can.
func impostor(t *testing.T, cfg *tls.Config) string {
	t.Helper()
	ln, err := tls.Listen("tcp", "127.0.0.1:0", cfg)
	require.NoError(t, err)
	t.Cleanup(func() { _ = ln.Close() })
	ctx := t.Context()
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			_ = c.(*tls.Conn).HandshakeContext(ctx)
			_ = c.Close()
		}
	}()
	return ln.Addr().String()
}

// bogus accepts TCP connections and closes them at once: attack X5's "Raft node".
func bogus(t *testing.T) string {
	t.Helper()
	ln, err := new(net.ListenConfig).Listen(t.Context(), "tcp", "127.0.0.1:0")
	require.NoError(t, err)
	t.Cleanup(func() { _ = ln.Close() })
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			_ = c.Close()
		}
	}()
	return ln.Addr().String()
}

func TestJoinOverTLSChecksTheNodesCertificate(t *testing.T) {
	t.Parallel()
	c := tagstoretest.Start(t, tagstoretest.Options{Network: tagstoretest.MutualTLS, Nodes: 1})
	acked := putAll(t, c, "before", 5)
	s := c.Leader().Store()
	ctx := t.Context()

	for name, m := range map[string]tagstore.Member{
		"certificate of another node": {ID: "node5", RaftAddr: impostor(t, c.CA().ServerConfig(c.CA().Issue("node6", tagstore.GroupBuildIndex)))},
		"not a build-index node":      {ID: "node5", RaftAddr: impostor(t, c.CA().ServerConfig(c.CA().Issue("node5", "origin")))},
		"foreign CA":                  {ID: "node5", RaftAddr: impostor(t, tagstoretest.NewCA(t, "x").ServerConfig(tagstoretest.NewCA(t, "x").Issue("node5", tagstore.GroupBuildIndex)))},
		"no TLS at all":               {ID: "node5", RaftAddr: bogus(t)},
	} {
		err := s.Join(ctx, m)
		require.ErrorIs(t, err, tagstore.ErrUnavailable, name)
		require.Len(t, s.Status().Members, 1, name)
	}
	err := s.Join(ctx, tagstore.Member{ID: "node5", RaftAddr: impostor(t, c.CA().ServerConfig(c.CA().Issue("node6", tagstore.GroupBuildIndex)))})
	require.ErrorContains(t, err, "does not name server node5")

	// A real node with its own certificate joins.
	c.AddNode()
	for k, v := range putAll(t, c, "after", 5) {
		acked[k] = v
	}
	requireTags(t, c, acked)
	require.Len(t, c.Leader().Store().Status().Members, 2)
}

func TestBogusJoinIsRolledBack(t *testing.T) {
	t.Parallel()
	// Attack X5 on a one-node cluster: a "node" that accepts TCP and closes the connection
	// passes the connection probe, and as a voter would have cost the only quorum there is.
	c := tagstoretest.Start(t, tagstoretest.Options{Network: tagstoretest.TCP, Nodes: 1,
		Configure: func(cfg *tagstore.Config) { cfg.JoinTimeout = time.Second }})
	acked := putAll(t, c, "before", 5)
	s := c.Leader().Store()

	err := s.Join(t.Context(), tagstore.Member{ID: "evil", RaftAddr: bogus(t), APIAddr: "127.0.0.1:1"})
	require.ErrorIs(t, err, tagstore.ErrUnavailable)
	require.ErrorContains(t, err, "did not answer the leader within 1s; it was removed again")
	members := s.Status().Members
	require.Len(t, members, 1)
	require.Equal(t, c.Leader().ID, members[0].ID)

	for k, v := range putAll(t, c, "after", 5) {
		acked[k] = v
	}
	requireTags(t, c, acked)
	// The same node joins properly later.
	c.AddNode()
	requireTags(t, c, acked)
}

func TestQuorumLosingRemovalRefused(t *testing.T) {
	t.Parallel()
	c := tagstoretest.Start(t, tagstoretest.Options{Network: tagstoretest.TCP})
	acked := putAll(t, c, "before", 10)
	c.WaitConverged()
	ctx := t.Context()
	down, live := c.Followers()[0], c.Followers()[1]
	c.Kill(down)

	// Attack X6: with one node of three down, removing a live one would leave the dead node
	// and the leader, two voters of which only one answers.
	s := c.Leader().Store()
	err := s.Remove(ctx, live.ID, tagstore.RemoveOptions{})
	require.ErrorIs(t, err, tagstore.ErrQuorum)
	require.ErrorContains(t, err, fmt.Sprintf("need 2 live for a quorum, but only 1 answer (%s do not)", down.ID))
	require.Len(t, s.Status().Members, 3)
	for k, v := range putAll(t, c, "during", 5) {
		acked[k] = v
	}

	// Removing the dead one is what the operator should do, and is accepted.
	require.NoError(t, s.Remove(ctx, down.ID, tagstore.RemoveOptions{}))
	require.Len(t, s.Status().Members, 2)
	for k, v := range putAll(t, c, "after", 5) {
		acked[k] = v
	}
	requireTags(t, c, acked)
}

// The server's PKI hands out configurations that reload certificates and the CA through
// callbacks, and may verify servers itself (VerifyConnection, no RootCAs). The transport keeps
// those callbacks and adds its checks after them.
func TestMutualTLSWithReloadingConfigurations(t *testing.T) {
	t.Parallel()
	var verified atomic.Int64
	c := tagstoretest.Start(t, tagstoretest.Options{
		Network: tagstoretest.MutualTLS,
		TLSConfigs: func(ca *tagstoretest.CA, cert tls.Certificate) (*tls.Config, *tls.Config) {
			server := &tls.Config{MinVersion: tls.VersionTLS13, GetConfigForClient: func(*tls.ClientHelloInfo) (*tls.Config, error) {
				return ca.ServerConfig(cert), nil
			}}
			client := &tls.Config{
				MinVersion:           tls.VersionTLS13,
				GetClientCertificate: func(*tls.CertificateRequestInfo) (*tls.Certificate, error) { return &cert, nil },
				InsecureSkipVerify:   true, // verified by VerifyConnection against the current CA, as a reloading PKI does
				VerifyConnection: func(cs tls.ConnectionState) error {
					inter := x509.NewCertPool()
					for _, c := range cs.PeerCertificates[1:] {
						inter.AddCert(c)
					}
					_, err := cs.PeerCertificates[0].Verify(x509.VerifyOptions{Roots: ca.Pool(), Intermediates: inter})
					if err == nil {
						verified.Add(1)
					}
					return err
				},
			}
			return server, client
		},
	})
	acked := putAll(t, c, "tags", 10)
	requireTags(t, c, acked)
	require.Positive(t, verified.Load(), "the configuration's own verification ran")

	// A peer of another CA is still refused on both sides.
	foreign := tagstoretest.NewCA(t, "someone else's CA")
	require.Error(t, forgeAppend(attacker(t, tlsDialer(foreign.ClientConfig(foreign.Issue("node1", tagstore.GroupBuildIndex)))),
		c.Followers()[0], raft.LogCommand, forgedPut(t)))
	err := c.Leader().Store().Join(t.Context(), tagstore.Member{ID: "node7",
		RaftAddr: impostor(t, foreign.ServerConfig(foreign.Issue("node7", tagstore.GroupBuildIndex)))})
	require.ErrorIs(t, err, tagstore.ErrUnavailable)
}

// Connections that open the Raft port and never send a byte hold nothing but themselves: the
// nodes still accept their peers, elect a new leader and commit.
func TestSilentConnectionsDoNotHoldTheRaftPort(t *testing.T) {
	t.Parallel()
	c := tagstoretest.Start(t, tagstoretest.Options{Network: tagstoretest.MutualTLS})
	acked := putAll(t, c, "before", 5)
	for _, n := range c.Nodes() {
		for range 20 {
			conn, err := (&net.Dialer{}).DialContext(t.Context(), "tcp", n.RaftAddr)
			require.NoError(t, err)
			t.Cleanup(func() { _ = conn.Close() })
		}
	}
	// The survivors must accept each other's new connections to elect a leader.
	old := c.Leader()
	c.Kill(old)
	require.NotEqual(t, old, c.Leader())
	for k, v := range putAll(t, c, "after", 5) {
		acked[k] = v
	}
	c.Restart(old)
	requireTags(t, c, acked)
}
