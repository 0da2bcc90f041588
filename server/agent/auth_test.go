package agent_test

import (
	"bytes"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"io"
	"net/http"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/google/go-containerregistry/pkg/authn"
	"github.com/google/go-containerregistry/pkg/name"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/random"
	"github.com/google/go-containerregistry/pkg/v1/remote"
	"github.com/google/go-containerregistry/pkg/v1/remote/transport"
	"github.com/stretchr/testify/require"
	"golang.org/x/crypto/bcrypt"

	"github.com/krakenctl/krakenctl/backend/memory"
	"github.com/krakenctl/krakenctl/server/agent"
	"github.com/krakenctl/krakenctl/server/auth"
	"github.com/krakenctl/krakenctl/server/buildindex"
	"github.com/krakenctl/krakenctl/server/cluster"
	"github.com/krakenctl/krakenctl/server/cluster/clustertest"
	"github.com/krakenctl/krakenctl/server/pki"
	"github.com/krakenctl/krakenctl/server/proxy"
	"github.com/krakenctl/krakenctl/server/registry/errcode"
)

// Users of authUsers: pusher may pull and push everywhere; reader may pull team/**; root is in
// the admin group.
const (
	pusherPW = "pusher-secret"
	readerPW = "reader-secret"
	rootPW   = "root-secret"
)

var tokenSecret = strings.Repeat("s", 32)

// authUsers is the htpasswd of the proxy and the agents of authStack.
func authUsers(t *testing.T) string {
	t.Helper()
	var b strings.Builder
	for _, u := range [][2]string{{"pusher", pusherPW}, {"reader", readerPW}, {"root", rootPW}} {
		h, err := bcrypt.GenerateFromPassword([]byte(u[1]), bcrypt.MinCost)
		require.NoError(t, err)
		b.WriteString(u[0] + ":" + string(h) + "\n")
	}
	return b.String()
}

// authConfig is the auth section the proxy and the agents share: the same users, rules and
// token secret, as an operator sets them up.
func authConfig(htpasswd, mode string) auth.Config {
	return auth.Config{
		Mode:     mode,
		Htpasswd: htpasswd,
		Groups:   map[string][]string{"admin": {"root"}},
		Rules: []auth.Rule{
			{Repositories: []string{"**"}, Users: []string{"pusher"}, Actions: []string{"pull", "push", "delete"}},
			{Repositories: []string{"team/**"}, Users: []string{"reader"}, Actions: []string{"pull"}},
		},
		AnonymousPull: []string{"public/**"},
		Token:         auth.TokenConfig{Secret: tokenSecret},
	}
}

// authStack is a whole cluster in this process: an origin, a tracker, a build-index node and
// a proxy with auth, where images are pushed; agents with auth pull them.
type authStack struct {
	c        *cluster.Cluster
	htpasswd string
	proxy    string
	hc       *http.Client
}

func startAuthStack(t *testing.T, spec cluster.Spec) *authStack {
	t.Helper()
	st := &authStack{htpasswd: authUsers(t)}
	spec.Origins, spec.Backend, spec.Trackers, spec.BuildIndexes, spec.Proxies = 1, memory.New(), 1, 1, 1
	spec.BuildIndexConfig = func(_ int, c *buildindex.Config) { clustertest.FastRaft(c) }
	spec.ProxyConfig = func(_ int, c *proxy.Config) {
		cfg := authConfig(st.htpasswd, auth.ModeToken)
		c.Auth = &cfg
	}
	st.c = clustertest.Start(t, spec, cluster.Deps{Logger: testLogger(t)})
	st.proxy = st.c.Addr(cluster.Proxy, 0)
	tr := &http.Transport{}
	t.Cleanup(tr.CloseIdleConnections)
	st.hc = &http.Client{Transport: tr}
	return st
}

// agent starts an agent with auth in mode, loopback as given.
func (st *authStack) agent(t *testing.T, mode, loopback string) string {
	t.Helper()
	i, err := st.c.AddAgent(func(c *agent.Config) {
		c.Auth = &agent.AuthConfig{Config: authConfig(st.htpasswd, mode), Loopback: loopback}
	})
	require.NoError(t, err)
	return st.c.Addr(cluster.Agent, i)
}

