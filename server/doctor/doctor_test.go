package doctor_test

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"errors"
	"fmt"
	"math/big"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/krakenctl/krakenctl/ring/members"
	"github.com/krakenctl/krakenctl/server/doctor"
	"github.com/krakenctl/krakenctl/server/nodeconfig"
)

// now is the fake local clock; origins answer with Date headers relative to it.
var now = time.Date(2026, 12, 7, 12, 0, 0, 0, time.UTC)

// component serves /health and /readyz like a krakenctl role; date, when set, is its clock.
func component(t *testing.T, ready bool, date time.Time) string {
	t.Helper()
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if !date.IsZero() {
			w.Header().Set("Date", date.UTC().Format(http.TimeFormat))
		}
		switch r.URL.Path {
		case "/health":
			_, _ = w.Write([]byte(`{"status":"ok"}`))
		case "/readyz":
			if !ready {
				w.WriteHeader(http.StatusServiceUnavailable)
				_, _ = w.Write([]byte(`{"status":"not ready","reason":"no tracker answers"}`))
				return
			}
			_, _ = w.Write([]byte(`{"status":"ready"}`))
		default:
			http.NotFound(w, r)
		}
	}))
	t.Cleanup(srv.Close)
	return srv.Listener.Addr().String()
}

// deadAddr is an address where nothing listens.
func deadAddr(t *testing.T) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	addr := ln.Addr().String()
	require.NoError(t, ln.Close())
	return addr
}

type fakeResolver map[string][]string

func (f fakeResolver) LookupHost(_ context.Context, host string) ([]string, error) {
	if a, ok := f[host]; ok {
		return a, nil
	}
	return nil, &net.DNSError{Err: "no such host", Name: host, IsNotFound: true}
}

func deps() doctor.Deps {
	return doctor.Deps{
		Client:   http.DefaultClient,
		Resolver: fakeResolver{},
		Now:      func() time.Time { return now },
		Statfs:   func(string) (doctor.Disk, error) { return doctor.Disk{Total: 100 << 30, Free: 60 << 30}, nil },
		DirSize:  func(string) (int64, error) { return 10 << 30, nil },
		DialTLS: func(context.Context, string, *tls.Config) (tls.ConnectionState, error) {
			return tls.ConnectionState{}, errors.New("no TLS here")
		},
	}
}

// healthyNode is a node where everything is in order.
func healthyNode(t *testing.T) doctor.Config {
	t.Helper()
	agent := component(t, true, time.Time{})
	ctrd := t.TempDir()
	_, err := nodeconfig.WriteHosts(ctrd, []string{"docker.io"}, nodeconfig.Mirror{Agent: "http://" + agent, Fallback: true}, false)
	require.NoError(t, err)
	return doctor.Config{
		Agent:         agent,
		Trackers:      []string{component(t, true, time.Time{})},
		Origins:       []string{component(t, true, now), component(t, true, now.Add(time.Second))},
		BuildIndex:    []string{component(t, true, time.Time{})},
		StoreDir:      t.TempDir(),
		Capacity:      20 << 30,
		ContainerdDir: ctrd,
	}
}

func byCheck(rs []doctor.Result) map[string]doctor.Result {
	m := make(map[string]doctor.Result, len(rs))
	for _, r := range rs {
		m[r.Check] = r
	}
	return m
}

func TestAllOK(t *testing.T) {
	rs := doctor.Run(t.Context(), healthyNode(t), deps())
	for _, r := range rs {
		assert.Equal(t, doctor.OK, r.Status, "%+v", r)
		assert.Empty(t, r.Fix, "an ok line has nothing to fix: %+v", r)
	}
	assert.False(t, doctor.Failed(rs))
	names := make([]string, len(rs))
	for i, r := range rs {
		names[i] = r.Check
	}
	assert.Equal(t, []string{"agent", "agent ready", "dns", "trackers", "origins", "build-index", "clock", "disk", "containerd", "tls"}, names)
	got := byCheck(rs)
	assert.Contains(t, got["clock"].Found, "+1s", "the worst of the origins' skews")
	assert.Contains(t, got["disk"].Found, "60.0 GiB free of 100.0 GiB; the cache holds 10.0 GiB of 20.0 GiB")
	assert.Contains(t, got["containerd"].Found, "docker.io pull through")
}

