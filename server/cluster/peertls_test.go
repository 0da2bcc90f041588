package cluster_test

import (
	"bytes"
	"context"
	"crypto/tls"
	"crypto/x509"
	"io"
	"net"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/stretchr/testify/require"

	"github.com/krakenctl/krakenctl/server/agent"
	"github.com/krakenctl/krakenctl/server/client"
	"github.com/krakenctl/krakenctl/server/cluster"
	"github.com/krakenctl/krakenctl/server/cluster/clustertest"
	"github.com/krakenctl/krakenctl/server/origin"
	"github.com/krakenctl/krakenctl/server/pki"
	"github.com/krakenctl/krakenctl/swarm/metainfo"
	"github.com/krakenctl/krakenctl/swarm/wire"
)

// With TLS the swarm's peer port is mutual TLS too: blobs still flow origin → agent → agent, and
// the port gives nothing to a peer without a cluster certificate, with a certificate of a group
// that has no business in a swarm, or with another holder's peer id. The positive control — a
// certificate of the agent group and a peer id bound to it — gets the agent's handshake.
func TestSwarmPeersTLS(t *testing.T) {
	t.Parallel()
	ctls := clustertest.TLS(t)
	c := clustertest.Start(t, cluster.Spec{Origins: 1, Agents: 2, TLS: ctls}, cluster.Deps{})
	admin := c.Client()

	data, d := randomBlob(t, 3<<20+11)
	_, err := client.NewCluster(c.Addrs(cluster.Origin), admin).Push(t.Context(), "team/app", d, bytes.NewReader(data), int64(len(data)), client.UploadOptions{})
	require.NoError(t, err)
	stranger := caOnlyClient(t, ctls.CA)
	for _, a := range c.Addrs(cluster.Agent) {
		var got bytes.Buffer
		_, err := client.NewAgent("https://"+a, stranger).Pull(t.Context(), "team/app", d, &got, nil)
		require.NoError(t, err, a)
		require.True(t, bytes.Equal(data, got.Bytes()), "agent %s", a)
	}
	pl := metainfo.PieceLengthFor(int64(len(data)))
	peer := c.PeerAddr(cluster.Agent, 0)
	originPeer := c.PeerAddr(cluster.Origin, 0)
	reg := c.Registry(cluster.Agent, 0)

	issue := func(name string, groups ...string) tls.Certificate {
		certPEM, keyPEM, err := ctls.CA.Issue(pki.Leaf{Name: name, Groups: groups})
		require.NoError(t, err)
		cert, err := tls.X509KeyPair(certPEM, keyPEM)
		require.NoError(t, err)
		return cert
	}
	foreign, err := pki.NewCA("not the cluster CA")
	require.NoError(t, err)
	fCertPEM, fKeyPEM, err := foreign.Issue(pki.Leaf{Name: "agent-x", Groups: []string{pki.GroupAgent}})
	require.NoError(t, err)
	foreignCert, err := tls.X509KeyPair(fCertPEM, fKeyPEM)
	require.NoError(t, err)

	pool := x509.NewCertPool()
	require.True(t, pool.AppendCertsFromPEM(ctls.CA.CertPEM()))
	hello := func(id wire.PeerID) []byte {
		b, err := wire.AppendHandshake(nil, wire.Handshake{Digest: d, PeerID: id, Length: int64(len(data)), PieceLength: pl,
			Bitfield: wire.NewBitfield(int((int64(len(data)) + pl - 1) / pl))})
		require.NoError(t, err)
		return b
	}
	// exchange sends hello over nc and returns what the peer answers before it closes (or
	// 2 s of silence).
	exchange := func(nc net.Conn, hello []byte) ([]byte, error) {
		defer func() { _ = nc.Close() }()
		require.NoError(t, nc.SetDeadline(time.Now().Add(10*time.Second)))
		if _, err := nc.Write(hello); err != nil {
			return nil, err
		}
		var got bytes.Buffer
		_, err := io.CopyN(&got, nc, 4)
		return got.Bytes(), err
	}
	dialTLS := func(addr string, cert *tls.Certificate) (net.Conn, error) {
		cfg := &tls.Config{MinVersion: tls.VersionTLS13, RootCAs: pool, ServerName: "ignored", InsecureSkipVerify: true,
			NextProtos: []string{pki.PeerProtocol}}
		if cert != nil {
			cfg.Certificates = []tls.Certificate{*cert}
		}
		ctx, cancel := context.WithTimeout(t.Context(), 10*time.Second)
		defer cancel()
		nc, err := (&tls.Dialer{Config: cfg}).DialContext(ctx, "tcp", addr)
		if err != nil {
			return nil, err
		}
		// TLS 1.3: the server's verdict on the client certificate arrives with the first read.
		return nc, nil
	}

	refused := func(reason string) float64 {
		return counterValue(t, reg, "krakenctl_swarm_handshakes_refused_total", reason)
	}

	// Plain TCP with a valid swarm handshake: not a byte of the swarm back.
	nc, err := (&net.Dialer{Timeout: 5 * time.Second}).DialContext(t.Context(), "tcp", peer)
	require.NoError(t, err)
	got, err := exchange(nc, hello(wire.RandomPeerID()))
	require.Error(t, err)
	require.NotContains(t, string(got), wire.Magic, "a plain peer got the agent's handshake")
	require.Eventually(t, func() bool { return refused("tls") >= 1 }, 10*time.Second, 50*time.Millisecond)

	for _, tc := range []struct {
		name, reason string
		cert         *tls.Certificate
		id           func() wire.PeerID
	}{
		{"no certificate", "tls", nil, wire.RandomPeerID},
		{"a foreign CA's agent certificate", "tls", &foreignCert, func() wire.PeerID { return wire.BoundPeerID("agent-x") }},
		{"a proxy's certificate", "identity", ptr(issue("proxy-9", pki.GroupProxy)), func() wire.PeerID { return wire.BoundPeerID("proxy-9") }},
		{"an agent certificate with a random peer id", "identity", ptr(issue("agent-9", pki.GroupAgent)), wire.RandomPeerID},
		{"an agent certificate with another holder's peer id", "identity", ptr(issue("agent-9", pki.GroupAgent)), func() wire.PeerID { return wire.BoundPeerID("agent-0") }},
	} {
		t.Run(tc.name, func(t *testing.T) {
			before := refused(tc.reason)
			for _, addr := range []string{peer, originPeer} {
				nc, err := dialTLS(addr, tc.cert)
				if err == nil {
					var got []byte
					got, err = exchange(nc, hello(tc.id()))
					require.NotContains(t, string(got), wire.Magic, "%s got a handshake from %s", tc.name, addr)
				}
				require.Error(t, err, "%s at %s", tc.name, addr)
			}
			require.Eventually(t, func() bool { return refused(tc.reason) > before }, 10*time.Second, 50*time.Millisecond,
				"the agent counts the refusal under %q", tc.reason)
		})
	}

	// The positive control: an agent's certificate and a peer id bound to it.
	cert := issue("agent-9", pki.GroupAgent)
	for _, addr := range []string{peer, originPeer} {
		nc, err := dialTLS(addr, &cert)
		require.NoError(t, err)
		got, err := exchange(nc, hello(wire.BoundPeerID("agent-9")))
		require.NoError(t, err, addr)
		require.Equal(t, wire.Magic, string(got), "%s answers a peer with a bound id and an agent certificate", addr)
	}
}

