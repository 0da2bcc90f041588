package dev

import (
	"bytes"
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"io/fs"
	"log/slog"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/spf13/cobra"
	"github.com/stretchr/testify/require"
	"go.uber.org/goleak"

	"github.com/krakenctl/krakenctl/tagstore/tagstoretest"

	"github.com/krakenctl/krakenctl/cli/cmdutil"
	"github.com/krakenctl/krakenctl/cli/iostreams"
	"github.com/krakenctl/krakenctl/server/api"
	"github.com/krakenctl/krakenctl/server/client"
	"github.com/krakenctl/krakenctl/server/dev"
	"github.com/krakenctl/krakenctl/server/pki"
)

func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m, tagstoretest.IgnoreLeftovers())
}

func Test_NewCmdUp(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name    string
		args    []string
		want    UpOptions
		wantErr string
	}{
		{name: "defaults", want: UpOptions{Origins: 3, Agents: 1, AgentPort: 16000, Port: 15000, LogLevel: slog.LevelWarn, Output: "table"}},
		{name: "everything", args: []string{"--origins", "5", "--agents", "4", "--agent-port", "17000", "--dir", "/tmp/kdev", "--port", "0", "--endpoints-file", "/tmp/e.yaml", "--log-level", "debug"},
			want: UpOptions{Origins: 5, Agents: 4, AgentPort: 17000, Dir: "/tmp/kdev", Port: 0, EndpointsFile: "/tmp/e.yaml", LogLevel: slog.LevelDebug, Output: "table"}},
		{name: "one origin at the top port", args: []string{"--origins", "1", "--port", "65135"},
			want: UpOptions{Origins: 1, Agents: 1, AgentPort: 16000, Port: 65135, LogLevel: slog.LevelWarn, Output: "table"}},
		{name: "no room for the proxy", args: []string{"--port", "65136"}, wantErr: "invalid --port 65136"},
		{name: "no agents", args: []string{"--agents", "0"}, want: UpOptions{Origins: 3, Agents: 0, AgentPort: 16000, Port: 15000, LogLevel: slog.LevelWarn, Output: "table"}},
		{name: "too many agents", args: []string{"--agents", "65"}, wantErr: "invalid --agents 65: want 0 to 64"},
		{name: "no room for agents", args: []string{"--agents", "10", "--agent-port", "65500"}, wantErr: "invalid --agent-port 65500"},
		{name: "zero origins", args: []string{"--origins", "0"}, wantErr: "invalid --origins 0: want 1 to 64"},
		{name: "too many origins", args: []string{"--origins", "100"}, wantErr: "invalid --origins 100"},
		{name: "no room for ports", args: []string{"--port", "65534"}, wantErr: "invalid --port 65534"},
		{name: "negative port", args: []string{"--port", "-1"}, wantErr: "invalid --port -1"},
		{name: "bad log level", args: []string{"--log-level", "loud"}, wantErr: `invalid --log-level "loud"`},
		{name: "tls", args: []string{"--tls"}, want: UpOptions{Origins: 3, Agents: 1, AgentPort: 16000, Port: 15000, LogLevel: slog.LevelWarn, Output: "table", TLS: true}},
		{name: "json", args: []string{"-o", "json"}, want: UpOptions{Origins: 3, Agents: 1, AgentPort: 16000, Port: 15000, LogLevel: slog.LevelWarn, Output: "json"}},
		{name: "bad output", args: []string{"-o", "yaml"}, wantErr: `invalid --output "yaml"`},
		{name: "not a number", args: []string{"--origins", "three"}, wantErr: `invalid argument "three" for "--origins"`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			ios, _, _, _ := iostreams.Test()
			f := &cmdutil.Factory{IOStreams: ios, HTTPClient: func() *http.Client { return &http.Client{} }, Logger: func() *slog.Logger { return slog.New(slog.DiscardHandler) }}
			var got *UpOptions
			cmd := NewCmdUp(f, func(_ context.Context, o *UpOptions) error { got = o; return nil })
			cmd.SetArgs(tt.args)
			cmd.SetOut(&bytes.Buffer{})
			cmd.SetErr(&bytes.Buffer{})
			cmd.SetFlagErrorFunc(func(c *cobra.Command, err error) error { return &cmdutil.FlagError{Err: err} })
			err := cmd.ExecuteContext(t.Context())
			if tt.wantErr != "" {
				require.ErrorContains(t, err, tt.wantErr)
				require.Equal(t, cmdutil.ExitUsage, cmdutil.ExitCode(err))
				require.Nil(t, got)
				return
			}
			require.NoError(t, err)
			require.NotNil(t, got.IO)
			require.NotNil(t, got.Env)
			got.IO, got.Env = nil, nil
			require.Equal(t, tt.want, *got)
		})
	}
}