// push writes a random image to the proxy as pusher and returns it.
func (st *authStack) push(t *testing.T, ref string) v1.Image {
	t.Helper()
	img, err := random.Image(4096, 2)
	require.NoError(t, err)
	r, err := name.ParseReference(st.proxy+"/"+ref, name.Insecure)
	require.NoError(t, err)
	require.NoError(t, remote.Write(r, img, remote.WithContext(t.Context()), remote.WithTransport(st.hc.Transport),
		remote.WithAuth(&authn.Basic{Username: "pusher", Password: pusherPW})))
	return img
}

// token gets a token for user with scopes from the token endpoint at addr.
func (st *authStack) token(t *testing.T, addr, user, pw string, scopes ...string) string {
	t.Helper()
	q := url.Values{"service": {auth.DefaultService}, "scope": scopes}
	req, err := http.NewRequestWithContext(t.Context(), http.MethodGet, "http://"+addr+auth.TokenPath+"?"+q.Encode(), nil)
	require.NoError(t, err)
	req.SetBasicAuth(user, pw)
	resp, err := st.hc.Do(req)
	require.NoError(t, err)
	defer func() { _ = resp.Body.Close() }()
	require.Equal(t, http.StatusOK, resp.StatusCode)
	var tr auth.TokenResponse
	require.NoError(t, json.NewDecoder(resp.Body).Decode(&tr))
	return tr.Token
}

// creds are what a call presents: Basic credentials or a token, or nothing.
type creds struct{ user, pw, token string }

// authAnswer is what matters of an answer behind auth.
type authAnswer struct {
	status    int
	code      errcode.Code
	challenge string
	body      []byte
}

func doCall(t *testing.T, hc *http.Client, method, rawURL string, body []byte, c creds) authAnswer {
	t.Helper()
	req, err := http.NewRequestWithContext(t.Context(), method, rawURL, bytes.NewReader(body))
	require.NoError(t, err)
	if c.user != "" {
		req.SetBasicAuth(c.user, c.pw)
	}
	if c.token != "" {
		req.Header.Set("Authorization", "Bearer "+c.token)
	}
	resp, err := hc.Do(req)
	require.NoError(t, err)
	defer func() { _ = resp.Body.Close() }()
	b, err := io.ReadAll(resp.Body)
	require.NoError(t, err)
	a := authAnswer{status: resp.StatusCode, challenge: resp.Header.Get("WWW-Authenticate"), body: b}
	if resp.StatusCode >= 400 && len(b) > 0 {
		a.code = errcode.DecodeError(resp.StatusCode, b).Code
	}
	return a
}

