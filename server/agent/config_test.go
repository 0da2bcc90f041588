package agent_test

import (
	"net"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
	"golang.org/x/crypto/bcrypt"

	"github.com/krakenctl/krakenctl/server/agent"
	"github.com/krakenctl/krakenctl/server/auth"
	"github.com/krakenctl/krakenctl/server/cacheapi"
	"github.com/krakenctl/krakenctl/server/config"
	"github.com/krakenctl/krakenctl/server/role"
)

func TestConfigDefaults(t *testing.T) {
	t.Parallel()
	var c agent.Config
	require.NoError(t, config.Decode(strings.NewReader("trackers: [127.0.0.1:15003]\nstore_dir: /tmp/a\n"), &c))
	require.Equal(t, agent.Config{
		Listen: "127.0.0.1:16000", AdminListen: agent.DefaultAdminListen, PeerListen: "127.0.0.1:16001", Trackers: []string{"127.0.0.1:15003"},
		StoreDir: "/tmp/a", SeedTime: 10 * time.Minute, MaxConns: 20, Pipeline: 4 << 20,
		Cleanup: cacheapi.Config{Interval: 5 * time.Minute, TTI: 6 * time.Hour, TTL: cacheapi.Off, HighWatermark: 90, LowWatermark: 80},
	}, c)

	doc := `listen: 127.0.0.1:7000
admin_listen: 127.0.0.1:7002
peer_listen: 0.0.0.0:7001
peer_advertise: 10.0.1.7:7001
api_advertise: 10.0.1.7:7000
trackers: [t1:15003, "https://t2.example:8443"]
store_dir: /var/lib/agent
capacity: 50GiB
egress_rate: 100MiB
ingress_rate: 1.5GB
seed_time: 1m
max_conns: 8
pipeline: 16MiB
build_index: [10.0.0.4:15100, "https://bi.example/api"]
cleanup: {interval: 1m, tti: -1s, ttl: 72h, high_watermark: 70, low_watermark: 40}
`
	c = agent.Config{}
	require.NoError(t, config.Decode(strings.NewReader(doc), &c))
	require.Equal(t, agent.Config{
		Listen: "127.0.0.1:7000", AdminListen: "127.0.0.1:7002", PeerListen: "0.0.0.0:7001", PeerAdvertise: "10.0.1.7:7001", APIAdvertise: "10.0.1.7:7000",
		Trackers: []string{"t1:15003", "https://t2.example:8443"}, StoreDir: "/var/lib/agent",
		Capacity: 50 << 30, EgressRate: 100 << 20, IngressRate: 1.5e9, SeedTime: time.Minute, MaxConns: 8, Pipeline: 16 << 20,
		BuildIndex: []string{"10.0.0.4:15100", "https://bi.example/api"},
		Cleanup:    cacheapi.Config{Interval: time.Minute, TTI: -time.Second, TTL: 72 * time.Hour, HighWatermark: 70, LowWatermark: 40},
	}, c)
}