// syncBuffer is a buffer that one goroutine writes while another reads.
type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

func TestUpRunsUntilCancelled(t *testing.T) {
	t.Parallel()
	state := t.TempDir()
	ios, _, _, _ := iostreams.Test()
	out, errOut := &syncBuffer{}, &syncBuffer{}
	ios.Out, ios.ErrOut = out, errOut
	opts := &UpOptions{
		IO:       ios,
		Env:      func(k string) string { return map[string]string{"XDG_STATE_HOME": state}[k] },
		Origins:  2,
		Agents:   1,
		Port:     0,
		LogLevel: slog.LevelInfo,
	}
	ctx, cancel := context.WithCancel(t.Context())
	defer cancel()
	errc := make(chan error, 1)
	go func() { errc <- upRun(ctx, opts) }()

	// The summary is the last thing printed before the cluster waits for the interrupt.
	require.Eventually(t, func() bool { return strings.Contains(out.String(), "Press Ctrl-C to stop.") },
		time.Minute, 10*time.Millisecond, "dev up did not become ready; stderr: %s", errOut)

	dir := filepath.Join(state, "krakenctl", "dev")
	file := filepath.Join(dir, "endpoints.yaml")
	e, err := api.ReadEndpoints(file)
	require.NoError(t, err)
	require.Len(t, e.Origins, 2)
	summary := out.String()
	for _, a := range e.Origins {
		require.Contains(t, summary, "http://"+a)
		host, _, err := net.SplitHostPort(a)
		require.NoError(t, err)
		require.Equal(t, "127.0.0.1", host, "dev origins listen on loopback only")
		tr := &http.Transport{}
		require.NoError(t, client.NewOrigin(a, &http.Client{Transport: tr}).Ready(t.Context()))
		tr.CloseIdleConnections()
	}
	require.Contains(t, summary, "2 origins, each blob on 2 of them, a build-index, a registry proxy and 1 agent.")
	require.Len(t, e.Agents, 1)
	require.Len(t, e.Trackers, 1)
	require.Len(t, e.BuildIndex, 1)
	require.Len(t, e.Proxy, 1)
	require.Regexp(t, `agent 0 +http://`+e.Agents[0]+` +registry: pull images here`, summary)
	require.Regexp(t, `tracker +http://`+e.Trackers[0], summary)
	require.Regexp(t, `build-index +http://`+e.BuildIndex[0], summary)
	require.Regexp(t, `proxy +http://`+e.Proxy[0]+` +registry: push images here`, summary)
	// Every role's admin listener is in the endpoints file and in the table's last column.
	require.NotNil(t, e.Admin)
	require.Len(t, e.Admin.Origins, 2)
	require.Regexp(t, `origin 1 +http://`+e.Origins[1]+` +blobs +http://`+e.Admin.Origins[1]+`\n`, summary)
	require.Regexp(t, `agent 0 +http://`+e.Agents[0]+` +registry: pull images here +http://`+e.Admin.Agents[0]+`\n`, summary)
	require.Regexp(t, `tracker +http://`+e.Trackers[0]+` +peer lists +http://`+e.Admin.Trackers[0]+`\n`, summary)
	require.Regexp(t, `build-index +http://`+e.BuildIndex[0]+` +tags \(krakenctl tag\) +http://`+e.Admin.BuildIndex[0]+`\n`, summary)
	require.Regexp(t, `proxy +http://`+e.Proxy[0]+` +registry: push images here +http://`+e.Admin.Proxy[0]+`\n`, summary)
	for _, a := range append(e.BuildIndex, e.Proxy...) {
		tr := &http.Transport{}
		require.NoError(t, client.NewOrigin(a, &http.Client{Transport: tr}).Ready(t.Context()), "every role answers /readyz: %s", a)
		tr.CloseIdleConnections()
	}
	// What a newcomer types next: push through the proxy, pull through the agent.
	require.Contains(t, summary, "docker push "+e.Proxy[0]+"/hello:v1\n")
	require.Contains(t, summary, "docker pull "+e.Agents[0]+"/hello:v1\n")
	require.Contains(t, summary, "State:      "+dir)
	require.Contains(t, summary, "Endpoints:  "+file)
	require.Contains(t, summary, "krakenctl push FILE\n")
	require.Contains(t, summary, "krakenctl pull DIGEST --file out --agent "+e.Agents[0]+"\n")
	require.Contains(t, summary, "krakenctl pull DIGEST --file out --from-origins\n")
	require.Contains(t, summary, "krakenctl ring status\n")
	require.NotContains(t, summary, "--endpoints-file", "the default file needs no flag")

	cancel()
	require.NoError(t, <-errc)
	require.Contains(t, errOut.String(), "Dev cluster stopped.")
	_, err = os.Stat(file)
	require.ErrorIs(t, err, fs.ErrNotExist, "the endpoints file is removed on exit")
	logData, err := os.ReadFile(filepath.Join(dir, "dev.log"))
	require.NoError(t, err)
	require.Contains(t, string(logData), `"msg":"dev cluster ready"`, "logs go to dev.log as JSON")
	require.NotContains(t, errOut.String(), `"level"`, "logs never reach the terminal")
}