func TestNothingInstalled(t *testing.T) {
	cfg := doctor.Config{Agent: deadAddr(t), ContainerdDir: filepath.Join(t.TempDir(), "certs.d")}
	rs := doctor.Run(t.Context(), cfg, deps())
	require.True(t, doctor.Failed(rs))
	got := byCheck(rs)
	assert.Equal(t, doctor.Fail, got["agent"].Status)
	assert.Contains(t, got["agent"].Found, "nothing answers at "+cfg.Agent)
	assert.Contains(t, got["agent"].Fix, "krakenctl serve agent")
	assert.Equal(t, doctor.Fail, got["agent ready"].Status)
	assert.Equal(t, doctor.Fail, got["trackers"].Status)
	assert.Equal(t, doctor.Warn, got["origins"].Status, "the agent does not need to know the origins")
	assert.Equal(t, doctor.Warn, got["disk"].Status)
	assert.Equal(t, doctor.Fail, got["containerd"].Status)
	assert.Contains(t, got["containerd"].Found, "does not exist")
	assert.Contains(t, got["containerd"].Fix, "krakenctl agent containerd-config")
	for _, r := range rs {
		if r.Status != doctor.OK {
			assert.NotEmpty(t, r.Fix, "every problem says how to fix it: %+v", r)
		}
	}
}

func TestAgentNotReady(t *testing.T) {
	cfg := healthyNode(t)
	cfg.AgentAdmin = component(t, false, time.Time{})
	got := byCheck(doctor.Run(t.Context(), cfg, deps()))
	assert.Equal(t, doctor.OK, got["agent"].Status)
	assert.Equal(t, doctor.Fail, got["agent ready"].Status)
	assert.Contains(t, got["agent ready"].Found, "(admin) /readyz: 503")
	assert.Contains(t, got["agent ready"].Found, "no tracker answers", "the agent's reason is shown")
}

func TestComponentsPartlyDown(t *testing.T) {
	cfg := healthyNode(t)
	dead := deadAddr(t)
	cfg.Trackers = append(cfg.Trackers, dead)
	cfg.BuildIndex = []string{dead}
	got := byCheck(doctor.Run(t.Context(), cfg, deps()))
	assert.Equal(t, doctor.Warn, got["trackers"].Status, "one of two trackers is down")
	assert.Contains(t, got["trackers"].Found, "1 of 2 do not answer: "+dead)
	assert.Equal(t, doctor.Fail, got["build-index"].Status, "no build-index answers")
}

func TestClockSkew(t *testing.T) {
	for _, c := range []struct {
		skew time.Duration
		want doctor.Status
	}{
		{0, doctor.OK},
		{-3 * time.Second, doctor.OK},
		{20 * time.Second, doctor.Warn},
		{-10 * time.Minute, doctor.Fail},
	} {
		cfg := healthyNode(t)
		cfg.Origins = []string{component(t, true, now.Add(c.skew))}
		r := byCheck(doctor.Run(t.Context(), cfg, deps()))["clock"]
		assert.Equal(t, c.want, r.Status, "skew %v: %+v", c.skew, r)
		if c.want != doctor.OK {
			assert.Contains(t, r.Fix, "chrony")
		}
	}
	cfg := healthyNode(t)
	cfg.Origins = nil
	r := byCheck(doctor.Run(t.Context(), cfg, deps()))["clock"]
	assert.Equal(t, doctor.Warn, r.Status, "nothing to compare with")
}

