package doctor

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"time"

	"golang.org/x/sync/errgroup"

	"github.com/krakenctl/krakenctl/ring"
	"github.com/krakenctl/krakenctl/server/nodeconfig"
)

// Thresholds of the checks.
const (
	// skewWarn and skewFail bound the clock's difference from the origins'. Date headers have
	// a resolution of a second; beyond a minute, certificates just issued are not yet valid
	// here and tokens expire early or late.
	skewWarn = 5 * time.Second
	skewFail = time.Minute
	// minFree and minFreeFraction are the free space below which the agent cannot store the
	// next layer; certExpiryWarn is how early an expiring certificate is a warning.
	minFree         = 1 << 30
	minFreeFraction = 0.05
	certExpiryWarn  = 7 * 24 * time.Hour
	// maxBody bounds what is read of an answer: only readiness reasons are shown.
	maxBody = 4 << 10
	// maxShown is how many failing addresses a line names.
	maxShown = 3
)

// get fetches url with the check timeout, returning the status, headers and the start of the
// body.
func get(ctx context.Context, c *http.Client, url string) (int, http.Header, string, error) {
	ctx, cancel := context.WithTimeout(ctx, checkTimeout)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	if err != nil {
		return 0, nil, "", fmt.Errorf("GET %s: %w", url, err)
	}
	resp, err := c.Do(req)
	if err != nil {
		return 0, nil, "", err
	}
	defer func() { _ = resp.Body.Close() }()
	body, err := io.ReadAll(io.LimitReader(resp.Body, maxBody))
	if err != nil {
		return resp.StatusCode, resp.Header, "", fmt.Errorf("GET %s: %w", url, err)
	}
	return resp.StatusCode, resp.Header, strings.TrimSpace(string(body)), nil
}

// baseURL is the URL of a host:port or http(s) URL address.
func baseURL(addr string) (string, error) {
	_, base, err := ring.ParseEndpoint(addr)
	return base, err
}

func checkAgent(ctx context.Context, cfg Config, d Deps) []Result {
	up := Result{Check: "agent"}
	startFix := "start the agent (krakenctl serve agent --config /etc/krakenctl/agent.yaml, or the chart's DaemonSet), or point --agent at it"
	base, err := baseURL(cfg.Agent)
	if err != nil {
		up.Status, up.Found, up.Fix = Fail, fmt.Sprintf("agent address: %v", err), "give --agent as host:port"
		return []Result{up, {Check: "agent ready", Status: Fail, Found: "not checked: no agent address", Fix: up.Fix}}
	}
	status, _, _, err := get(ctx, d.Client, base+"/health")
	switch {
	case err != nil:
		up.Status, up.Found, up.Fix = Fail, fmt.Sprintf("nothing answers at %s: %v", cfg.Agent, err), startFix
	case status != http.StatusOK:
		up.Status, up.Found, up.Fix = Fail, fmt.Sprintf("%s answers /health with %d: not a krakenctl agent?", cfg.Agent, status), startFix
	default:
		up.Status, up.Found = OK, fmt.Sprintf("%s answers", cfg.Agent)
	}

	ready := Result{Check: "agent ready"}
	readyAt, where := base, cfg.Agent
	if cfg.AgentAdmin != "" {
		if readyAt, err = baseURL(cfg.AgentAdmin); err != nil {
			ready.Status, ready.Found, ready.Fix = Fail, fmt.Sprintf("agent admin address: %v", err), "give --agent-admin as host:port"
			return []Result{up, ready}
		}
		where = cfg.AgentAdmin + " (admin)"
	} else if up.Status != OK {
		ready.Status, ready.Found, ready.Fix = Fail, "not checked: the agent does not answer", startFix
		return []Result{up, ready}
	}
	status, _, body, err := get(ctx, d.Client, readyAt+"/readyz")
	switch {
	case err != nil:
		ready.Status, ready.Found, ready.Fix = Fail, fmt.Sprintf("nothing answers /readyz at %s: %v", where, err), startFix
	case status == http.StatusOK:
		ready.Status, ready.Found = OK, fmt.Sprintf("%s /readyz: ready", where)
	default:
		ready.Status = Fail
		ready.Found = fmt.Sprintf("%s /readyz: %d %s", where, status, truncate(body, 200))
		ready.Fix = "the agent cannot reach its trackers or build-index: see the checks below and the agent's log"
	}
	return []Result{up, ready}
}

