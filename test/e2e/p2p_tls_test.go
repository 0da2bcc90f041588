package e2e

import (
	"bytes"
	"context"
	"crypto/rand"
	"crypto/tls"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"regexp"
	"strconv"
	"testing"
	"time"

	"github.com/opencontainers/go-digest"
	"github.com/stretchr/testify/require"

	"github.com/krakenctl/krakenctl/server/client"
	"github.com/krakenctl/krakenctl/server/pki"
	"github.com/krakenctl/krakenctl/swarm/metainfo"
	"github.com/krakenctl/krakenctl/swarm/wire"
)

// A cluster of processes with certificates runs its swarm over mutual TLS: a blob reaches two
// agents (origin → agent → agent), and the peer ports of the origin and the agents give a
// stranger nothing — not over plain TCP, not over TLS without a certificate or with one from
// another CA, not with a cluster certificate of a group outside the swarm, and not with an
// agent's certificate and a peer id that is not bound to it. Each refusal is counted by reason
// in the agent's metrics, and the blob the agents hold is still whole afterwards.
func TestSwarmTLSProcesses(t *testing.T) {
	if testing.Short() {
		t.Skip("starts processes")
	}
	dir := t.TempDir()
	tp := newTestPKI(t, filepath.Join(dir, "tls"), "127.0.0.1")
	admin := tp.client(tp.issue("admin", "ops", pki.GroupAdmin))
	logf := func(name string) *os.File {
		f, err := os.Create(filepath.Join(dir, name+".log"))
		require.NoError(t, err)
		t.Cleanup(func() { _ = f.Close() })
		return f
	}
	write := func(name, body string) string {
		path := filepath.Join(dir, name+".yaml")
		require.NoError(t, os.WriteFile(path, []byte(body), 0o644))
		return path
	}
	ready := func(addr string) func(ctx context.Context) error {
		return func(ctx context.Context) error {
			req, err := http.NewRequestWithContext(ctx, http.MethodGet, "https://"+addr+"/readyz", nil)
			if err != nil {
				return err
			}
			resp, err := admin.Do(req)
			if err != nil {
				return err
			}
			_ = resp.Body.Close()
			if resp.StatusCode != http.StatusOK {
				return fmt.Errorf("readyz: %s", resp.Status)
			}
			return nil
		}
	}

	originAddr, originPeer := freeAddr(t), freeAddr(t)
	origin := &proc{t: t, role: "origin", name: originAddr, addr: originAddr, log: logf("origin"), ready: ready(originAddr),
		config: write("origin", fmt.Sprintf("listen: %s\nadmin_listen: 127.0.0.1:0\nstore:\n  dir: %s\nring:\n  members: [%s]\n  replicas: 1\npeer:\n  listen: %s\n%s",
			originAddr, filepath.Join(dir, "origin"), originAddr, originPeer, tp.yaml(tp.issue("origin", "origin-1", pki.GroupOrigin), "require")))}
	origin.start()
	t.Cleanup(origin.kill)
	trackerAddr := freeAddr(t)
	tracker := &proc{t: t, role: "tracker", name: trackerAddr, addr: trackerAddr, log: logf("tracker"), ready: ready(trackerAddr),
		config: write("tracker", fmt.Sprintf("listen: %s\nadmin_listen: 127.0.0.1:0\norigins: [%s]\nreplicas: 1\nannounce_interval: 1s\nannounce: {allow_loopback: true}\n%s",
			trackerAddr, originAddr, tp.yaml(tp.issue("tracker", "tracker-1", pki.GroupTracker), "require")))}
	tracker.start()
	t.Cleanup(tracker.kill)
	type agentProc struct {
		*proc
		peer, admin string
	}
	var agents []agentProc
	for i := range 2 {
		name := fmt.Sprintf("agent-%d", i+1)
		a := agentProc{peer: freeAddr(t), admin: freeAddr(t)}
		addr := freeAddr(t)
		a.proc = &proc{t: t, role: "agent", name: name, addr: addr, log: logf(name), ready: ready(addr),
			config: write(name, fmt.Sprintf("listen: %s\nadmin_listen: %s\npeer_listen: %s\ntrackers: [%s]\nstore_dir: %s\n%s",
				addr, a.admin, a.peer, trackerAddr, filepath.Join(dir, name), tp.yaml(tp.issue(name, name, pki.GroupAgent), "verify_if_given")))}
		a.start()
		t.Cleanup(a.kill)
		agents = append(agents, a)
	}
	t.Cleanup(func() {
		if t.Failed() {
			logs, _ := filepath.Glob(filepath.Join(dir, "*.log"))
			for _, l := range logs {
				b, _ := os.ReadFile(l)
				t.Logf("%s (last 3 KiB):\n%s", filepath.Base(l), tail(b, 3072))
			}
		}
	})

	data := make([]byte, 6<<20+5)
	_, _ = rand.Read(data)
	d := digest.FromBytes(data)
	_, err := client.NewCluster([]string{originAddr}, admin).Push(t.Context(), "team/app", d, bytes.NewReader(data), int64(len(data)), client.UploadOptions{})
	require.NoError(t, err)
	pull := func(a agentProc) {
		t.Helper()
		var got bytes.Buffer
		_, err := client.NewAgent("https://"+a.addr, admin).Pull(t.Context(), "team/app", d, &got, nil)
		require.NoError(t, err, a.name)
		require.True(t, bytes.Equal(data, got.Bytes()), "%s returned other bytes", a.name)
	}
	for _, a := range agents {
		pull(a)
	}
	// The second agent's swarm connections were admitted over TLS: it counts the pieces it
	// received, and the refusals below are counted apart from them.
	require.Positive(t, agentMetric(t, admin, agents[1].admin, `krakenctl_swarm_piece_bytes_total{direction="in"`))

	pl := metainfo.PieceLengthFor(int64(len(data)))
	hello := func(id wire.PeerID) []byte {
		b, err := wire.AppendHandshake(nil, wire.Handshake{Digest: d, PeerID: id, Length: int64(len(data)), PieceLength: pl,
			Bitfield: wire.NewBitfield(int((int64(len(data)) + pl - 1) / pl))})
		require.NoError(t, err)
		return b
	}
	cert := func(cn string, groups ...string) *tls.Certificate {
		c := clientCert(t, tp.issue("stranger-"+cn, cn, groups...))
		return &c
	}
	foreign := newTestPKI(t, filepath.Join(dir, "foreign"), "127.0.0.1")
	foreignCert := clientCert(t, foreign.issue("agent", "agent-1", pki.GroupAgent))
	peers := []string{agents[0].peer, originPeer}
	before := map[string]float64{}
	for _, r := range []string{"tls", "identity"} {
		before[r] = agentMetric(t, admin, agents[0].admin, `krakenctl_swarm_handshakes_refused_total{reason="`+r+`"}`)
	}
	// Plain TCP: the TLS listener answers a swarm handshake with a TLS alert at most.
	for _, addr := range peers {
		nc, err := (&net.Dialer{Timeout: 5 * time.Second}).DialContext(t.Context(), "tcp", addr)
		require.NoError(t, err)
		got, _ := peerExchange(nc, hello(wire.RandomPeerID()))
		require.NotContains(t, string(got), wire.Magic, "a plain peer got a swarm handshake from %s", addr)
	}
	for _, tc := range []struct {
		name string
		cert *tls.Certificate
		id   wire.PeerID
	}{
		{"no certificate", nil, wire.RandomPeerID()},
		{"another CA's agent certificate", &foreignCert, wire.BoundPeerID("agent-1")},
		{"a proxy's certificate", cert("proxy-9", pki.GroupProxy), wire.BoundPeerID("proxy-9")},
		{"an agent certificate with a random peer id", cert("agent-9", pki.GroupAgent), wire.RandomPeerID()},
		{"an agent certificate with agent-1's peer id", cert("agent-9", pki.GroupAgent), wire.BoundPeerID("agent-1")},
	} {
		for _, addr := range peers {
			nc, err := dialPeerTLS(t.Context(), addr, tc.cert)
			if err == nil {
				var got []byte
				got, err = peerExchange(nc, hello(tc.id))
				require.NotContains(t, string(got), wire.Magic, "%s: got a swarm handshake from %s", tc.name, addr)
			}
			require.Error(t, err, "%s at %s", tc.name, addr)
		}
	}
	// Agent-1 refused the plain peer, the one without a certificate and the foreign one for
	// TLS, and the other three for who they are.
	require.Eventually(t, func() bool {
		return agentMetric(t, admin, agents[0].admin, `krakenctl_swarm_handshakes_refused_total{reason="tls"}`)-before["tls"] >= 3 &&
			agentMetric(t, admin, agents[0].admin, `krakenctl_swarm_handshakes_refused_total{reason="identity"}`)-before["identity"] >= 3
	}, 15*time.Second, 100*time.Millisecond)

	// The positive control: an agent certificate and a peer id bound to it get the handshake.
	for _, addr := range peers {
		nc, err := dialPeerTLS(t.Context(), addr, cert("agent-9", pki.GroupAgent))
		require.NoError(t, err)
		got, err := peerExchange(nc, hello(wire.BoundPeerID("agent-9")))
		require.NoError(t, err, addr)
		require.Equal(t, wire.Magic, string(got), addr)
	}
	// Nothing the agents hold changed.
	for _, a := range agents {
		pull(a)
	}
}