// TestAuthPull: an agent with auth (loopback required, so these loopback calls count as
// remote) refuses anonymous pulls with 401 and the challenge, serves Basic credentials and
// tokens the proxy issued by the shared rules, refuses a token for another repository and an
// expired one, keeps refusing writes, and serves the blob and swarm APIs to admins only.
func TestAuthPull(t *testing.T) {
	t.Parallel()
	st := startAuthStack(t, cluster.Spec{})
	img := st.push(t, "team/app:v1")
	st.push(t, "secret/x:v1")
	pub := st.push(t, "public/base:v1")
	a := st.agent(t, auth.ModeToken, agent.LoopbackRequired)
	base := "http://" + a
	call := func(method, path string, c creds) authAnswer {
		return doCall(t, st.hc, method, base+path, nil, c)
	}
	manifest := "/v2/team/app/manifests/v1"
	reader := creds{user: "reader", pw: readerPW}

	// Anonymous: 401 with the Bearer challenge naming the agent's own token endpoint.
	got := call("GET", manifest, creds{})
	require.Equal(t, http.StatusUnauthorized, got.status)
	require.Equal(t, errcode.CodeUnauthorized, got.code)
	require.Equal(t, `Bearer realm="`+base+`/v2/token",service="krakenctl",scope="repository:team/app:pull"`, got.challenge)
	got = call("GET", "/v2/", creds{})
	require.Equal(t, http.StatusUnauthorized, got.status)
	require.Equal(t, `Bearer realm="`+base+`/v2/token",service="krakenctl"`, got.challenge)
	// anonymous_pull opens public/** to everyone.
	pubDigest, err := pub.Digest()
	require.NoError(t, err)
	require.Equal(t, http.StatusOK, call("GET", "/v2/public/base/manifests/"+pubDigest.String(), creds{}).status)

	// Basic credentials: the reader pulls team/**, and nothing else.
	got = call("GET", manifest, reader)
	require.Equal(t, http.StatusOK, got.status)
	raw, err := img.RawManifest()
	require.NoError(t, err)
	require.Equal(t, raw, got.body)
	layers, err := img.Layers()
	require.NoError(t, err)
	ld, err := layers[0].Digest()
	require.NoError(t, err)
	got = call("GET", "/v2/team/app/blobs/"+ld.String(), reader)
	require.Equal(t, http.StatusOK, got.status)
	want, err := layers[0].Compressed()
	require.NoError(t, err)
	wantBytes, err := io.ReadAll(want)
	require.NoError(t, err)
	require.NoError(t, want.Close())
	require.Equal(t, wantBytes, got.body)
	got = call("GET", "/v2/secret/x/manifests/v1", reader)
	require.Equal(t, http.StatusForbidden, got.status)
	require.Equal(t, errcode.CodeDenied, got.code)
	got = call("GET", manifest, creds{user: "reader", pw: "wrong"})
	require.Equal(t, http.StatusUnauthorized, got.status)

	// A token the proxy issued (its own Guard, the same secret) is good on the agent, for
	// what it grants.
	tok := st.token(t, st.proxy, "reader", readerPW, "repository:team/app:pull")
	require.Equal(t, http.StatusOK, call("GET", manifest, creds{token: tok}).status)
	require.Equal(t, http.StatusOK, call("GET", "/v2/", creds{token: tok}).status)
	// A token for team/app used on team/other, which the reader may pull: 401 asking for a
	// token that covers it.
	got = call("GET", "/v2/team/other/manifests/v1", creds{token: tok})
	require.Equal(t, http.StatusUnauthorized, got.status)
	require.Contains(t, got.challenge, `scope="repository:team/other:pull",error="insufficient_scope"`)
	// The pusher's token for team/app used on secret/x, which the pusher may pull too.
	pusherTok := st.token(t, st.proxy, "pusher", pusherPW, "repository:team/app:pull")
	got = call("GET", "/v2/secret/x/manifests/v1", creds{token: pusherTok})
	require.Equal(t, http.StatusUnauthorized, got.status)
	require.Contains(t, got.challenge, `error="insufficient_scope"`)
	// The reader's token for secret/x grants nothing (the rules refuse it): 403.
	got = call("GET", "/v2/secret/x/manifests/v1", creds{token: st.token(t, st.proxy, "reader", readerPW, "repository:secret/x:pull")})
	require.Equal(t, http.StatusForbidden, got.status)
	// A token from the agent's own endpoint works the same.
	require.Equal(t, http.StatusOK, call("GET", manifest, creds{token: st.token(t, a, "reader", readerPW, "repository:team/app:pull")}).status)

	// An expired token, signed with the shared secret, and one signed with another secret.
	tokens := func(secret string, now func() time.Time) *auth.Tokens {
		return auth.NewTokens(auth.TokenConfig{Secret: secret, TTL: auth.DefaultTokenTTL, Issuer: auth.DefaultIssuer, Service: auth.DefaultService}, now)
	}
	access := []auth.ResourceActions{{Type: auth.TypeRepository, Name: "team/app", Actions: []string{"pull"}}}
	expired, _, err := tokens(tokenSecret, func() time.Time { return time.Now().Add(-time.Hour) }).Issue("reader", access)
	require.NoError(t, err)
	foreign, _, err := tokens(strings.Repeat("f", 32), nil).Issue("reader", access)
	require.NoError(t, err)
	for _, bad := range []string{expired, foreign} {
		got = call("GET", manifest, creds{token: bad})
		require.Equal(t, http.StatusUnauthorized, got.status)
		require.Contains(t, got.challenge, `error="invalid_token"`)
	}

	// Writes stay refused: 401 anonymous, 403 for a reader, 405 for the pusher, whom the
	// rules allow but an agent serves pulls only.
	put := func(c creds) authAnswer {
		return doCall(t, st.hc, "PUT", base+"/v2/team/app/manifests/v2", raw, c)
	}
	require.Equal(t, http.StatusUnauthorized, put(creds{}).status)
	require.Equal(t, http.StatusForbidden, put(reader).status)
	got = put(creds{user: "pusher", pw: pusherPW})
	require.Equal(t, http.StatusMethodNotAllowed, got.status)
	require.Equal(t, errcode.CodeUnsupported, got.code)
	got = call("DELETE", manifest, creds{user: "pusher", pw: pusherPW})
	require.Equal(t, http.StatusMethodNotAllowed, got.status)

	// The catalog lists what the caller may pull.
	got = call("GET", "/v2/_catalog", reader)
	require.Equal(t, http.StatusOK, got.status)
	require.JSONEq(t, `{"repositories":["public/base","team/app"]}`, string(got.body))

	// The blob and swarm APIs: admins only (Basic challenge: tokens do not do there).
	for _, path := range []string{"/namespace/team%2Fapp/blobs/" + ld.String(), "/swarm/torrents", "/swarm/torrents?history=1", "/swarm/host"} {
		got = call("GET", path, creds{})
		require.Equal(t, http.StatusUnauthorized, got.status, path)
		require.Equal(t, `Basic realm="krakenctl"`, got.challenge, path)
		for _, c := range []creds{reader, {user: "pusher", pw: pusherPW}, {token: st.token(t, st.proxy, "root", rootPW, "repository:team/app:pull")}} {
			got = call("GET", path, c)
			require.Equal(t, http.StatusForbidden, got.status, "%s %+v", path, c)
			require.Equal(t, errcode.CodeDenied, got.code, path)
		}
		require.Equal(t, http.StatusOK, call("GET", path, creds{user: "root", pw: rootPW}).status, path)
	}
	require.Equal(t, wantBytes, call("GET", "/namespace/team%2Fapp/blobs/"+ld.String(), creds{user: "root", pw: rootPW}).body)
	// Unknown paths too: nothing is open by omission.
	require.Equal(t, http.StatusUnauthorized, call("GET", "/nothing", creds{}).status)
	require.Equal(t, http.StatusNotFound, call("GET", "/nothing", creds{user: "root", pw: rootPW}).status)

	// Health stays open for load balancers.
	require.Equal(t, http.StatusOK, call("GET", "/health", creds{}).status)
	require.Equal(t, http.StatusOK, call("GET", "/readyz", creds{}).status)
}

