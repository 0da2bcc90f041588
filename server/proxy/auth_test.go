package proxy_test

import (
	"archive/tar"
	"bytes"
	"encoding/json"
	"errors"
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
	"github.com/google/go-containerregistry/pkg/v1/random"
	"github.com/google/go-containerregistry/pkg/v1/remote"
	"github.com/google/go-containerregistry/pkg/v1/remote/transport"
	"github.com/opencontainers/go-digest"
	"github.com/stretchr/testify/require"
	"golang.org/x/crypto/bcrypt"

	"github.com/krakenctl/krakenctl/server/auth"
	"github.com/krakenctl/krakenctl/server/config"
	"github.com/krakenctl/krakenctl/server/proxy"
	"github.com/krakenctl/krakenctl/server/registry/errcode"
)

// Users of authConfig: pusher may pull, push and delete everywhere; reader may pull team/**.
const (
	pusherPW = "pusher-secret"
	readerPW = "reader-secret"
)

var tokenSecret = strings.Repeat("k", 32)

// authConfig is an auth section with two users, in mode.
func authConfig(t *testing.T, mode string) *auth.Config {
	t.Helper()
	line := func(user, pw string) string {
		h, err := bcrypt.GenerateFromPassword([]byte(pw), bcrypt.MinCost)
		require.NoError(t, err)
		return user + ":" + string(h) + "\n"
	}
	return &auth.Config{
		Mode:     mode,
		Htpasswd: line("pusher", pusherPW) + line("reader", readerPW),
		Rules: []auth.Rule{
			{Repositories: []string{"**"}, Users: []string{"pusher"}, Actions: []string{"pull", "push", "delete"}},
			{Repositories: []string{"team/**"}, Users: []string{"reader"}, Actions: []string{"pull"}},
		},
		Token: auth.TokenConfig{Secret: tokenSecret},
	}
}

func (st *stack) newAuthProxy(mode string) *proxy.Server {
	return st.newProxy(func(c *proxy.Config) { c.Auth = authConfig(st.t, mode) })
}

// call sends one request with optional Basic credentials or a token and returns the status,
// the error code of the body (if any) and the challenge.
type call struct {
	method, path string
	body         []byte
	user, pw     string
	token        string
}

type answer struct {
	status    int
	code      errcode.Code
	challenge string
}

func (st *stack) call(addr string, c call) answer {
	t := st.t
	t.Helper()
	req, err := http.NewRequestWithContext(t.Context(), c.method, "http://"+addr+c.path, bytes.NewReader(c.body))
	require.NoError(t, err)
	if c.user != "" {
		req.SetBasicAuth(c.user, c.pw)
	}
	if c.token != "" {
		req.Header.Set("Authorization", "Bearer "+c.token)
	}
	resp, err := st.hc.Do(req)
	require.NoError(t, err)
	defer func() { _ = resp.Body.Close() }()
	b, err := io.ReadAll(resp.Body)
	require.NoError(t, err)
	a := answer{status: resp.StatusCode, challenge: resp.Header.Get("WWW-Authenticate")}
	if resp.StatusCode >= 400 && len(b) > 0 {
		a.code = errcode.DecodeError(resp.StatusCode, b).Code
	}
	return a
}