func TestConfigErrorsNameTheKey(t *testing.T) {
	t.Parallel()
	const base = "trackers: [127.0.0.1:15003]\nstore_dir: /tmp/a\n"
	for _, tc := range []struct{ doc, want string }{
		{"store_dir: /tmp/a\n", "trackers: required"},
		{base + "cleanup: {high_watermark: 80, low_watermark: 90}\n", "cleanup.high_watermark, cleanup.low_watermark: 80 and 90"},
		{base + "cleanup: {high_watermark: 101}\n", "cleanup.high_watermark"},
		{base + "cleanup: {interval: 1ms}\n", "cleanup.interval: 1ms is under a second"},
		{"trackers: []\nstore_dir: /tmp/a\n", "trackers: required"},
		{"trackers: ['ftp://x:1']\nstore_dir: /tmp/a\n", "trackers:"},
		{"trackers: [127.0.0.1:15003]\n", "store_dir: required"},
		{base + "listen: nope\n", "listen: \"nope\" is not host:port"},
		{base + "peer_listen: nope\n", "peer_listen:"},
		{base + "peer_listen: 0.0.0.0:16001\n", "peer_advertise: required when peer_listen \"0.0.0.0:16001\" binds every interface"},
		{base + "peer_listen: ':16001'\n", "peer_advertise: required"},
		{base + "peer_advertise: 0.0.0.0:1\n", "peer_advertise:"},
		{base + "peer_advertise: host:0\n", "peer_advertise: \"host:0\": port must be"},
		{base + "peer_advertise: host\n", "peer_advertise:"},
		{base + "peer_advertise: agent-7.example:7001\n", "host must be an IP address, not a name"},
		{base + "peer_advertise: 169.254.1.7:7001\n", "link-local"},
		{base + "api_advertise: agent-7.example:16000\n", "api_advertise: announce: invalid: api: \"agent-7.example:16000\": host must be an IP address"},
		{base + "api_advertise: 0.0.0.0:16000\n", "api_advertise:"},
		{base + "api_advertise: 10.0.0.7\n", "api_advertise:"},
		{base + "capacity: lots\n", `size "lots"`},
		{base + "egress_rate: -1\n", `line 3: size "-1"`},
		{base + "seed_time: -1s\n", "seed_time: must not be negative"},
		{base + "max_conns: -1\n", "max_conns: must be at least 1"},
		{base + "tracker: [x:1]\n", "field tracker not found"},
		{base + "build_index: [nope]\n", `build_index: "nope"`},
		{base + "build_index: ['host:0']\n", `build_index: "host:0"`},
		{base + "build_index: ['ftp://host:1']\n", "build_index: \"ftp://host:1\": scheme must be http or https"},
		{base + "build_index: ['http://host:1/?x=1']\n", "want scheme://host[:port][/path] only"},
		{base + "build_index: ['http://host', 'host:80']\n", "build_index: host:80 listed twice"},
		{base + "build_index: 127.0.0.1:15100\n", "line 3: cannot unmarshal"},
		{base + "buildindex: [x:1]\n", "field buildindex not found"},
		{"trackers: ['dns://tr:1']\nstore_dir: /tmp/a\n", "trackers[0]: invalid member entry"},
		{"trackers: ['dns:///tr']\nstore_dir: /tmp/a\n", "trackers[0]"},
		{base + "build_index: ['dns:///bi:x']\n", "build_index[0]: invalid member entry"},
		{base + "dns_interval: -1s\n", "dns_interval: must not be negative"},
		{base + "admin_listen: nope\n", `admin_listen: "nope" is not host:port`},
		{base + "admin_listen: 127.0.0.1:16001\n", `admin_listen: "127.0.0.1:16001" overlaps peer_listen "127.0.0.1:16001"`},
		{base + "peer_listen: 0.0.0.0:16000\npeer_advertise: 10.0.0.1:16000\n", `peer_listen: "0.0.0.0:16000" overlaps listen "127.0.0.1:16000"`},
	} {
		var c agent.Config
		err := config.Decode(strings.NewReader(tc.doc), &c)
		require.Error(t, err, tc.doc)
		require.ErrorIs(t, err, config.ErrInvalid)
		require.ErrorContains(t, err, tc.want, tc.doc)
	}
}

func TestConfigAcceptsDNSEntries(t *testing.T) {
	t.Parallel()
	var c agent.Config
	doc := "trackers: ['dns:///tracker.kraken.svc:16100', 10.0.0.9:16100]\nstore_dir: /tmp/a\n" +
		"build_index: ['dns:///bi.kraken.svc:15100']\ndns_interval: 10s\n"
	require.NoError(t, config.Decode(strings.NewReader(doc), &c))
	require.Equal(t, 10*time.Second, c.DNSInterval)
}

func TestValidateNegatives(t *testing.T) {
	t.Parallel()
	c := agent.Config{Trackers: []string{"127.0.0.1:1"}, StoreDir: "/tmp/a", Capacity: -1, EgressRate: -1, IngressRate: -1, Pipeline: -1}
	c.Defaults()
	err := c.Validate()
	for _, key := range []string{"capacity:", "egress_rate:", "ingress_rate:", "pipeline:"} {
		require.ErrorContains(t, err, key)
	}
}