// dialPeerTLS opens a TLS connection to a swarm port presenting cert (none when nil), without
// checking the server's certificate: the tests play a stranger.
func dialPeerTLS(ctx context.Context, addr string, cert *tls.Certificate) (net.Conn, error) {
	cfg := &tls.Config{MinVersion: tls.VersionTLS13, InsecureSkipVerify: true, NextProtos: []string{pki.PeerProtocol}} //nolint:gosec // a stranger's probe
	if cert != nil {
		cfg.Certificates = []tls.Certificate{*cert}
	}
	ctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	return (&tls.Dialer{Config: cfg}).DialContext(ctx, "tcp", addr)
}

// peerExchange sends hello over nc and returns the first 4 bytes the peer answers (a swarm
// handshake starts with wire.Magic), or what it sent before it closed; it closes nc.
func peerExchange(nc net.Conn, hello []byte) ([]byte, error) {
	defer func() { _ = nc.Close() }()
	_ = nc.SetDeadline(time.Now().Add(10 * time.Second))
	if _, err := nc.Write(hello); err != nil {
		return nil, err
	}
	var got bytes.Buffer
	_, err := io.CopyN(&got, nc, 4)
	return got.Bytes(), err
}

// agentMetric is the value of the first sample of the admin listener's /metrics at addr whose
// line starts with prefix (0 when there is none).
func agentMetric(t *testing.T, hc *http.Client, addr, prefix string) float64 {
	t.Helper()
	req, err := http.NewRequestWithContext(t.Context(), http.MethodGet, "https://"+addr+"/metrics", nil)
	require.NoError(t, err)
	resp, err := hc.Do(req)
	require.NoError(t, err)
	defer func() { _ = resp.Body.Close() }()
	b, err := io.ReadAll(resp.Body)
	require.NoError(t, err)
	require.Equal(t, http.StatusOK, resp.StatusCode, "%s", b)
	m := regexp.MustCompile(`(?m)^` + regexp.QuoteMeta(prefix) + `[^\n]* (\S+)$`).FindSubmatch(b)
	if m == nil {
		return 0
	}
	v, err := strconv.ParseFloat(string(m[1]), 64)
	require.NoError(t, err)
	return v
}