func TestDisk(t *testing.T) {
	for _, c := range []struct {
		name     string
		disk     doctor.Disk
		used     int64
		capacity int64
		want     doctor.Status
	}{
		{"room", doctor.Disk{Total: 100 << 30, Free: 60 << 30}, 10 << 30, 20 << 30, doctor.OK},
		{"nearly full", doctor.Disk{Total: 100 << 30, Free: 2 << 30}, 10 << 30, 20 << 30, doctor.Fail},
		{"tiny", doctor.Disk{Total: 2 << 30, Free: 512 << 20}, 0, 1 << 30, doctor.Fail},
		{"capacity beyond the disk", doctor.Disk{Total: 100 << 30, Free: 30 << 30}, 10 << 30, 50 << 30, doctor.Warn},
		{"unlimited", doctor.Disk{Total: 100 << 30, Free: 60 << 30}, 0, 0, doctor.Warn},
		{"capacity unknown", doctor.Disk{Total: 100 << 30, Free: 60 << 30}, 0, -1, doctor.OK},
		{"capacity unknown, disk full", doctor.Disk{Total: 100 << 30, Free: 1 << 20}, 0, -1, doctor.Fail},
	} {
		cfg := healthyNode(t)
		cfg.Capacity = c.capacity
		d := deps()
		d.Statfs = func(string) (doctor.Disk, error) { return c.disk, nil }
		d.DirSize = func(string) (int64, error) { return c.used, nil }
		r := byCheck(doctor.Run(t.Context(), cfg, d))["disk"]
		assert.Equal(t, c.want, r.Status, "%s: %+v", c.name, r)
	}
	cfg := healthyNode(t)
	cfg.StoreDir = filepath.Join(cfg.StoreDir, "missing")
	r := byCheck(doctor.Run(t.Context(), cfg, deps()))["disk"]
	assert.Equal(t, doctor.Fail, r.Status)
	assert.Contains(t, r.Fix, "65532")
}

func TestDiskReal(t *testing.T) {
	// The real statfs and walk, on a directory with a known file.
	dir := t.TempDir()
	require.NoError(t, os.WriteFile(filepath.Join(dir, "blob"), make([]byte, 3000), 0o644))
	d := doctor.DefaultDeps(http.DefaultClient)
	size, err := d.DirSize(dir)
	require.NoError(t, err)
	assert.Equal(t, int64(3000), size)
	disk, err := d.Statfs(dir)
	require.NoError(t, err)
	assert.Positive(t, disk.Total)
	assert.LessOrEqual(t, disk.Free, disk.Total)
}

func TestContainerd(t *testing.T) {
	cfg := healthyNode(t)
	// Another registry that does not go through the agent is named but does not fail.
	require.NoError(t, os.MkdirAll(filepath.Join(cfg.ContainerdDir, "quay.io"), 0o755))
	require.NoError(t, os.WriteFile(filepath.Join(cfg.ContainerdDir, "quay.io", "hosts.toml"), []byte(`server = "https://quay.io"`), 0o644))
	r := byCheck(doctor.Run(t.Context(), cfg, deps()))["containerd"]
	assert.Equal(t, doctor.OK, r.Status)
	assert.Contains(t, r.Found, "not: quay.io")

	// Pointing at another agent is a failure.
	cfg.Agent = component(t, true, time.Time{})
	r = byCheck(doctor.Run(t.Context(), cfg, deps()))["containerd"]
	assert.Equal(t, doctor.Fail, r.Status)
	assert.Contains(t, r.Found, "no hosts.toml")

	// A file that does not parse is named.
	bad := filepath.Join(cfg.ContainerdDir, "quay.io", "hosts.toml")
	require.NoError(t, os.WriteFile(bad, []byte(`server = [`), 0o644))
	r = byCheck(doctor.Run(t.Context(), cfg, deps()))["containerd"]
	assert.Equal(t, doctor.Fail, r.Status)
	assert.Contains(t, r.Found, bad)
}

func TestTLS(t *testing.T) {
	srv := httptest.NewTLSServer(http.NotFoundHandler())
	t.Cleanup(srv.Close)
	writeCA := func(der []byte) string {
		p := filepath.Join(t.TempDir(), "ca.pem")
		require.NoError(t, os.WriteFile(p, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}), 0o644))
		return p
	}
	d := doctor.DefaultDeps(http.DefaultClient)
	d.Now = func() time.Time { return time.Now() }
	cfg := healthyNode(t)
	cfg.Agent = srv.Listener.Addr().String()

	cfg.CAFile = writeCA(srv.Certificate().Raw)
	r := byCheck(doctor.Run(t.Context(), cfg, d))["tls"]
	assert.Equal(t, doctor.OK, r.Status, "%+v", r)
	assert.Contains(t, r.Found, "chains to "+cfg.CAFile)

	// httptest's servers share one certificate: a CA that is not it comes from elsewhere.
	cfg.CAFile = writeCA(otherCert(t))
	r = byCheck(doctor.Run(t.Context(), cfg, d))["tls"]
	assert.Equal(t, doctor.Fail, r.Status, "%+v", r)
	assert.Contains(t, r.Found, "does not verify")

	cfg.CAFile = filepath.Join(t.TempDir(), "missing.pem")
	r = byCheck(doctor.Run(t.Context(), cfg, d))["tls"]
	assert.Equal(t, doctor.Fail, r.Status)

	cfg.CAFile = ""
	r = byCheck(doctor.Run(t.Context(), cfg, d))["tls"]
	assert.Equal(t, doctor.OK, r.Status)
	assert.Contains(t, r.Found, "plain text")
}