// healthParallel bounds the /health requests checkComponents has in flight.
const healthParallel = 16

// checkComponents asks every address for /health. key names the config key that lists them.
func checkComponents(ctx context.Context, name string, listed, addrs []string, key string, cfg Config, d Deps) Result {
	r := Result{Check: name}
	if len(listed) > 0 && len(addrs) == 0 {
		r.Status, r.Found = Fail, fmt.Sprintf("%s resolve to no address", strings.Join(listed, ", "))
		r.Fix = "see the dns check"
		return r
	}
	if len(addrs) == 0 {
		r.Found = fmt.Sprintf("no %s known (%s)", name, orNone(cfg.Sources))
		r.Fix = fmt.Sprintf("give --agent-config (its %s) or --endpoints-file", key)
		r.Status = Fail
		if name == "origins" {
			// The agent learns origins from the trackers: not knowing them here only means
			// the clock cannot be compared.
			r.Status, r.Fix = Warn, "give --endpoints-file with the cluster's origins to check them and the clock"
		}
		return r
	}
	// In parallel, bounded: a list of hundreds must not take minutes at one timeout each.
	errs := make([]error, len(addrs))
	var g errgroup.Group
	g.SetLimit(healthParallel)
	for i, a := range addrs {
		g.Go(func() error { errs[i] = health(ctx, d.Client, a); return nil })
	}
	_ = g.Wait() // the errors are in errs
	var bad []string
	for _, err := range errs {
		if err != nil {
			bad = append(bad, err.Error())
		}
	}
	switch {
	case len(bad) == 0:
		r.Status, r.Found = OK, fmt.Sprintf("%d of %d answer /health", len(addrs), len(addrs))
	default:
		r.Status = Warn
		if len(bad) == len(addrs) {
			r.Status = Fail
		}
		r.Found = fmt.Sprintf("%d of %d do not answer: %s", len(bad), len(addrs), shorten(bad))
		r.Fix = fmt.Sprintf("check that the %s run and that this node reaches them (network policy, firewall, TLS certificate)", name)
	}
	return r
}

func health(ctx context.Context, c *http.Client, addr string) error {
	base, err := baseURL(addr)
	if err != nil {
		return err
	}
	status, _, _, err := get(ctx, c, base+"/health")
	if err != nil {
		return fmt.Errorf("%s: %w", addr, err)
	}
	if status != http.StatusOK {
		return fmt.Errorf("%s: /health %d", addr, status)
	}
	return nil
}

// checkClock compares the local clock with the Date header of the origins' answers, at the
// middle of each request.
func checkClock(ctx context.Context, origins []string, d Deps) Result {
	r := Result{Check: "clock"}
	var worst time.Duration
	compared := 0
	for _, a := range origins {
		if compared == maxShown {
			break
		}
		base, err := baseURL(a)
		if err != nil {
			continue
		}
		before := d.Now()
		_, hdr, _, err := get(ctx, d.Client, base+"/health")
		after := d.Now()
		if err != nil {
			continue
		}
		date, err := http.ParseTime(hdr.Get("Date"))
		if err != nil {
			continue
		}
		// Date is truncated to the second: compare it with the local time truncated likewise,
		// so that a perfect clock shows no skew.
		local := before.Add(after.Sub(before) / 2).Truncate(time.Second)
		skew := date.Sub(local)
		if skew.Abs() > worst.Abs() || compared == 0 {
			worst = skew
		}
		compared++
	}
	if compared == 0 {
		r.Status, r.Found = Warn, "no origin answered with a Date header to compare with"
		r.Fix = "see the origins check; give --endpoints-file with the cluster's origins"
		return r
	}
	r.Found = fmt.Sprintf("%s from the origins' clocks (%d compared)", signed(worst), compared)
	switch {
	case worst.Abs() > skewFail:
		r.Status = Fail
	case worst.Abs() > skewWarn:
		r.Status = Warn
	default:
		r.Status = OK
		return r
	}
	r.Fix = "synchronise this node's clock (chrony or systemd-timesyncd): certificates and tokens depend on it"
	return r
}

func signed(d time.Duration) string {
	if d >= 0 {
		return "+" + d.String()
	}
	return d.String()
}

