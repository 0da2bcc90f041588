package e2e

import (
	"bytes"
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/google/go-containerregistry/pkg/authn"
	"github.com/google/go-containerregistry/pkg/name"
	"github.com/google/go-containerregistry/pkg/v1/random"
	"github.com/google/go-containerregistry/pkg/v1/remote"
	"github.com/hashicorp/raft"
	"github.com/opencontainers/go-digest"
	"github.com/stretchr/testify/require"
	"golang.org/x/crypto/bcrypt"

	"github.com/krakenctl/krakenctl/server/api"
	"github.com/krakenctl/krakenctl/server/client"
	"github.com/krakenctl/krakenctl/server/httpserve"
	"github.com/krakenctl/krakenctl/server/pki"
)

// TestAttacksOnATLSCluster runs the attacks of issue 12 against real `krakenctl serve`
// processes with TLS, mTLS and proxy authentication on — one origin, three build-index nodes
// and a proxy — and checks after them that every process still runs, the group still has its
// three members and a leader, a new write still goes through, and the image and tags that were
// acknowledged before the attacks are all still there. (tagstore, server/auth and server/roles
// test the same refusals in process, in more detail; this is the cluster as it is deployed.)
func TestAttacksOnATLSCluster(t *testing.T) {
	if testing.Short() {
		t.Skip("starts processes")
	}
	t.Setenv("GORACE", "atexit_sleep_ms=0")
	dir := t.TempDir()
	tp := newTestPKI(t, filepath.Join(dir, "tls"), "127.0.0.1")
	ca, issue, tlsYAML, clientOf, roots := tp.ca, tp.issue, tp.yaml, tp.client, tp.roots
	adminCfg, agentCfg := issue("admin", "ops", pki.GroupAdmin), issue("agent", "agent-1", pki.GroupAgent)
	admin, agent := clientOf(adminCfg), clientOf(agentCfg)

	// The origin.
	originAddr := freeAddr(t)
	ocfg := filepath.Join(dir, "origin.yaml")
	require.NoError(t, os.WriteFile(ocfg, []byte(fmt.Sprintf("listen: %s\nadmin_listen: 127.0.0.1:0\nstore:\n  dir: %s\n%s",
		originAddr, filepath.Join(dir, "origin"), tlsYAML(issue("origin", "origin-1", pki.GroupOrigin), "require"))), 0o644))
	ologf, err := os.Create(filepath.Join(dir, "origin.log"))
	require.NoError(t, err)
	t.Cleanup(func() { _ = ologf.Close() })
	origin := &proc{t: t, role: "origin", name: originAddr, addr: originAddr, config: ocfg, log: ologf,
		ready: func(ctx context.Context) error { return client.NewOrigin(originAddr, admin).Ready(ctx) }}
	origin.start()
	t.Cleanup(origin.kill)

	// Three build-index nodes, each with a certificate naming its server id.
	procs := buildIndexCluster(t, filepath.Join(dir, "bi"), 3, originAddr, filepath.Join(dir, "storage"))
	raftAddr := map[string]string{}
	for _, p := range procs {
		b, err := os.ReadFile(p.config)
		require.NoError(t, err)
		raftAddr[p.name] = regexp.MustCompile(`(?m)^raft_listen: (\S+)$`).FindStringSubmatch(string(b))[1]
		// join_timeout short, so that the silent member's join below is rolled back within the test.
		cfg := strings.Replace(string(b), "raft:\n", "raft:\n  join_timeout: 2s\n", 1) + tlsYAML(issue(p.name, p.name, pki.GroupBuildIndex), "require")
		require.NoError(t, os.WriteFile(p.config, []byte(cfg), 0o644))
		p.start()
	}
	status := func(p *proc) (api.ClusterStatus, error) {
		ctx, cancel := context.WithTimeout(t.Context(), 2*time.Second)
		defer cancel()
		return client.NewBuildIndex(p.addr, admin).ClusterStatus(ctx)
	}
	waitGroup := func(want int) (leader, follower *proc) {
		t.Helper()
		require.Eventually(t, func() bool {
			leader, follower = nil, nil
			for _, p := range procs {
				select {
				case <-p.exited:
					t.Fatalf("build-index %s exited; log %s", p.name, p.log.Name())
				default:
				}
				st, err := status(p)
				if err != nil || st.LeaderID == "" || len(st.Members) != want {
					return false
				}
				if st.LeaderID == p.name {
					leader = p
				} else {
					follower = p
				}
			}
			return leader != nil && follower != nil
		}, 60*time.Second, 50*time.Millisecond, "a leader among %d members", want)
		return leader, follower
	}
	_, follower := waitGroup(3)
	biAddrs := addrsOf(procs)
	// Through bi-0, which forwards writes to the leader.
	bi := func(hc *http.Client) *client.BuildIndex { return client.NewBuildIndex(procs[0].addr, hc) }

	// The proxy, with users: alice pushes and deletes under team/, bob only pulls there.
	hash := func(pw string) string {
		h, err := bcrypt.GenerateFromPassword([]byte(pw), bcrypt.MinCost)
		require.NoError(t, err)
		return string(h)
	}
	htpasswd := filepath.Join(dir, "htpasswd")
	require.NoError(t, os.WriteFile(htpasswd, []byte("alice:"+hash("alice-pw")+"\nbob:"+hash("bob-pw")+"\n"), 0o600))
	secret := filepath.Join(dir, "token-secret")
	require.NoError(t, os.WriteFile(secret, []byte("an e2e secret of at least thirty-two bytes"), 0o600))
	proxyAddr := freeAddr(t)
	pcfg := filepath.Join(dir, "proxy.yaml")
	require.NoError(t, os.WriteFile(pcfg, []byte(fmt.Sprintf(`listen: %s
admin_listen: 127.0.0.1:0
origins: [%s]
build_index: [%s]
%sauth:
  mode: token
  htpasswd_file: %s
  rules:
    - repositories: ["team/**"]
      users: [alice]
      actions: [pull, push, delete]
    - repositories: ["team/**"]
      users: [bob]
      actions: [pull]
  token:
    secret_file: %s
    ttl: 1s
`, proxyAddr, originAddr, strings.ReplaceAll(biAddrs, ",", ", "), tlsYAML(issue("proxy", "proxy-1", pki.GroupProxy), "verify_if_given"), htpasswd, secret)), 0o644))
	plogf, err := os.Create(filepath.Join(dir, "proxy.log"))
	require.NoError(t, err)
	t.Cleanup(func() { _ = plogf.Close() })
	// People reach the proxy with the CA and no certificate.
	people := &http.Client{Timeout: 10 * time.Second, Transport: &http.Transport{TLSClientConfig: &tls.Config{RootCAs: roots, MinVersion: tls.VersionTLS12}}}
	proxyURL := "https://" + proxyAddr
	proxyProc := &proc{t: t, role: "proxy", name: proxyAddr, addr: proxyAddr, config: pcfg, log: plogf,
		ready: func(ctx context.Context) error {
			req, _ := http.NewRequestWithContext(ctx, http.MethodGet, proxyURL+"/v2/", nil)
			resp, err := people.Do(req)
			if err != nil {
				return err
			}
			_ = resp.Body.Close()
			if resp.StatusCode != http.StatusUnauthorized {
				return fmt.Errorf("GET /v2/: %s", resp.Status)
			}
			return nil
		}}
	proxyProc.start()
	t.Cleanup(proxyProc.kill)
	t.Cleanup(func() {
		if t.Failed() {
			for _, f := range []*os.File{ologf, plogf} {
				b, _ := os.ReadFile(f.Name())
				t.Logf("log %s (last 4 KiB):\n%s", f.Name(), tail(b, 4096))
			}
		}
	})

	// Acknowledged before the attacks: an image alice pushed, and a tag an admin wrote.
	ggcr := remote.WithTransport(people.Transport)
	img, err := random.Image(1<<20, 2)
	require.NoError(t, err)
	ref, err := name.ParseReference(proxyAddr + "/team/app:v1")
	require.NoError(t, err)
	alice := authn.FromConfig(authn.AuthConfig{Username: "alice", Password: "alice-pw"})
	// Setup, not an attack: tokens live 1 s here (the expiry attack below needs that), and a
	// loaded machine can take longer over one upload, whose streamed body a client cannot
	// replay with a fresh token. Another try gets a fresh token for the whole upload.
	for attempt := 1; ; attempt++ {
		err := remote.Write(ref, img, ggcr, remote.WithAuth(alice))
		if err == nil {
			break
		}
		require.Less(t, attempt, 3, "push the setup image: %v", err)
		t.Logf("push the setup image (attempt %d): %v; again", attempt, err)
	}
	imgDigest, err := img.Digest()
	require.NoError(t, err)
	layers, err := img.Layers()
	require.NoError(t, err)
	layerDigest, err := layers[0].Digest()
	require.NoError(t, err)
	_, err = bi(admin).PutTag(t.Context(), "team/app", "pinned", digest.Digest(imgDigest.String()))
	require.NoError(t, err)
	acked := map[string]string{"v1": imgDigest.String(), "pinned": imgDigest.String()}

	var termBefore uint64
	for _, p := range procs {
		st, err := status(p)
		require.NoError(t, err)
		termBefore = max(termBefore, st.Term)
	}

	t.Run("raft port", func(t *testing.T) {
		victim := raft.ServerAddress(raftAddr[follower.name])
		id := raft.ServerID(follower.name)
		forge := func(trans raft.Transport, typ raft.LogType, data []byte) error {
			var r raft.AppendEntriesResponse
			hdr := raft.RPCHeader{ProtocolVersion: raft.ProtocolVersionMax, ID: []byte("bi-9"), Addr: []byte("127.0.0.1:1")}
			if err := trans.AppendEntries(id, victim, &raft.AppendEntriesRequest{RPCHeader: hdr}, &r); err != nil {
				return fmt.Errorf("probe: %w", err)
			}
			req := &raft.AppendEntriesRequest{
				RPCHeader: hdr, Term: r.Term + 100, PrevLogEntry: r.LastLog, PrevLogTerm: r.Term,
				Entries:           []*raft.Log{{Index: r.LastLog + 1, Term: r.Term + 100, Type: typ, Data: data}},
				LeaderCommitIndex: r.LastLog + 1,
			}
			if err := trans.AppendEntries(id, victim, req, &r); err != nil {
				return err
			}
			if !r.Success {
				return fmt.Errorf("append refused by raft")
			}
			return nil
		}
		vote := func(trans raft.Transport) error {
			var r raft.RequestVoteResponse
			return trans.RequestVote(id, victim, &raft.RequestVoteRequest{
				RPCHeader: raft.RPCHeader{ProtocolVersion: raft.ProtocolVersionMax, ID: []byte("bi-9"), Addr: []byte("127.0.0.1:1")},
				Term:      1 << 40, LastLogIndex: 1 << 40, LastLogTerm: 1 << 40,
			}, &r)
		}
		put, err := json.Marshal(map[string]any{"repo": "team/app", "tag": "v1", "digest": digest.FromString("forged"), "time": time.Now().UTC()})
		require.NoError(t, err)
		put = append([]byte{1}, put...)

		// hashicorp/raft's own TCP transport, no TLS: the handshake never happens.
		plain, err := raft.NewTCPTransport("127.0.0.1:0", nil, 2, 5*time.Second, io.Discard)
		require.NoError(t, err)
		defer func() { _ = plain.Close() }()
		require.Error(t, forge(plain, raft.LogCommand, put), "a forged AppendEntries over plain TCP")
		require.Error(t, vote(plain), "a forged RequestVote over plain TCP")

		// A certificate of the right name and group, from another CA.
		foreign, err := pki.NewCA("not the cluster CA")
		require.NoError(t, err)
		fc, err := foreign.IssueFiles(t.TempDir(), "bi-9", pki.Leaf{Name: "bi-9", Groups: []string{pki.GroupBuildIndex}})
		require.NoError(t, err)
		withForeign := raftOverTLS(t, clientCert(t, fc))
		require.Error(t, forge(withForeign, raft.LogCommand, put), "a forged AppendEntries with a foreign certificate")
		require.Error(t, vote(withForeign), "a forged RequestVote with a foreign certificate")

		// An entry of a type no node knows, from a holder of a real build-index certificate:
		// refused before it reaches the log, so nothing panics, now or at a restart.
		insider := issue("bi-9", "bi-9", pki.GroupBuildIndex)
		err = forge(raftOverTLS(t, clientCert(t, insider)), raft.LogCommand, []byte{0x7f, 'x'})
		require.Error(t, err, "an entry of unknown type")
		require.Contains(t, err.Error(), "refused entries")
	})

	t.Run("build-index API", func(t *testing.T) {
		ctx := t.Context()
		// No certificate, a foreign one, an expired one: the handshake fails.
		noCert := &http.Client{Timeout: 5 * time.Second, Transport: &http.Transport{TLSClientConfig: &tls.Config{RootCAs: roots, MinVersion: tls.VersionTLS13}}}
		_, err := client.NewBuildIndex("https://"+follower.addr, noCert).PutTag(ctx, "team/app", "v1", digest.FromString("x"))
		require.ErrorContains(t, err, "tls: certificate required", "a tag write without a client certificate")
		foreign, err := pki.NewCA("not the cluster CA")
		require.NoError(t, err)
		fc, err := foreign.IssueFiles(t.TempDir(), "admin", pki.Leaf{Name: "ops", Groups: []string{pki.GroupAdmin}})
		require.NoError(t, err)
		for what, cert := range map[string]tls.Certificate{
			"another CA's admin certificate": clientCert(t, fc),
			"an expired admin certificate":   expiredCert(t, ca),
		} {
			hc := &http.Client{Timeout: 5 * time.Second, Transport: &http.Transport{TLSClientConfig: &tls.Config{
				RootCAs: roots, Certificates: []tls.Certificate{cert}, MinVersion: tls.VersionTLS13}}}
			_, err := client.NewBuildIndex("https://"+follower.addr, hc).PutTag(ctx, "team/app", "v1", digest.FromString("x"))
			require.ErrorContains(t, err, "remote error: tls:", what)
			_, err = client.NewBuildIndex("https://"+follower.addr, hc).Join(ctx, api.Member{ID: "bi-9", RaftAddr: "127.0.0.1:1"})
			require.ErrorContains(t, err, "remote error: tls:", what)
		}

		// An agent's certificate reads but does not write tags or change the group.
		got, err := bi(agent).GetTag(ctx, "team/app", "v1", false)
		require.NoError(t, err)
		require.Equal(t, imgDigest.String(), got.Digest.String())
		_, err = bi(agent).PutTag(ctx, "team/app", "v1", digest.Digest(layerDigest.String()))
		require.ErrorContains(t, err, "DENIED")
		_, err = bi(agent).Join(ctx, api.Member{ID: "bi-9", RaftAddr: "127.0.0.1:1", APIAddr: "127.0.0.1:1"})
		require.ErrorContains(t, err, "DENIED")
		_, err = bi(agent).Remove(ctx, follower.name, true)
		require.ErrorContains(t, err, "DENIED")

		// Even an admin cannot point a tag at a layer.
		_, err = bi(admin).PutTag(ctx, "team/app", "v1", digest.Digest(layerDigest.String()))
		require.ErrorContains(t, err, "MANIFEST_INVALID")

		// A bogus join: an address that accepts TCP and says nothing fails the join's mutual
		// TLS probe (503), and the group is untouched.
		sink, err := net.Listen("tcp", "127.0.0.1:0")
		require.NoError(t, err)
		defer func() { _ = sink.Close() }()
		go holdConns(ctx, sink)
		_, err = bi(admin).Join(ctx, api.Member{ID: "bi-bogus", RaftAddr: sink.Addr().String(), APIAddr: sink.Addr().String()})
		require.ErrorContains(t, err, "UNAVAILABLE")
		require.ErrorContains(t, err, "does not accept connections from this cluster")
		st, err := status(procs[0])
		require.NoError(t, err)
		require.Len(t, st.Members, 3)

		// One that passes the probe (a TLS listener with a real build-index certificate named
		// bi-bogus) and then never answers Raft: added as a non-voter, so the group keeps its
		// quorum and serves meanwhile, and taken out again after join_timeout.
		bogus := clientCert(t, issue("bi-bogus", "bi-bogus", pki.GroupBuildIndex))
		silent, err := tls.Listen("tcp", "127.0.0.1:0", &tls.Config{Certificates: []tls.Certificate{bogus}, ClientAuth: tls.RequestClientCert, MinVersion: tls.VersionTLS13})
		require.NoError(t, err)
		defer func() { _ = silent.Close() }()
		go holdConns(ctx, silent)
		joined := make(chan error, 1)
		go func() {
			_, err := bi(admin).Join(ctx, api.Member{ID: "bi-bogus", RaftAddr: silent.Addr().String(), APIAddr: silent.Addr().String()})
			joined <- err
		}()
		_, err = bi(admin).PutTag(ctx, "team/app", "during-join", digest.Digest(imgDigest.String()))
		require.NoError(t, err, "a write while a silent member joins")
		acked["during-join"] = imgDigest.String()
		err = <-joined
		require.ErrorContains(t, err, "did not answer the leader within 2s; it was removed again", "the silent member's join")
		waitGroup(3)

		// A removal that would lose the quorum is refused while a node is down.
		lead, live := waitGroup(3)
		var down *proc
		for _, p := range procs {
			if p != lead && p != live {
				down = p
			}
		}
		down.kill()
		_, err = client.NewBuildIndex(lead.addr, admin).Remove(ctx, live.name, false)
		require.Error(t, err, "removing a live voter while another is down")
		require.Contains(t, err.Error(), "quorum")
		down.start()
		waitGroup(3)
	})

	t.Run("proxy", func(t *testing.T) {
		// do sends one request and returns its status and headers.
		do := func(method, path, auth string, body []byte) answer {
			t.Helper()
			req, err := http.NewRequestWithContext(t.Context(), method, proxyURL+path, bytes.NewReader(body))
			require.NoError(t, err)
			if auth != "" {
				req.Header.Set("Authorization", auth)
			}
			resp, err := people.Do(req)
			require.NoError(t, err)
			_, _ = io.Copy(io.Discard, resp.Body)
			_ = resp.Body.Close()
			return answer{resp.StatusCode, resp.Header}
		}
		basic := func(user, pw string) string {
			return "Basic " + base64.StdEncoding.EncodeToString([]byte(user+":"+pw))
		}
		manifestPath := "/v2/team/app/manifests/" + imgDigest.String()
		forged := []byte(`{"schemaVersion":2,"mediaType":"application/vnd.oci.image.index.v1+json","manifests":[]}`)

		// Nobody: asked to log in.
		for _, c := range []struct{ method, path string }{
			{http.MethodPost, "/v2/team/app/blobs/uploads/"},
			{http.MethodPut, "/v2/team/app/manifests/v1"},
			{http.MethodDelete, manifestPath},
			{http.MethodGet, manifestPath},
		} {
			resp := do(c.method, c.path, "", forged)
			require.Equal(t, http.StatusUnauthorized, resp.status, "%s %s without credentials", c.method, c.path)
			require.Contains(t, resp.header.Get("WWW-Authenticate"), "Bearer ")
		}
		// A wrong password: asked again.
		require.Equal(t, http.StatusUnauthorized, do(http.MethodPut, "/v2/team/app/manifests/v1", basic("alice", "nope"), forged).status)
		// bob may pull, not push, tag or delete.
		require.Equal(t, http.StatusOK, do(http.MethodGet, manifestPath, basic("bob", "bob-pw"), nil).status)
		for _, c := range []struct{ method, path string }{
			{http.MethodPost, "/v2/team/app/blobs/uploads/"},
			{http.MethodPut, "/v2/team/app/manifests/v1"},
			{http.MethodDelete, manifestPath},
		} {
			require.Equal(t, http.StatusForbidden, do(c.method, c.path, basic("bob", "bob-pw"), forged).status, "bob: %s %s", c.method, c.path)
		}
		// alice has no rule outside team/.
		require.Equal(t, http.StatusForbidden, do(http.MethodPost, "/v2/other/app/blobs/uploads/", basic("alice", "alice-pw"), nil).status)

		// A token for pulling team/app does not open team/other, nor push to team/app, and
		// is refused once expired (ttl 1s).
		token := func(scope string) string {
			req, err := http.NewRequestWithContext(t.Context(), http.MethodGet, proxyURL+"/v2/token?service=krakenctl&scope="+scope, nil)
			require.NoError(t, err)
			req.SetBasicAuth("alice", "alice-pw")
			resp, err := people.Do(req)
			require.NoError(t, err)
			defer func() { _ = resp.Body.Close() }()
			require.Equal(t, http.StatusOK, resp.StatusCode)
			var tok struct {
				Token string `json:"token"`
			}
			require.NoError(t, json.NewDecoder(resp.Body).Decode(&tok))
			return "Bearer " + tok.Token
		}
		pull := token("repository:team/app:pull")
		require.Equal(t, http.StatusOK, do(http.MethodGet, manifestPath, pull, nil).status, "the token, fresh, on its repository")
		require.Equal(t, http.StatusUnauthorized, do(http.MethodGet, "/v2/team/other/manifests/v1", pull, nil).status, "a token for team/app on team/other")
		require.Equal(t, http.StatusUnauthorized, do(http.MethodPut, "/v2/team/app/manifests/v1", pull, forged).status, "a pull token used to push")
		time.Sleep(2500 * time.Millisecond) // past the token's expiry: what is tested is refusal, not timing
		require.Equal(t, http.StatusUnauthorized, do(http.MethodGet, manifestPath, pull, nil).status, "an expired token replayed")

		// A component's certificate presented to the proxy gives only its group's rights (none
		// here): an agent cannot push.
		req, err := http.NewRequestWithContext(t.Context(), http.MethodPost, proxyURL+"/v2/team/app/blobs/uploads/", nil)
		require.NoError(t, err)
		resp, err := agent.Do(req)
		require.NoError(t, err)
		_ = resp.Body.Close()
		require.Equal(t, http.StatusForbidden, resp.StatusCode, "an agent's certificate pushing through the proxy")
	})

	// Afterwards: every process runs, the group has its three members and a leader, no forged
	// term took hold, acknowledged tags are on every node and the image is whole.
	for _, p := range append([]*proc{origin, proxyProc}, procs...) {
		select {
		case <-p.exited:
			t.Fatalf("%s %s exited; log %s", p.role, p.name, p.log.Name())
		default:
		}
	}
	waitGroup(3)
	for _, p := range procs {
		st, err := status(p)
		require.NoError(t, err)
		require.Less(t, st.Term, termBefore+50, "a forged term took hold on %s", p.name)
		for tag, want := range acked {
			require.Eventually(t, func() bool {
				got, err := client.NewBuildIndex(p.addr, admin).GetTag(t.Context(), "team/app", tag, true)
				return err == nil && got.Digest.String() == want
			}, 30*time.Second, 50*time.Millisecond, "tag %s on %s", tag, p.name)
		}
	}
	pulled, err := remote.Image(ref, ggcr, remote.WithAuth(authn.FromConfig(authn.AuthConfig{Username: "bob", Password: "bob-pw"})))
	require.NoError(t, err)
	pulledDigest, err := pulled.Digest()
	require.NoError(t, err)
	require.Equal(t, imgDigest, pulledDigest)
	pulledLayers, err := pulled.Layers()
	require.NoError(t, err)
	for _, l := range pulledLayers {
		rc, err := l.Compressed() // verified against its digest as it is read
		require.NoError(t, err)
		_, err = io.Copy(io.Discard, rc)
		require.NoError(t, err)
		require.NoError(t, rc.Close())
	}
	_, err = bi(admin).PutTag(t.Context(), "team/app", "after", digest.Digest(imgDigest.String()))
	require.NoError(t, err, "a write after the attacks")
}