func TestNewRefusesMissingDeps(t *testing.T) {
	t.Parallel()
	cfg := agent.Config{Trackers: []string{"127.0.0.1:1"}, StoreDir: t.TempDir()}
	_, err := agent.New(cfg, agent.Deps{})
	require.ErrorContains(t, err, "no listener")
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	defer func() { _ = ln.Close() }()
	_, err = agent.New(cfg, agent.Deps{Deps: role.Deps{Listener: ln}})
	require.ErrorContains(t, err, "no peer listener")
	// New owns the listeners it is given, even when it fails: the caller has nothing to close.
	_, err = ln.Accept()
	require.ErrorIs(t, err, net.ErrClosed)
	ln1, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	_, err = agent.New(agent.Config{}, agent.Deps{Deps: role.Deps{Listener: ln1}, PeerListener: ln1})
	require.ErrorContains(t, err, "trackers: required")

	// Built but never run: Close releases the listeners and the store, so another agent can
	// open the same directory.
	pln, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	ln2, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	srv, err := agent.New(cfg, agent.Deps{Deps: role.Deps{Listener: ln2}, PeerListener: pln})
	require.NoError(t, err)
	require.NoError(t, srv.Close())
	_, err = pln.Accept()
	require.ErrorIs(t, err, net.ErrClosed)
	ln3, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	pln3, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	srv, err = agent.New(cfg, agent.Deps{Deps: role.Deps{Listener: ln3}, PeerListener: pln3})
	require.NoError(t, err, "the store directory was released")
	require.NoError(t, srv.Close())
}

// TestAuthConfigFile loads auth: from a YAML file as `serve agent` does: the htpasswd and the
// token secret come from the proxy's files, loopback defaults to open, and every problem is
// named by its key path under auth.
func TestAuthConfigFile(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	h, err := bcrypt.GenerateFromPassword([]byte("pw"), bcrypt.MinCost)
	require.NoError(t, err)
	htpasswd := filepath.Join(dir, "htpasswd")
	require.NoError(t, os.WriteFile(htpasswd, []byte("ci:"+string(h)+"\n"), 0o600))
	secret := filepath.Join(dir, "secret")
	require.NoError(t, os.WriteFile(secret, []byte(strings.Repeat("k", 32)+"\n"), 0o600))
	base := "trackers: [127.0.0.1:15003]\nstore_dir: /tmp/a\nbuild_index: [127.0.0.1:15100]\n"

	var c agent.Config
	doc := base + "auth:\n  htpasswd_file: " + htpasswd + "\n  rules: [{repositories: ['**'], users: [ci], actions: [pull]}]\n" +
		"  token: {secret_file: " + secret + "}\n"
	require.NoError(t, config.Decode(strings.NewReader(doc), &c))
	require.NotNil(t, c.Auth)
	require.Equal(t, agent.LoopbackOpen, c.Auth.Loopback)
	require.Equal(t, auth.ModeToken, c.Auth.Mode)
	require.Equal(t, strings.Repeat("k", 32), c.Auth.Token.Secret)
	require.Equal(t, auth.DefaultIssuer, c.Auth.Token.Issuer, "the proxy's default, so that its tokens are good here")
	require.Equal(t, auth.DefaultService, c.Auth.Token.Service)
	require.True(t, strings.HasPrefix(c.Auth.Htpasswd, "ci:$2"))

	c = agent.Config{}
	require.NoError(t, config.Decode(strings.NewReader(base+"auth: {loopback: required}\n"), &c))
	require.Equal(t, agent.LoopbackRequired, c.Auth.Loopback)

	for _, tc := range []struct{ doc, want string }{
		{base + "auth: {loopback: closed}\n", `auth.loopback: "closed" is neither open nor required`},
		{base + "auth: {mode: digest}\n", `auth.mode: "digest" is neither token nor basic`},
		{base + "auth: {rules: [{repositories: ['**'], users: [nobody], actions: [pull]}]}\n", `auth.rules[0].users[0]: user "nobody" is not in htpasswd`},
		{base + "auth: {token: {secret: short}}\n", "auth.token.secret: must be at least 32 bytes"},
		{base + "auth: {token: {ttl: 2h}}\n", "auth.token.ttl:"},
		{"trackers: [127.0.0.1:15003]\nstore_dir: /tmp/a\nauth: {}\n", "auth: needs build_index"},
		{base + "auth: {htpasswd_file: /nonexistent/htpasswd}\n", "auth.htpasswd_file: open /nonexistent/htpasswd"},
	} {
		var c agent.Config
		err := config.Decode(strings.NewReader(tc.doc), &c)
		require.ErrorIs(t, err, config.ErrInvalid, tc.doc)
		require.ErrorContains(t, err, tc.want, tc.doc)
	}
}
