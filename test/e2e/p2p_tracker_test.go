package e2e

import (
	"bufio"
	"bytes"
	"context"
	"crypto/rand"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"net/http/httputil"
	"net/url"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/opencontainers/go-digest"
	"github.com/stretchr/testify/require"

	"github.com/krakenctl/krakenctl/swarm/announce"
	"github.com/krakenctl/krakenctl/swarm/snapshot"
	"github.com/krakenctl/krakenctl/swarm/wire"
)

// The addresses an attacker announces (attack-findings.md §7, T4, T5). They are only ever shown
// to a tracker's validator: no process of this test dials or resolves them.
var refusedEverywhere = []string{
	"169.254.169.254:80", // link-local: the cloud metadata service
	"255.255.255.255:1",  // limited broadcast
	"evil.example:80",    // a host name
	"999.1.1.1:80",       // neither an IP address nor a valid name
	"[ff02::1]:80",       // multicast
	"0.0.0.0:1",          // unspecified
}

// TestTrackerRefusesBadAddresses runs origins, trackers and agents as processes. A tracker
// refuses every kind of address no host should be sent to (loopback too, unless it serves a
// cluster on one host), counts the refusals by reason, and refuses an announce of another
// host's address under a new peer id; an agent never dials an address a tracker refused, nor a
// name or unspecified address a tracker hands out, while it does dial a loopback listener a
// tracker of a one-host cluster accepted (which shows that the checks would see a dial).
func TestTrackerRefusesBadAddresses(t *testing.T) {
	if testing.Short() {
		t.Skip("starts processes")
	}
	l := newSwarmLab(t, "0")
	data := make([]byte, 2<<20+3)
	_, err := rand.Read(data)
	require.NoError(t, err)
	d := digest.FromBytes(data)
	file := filepath.Join(l.dir, "blob.bin")
	require.NoError(t, os.WriteFile(file, data, 0o644))
	_, stderr, err := krakenctl(t, nil, "push", file, "--origins", l.originAddrs(), "--namespace", "team/app")
	require.NoError(t, err, stderr)
	hc := &http.Client{Timeout: 10 * time.Second}
	attacker := clientFromAddr("127.0.0.66") // another host, as far as a tracker can tell
	bad := func(addr string) announce.Request {
		return announce.Request{Namespace: "team/app", Digest: d, PeerID: wire.RandomPeerID().String(), Addr: addr, Complete: true}
	}

	t.Run("a tracker of many hosts", func(t *testing.T) {
		a, admin := freeAddr(t), freeAddr(t)
		cfg := l.write("tracker-strict", fmt.Sprintf("listen: %s\nadmin_listen: %s\norigins: [%s]\nreplicas: 2\n", a, admin, l.originAddrs()))
		p := &proc{t: t, role: "tracker", name: a, addr: a, config: cfg, log: l.logf("tracker-strict"), ready: httpReady(a)}
		p.start()
		t.Cleanup(p.kill)
		code, errCode, msg := postAnnounce(t, hc, a, bad("127.0.0.1:22"))
		require.Equal(t, http.StatusForbidden, code, msg)
		require.Equal(t, "DENIED", errCode)
		require.Contains(t, msg, "announce.allow_loopback")
		for _, addr := range refusedEverywhere {
			code, errCode, msg := postAnnounce(t, hc, a, bad(addr))
			require.Equal(t, http.StatusBadRequest, code, "%s: %s", addr, msg)
			require.Equal(t, "BODY_INVALID", errCode, addr)
		}
		metrics := get(t, hc, "http://"+admin+"/metrics")
		require.Contains(t, metrics, `krakenctl_tracker_announces_rejected_total{reason="loopback"} 1`)
		require.Contains(t, metrics, fmt.Sprintf(`krakenctl_tracker_announces_rejected_total{reason="address"} %d`, len(refusedEverywhere)))
		require.Contains(t, metrics, "krakenctl_tracker_peers 0")
		log, err := os.ReadFile(p.log.Name())
		require.NoError(t, err)
		require.Contains(t, string(log), `"addr":"169.254.169.254:80"`, "the refusal is logged with the address")
	})

	// An agent of the lab pulls d after every bad kind was announced to its trackers, and a
	// listener of the test's own was announced (allowed: loopback, in a cluster on one host).
	seeder := l.agentWith(t, "agent-seeder", l.trackerAddrs())
	t.Run("an agent dials no refused address", func(t *testing.T) {
		decoy := newDecoy(t)
		for _, tr := range l.trackers {
			for _, addr := range refusedEverywhere {
				code, _, msg := postAnnounce(t, hc, tr.addr, bad(addr))
				require.Equal(t, http.StatusBadRequest, code, "%s: %s", addr, msg)
			}
			code, _, msg := postAnnounce(t, hc, tr.addr, bad(decoy.addr))
			require.Equal(t, http.StatusOK, code, msg)
		}
		events := watchEvents(t, seeder.addr, d)
		out := filepath.Join(l.dir, "seeder.out")
		_, done := l.pullStart(seeder, d, out)
		require.NoError(t, waitPull(t, done))
		requireBlob(t, out, d)
		require.Eventually(t, func() bool { return decoy.accepted.Load() > 0 }, time.Minute, 10*time.Millisecond,
			"the agent dials the listener the tracker handed out")
		require.Eventually(t, func() bool { return events.saw(decoy.addr) }, time.Minute, 10*time.Millisecond,
			"/swarm/events shows the dial to the handed-out listener")
		for _, addr := range refusedEverywhere {
			require.False(t, events.saw(addr), "the agent never dials %s", addr)
		}
	})

	t.Run("no takeover of an agent's address", func(t *testing.T) {
		peerAddr := configValue(t, seeder.config, "peer_listen")
		c, err := announce.NewClient(l.trackerAddrs(), hc)
		require.NoError(t, err)
		first := c.Trackers(d)[0] // where the agents of d announce
		thief := bad(peerAddr)
		code, errCode, msg := postAnnounce(t, attacker, first, thief)
		require.Equal(t, http.StatusConflict, code, msg)
		require.Equal(t, "PEER_CONFLICT", errCode)
		require.Contains(t, msg, peerAddr)
		// The seeder is still handed out, under its own id.
		me := announce.Request{Namespace: "team/app", Digest: d, PeerID: wire.RandomPeerID().String(), Addr: freeAddr(t)}
		var resp announce.Response
		require.NoError(t, json.Unmarshal([]byte(postOK(t, hc, first, me)), &resp))
		found := false
		for _, p := range resp.Peers {
			require.NotEqual(t, thief.PeerID, p.ID)
			found = found || p.Addr == peerAddr
		}
		require.True(t, found, "the seeder at %s is in the handout: %+v", peerAddr, resp.Peers)
	})

	t.Run("an agent dials no name a tracker hands out", func(t *testing.T) {
		// A tracker that hands out, besides what the lab's tracker says, names and addresses
		// no host has, all leading to a listener of the test's own if an agent dialled them,
		// and, last, a listener that an agent may dial.
		trap, lure := newDecoy(t), newDecoy(t)
		_, port, err := net.SplitHostPort(trap.addr)
		require.NoError(t, err)
		forbidden := []string{"localhost:" + port, "0.0.0.0:" + port, "[::ffff:0.0.0.0]:" + port, "[::]:" + port}
		var injected []announce.Peer
		for _, addr := range forbidden {
			injected = append(injected, announce.Peer{ID: wire.RandomPeerID().String(), Addr: addr, Complete: true})
		}
		injected = append(injected, announce.Peer{ID: wire.RandomPeerID().String(), Addr: lure.addr, Complete: true})
		fake := liarTracker(t, l.trackers[0].addr, injected)
		a := l.agentWith(t, "agent-liar", []string{fake})
		events := watchEvents(t, a.addr, d)
		out := filepath.Join(l.dir, "liar.out")
		_, done := l.pullStart(a, d, out)
		require.NoError(t, waitPull(t, done))
		requireBlob(t, out, d)
		require.Eventually(t, func() bool { return lure.accepted.Load() > 0 && events.saw(lure.addr) }, time.Minute, 10*time.Millisecond,
			"the agent dials the last peer handed out")
		require.Zero(t, trap.accepted.Load(), "no forbidden address reached the test's listener")
		for _, addr := range forbidden {
			require.False(t, events.saw(addr), "the agent never dials %s", addr)
		}
	})
}