// testPKI is a test's cluster CA and the certificates it issues under dir, each valid for
// host.
type testPKI struct {
	t     *testing.T
	ca    *pki.CA
	dir   string
	host  string
	roots *x509.CertPool
}

func newTestPKI(t *testing.T, dir, host string) *testPKI {
	t.Helper()
	require.NoError(t, os.MkdirAll(dir, 0o700))
	ca, err := pki.NewCA("e2e CA")
	require.NoError(t, err)
	roots := x509.NewCertPool()
	require.True(t, roots.AppendCertsFromPEM(ca.CertPEM()))
	return &testPKI{t: t, ca: ca, dir: dir, host: host, roots: roots}
}

// issue writes a certificate for cn in groups, and its key, as dir/base.pem and base-key.pem.
func (p *testPKI) issue(base, cn string, groups ...string) pki.Config {
	p.t.Helper()
	c, err := p.ca.IssueFiles(p.dir, base, pki.Leaf{Name: cn, Groups: groups, Hosts: []string{p.host}})
	require.NoError(p.t, err)
	return c
}

// yaml is the tls section of a role's config for c.
func (p *testPKI) yaml(c pki.Config, clientAuth string) string {
	return fmt.Sprintf("tls:\n  cert_file: %s\n  key_file: %s\n  ca_file: %s\n  client_auth: %s\n", c.CertFile, c.KeyFile, c.CAFile, clientAuth)
}