func TestUpCustomEndpointsFileIsInTheHints(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	file := filepath.Join(t.TempDir(), "e.yaml")
	ios, _, _, _ := iostreams.Test()
	out := &syncBuffer{}
	ios.Out = out
	opts := &UpOptions{IO: ios, Env: func(string) string { return "" }, Origins: 1, Dir: dir, EndpointsFile: file, LogLevel: slog.LevelWarn}
	ctx, cancel := context.WithCancel(t.Context())
	defer cancel()
	errc := make(chan error, 1)
	go func() { errc <- upRun(ctx, opts) }()
	require.Eventually(t, func() bool { return strings.Contains(out.String(), "Press Ctrl-C") }, time.Minute, 10*time.Millisecond)
	require.Contains(t, out.String(), "krakenctl ring status --endpoints-file "+file)
	cancel()
	require.NoError(t, <-errc)
}

// TestUpJSON: -o json prints one JSON document with every role's address once the cluster is
// ready, and an endpoints file named .json is written as JSON.
func TestUpJSON(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	file := filepath.Join(t.TempDir(), "e.json")
	ios, _, _, _ := iostreams.Test()
	out, errOut := &syncBuffer{}, &syncBuffer{}
	ios.Out, ios.ErrOut = out, errOut
	opts := &UpOptions{IO: ios, Env: func(string) string { return "" }, Origins: 1, Agents: 1, Dir: dir,
		EndpointsFile: file, LogLevel: slog.LevelWarn, Output: cmdutil.OutputJSON}
	ctx, cancel := context.WithCancel(t.Context())
	defer cancel()
	errc := make(chan error, 1)
	go func() { errc <- upRun(ctx, opts) }()
	require.Eventually(t, func() bool { return strings.Contains(errOut.String(), "Press Ctrl-C") }, time.Minute, 10*time.Millisecond)
	var got Summary
	dec := json.NewDecoder(strings.NewReader(out.String()))
	dec.DisallowUnknownFields()
	require.NoError(t, dec.Decode(&got), "stdout is one JSON document: %s", out)
	require.False(t, dec.More(), "nothing but the document on stdout: %s", out)
	require.Len(t, got.Origins, 1)
	require.Len(t, got.Agents, 1)
	require.Len(t, got.Proxy, 1)
	require.Len(t, got.BuildIndex, 1)
	require.Len(t, got.Trackers, 1)
	require.Equal(t, file, got.EndpointsFile)
	require.Equal(t, dir, got.Dir)
	require.Equal(t, 1, got.Replicas)
	require.NotNil(t, got.Admin, "the admin listeners are in the document")
	admins := append(append(append(append(got.Admin.Proxy, got.Admin.Agents...), got.Admin.BuildIndex...), got.Admin.Trackers...), got.Admin.Origins...)
	require.Len(t, admins, 5)
	for _, a := range append(append(append(got.Proxy, got.Agents...), got.BuildIndex...), admins...) {
		tr := &http.Transport{}
		require.NoError(t, client.NewOrigin(a, &http.Client{Transport: tr}).Ready(t.Context()), "%s answers /readyz", a)
		tr.CloseIdleConnections()
	}
	raw, err := os.ReadFile(file)
	require.NoError(t, err)
	var e api.Endpoints
	require.NoError(t, json.Unmarshal(raw, &e), "the endpoints file is JSON: %s", raw)
	require.Equal(t, got.Endpoints, e)
	require.Empty(t, got.Username+got.Password+got.PasswordFile, "without --tls the proxy has no login")
	require.NoDirExists(t, filepath.Join(dir, dev.AuthDir))
	cancel()
	require.NoError(t, <-errc)
}