// TestAuthLoopbackOpen: with auth.loopback open (the default), a caller on loopback is served
// without credentials, as the host's container runtime pulls (callers from elsewhere are
// tested in TestGuardAPIRemoteCallers); with required it is asked to log in.
func TestAuthLoopbackOpen(t *testing.T) {
	t.Parallel()
	st := startAuthStack(t, cluster.Spec{})
	st.push(t, "secret/x:v1")
	open := st.agent(t, auth.ModeToken, "") // the default
	required := st.agent(t, auth.ModeToken, agent.LoopbackRequired)
	for _, path := range []string{"/v2/", "/v2/secret/x/manifests/v1", "/swarm/torrents"} {
		require.Equal(t, http.StatusOK, doCall(t, st.hc, "GET", "http://"+open+path, nil, creds{}).status, path)
		require.Equal(t, http.StatusUnauthorized, doCall(t, st.hc, "GET", "http://"+required+path, nil, creds{}).status, path)
	}
	// The catalog: everything on loopback; with required, what anonymous_pull opens (none of
	// what is there).
	got := doCall(t, st.hc, "GET", "http://"+open+"/v2/_catalog", nil, creds{})
	require.JSONEq(t, `{"repositories":["secret/x"]}`, string(got.body))
	got = doCall(t, st.hc, "GET", "http://"+required+"/v2/_catalog", nil, creds{})
	require.JSONEq(t, `{"repositories":[]}`, string(got.body))
	// Pulls only, on loopback too.
	got = doCall(t, st.hc, "DELETE", "http://"+open+"/v2/secret/x/manifests/v1", nil, creds{})
	require.Equal(t, http.StatusMethodNotAllowed, got.status)
}