// token gets a token for user with scopes from the proxy's token endpoint.
func (st *stack) token(addr, user, pw string, scopes ...string) string {
	t := st.t
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

// TestAuthRefusalsStoreNothing sends every kind of write through a proxy with auth, without
// credentials, with a user the rules refuse, with a token for another repository and with an
// expired token: each answers 401 UNAUTHORIZED (with a challenge) or 403 DENIED, and the tag,
// manifest and blobs stored before are all still there, with nothing added.
func TestAuthRefusalsStoreNothing(t *testing.T) {
	t.Parallel()
	st := newStack(t, 2)
	p := st.newAuthProxy(auth.ModeToken)
	addr := p.Addr()
	img := newImage(t, digest.SHA256, 1, nil, "")
	img.push(t, p.Registry(), "team/app", "v1")
	other := newImage(t, digest.SHA256, 1, nil, "")
	var layer digest.Digest
	for d := range other.blobs {
		layer = d
	}
	var held digest.Digest
	for d := range img.blobs {
		held = d
	}

	manifest := img.manifest.Digest.String()
	writes := []call{
		{method: "POST", path: "/v2/team/app/blobs/uploads/?digest=" + layer.String(), body: other.blobs[layer]},
		{method: "POST", path: "/v2/team/app/blobs/uploads/"},
		{method: "POST", path: "/v2/team/app/blobs/uploads/?mount=" + held.String() + "&from=team/app"},
		{method: "PUT", path: "/v2/team/app/manifests/v1", body: other.manifest.Body},
		{method: "PUT", path: "/v2/team/app/manifests/" + manifest + "?tag=latest", body: img.manifest.Body},
		{method: "DELETE", path: "/v2/team/app/manifests/" + manifest},
		{method: "DELETE", path: "/v2/team/app/manifests/v1"},
		{method: "DELETE", path: "/v2/team/app/blobs/" + held.String()},
	}
	pusherToken := st.token(addr, "pusher", pusherPW, "repository:elsewhere/app:pull,push,delete")
	readerToken := st.token(addr, "reader", readerPW, "repository:team/app:pull,push,delete")
	expired, _, err := auth.NewTokens(auth.TokenConfig{
		Secret: tokenSecret, TTL: auth.DefaultTokenTTL, Issuer: auth.DefaultIssuer, Service: auth.DefaultService,
	}, func() time.Time { return time.Now().Add(-time.Hour) }).Issue("pusher",
		[]auth.ResourceActions{{Type: auth.TypeRepository, Name: "team/app", Actions: []string{"pull", "push", "delete"}}})
	require.NoError(t, err)

	for _, w := range writes {
		name := w.method + " " + w.path
		a := st.call(addr, w)
		require.Equal(t, http.StatusUnauthorized, a.status, "anonymous %s", name)
		require.Equal(t, errcode.CodeUnauthorized, a.code, name)
		require.Contains(t, a.challenge, `Bearer realm="http://`+addr+`/v2/token",service="krakenctl",scope="repository:team/app:`, name)

		w.user, w.pw = "reader", readerPW
		a = st.call(addr, w)
		require.Equal(t, http.StatusForbidden, a.status, "reader %s", name)
		require.Equal(t, errcode.CodeDenied, a.code, name)
		require.Empty(t, a.challenge)

		w.user, w.pw = "pusher", "wrong password"
		a = st.call(addr, w)
		require.Equal(t, http.StatusUnauthorized, a.status, "wrong password %s", name)

		w.user, w.pw, w.token = "", "", readerToken
		a = st.call(addr, w)
		require.Equal(t, http.StatusForbidden, a.status, "reader's token %s", name)
		require.Equal(t, errcode.CodeDenied, a.code, name)

		// The pusher may write here, but this token is for another repository: the client is
		// asked for one that covers team/app.
		w.token = pusherToken
		a = st.call(addr, w)
		require.Equal(t, http.StatusUnauthorized, a.status, "token for another repository: %s", name)
		require.Contains(t, a.challenge, `error="insufficient_scope"`)

		w.token = expired
		a = st.call(addr, w)
		require.Equal(t, http.StatusUnauthorized, a.status, "expired token: %s", name)
		require.Contains(t, a.challenge, `error="invalid_token"`)
	}

	// Nothing changed: the tag, the manifest and its blobs are there; the other layer is not.
	r := p.Registry()
	tags, _, err := r.Tags(t.Context(), "team/app", "", 10)
	require.NoError(t, err)
	require.Equal(t, []string{"v1"}, tags)
	for _, ref := range []string{"v1", manifest} {
		a := st.call(addr, call{method: "HEAD", path: "/v2/team/app/manifests/" + ref, user: "reader", pw: readerPW})
		require.Equal(t, http.StatusOK, a.status, ref)
	}
	for d, b := range img.blobs {
		require.Equal(t, b, readBlob(t, r, "team/app", d, 0))
	}
	a := st.call(addr, call{method: "HEAD", path: "/v2/team/app/blobs/" + layer.String(), user: "pusher", pw: pusherPW})
	require.Equal(t, http.StatusNotFound, a.status, "the refused upload stored nothing in team/app")

	// The same writes with the right credentials go through.
	a = st.call(addr, call{method: "DELETE", path: "/v2/team/app/manifests/v1", user: "pusher", pw: pusherPW})
	require.Equal(t, http.StatusAccepted, a.status)
}

// TestAuthPing: the base endpoint answers 401 with the challenge until the client logs in,
// as docker login expects, in both modes.
func TestAuthPing(t *testing.T) {
	t.Parallel()
	st := newStack(t, 1)
	for _, mode := range []string{auth.ModeToken, auth.ModeBasic} {
		p := st.newAuthProxy(mode)
		a := st.call(p.Addr(), call{method: "GET", path: "/v2/"})
		require.Equal(t, http.StatusUnauthorized, a.status, mode)
		require.Equal(t, errcode.CodeUnauthorized, a.code, mode)
		want := `Bearer realm="http://` + p.Addr() + `/v2/token",service="krakenctl"`
		if mode == auth.ModeBasic {
			want = `Basic realm="krakenctl"`
		}
		require.Equal(t, want, a.challenge)
		require.Equal(t, http.StatusOK, st.call(p.Addr(), call{method: "GET", path: "/v2/", user: "reader", pw: readerPW}).status)
		require.Equal(t, http.StatusOK, st.call(p.Addr(), call{method: "GET", path: "/v2/", token: st.token(p.Addr(), "reader", readerPW)}).status)
		// Health stays open: load balancers check it without credentials.
		require.Equal(t, http.StatusOK, st.call(p.Addr(), call{method: "GET", path: "/health"}).status)
	}
}

// TestAuthCatalog: the catalog lists only the repositories the caller may pull.
func TestAuthCatalog(t *testing.T) {
	t.Parallel()
	st := newStack(t, 1)
	p := st.newAuthProxy(auth.ModeToken)
	for _, repo := range []string{"team/a", "team/b", "secret/x", "zz/y"} {
		newImage(t, digest.SHA256, 1, nil, "").push(t, p.Registry(), repo, "v1")
	}
	catalog := func(user, pw, query string) []string {
		req, err := http.NewRequestWithContext(t.Context(), http.MethodGet, "http://"+p.Addr()+"/v2/_catalog"+query, nil)
		require.NoError(t, err)
		req.SetBasicAuth(user, pw)
		resp, err := st.hc.Do(req)
		require.NoError(t, err)
		defer func() { _ = resp.Body.Close() }()
		require.Equal(t, http.StatusOK, resp.StatusCode)
		var c struct{ Repositories []string }
		require.NoError(t, json.NewDecoder(resp.Body).Decode(&c))
		return c.Repositories
	}
	require.Equal(t, []string{"secret/x", "team/a", "team/b", "zz/y"}, catalog("pusher", pusherPW, ""))
	require.Equal(t, []string{"team/a", "team/b"}, catalog("reader", readerPW, ""))
	// Pages count visible repositories only.
	require.Equal(t, []string{"team/a"}, catalog("reader", readerPW, "?n=1"))
	require.Equal(t, []string{"team/b"}, catalog("reader", readerPW, "?n=1&last=team/a"))
	require.Empty(t, catalog("reader", readerPW, "?n=1&last=team/b"))
	require.Equal(t, http.StatusUnauthorized, st.call(p.Addr(), call{method: "GET", path: "/v2/_catalog"}).status)
}

// TestAuthGGCRClient pushes and pulls with go-containerregistry's client (crane's) and
// credentials: it answers the Bearer challenge with the token dance (or sends Basic in basic
// mode), mounts between repositories when it may pull the source, and uploads instead when it
// may not.
func TestAuthGGCRClient(t *testing.T) {
	t.Parallel()
	st := newStack(t, 2)
	for _, mode := range []string{auth.ModeToken, auth.ModeBasic} {
		p := st.newAuthProxy(mode)
		pusher := remote.WithAuth(&authn.Basic{Username: "pusher", Password: pusherPW})
		opts := []remote.Option{remote.WithContext(t.Context()), remote.WithTransport(st.hc.Transport)}
		img, err := random.Image(2048, 2)
		require.NoError(t, err)
		ref, err := name.ParseReference(p.Addr()+"/team/app:v1", name.Insecure)
		require.NoError(t, err)

		err = remote.Write(ref, img, opts...)
		var te *transport.Error
		require.ErrorAs(t, err, &te, mode)
		require.Equal(t, http.StatusUnauthorized, te.StatusCode, mode)
		require.NoError(t, remote.Write(ref, img, append(opts, pusher)...), mode)

		// reader pulls it, and cannot push.
		reader := remote.WithAuth(&authn.Basic{Username: "reader", Password: readerPW})
		got, err := remote.Image(ref, append(opts, reader)...)
		require.NoError(t, err, mode)
		d1, _ := img.Digest()
		d2, err := got.Digest()
		require.NoError(t, err)
		require.Equal(t, d1, d2)
		layers, err := got.Layers()
		require.NoError(t, err)
		rc, err := layers[0].Compressed()
		require.NoError(t, err)
		_, err = io.Copy(io.Discard, rc) // verifies the digest
		require.NoError(t, err)
		require.NoError(t, rc.Close())
		ref2, err := name.ParseReference(p.Addr()+"/team/app:v2", name.Insecure)
		require.NoError(t, err)
		err = remote.Write(ref2, img, append(opts, reader)...)
		require.ErrorAs(t, err, &te, mode)
		require.Equal(t, http.StatusForbidden, te.StatusCode, mode)

		// Into another repository: mounted from team/app, which the pusher may pull.
		rec := &recordingTransport{next: st.hc.Transport}
		ref3, err := name.ParseReference(p.Addr()+"/team/copy:v1", name.Insecure)
		require.NoError(t, err)
		require.NoError(t, remote.Write(ref3, got, remote.WithContext(t.Context()), remote.WithTransport(rec), pusher), mode)
		mounted := 0
		for _, c := range rec.calls {
			if c.method == http.MethodPost && strings.Contains(c.url, "mount=") && c.status == http.StatusCreated {
				mounted++
			}
		}
		require.Positive(t, mounted, "%s: %v", mode, rec.calls)
	}
}

// TestAuthCrane runs the crane binary with credentials against a proxy with auth: auth login
// (stored in DOCKER_CONFIG), push, pull and copy, through the token flow. It builds crane with
// the go command; it is skipped with -short.
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

	st := newStack(t, 2)
	p := st.newAuthProxy(auth.ModeToken)
	env := append(os.Environ(), "DOCKER_CONFIG="+filepath.Join(dir, "docker"))
	run := func(args ...string) (string, error) {
		cmd := exec.CommandContext(t.Context(), crane, args...)
		cmd.Env = env
		var stdout, stderr bytes.Buffer
		cmd.Stdout, cmd.Stderr = &stdout, &stderr
		if err := cmd.Run(); err != nil {
			return stdout.String(), &exec.ExitError{ProcessState: cmd.ProcessState, Stderr: stderr.Bytes()}
		}
		return strings.TrimSpace(stdout.String()), nil
	}
	must := func(args ...string) string {
		out, err := run(args...)
		var ee *exec.ExitError
		if err != nil && errors.As(err, &ee) {
			t.Fatalf("crane %s: %v\n%s", strings.Join(args, " "), err, ee.Stderr)
		}
		return out
	}
	repo := p.Addr() + "/team/crane"

	// Before login: the push is refused.
	layer := filepath.Join(dir, "layer.tar")
	writeTar(t, layer, "hello.txt", []byte("hello through auth"))
	_, err = run("append", "--oci-empty-base", "-f", layer, "-t", repo+":v1")
	require.Error(t, err)
	var ee *exec.ExitError
	require.ErrorAs(t, err, &ee)
	require.Contains(t, string(ee.Stderr), "401 Unauthorized")

	_, err = run("auth", "login", p.Addr(), "-u", "pusher", "-p", "wrong")
	require.NoError(t, err, "crane auth login stores the credentials without checking them")
	_, err = run("append", "--oci-empty-base", "-f", layer, "-t", repo+":v1")
	require.Error(t, err, "a wrong password gets nothing pushed")

	must("auth", "login", p.Addr(), "-u", "pusher", "-p", pusherPW)
	must("append", "--oci-empty-base", "-f", layer, "-t", repo+":v1")
	d := must("digest", repo+":v1")
	layout := filepath.Join(dir, "layout")
	must("pull", "--format", "oci", repo+":v1", layout)
	must("push", layout, repo+":v2")
	require.Equal(t, d, must("digest", repo+":v2"))
	must("copy", repo+":v1", p.Addr()+"/team/copied:v1")
	require.Equal(t, d, must("digest", p.Addr()+"/team/copied:v1"))
	require.Equal(t, "v1\nv2", must("ls", repo))

	// As the reader: pulls work, pushes are denied.
	must("auth", "login", p.Addr(), "-u", "reader", "-p", readerPW)
	require.Equal(t, d, must("digest", repo+":v1"))
	_, err = run("push", layout, repo+":v3")
	require.ErrorAs(t, err, &ee)
	require.Contains(t, string(ee.Stderr), "DENIED")
	must("auth", "logout", p.Addr())
	_, err = run("digest", repo+":v1")
	require.Error(t, err, "logged out: no pulls")
}