func checkDisk(cfg Config, d Deps) Result {
	r := Result{Check: "disk"}
	if cfg.StoreDir == "" {
		r.Status, r.Found, r.Fix = Warn, "the agent's store_dir is not known", "give --agent-config, the agent's config file"
		return r
	}
	st, err := os.Stat(cfg.StoreDir)
	if err != nil || !st.IsDir() {
		if err == nil {
			err = errors.New("not a directory")
		}
		r.Status, r.Found = Fail, fmt.Sprintf("store_dir %s: %v", cfg.StoreDir, err)
		r.Fix = "create it, writable by the agent's user (uid 65532 in the image), or fix store_dir"
		return r
	}
	disk, err := d.Statfs(cfg.StoreDir)
	if err != nil {
		r.Status, r.Found, r.Fix = Fail, fmt.Sprintf("statfs %s: %v", cfg.StoreDir, err), "check the store_dir's filesystem"
		return r
	}
	used, err := d.DirSize(cfg.StoreDir)
	if err != nil {
		r.Status, r.Found, r.Fix = Warn, fmt.Sprintf("reading the cache in %s: %v", cfg.StoreDir, err), "check the store_dir's permissions"
		return r
	}
	capacity := "unlimited"
	if cfg.Capacity < 0 {
		capacity = "an unknown capacity"
	} else if cfg.Capacity > 0 {
		capacity = size(uint64(cfg.Capacity))
	}
	r.Found = fmt.Sprintf("%s: %s free of %s; the cache holds %s of %s", cfg.StoreDir, size(disk.Free), size(disk.Total), size(uint64(used)), capacity)
	switch {
	case disk.Free < minFree || (disk.Total > 0 && float64(disk.Free) < minFreeFraction*float64(disk.Total)):
		r.Status = Fail
		r.Fix = "free space on the filesystem or lower the agent's capacity: the next layer may not fit"
	case cfg.Capacity == 0 || (cfg.Capacity > 0 && uint64(cfg.Capacity) > uint64(used)+disk.Free):
		r.Status = Warn
		r.Fix = "set the agent's capacity below the space the cache can grow into, so it evicts before the disk fills"
	default:
		r.Status = OK
	}
	return r
}

func checkContainerd(cfg Config) Result {
	r := Result{Check: "containerd"}
	if cfg.ContainerdDir == "" {
		r.Status, r.Found, r.Fix = Warn, "not checked: no containerd hosts directory given", "give --containerd-dir"
		return r
	}
	configure := "run `krakenctl agent containerd-config --dir " + cfg.ContainerdDir + "` and set config_path = \"" + cfg.ContainerdDir + "\" in containerd's CRI registry config"
	hosts, err := nodeconfig.ReadHosts(cfg.ContainerdDir)
	if errors.Is(err, fs.ErrNotExist) && len(hosts) == 0 {
		r.Status, r.Found, r.Fix = Fail, fmt.Sprintf("%s does not exist", cfg.ContainerdDir), configure
		return r
	}
	hostport := agentHostPort(cfg.Agent)
	var through, elsewhere []string
	for _, h := range hosts {
		if h.PullsThrough(hostport) {
			through = append(through, h.Registry)
		} else {
			elsewhere = append(elsewhere, h.Registry)
		}
	}
	switch {
	case err != nil:
		r.Status, r.Found, r.Fix = Fail, err.Error(), "fix or rewrite the file: "+configure
	case len(through) == 0:
		r.Status = Fail
		r.Found = fmt.Sprintf("no hosts.toml in %s sends pulls to the agent at %s", cfg.ContainerdDir, hostport)
		r.Fix = configure
	default:
		r.Status = OK
		r.Found = fmt.Sprintf("%s pull through %s", strings.Join(through, ", "), hostport)
		if len(elsewhere) > 0 {
			r.Found += "; not: " + strings.Join(elsewhere, ", ")
		}
	}
	return r
}

// agentHostPort is the host:port of an agent address, as hosts.toml names it.
func agentHostPort(addr string) string {
	key, _, err := ring.ParseEndpoint(addr)
	if err != nil {
		return addr
	}
	return key
}