// client is the HTTP client of a component holding c: it speaks TLS to every address.
func (p *testPKI) client(c pki.Config) *http.Client {
	p.t.Helper()
	prov, err := pki.Load(c)
	require.NoError(p.t, err)
	return httpserve.NewClient(httpserve.ClientOptions{DialTLS: prov.DialTLS})
}

// answer is what the proxy answered: its status and headers.
type answer struct {
	status int
	header http.Header
}

// clientCert reads c's certificate and key.
func clientCert(t *testing.T, c pki.Config) tls.Certificate {
	t.Helper()
	cert, err := tls.LoadX509KeyPair(c.CertFile, c.KeyFile)
	require.NoError(t, err)
	return cert
}

// expiredCert is an admin certificate of ca that expired an hour ago.
func expiredCert(t *testing.T, ca *pki.CA) tls.Certificate {
	t.Helper()
	certPEM, keyPEM, err := ca.Issue(pki.Leaf{Name: "ops", Groups: []string{pki.GroupAdmin},
		NotBefore: time.Now().Add(-48 * time.Hour), NotAfter: time.Now().Add(-time.Hour)})
	require.NoError(t, err)
	cert, err := tls.X509KeyPair(certPEM, keyPEM)
	require.NoError(t, err)
	return cert
}

// holdConns accepts connections on ln (completing a TLS handshake when ln is a TLS listener)
// and holds them open, saying nothing, until ln is closed.
func holdConns(ctx context.Context, ln net.Listener) {
	for {
		c, err := ln.Accept()
		if err != nil {
			return
		}
		if tc, ok := c.(*tls.Conn); ok {
			go func() { _ = tc.HandshakeContext(ctx) }()
		}
		defer func() { _ = c.Close() }()
	}
}

// raftStream is an attacker's raft.StreamLayer: it dials with TLS and this certificate, and
// does not check the server's (it only wants in).
type raftStream struct {
	net.Listener
	cfg *tls.Config
}

func (s raftStream) Dial(addr raft.ServerAddress, timeout time.Duration) (net.Conn, error) {
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	return (&tls.Dialer{Config: s.cfg}).DialContext(ctx, "tcp", string(addr))
}

// raftOverTLS is hashicorp/raft's NetworkTransport over TLS with cert.
func raftOverTLS(t *testing.T, cert tls.Certificate) raft.Transport {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	//nolint:gosec // an attacker does not verify the server
	trans := raft.NewNetworkTransport(raftStream{Listener: ln, cfg: &tls.Config{Certificates: []tls.Certificate{cert}, InsecureSkipVerify: true}}, 2, 5*time.Second, io.Discard)
	t.Cleanup(func() { _ = trans.Close() })
	return trans
}