func TestUpPortInUse(t *testing.T) {
	t.Parallel()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	defer func() { _ = ln.Close() }()
	ios, _, out, _ := iostreams.Test()
	opts := &UpOptions{IO: ios, Env: func(string) string { return "" }, Origins: 1, Dir: t.TempDir(),
		EndpointsFile: filepath.Join(t.TempDir(), "e.yaml"), Port: ln.Addr().(*net.TCPAddr).Port, LogLevel: slog.LevelWarn}
	err = upRun(t.Context(), opts)
	require.ErrorContains(t, err, "address already in use")
	require.ErrorContains(t, err, "--port")
	require.Empty(t, out.String())
}

// Flags that pass one by one but not together (the tracker on --port+300 would take agent 0's
// port) are a usage error, reported before anything is bound.
func TestUpAgentPortsInsideThePlan(t *testing.T) {
	t.Parallel()
	ios, _, out, _ := iostreams.Test()
	opts := &UpOptions{IO: ios, Env: func(string) string { return "" }, Origins: 1, Agents: 1, AgentPort: 16000, Port: 15700,
		Dir: t.TempDir(), EndpointsFile: filepath.Join(t.TempDir(), "e.yaml"), LogLevel: slog.LevelWarn}
	err := upRun(t.Context(), opts)
	require.ErrorIs(t, err, dev.ErrInvalidConfig)
	require.ErrorContains(t, err, "agent ports 16000-16002 overlap ports 15700-16100")
	require.Equal(t, cmdutil.ExitUsage, cmdutil.ExitCode(err))
	require.Empty(t, out.String())
}

func TestUpWithoutHome(t *testing.T) {
	t.Parallel()
	ios, _, _, _ := iostreams.Test()
	err := upRun(t.Context(), &UpOptions{IO: ios, Env: func(string) string { return "" }, Origins: 1})
	require.ErrorContains(t, err, "pass --dir and --endpoints-file")
}