func checkTLS(ctx context.Context, cfg Config, d Deps) Result {
	r := Result{Check: "tls"}
	if cfg.CAFile == "" {
		r.Status, r.Found = OK, "plain text: no cluster CA configured, nothing to verify"
		return r
	}
	pem, err := os.ReadFile(cfg.CAFile)
	if err != nil {
		r.Status, r.Found, r.Fix = Fail, fmt.Sprintf("CA: %v", err), "point the agent's tls.ca_file (or --tls-ca-file) at the cluster CA"
		return r
	}
	pool := x509.NewCertPool()
	if !pool.AppendCertsFromPEM(pem) {
		r.Status, r.Found, r.Fix = Fail, fmt.Sprintf("CA %s holds no PEM certificate", cfg.CAFile), "point tls.ca_file at the cluster CA's certificate"
		return r
	}
	hostport := agentHostPort(cfg.Agent)
	host, _, err := net.SplitHostPort(hostport)
	if err != nil {
		r.Status, r.Found, r.Fix = Fail, fmt.Sprintf("agent address: %v", err), "give --agent as host:port"
		return r
	}
	cs, err := d.DialTLS(ctx, hostport, &tls.Config{RootCAs: pool, ServerName: host, MinVersion: tls.VersionTLS12})
	if err != nil {
		r.Status = Fail
		r.Found = fmt.Sprintf("the agent at %s does not verify against %s: %v", hostport, cfg.CAFile, err)
		r.Fix = "give the agent a certificate from the cluster CA that names " + host + ", or trust the CA that issued it"
		return r
	}
	leaf := cs.PeerCertificates[0]
	left := leaf.NotAfter.Sub(d.Now())
	r.Found = fmt.Sprintf("the agent's certificate (%s) chains to %s, expires %s", leaf.Subject.CommonName, cfg.CAFile, leaf.NotAfter.UTC().Format(time.DateOnly))
	r.Status = OK
	if left < certExpiryWarn {
		r.Status, r.Fix = Warn, "renew the agent's certificate (the agent re-reads it when the file changes)"
	}
	return r
}

func dialTLS(ctx context.Context, addr string, cfg *tls.Config) (tls.ConnectionState, error) {
	ctx, cancel := context.WithTimeout(ctx, checkTimeout)
	defer cancel()
	d := tls.Dialer{Config: cfg}
	c, err := d.DialContext(ctx, "tcp", addr)
	if err != nil {
		return tls.ConnectionState{}, err
	}
	defer func() { _ = c.Close() }()
	tc, ok := c.(*tls.Conn)
	if !ok {
		return tls.ConnectionState{}, errors.New("not a TLS connection")
	}
	return tc.ConnectionState(), nil
}

func statfs(dir string) (Disk, error) {
	var st syscall.Statfs_t
	if err := syscall.Statfs(dir, &st); err != nil {
		return Disk{}, fmt.Errorf("statfs %s: %w", dir, err)
	}
	bsize := uint64(st.Bsize) //nolint:gosec // a block size is positive
	return Disk{Total: st.Blocks * bsize, Free: st.Bavail * bsize}, nil
}

// dirSize sums regular files' sizes under dir, without following links.
func dirSize(dir string) (int64, error) {
	var n int64
	err := filepath.WalkDir(dir, func(path string, e fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if e.Type().IsRegular() {
			info, err := e.Info()
			if err != nil {
				return err
			}
			n += info.Size()
		}
		return nil
	})
	if err != nil {
		return n, fmt.Errorf("walk %s: %w", dir, err)
	}
	return n, nil
}

func size(n uint64) string {
	const unit = 1024
	if n < unit {
		return strconv.FormatUint(n, 10) + " B"
	}
	div, exp := uint64(unit), 0
	for m := n / unit; m >= unit && exp < 5; m /= unit {
		div *= unit
		exp++
	}
	return fmt.Sprintf("%.1f %ciB", float64(n)/float64(div), "KMGTPE"[exp])
}

func truncate(s string, n int) string {
	s = strings.Join(strings.Fields(s), " ")
	if len(s) <= n {
		return s
	}
	return s[:n] + "…"
}

func shorten(items []string) string {
	if len(items) <= maxShown {
		return strings.Join(items, "; ")
	}
	return strings.Join(items[:maxShown], "; ") + fmt.Sprintf("; and %d more", len(items)-maxShown)
}

func orNone(s string) string {
	if s == "" {
		return "no config or endpoints file found"
	}
	return "from " + s
}