// agentWith starts an agent process that announces to trackers.
func (l *swarmLab) agentWith(t *testing.T, name string, trackers []string) *proc {
	a := freeAddr(t)
	cfg := l.write(name, fmt.Sprintf("listen: %s\nadmin_listen: 127.0.0.1:0\npeer_listen: %s\ntrackers: [%s]\nstore_dir: %s\n",
		a, freeAddr(t), strings.Join(trackers, ", "), filepath.Join(l.dir, name)))
	p := &proc{t: t, role: "agent", name: name, addr: a, config: cfg, log: l.logf(name), ready: httpReady(a)}
	p.start()
	t.Cleanup(p.kill)
	return p
}

func (l *swarmLab) trackerAddrs() []string {
	var out []string
	for _, p := range l.trackers {
		out = append(out, p.addr)
	}
	return out
}

// clientFromAddr is an HTTP client whose connections come from the loopback address src.
func clientFromAddr(src string) *http.Client {
	d := &net.Dialer{LocalAddr: &net.TCPAddr{IP: net.ParseIP(src)}, Timeout: 5 * time.Second}
	return &http.Client{Transport: &http.Transport{DialContext: d.DialContext}, Timeout: 10 * time.Second}
}

// postAnnounce sends req to the tracker at addr and returns the status, and for a refusal the
// error code and message.
func postAnnounce(t *testing.T, hc *http.Client, addr string, req announce.Request) (int, string, string) {
	t.Helper()
	body, err := json.Marshal(req)
	require.NoError(t, err)
	hreq, err := http.NewRequestWithContext(t.Context(), http.MethodPost, "http://"+addr+announce.AnnouncePath, bytes.NewReader(body))
	require.NoError(t, err)
	resp, err := hc.Do(hreq)
	require.NoError(t, err)
	defer func() { _ = resp.Body.Close() }()
	b, err := io.ReadAll(resp.Body)
	require.NoError(t, err)
	if resp.StatusCode == http.StatusOK {
		return resp.StatusCode, "", string(b)
	}
	var e struct {
		Errors []struct{ Code, Message string }
	}
	require.NoError(t, json.Unmarshal(b, &e), string(b))
	require.Len(t, e.Errors, 1)
	return resp.StatusCode, e.Errors[0].Code, e.Errors[0].Message
}