// startUp runs upRun with opts until the test ends and returns its stdout once the cluster is
// ready.
func startUp(t *testing.T, opts *UpOptions) string {
	t.Helper()
	ios, _, _, _ := iostreams.Test()
	out, errOut := &syncBuffer{}, &syncBuffer{}
	ios.Out, ios.ErrOut = out, errOut
	opts.IO = ios
	ctx, cancel := context.WithCancel(t.Context())
	errc := make(chan error, 1)
	go func() { errc <- upRun(ctx, opts) }()
	t.Cleanup(func() { cancel(); require.NoError(t, <-errc) })
	require.Eventually(t, func() bool { return strings.Contains(out.String()+errOut.String(), "Press Ctrl-C") },
		time.Minute, 10*time.Millisecond, "dev up did not become ready; stderr: %s", errOut)
	return out.String()
}

// With --tls every role serves TLS: the table shows https addresses, the CA and the admin's
// certificate and the proxy's login, and the docker lines begin with the certs.d step for the
// proxy and every agent, then docker login with the password from its file; the endpoints
// file names the CA and the admin's certificate, which reach every role; a client that trusts
// the CA alone (docker) is served by the agents, and by the proxy once it logs in.
func TestUpTLS(t *testing.T) {
	t.Parallel()
	dir, file := t.TempDir(), filepath.Join(t.TempDir(), "e.yaml")
	summary := startUp(t, &UpOptions{Env: func(string) string { return "" }, Origins: 1, Agents: 2, Dir: dir, EndpointsFile: file, LogLevel: slog.LevelWarn, TLS: true})
	e, err := api.ReadEndpoints(file)
	require.NoError(t, err)
	tlsDir := filepath.Join(dir, dev.TLSDir)
	require.Equal(t, &api.EndpointsTLS{CAFile: filepath.Join(tlsDir, "ca.pem"), CertFile: filepath.Join(tlsDir, "admin.pem"), KeyFile: filepath.Join(tlsDir, "admin-key.pem")}, e.TLS)

	require.Regexp(t, `origin 0 +https://`+e.Origins[0]+` +blobs +https://`+e.Admin.Origins[0]+`\n`, summary)
	require.Regexp(t, `proxy +https://`+e.Proxy[0]+` +registry: push images here +https://`+e.Admin.Proxy[0]+`\n`, summary)
	require.NotContains(t, summary, "http://")
	require.Contains(t, summary, "CA:         "+e.TLS.CAFile+"\n")
	require.Contains(t, summary, "Admin cert: "+e.TLS.CertFile+" (key "+e.TLS.KeyFile+")\n")
	var ports []string
	for _, a := range append(e.Proxy, e.Agents...) {
		ports = append(ports, port(a))
	}
	certsD := "for port in " + strings.Join(ports, " ") + "; do sudo mkdir -p /etc/docker/certs.d/127.0.0.1:$port && sudo cp " + e.TLS.CAFile + " /etc/docker/certs.d/127.0.0.1:$port/ca.crt; done\n"
	require.Contains(t, summary, certsD)
	pwFile := filepath.Join(dir, dev.AuthDir, "password")
	pw, err := os.ReadFile(pwFile)
	require.NoError(t, err)
	require.Contains(t, summary, "Username:   dev\n")
	require.Contains(t, summary, "Password:   "+string(pw)+" (in "+pwFile+")\n")
	login := "docker login " + e.Proxy[0] + " -u dev --password-stdin < " + pwFile + "\n"
	require.Contains(t, summary, login, "the password comes from the file, not the command line")
	require.Less(t, strings.Index(summary, certsD), strings.Index(summary, login), "trust first, then log in")
	require.Less(t, strings.Index(summary, login), strings.Index(summary, "docker push "), "log in, then push")
	require.Contains(t, summary, "krakenctl pull DIGEST --file out --agent "+e.Agents[0]+" --tls-ca-file "+e.TLS.CAFile+" --tls-cert-file "+e.TLS.CertFile+" --tls-key-file "+e.TLS.KeyFile+"\n",
		"through an agent with another endpoints file than the default one, TLS needs naming")

	p, err := pki.Load(pki.Config{CAFile: e.TLS.CAFile, CertFile: e.TLS.CertFile, KeyFile: e.TLS.KeyFile})
	require.NoError(t, err)
	require.True(t, p.Identity().In(pki.GroupAdmin), "the endpoints file names an admin's certificate")
	hc := cmdutil.NewHTTPClient(p)
	t.Cleanup(hc.CloseIdleConnections)
	for _, a := range append(append(e.Origins, e.BuildIndex...), e.Trackers...) {
		require.NoError(t, client.NewOrigin(a, hc).Ready(t.Context()), "%s answers the admin", a)
	}
	pool := x509.NewCertPool()
	caPEM, err := os.ReadFile(e.TLS.CAFile)
	require.NoError(t, err)
	require.True(t, pool.AppendCertsFromPEM(caPEM))
	tr := &http.Transport{TLSClientConfig: &tls.Config{RootCAs: pool, MinVersion: tls.VersionTLS12}}
	t.Cleanup(tr.CloseIdleConnections)
	// v2 returns the status and challenge of GET /v2/ on addr, as user with pw when user is set.
	v2 := func(addr, user, pw string) (int, string) {
		t.Helper()
		req, err := http.NewRequestWithContext(t.Context(), http.MethodGet, "https://"+addr+"/v2/", nil)
		require.NoError(t, err)
		if user != "" {
			req.SetBasicAuth(user, pw)
		}
		resp, err := (&http.Client{Transport: tr}).Do(req)
		require.NoError(t, err, "%s serves a client that trusts the CA and has no certificate", addr)
		require.NoError(t, resp.Body.Close())
		return resp.StatusCode, resp.Header.Get("WWW-Authenticate")
	}
	for _, a := range e.Agents {
		code, _ := v2(a, "", "")
		require.Equal(t, http.StatusOK, code, a)
	}
	code, challenge := v2(e.Proxy[0], "", "")
	require.Equal(t, http.StatusUnauthorized, code, "the proxy wants a login")
	require.Contains(t, challenge, "Bearer ")
	code, _ = v2(e.Proxy[0], "dev", "wrong")
	require.Equal(t, http.StatusUnauthorized, code)
	code, _ = v2(e.Proxy[0], "dev", string(pw))
	require.Equal(t, http.StatusOK, code)
}