// TestAuthGGCRClient pulls through an agent with go-containerregistry's client (crane's) and
// credentials, in both modes: it answers the Bearer challenge with the token dance against
// the agent (or sends Basic), and gets the image the proxy took; without credentials it gets
// 401.
func TestAuthGGCRClient(t *testing.T) {
	t.Parallel()
	st := startAuthStack(t, cluster.Spec{})
	img := st.push(t, "team/app:v1")
	want, err := img.Digest()
	require.NoError(t, err)
	for _, mode := range []string{auth.ModeToken, auth.ModeBasic} {
		a := st.agent(t, mode, agent.LoopbackRequired)
		ref, err := name.ParseReference(a+"/team/app:v1", name.Insecure)
		require.NoError(t, err)
		opts := []remote.Option{remote.WithContext(t.Context()), remote.WithTransport(st.hc.Transport)}
		_, err = remote.Image(ref, opts...)
		var te *transport.Error
		require.ErrorAs(t, err, &te, mode)
		require.Equal(t, http.StatusUnauthorized, te.StatusCode, mode)

		got, err := remote.Image(ref, append(opts, remote.WithAuth(&authn.Basic{Username: "reader", Password: readerPW}))...)
		require.NoError(t, err, mode)
		d, err := got.Digest()
		require.NoError(t, err)
		require.Equal(t, want, d, mode)
		layers, err := got.Layers()
		require.NoError(t, err)
		for _, l := range layers {
			rc, err := l.Compressed()
			require.NoError(t, err)
			_, err = io.Copy(io.Discard, rc) // verifies the digest
			require.NoError(t, err, mode)
			require.NoError(t, rc.Close())
		}
	}
}

// TestAuthClientCertificates: over TLS, a verified client certificate is an identity, as on
// the proxy: the cluster's admin certificate pulls and reads the blob API without a password;
// an agent's certificate is in group agent, which no rule names, so it is denied; a client
// with the CA and no certificate is asked to log in, and its password works.
func TestAuthClientCertificates(t *testing.T) {
	t.Parallel()
	st := startAuthStack(t, cluster.Spec{TLS: clustertest.TLS(t)})
	admin := st.c.AdminTLS()
	adminTLS, err := pki.Load(admin)
	require.NoError(t, err)
	client := func(cfg *tls.Config) *http.Client {
		tr := &http.Transport{TLSClientConfig: cfg}
		t.Cleanup(tr.CloseIdleConnections)
		return &http.Client{Transport: tr}
	}
	asAdmin := client(adminTLS.ClientConfig())
	caPEM, err := os.ReadFile(admin.CAFile)
	require.NoError(t, err)
	pool := x509.NewCertPool()
	require.True(t, pool.AppendCertsFromPEM(caPEM))
	noCert := client(&tls.Config{RootCAs: pool, MinVersion: tls.VersionTLS12})

	// Push through the proxy as the admin certificate.
	img, err := random.Image(2048, 1)
	require.NoError(t, err)
	ref, err := name.ParseReference(st.proxy + "/team/app:v1")
	require.NoError(t, err)
	require.NoError(t, remote.Write(ref, img, remote.WithContext(t.Context()), remote.WithTransport(asAdmin.Transport)))

	a := st.agent(t, auth.ModeToken, agent.LoopbackRequired)
	base := "https://" + a
	manifest := base + "/v2/team/app/manifests/v1"
	require.Equal(t, http.StatusOK, doCall(t, asAdmin, "GET", manifest, nil, creds{}).status)
	require.Equal(t, http.StatusOK, doCall(t, asAdmin, "GET", base+"/swarm/torrents", nil, creds{}).status)
	got := doCall(t, noCert, "GET", manifest, nil, creds{})
	require.Equal(t, http.StatusUnauthorized, got.status)
	require.Contains(t, got.challenge, `Bearer realm="`+base+`/v2/token"`)
	require.Equal(t, http.StatusOK, doCall(t, noCert, "GET", manifest, nil, creds{user: "reader", pw: readerPW}).status)

	// A component's certificate: group agent, which the rules do not name.
	agentTLS, err := pki.Load(pki.Config{
		CertFile: strings.TrimSuffix(admin.CertFile, "admin.pem") + "agent-0.pem",
		KeyFile:  strings.TrimSuffix(admin.KeyFile, "admin-key.pem") + "agent-0-key.pem",
		CAFile:   admin.CAFile,
	})
	require.NoError(t, err)
	require.True(t, agentTLS.Identity().In(pki.GroupAgent))
	asAgent := client(agentTLS.ClientConfig())
	got = doCall(t, asAgent, "GET", manifest, nil, creds{})
	require.Equal(t, http.StatusForbidden, got.status)
	require.Equal(t, errcode.CodeDenied, got.code)
}