// writeTar writes a tarball holding one file, name, with data.
func writeTar(t *testing.T, path, name string, data []byte) {
	t.Helper()
	var b bytes.Buffer
	tw := tar.NewWriter(&b)
	require.NoError(t, tw.WriteHeader(&tar.Header{Name: name, Mode: 0o644, Size: int64(len(data)), Typeflag: tar.TypeReg}))
	_, err := tw.Write(data)
	require.NoError(t, err)
	require.NoError(t, tw.Close())
	require.NoError(t, os.WriteFile(path, b.Bytes(), 0o600))
}

// TestAuthConfigFile loads auth: from a YAML file as `serve proxy` does: the htpasswd and the
// token secret come from files, and every problem is named by its key path under auth.
func TestAuthConfigFile(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	h, err := bcrypt.GenerateFromPassword([]byte("pw"), bcrypt.MinCost)
	require.NoError(t, err)
	htpasswd := filepath.Join(dir, "htpasswd")
	require.NoError(t, os.WriteFile(htpasswd, []byte("ci:"+string(h)+"\n"), 0o600))
	secret := filepath.Join(dir, "secret")
	require.NoError(t, os.WriteFile(secret, []byte(tokenSecret+"\n"), 0o600))
	base := "origins: [127.0.0.1:15000]\nbuild_index: [127.0.0.1:15100]\n"

	doc := base + "auth:\n  htpasswd_file: " + htpasswd + "\n  rules:\n    - {repositories: ['**'], users: [ci], actions: [pull, push]}\n" +
		"  token: {secret_file: " + secret + "}\n"
	var c proxy.Config
	require.NoError(t, config.Decode(strings.NewReader(doc), &c))
	require.Equal(t, tokenSecret, c.Auth.Token.Secret)
	require.Equal(t, auth.ModeToken, c.Auth.Mode)
	require.Equal(t, auth.DefaultTokenTTL, c.Auth.Token.TTL)

	md5 := filepath.Join(dir, "md5")
	require.NoError(t, os.WriteFile(md5, []byte("ci:$apr1$salt$hash\n"), 0o600))
	doc = base + "auth:\n  mode: digest\n  htpasswd_file: " + md5 + "\n  rules:\n    - {repositories: ['a/['], groups: [ops], actions: [write]}\n" +
		"  token: {secret: short, ttl: 2h}\n"
	err = config.Decode(strings.NewReader(doc), &proxy.Config{})
	require.ErrorIs(t, err, config.ErrInvalid)
	for _, want := range []string{
		`auth.mode: "digest" is neither token nor basic`,
		`auth.htpasswd: line 1: user "ci": an MD5 (apr1) hash, not bcrypt: only bcrypt is accepted (make one with htpasswd -B)`,
		`auth.rules[0].repositories[0]: pattern "a/[": syntax error in pattern`,
		`auth.rules[0].groups[0]: group "ops" is not defined in groups`,
		`auth.rules[0].actions[0]: "write" is not an action`,
		`auth.token.secret: must be at least 32 bytes, got 5`,
		`auth.token.ttl: must be between 1s and 1h0m0s, got 2h0m0s`,
	} {
		require.ErrorContains(t, err, want)
	}
	require.NotContains(t, err.Error(), "short", "the secret's value is never printed")

	// A missing htpasswd file is named by its key.
	doc = base + "auth:\n  htpasswd_file: " + filepath.Join(dir, "missing") + "\n"
	err = config.Decode(strings.NewReader(doc), &proxy.Config{})
	require.ErrorContains(t, err, "auth.htpasswd_file: open "+filepath.Join(dir, "missing"))
}