func postOK(t *testing.T, hc *http.Client, addr string, req announce.Request) string {
	t.Helper()
	code, _, body := postAnnounce(t, hc, addr, req)
	require.Equal(t, http.StatusOK, code, body)
	return body
}

func get(t *testing.T, hc *http.Client, u string) string {
	t.Helper()
	req, err := http.NewRequestWithContext(t.Context(), http.MethodGet, u, nil)
	require.NoError(t, err)
	resp, err := hc.Do(req)
	require.NoError(t, err)
	defer func() { _ = resp.Body.Close() }()
	b, err := io.ReadAll(resp.Body)
	require.NoError(t, err)
	require.Equal(t, http.StatusOK, resp.StatusCode, string(b))
	return string(b)
}

// configValue reads a top-level scalar key from a config file the lab wrote.
func configValue(t *testing.T, path, key string) string {
	t.Helper()
	b, err := os.ReadFile(path)
	require.NoError(t, err)
	m := regexp.MustCompile(`(?m)^` + regexp.QuoteMeta(key) + `: (\S+)$`).FindStringSubmatch(string(b))
	require.NotNil(t, m, "%s in %s", key, path)
	return m[1]
}

// decoyListener is a loopback listener that counts the connections it accepts and closes them.
type decoyListener struct {
	addr     string
	accepted atomic.Int64
}

func newDecoy(t *testing.T) *decoyListener {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	t.Cleanup(func() { _ = ln.Close() })
	dl := &decoyListener{addr: ln.Addr().String()}
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			dl.accepted.Add(1)
			_ = c.Close()
		}
	}()
	return dl
}

// eventLog collects an agent's /swarm/events for one blob until the test ends.
type eventLog struct {
	mu     sync.Mutex
	events []snapshot.Event
}

func (l *eventLog) saw(addr string) bool {
	l.mu.Lock()
	defer l.mu.Unlock()
	for _, e := range l.events {
		if e.Addr == addr {
			return true
		}
	}
	return false
}

// watchEvents subscribes to the agent's swarm events for d and returns once subscribed.
func watchEvents(t *testing.T, agent string, d digest.Digest) *eventLog {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, "http://"+agent+"/swarm/events?digest="+url.QueryEscape(d.String()), nil)
	require.NoError(t, err)
	resp, err := http.DefaultClient.Do(req) //nolint:bodyclose // closed at cleanup, which ends the stream
	require.NoError(t, err)
	require.Equal(t, http.StatusOK, resp.StatusCode)
	el := &eventLog{}
	done := make(chan struct{})
	go func() {
		defer close(done)
		sc := bufio.NewScanner(resp.Body)
		sc.Buffer(make([]byte, 64<<10), 1<<20)
		for sc.Scan() {
			var e snapshot.Event
			if json.Unmarshal(sc.Bytes(), &e) == nil {
				el.mu.Lock()
				el.events = append(el.events, e)
				el.mu.Unlock()
			}
		}
	}()
	t.Cleanup(func() { cancel(); _ = resp.Body.Close(); <-done })
	return el
}

// liarTracker is a tracker that forwards to the tracker at real and appends extra to every
// handout.
func liarTracker(t *testing.T, real string, extra []announce.Peer) string {
	target, err := url.Parse("http://" + real)
	require.NoError(t, err)
	rp := httputil.NewSingleHostReverseProxy(target)
	rp.ModifyResponse = func(resp *http.Response) error {
		if resp.Request.URL.Path != announce.AnnouncePath || resp.StatusCode != http.StatusOK {
			return nil
		}
		var r announce.Response
		err := json.NewDecoder(resp.Body).Decode(&r)
		_ = resp.Body.Close()
		if err != nil {
			return err
		}
		r.Peers = append(r.Peers, extra...)
		b, err := json.Marshal(r)
		if err != nil {
			return err
		}
		resp.Body = io.NopCloser(bytes.NewReader(b))
		resp.ContentLength = int64(len(b))
		resp.Header.Del("Content-Length")
		return nil
	}
	srv := httptest.NewServer(rp)
	t.Cleanup(srv.Close)
	return srv.Listener.Addr().String()
}