// TestAuthCrane runs the crane binary with credentials against an agent with auth (loopback
// required): before login a pull is refused; logged in as the reader it pulls what the proxy
// took, through the token flow against the agent; a repository the rules refuse stays closed.
// It builds crane with the go command; it is skipped with -short.
func TestAuthCrane(t *testing.T) {
	if testing.Short() {
		t.Skip("builds crane; run without -short")
	}
	t.Parallel()
	dir := t.TempDir()
	crane := filepath.Join(dir, "crane")
	build := exec.CommandContext(t.Context(), "go", "build", "-o", crane, "github.com/google/go-containerregistry/cmd/crane")
	build.Env = append(os.Environ(), "CGO_ENABLED=0")
	out, err := build.CombinedOutput()
	require.NoError(t, err, "%s", out)

	st := startAuthStack(t, cluster.Spec{})
	img := st.push(t, "team/app:v1")
	st.push(t, "secret/x:v1")
	want, err := img.Digest()
	require.NoError(t, err)
	a := st.agent(t, auth.ModeToken, agent.LoopbackRequired)
	env := append(os.Environ(), "DOCKER_CONFIG="+filepath.Join(dir, "docker"))
	run := func(args ...string) (string, string, error) {
		cmd := exec.CommandContext(t.Context(), crane, append(args, "--insecure")...)
		cmd.Env = env
		var stdout, stderr bytes.Buffer
		cmd.Stdout, cmd.Stderr = &stdout, &stderr
		err := cmd.Run()
		return strings.TrimSpace(stdout.String()), stderr.String(), err
	}

	_, stderr, err := run("digest", a+"/team/app:v1")
	require.Error(t, err)
	require.Contains(t, stderr, "401 Unauthorized")

	_, stderr, err = run("auth", "login", a, "-u", "reader", "-p", readerPW)
	require.NoError(t, err, stderr)
	got, stderr, err := run("digest", a+"/team/app:v1")
	require.NoError(t, err, stderr)
	require.Equal(t, want.String(), got)
	layout := filepath.Join(dir, "layout")
	_, stderr, err = run("pull", "--format", "oci", a+"/team/app:v1", layout)
	require.NoError(t, err, stderr)
	index, err := os.ReadFile(filepath.Join(layout, "index.json"))
	require.NoError(t, err)
	require.Contains(t, string(index), want.String())
	_, stderr, err = run("digest", a+"/secret/x:v1")
	require.Error(t, err)
	require.Contains(t, stderr, "DENIED")
}