func TestDNS(t *testing.T) {
	cfg := healthyNode(t)
	tracker := cfg.Trackers[0]
	host, port, err := net.SplitHostPort(tracker)
	require.NoError(t, err)
	d := deps()
	d.Resolver = fakeResolver{"tracker.krakenctl.svc": {host}}
	cfg.Trackers = []string{"dns:///tracker.krakenctl.svc:" + port}
	got := byCheck(doctor.Run(t.Context(), cfg, d))
	assert.Equal(t, doctor.OK, got["dns"].Status, "%+v", got["dns"])
	assert.Contains(t, got["dns"].Found, "dns:///tracker.krakenctl.svc:"+port+" → 1")
	assert.Equal(t, doctor.OK, got["trackers"].Status, "the resolved address is checked: %+v", got["trackers"])

	// A huge answer is bounded as the roles bound it, and its addresses are asked in parallel
	// (the listed one answers; the rest are the same address many times over, deduplicated).
	many := []string{host}
	for i := range 3 * members.MaxAddrs {
		many = append(many, host, fmt.Sprintf("127.0.%d.%d", 100+i/250, 1+i%250))
	}
	d.Resolver = fakeResolver{"tracker.krakenctl.svc": many}
	got = byCheck(doctor.Run(t.Context(), cfg, d))
	assert.Contains(t, got["dns"].Found, fmt.Sprintf("→ %d", members.MaxAddrs), "at most MaxAddrs addresses: %+v", got["dns"])
	d.Resolver = fakeResolver{"tracker.krakenctl.svc": {host}}

	cfg.Trackers = []string{"dns:///missing.krakenctl.svc:16100", "dns:///bad"}
	got = byCheck(doctor.Run(t.Context(), cfg, d))
	assert.Equal(t, doctor.Fail, got["dns"].Status)
	assert.Contains(t, got["dns"].Found, "missing.krakenctl.svc")
	assert.Contains(t, got["dns"].Found, `"dns:///bad": missing :PORT (want dns:///NAME:PORT)`)
	assert.Equal(t, doctor.Fail, got["trackers"].Status)
	assert.Contains(t, got["trackers"].Fix, "dns check")
}

func TestParseDNS(t *testing.T) {
	name, port, ok, err := doctor.ParseDNS("dns:///origin.ns.svc.cluster.local:15000")
	require.NoError(t, err)
	assert.True(t, ok)
	assert.Equal(t, "origin.ns.svc.cluster.local", name)
	assert.Equal(t, "15000", port)
	_, _, ok, err = doctor.ParseDNS("10.0.0.1:15000")
	assert.False(t, ok)
	require.NoError(t, err)
	for _, bad := range []string{"dns:///x", "dns:///x:0", "dns:///x:http", "dns:///:80", "dns:///a/b:80"} {
		_, _, ok, err := doctor.ParseDNS(bad)
		assert.True(t, ok, bad)
		assert.Error(t, err, bad)
	}
}

// otherCert is a self-signed CA certificate that issued nothing the test servers present.
func otherCert(t *testing.T) []byte {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	require.NoError(t, err)
	tmpl := &x509.Certificate{
		SerialNumber:          big.NewInt(1),
		Subject:               pkix.Name{CommonName: "another CA"},
		NotBefore:             now.Add(-time.Hour),
		NotAfter:              now.Add(24 * time.Hour),
		IsCA:                  true,
		BasicConstraintsValid: true,
		KeyUsage:              x509.KeyUsageCertSign,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	require.NoError(t, err)
	return der
}