func ptr[T any](v T) *T { return &v }

// counterValue is the value of the counter name{reason=label} in reg, 0 when absent.
func counterValue(t *testing.T, reg prometheus.Gatherer, name, label string) float64 {
	t.Helper()
	mfs, err := reg.Gather()
	require.NoError(t, err)
	for _, mf := range mfs {
		if mf.GetName() != name {
			continue
		}
		for _, m := range mf.GetMetric() {
			for _, lp := range m.GetLabel() {
				if lp.GetName() == "reason" && lp.GetValue() == label {
					return m.GetCounter().GetValue()
				}
			}
		}
	}
	return 0
}

// With TLS on every HTTP link but plain P2P (peer_plain, peer.plain), the agents and origins
// still announce peer ids bound to their certificates, which is all a tracker over TLS accepts
// from them: blobs flow through the swarm.
func TestPlainSwarmUnderTLS(t *testing.T) {
	t.Parallel()
	c := clustertest.Start(t, cluster.Spec{Origins: 1, Agents: 2, TLS: clustertest.TLS(t),
		OriginConfig: func(_ int, c *origin.Config) { c.Peer.Plain = true },
		AgentConfig:  func(_ int, c *agent.Config) { c.PeerPlain = true },
	}, cluster.Deps{})
	admin := c.Client()
	data, d := randomBlob(t, 1<<20+5)
	_, err := client.NewCluster(c.Addrs(cluster.Origin), admin).Push(t.Context(), "team/app", d, bytes.NewReader(data), int64(len(data)), client.UploadOptions{})
	require.NoError(t, err)
	// Bounded, so that refused announces (no peers, a pull that never ends) fail the test.
	ctx, cancel := context.WithTimeout(t.Context(), time.Minute)
	defer cancel()
	for _, a := range c.Addrs(cluster.Agent) {
		var got bytes.Buffer
		_, err := client.NewAgent("https://"+a, admin).Pull(ctx, "team/app", d, &got, nil)
		require.NoError(t, err, a)
		require.True(t, bytes.Equal(data, got.Bytes()), "agent %s", a)
	}
}