// -o json with --tls adds the CA, the admin's certificate and the proxy's login, flat, next to
// the addresses.
func TestUpTLSJSON(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	out := startUp(t, &UpOptions{Env: func(string) string { return "" }, Origins: 1, Dir: dir, EndpointsFile: filepath.Join(t.TempDir(), "e.yaml"),
		LogLevel: slog.LevelWarn, Output: cmdutil.OutputJSON, TLS: true})
	var got map[string]any
	require.NoError(t, json.Unmarshal([]byte(out), &got), out)
	tlsDir := filepath.Join(dir, dev.TLSDir)
	require.Equal(t, filepath.Join(tlsDir, "ca.pem"), got["ca_file"])
	require.Equal(t, filepath.Join(tlsDir, "admin.pem"), got["cert_file"])
	require.Equal(t, filepath.Join(tlsDir, "admin-key.pem"), got["key_file"])
	require.NotContains(t, got, "tls", "said once, flat")
	pwFile := filepath.Join(dir, dev.AuthDir, "password")
	pw, err := os.ReadFile(pwFile)
	require.NoError(t, err)
	require.Equal(t, "dev", got["username"])
	require.Equal(t, string(pw), got["password"], "what jq -r .password gives docker login")
	require.Equal(t, pwFile, got["password_file"])
}
