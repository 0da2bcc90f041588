package bench

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/opencontainers/go-digest"
	"go.yaml.in/yaml/v3"
	"golang.org/x/sync/errgroup"

	"github.com/krakenctl/krakenctl/server/api"
	"github.com/krakenctl/krakenctl/server/client"
	"github.com/krakenctl/krakenctl/server/config"
	"github.com/krakenctl/krakenctl/server/httpserve"
)

// SwarmRoles splits a separate-process run's CPU and memory by role.
type SwarmRoles struct {
	Origin  SwarmRoleUsage `json:"origin"`
	Tracker SwarmRoleUsage `json:"tracker"`
	Agents  SwarmRoleUsage `json:"agents"`
	Clients SwarmRoleUsage `json:"clients"`
}

// SwarmRoleUsage is what the processes of one role used, each by its own account.
type SwarmRoleUsage struct {
	// Processes is how many processes the role ran.
	Processes int `json:"processes"`
	// CPUS is their user+system CPU time from the common release to the last client's exit,
	// summed; CPULifeS over their whole lives (the origin's includes the seeding, say). Where
	// a process's CPU time cannot be read while it runs (/proc, Linux only), CPUS is its whole
	// life's too.
	CPUS     float64 `json:"cpu_s"`
	CPULifeS float64 `json:"cpu_life_s"`
	// PeakRSSBytes is the largest peak resident set of the role's processes (getrusage's
	// maxrss, read when each was reaped); 0 where unknown.
	PeakRSSBytes int64 `json:"peak_rss_bytes"`
}

// ErrProcess is wrapped by the error of a separate-process run when one of its processes
// exits on its own, fails to become ready or fails to stop: the error names the process, its
// PID, how it ended and the end of its log.
var ErrProcess = errors.New("benchmark process failed")

// swarmProcesses is Swarm with cfg.Processes (cfg completed and valid). In a fresh directory
// under cfg.Dir it writes a config for each server and starts, in this order and each ready
// (its admin /readyz answering 200) before the next: the origin (a ring of one, no backend,
// its swarm egress capped at cfg.Rate in its config: peer.egress_rate), the tracker (ready once it
// has asked the running origin for its swarm identity) and the agents (egress_rate and ingress_rate at
// cfg.Rate), all on 127.0.0.1 ports picked free. It seeds the origin through its API as
// Swarm does, then starts one client process per agent; each connects to its agent, says it
// is ready and waits on a pipe that every client shares. Closing the pipe's one write end
// releases them all at once; each reads the blob, checks it, and reports when its first and
// last byte came. The processes' CPU time is read from /proc at the release and when the last
// client has exited; the servers are then stopped (SIGTERM, then SIGKILL after stopGrace),
// which gives every process's whole-life CPU time and peak RSS.
//
// Every process it started has ended when it returns, whatever happened (ctx's end too).
// Each process's stderr goes to logs/NAME.log in the directory; when the run fails (other
// than by ctx's end), the stores are removed but the logs and configs are kept, and the
// error names the directory.
func swarmProcesses(ctx context.Context, cfg SwarmConfig, deps SwarmDeps) (_ SwarmResult, err error) {
	began := time.Now()
	bin, err := swarmBinary(cfg.Binary)
	if err != nil {
		return SwarmResult{}, err
	}
	parent := cfg.Dir
	if parent == "" {
		parent = os.TempDir()
	}
	if err := checkSpace(parent, int64(cfg.Agents)+1, cfg.Size); err != nil {
		return SwarmResult{}, err
	}
	dir, err := os.MkdirTemp(parent, "krakenctl-bench-swarm-*")
	if err != nil {
		return SwarmResult{}, fmt.Errorf("make state directory: %w", err)
	}
	for _, sub := range []string{procLogDir, procConfigDir} {
		if err := os.Mkdir(filepath.Join(dir, sub), 0o700); err != nil {
			return SwarmResult{}, errors.Join(fmt.Errorf("make state directory: %w", err), os.RemoveAll(dir))
		}
	}
	ps := newProcSet(bin, dir, deps)
	defer func() {
		// On success every process is stopped already; this is for every other way out.
		err = errors.Join(err, ps.stopAll())
		switch {
		case cfg.Keep:
			if err != nil {
				err = fmt.Errorf("%w\nstate directory kept in %s", err, dir)
			}
		case err == nil:
			if rerr := os.RemoveAll(dir); rerr != nil {
				err = fmt.Errorf("remove state directory: %w", rerr)
			}
		case ctx.Err() != nil:
			// Stopped from outside: nothing went wrong that the logs would explain.
			if rerr := os.RemoveAll(dir); rerr != nil {
				err = errors.Join(err, fmt.Errorf("remove state directory: %w", rerr))
			}
		default:
			// The stores can be large; the logs and configs say what went wrong.
			err = errors.Join(err, removeExcept(dir, procLogDir, procConfigDir))
			err = fmt.Errorf("%w\nlogs and configs kept in %s", err, dir)
		}
	}()
	res, err := ps.run(ctx, cfg, deps)
	if err != nil {
		return SwarmResult{}, ps.cause(err)
	}
	if err := ps.stopAll(); err != nil {
		return SwarmResult{}, err
	}
	ps.usage(&res)
	if cfg.Keep {
		res.Dir = dir
	}
	res.ElapsedS = time.Since(began).Seconds()
	if deps.Result != nil {
		deps.Result(res)
	}
	return res, nil
}

// Where a separate-process run keeps its logs and configs, under its directory.
const (
	procLogDir    = "logs"
	procConfigDir = "config"
)

// swarmBinary returns the krakenctl executable to run: bin, or this process's own.
func swarmBinary(bin string) (string, error) {
	if bin == "" {
		self, err := os.Executable()
		if err != nil {
			return "", fmt.Errorf("find this executable to run its servers: %w", err)
		}
		bin = self
	}
	fi, err := os.Stat(bin)
	if err != nil {
		return "", fmt.Errorf("%w: binary: %w", ErrInvalidConfig, err)
	}
	if !fi.Mode().IsRegular() || fi.Mode().Perm()&0o111 == 0 {
		return "", fmt.Errorf("%w: binary: %s is not an executable file", ErrInvalidConfig, bin)
	}
	return bin, nil
}

// removeExcept removes everything in dir but the entries named keep.
func removeExcept(dir string, keep ...string) error {
	entries, err := os.ReadDir(dir)
	if err != nil {
		return fmt.Errorf("clean state directory: %w", err)
	}
	var errs []error
	for _, e := range entries {
		if !slices.Contains(keep, e.Name()) {
			errs = append(errs, os.RemoveAll(filepath.Join(dir, e.Name())))
		}
	}
	if err := errors.Join(errs...); err != nil {
		return fmt.Errorf("clean state directory: %w", err)
	}
	return nil
}

// run starts the servers, seeds the origin, runs the clients and reads what the servers
// counted; the servers are still running when it returns.
func (s *procSet) run(ctx context.Context, cfg SwarmConfig, deps SwarmDeps) (SwarmResult, error) {
	res := SwarmResult{
		Agents: cfg.Agents, SizeBytes: cfg.Size, RateBytesPerS: cfg.Rate, Verified: !cfg.SkipVerify, Processes: true,
		IdealS: float64(cfg.Size) / float64(cfg.Rate), PerAgent: []SwarmAgent{},
	}
	// The benchmark's own client: seeding, readiness probes and the servers' statistics.
	hc := httpserve.NewClient(httpserve.ClientOptions{ResponseHeaderTimeout: -1, MaxIdleConnsPerHost: 2, MaxIdleConns: 2 * (cfg.Agents + 2)})
	defer hc.CloseIdleConnections()

	servers := int64(cfg.Agents + 2)
	var mu sync.Mutex // agents become ready on goroutines of their own; Progress takes one at a time
	ready := int64(0)
	readyNow := func() {
		mu.Lock()
		defer mu.Unlock()
		ready++
		reportSwarm(deps, SwarmProgress{Phase: PhaseStart, Done: ready, Total: servers})
	}
	reportSwarm(deps, SwarmProgress{Phase: PhaseStart, Total: servers})
	rate := config.ByteSize(cfg.Rate).String()
	origin, err := s.startServer(ctx, hc, roleOrigin, 0, true, func(a serverAddrs) map[string]any {
		return map[string]any{
			"listen": a.data, "admin_listen": a.admin, "advertise": a.data,
			"store": map[string]any{"dir": filepath.Join(s.dir, "origin"), "max_blob_size": config.ByteSize(cfg.Size).String()},
			"ring":  map[string]any{"members": []string{a.data}, "replicas": 1},
			"peer":  map[string]any{"listen": a.peer, "egress_rate": rate},
		}
	})
	if err != nil {
		return SwarmResult{}, err
	}
	readyNow()
	// After the origin is ready: a tracker asks every origin for its swarm identity at start,
	// and one that found the origin down would leave it out of its handouts until its next
	// probe (the side-by-side's start-order artifact). It is ready once it has asked.
	tracker, err := s.startServer(ctx, hc, roleTracker, 0, false, func(a serverAddrs) map[string]any {
		return map[string]any{
			"listen": a.data, "admin_listen": a.admin, "origins": []string{origin.addrs.data}, "replicas": 1,
			// Every agent runs on this host: they announce loopback addresses.
			"announce": map[string]any{"allow_loopback": true},
		}
	})
	if err != nil {
		return SwarmResult{}, err
	}
	readyNow()
	agents := make([]*proc, cfg.Agents)
	g, gctx := errgroup.WithContext(ctx)
	for i := range agents {
		g.Go(func() error {
			n := i + 1
			a, err := s.startServer(gctx, hc, roleAgent, n, true, func(a serverAddrs) map[string]any {
				return map[string]any{
					"listen": a.data, "admin_listen": a.admin, "peer_listen": a.peer, "trackers": []string{tracker.addrs.data},
					"store_dir":   filepath.Join(s.dir, fmt.Sprintf("agent-%03d", n)),
					"egress_rate": rate, "ingress_rate": rate,
				}
			})
			if err != nil {
				return err
			}
			agents[i] = a
			readyNow()
			return nil
		})
	}
	if err := g.Wait(); err != nil {
		if ctx.Err() != nil {
			return SwarmResult{}, ctx.Err()
		}
		return SwarmResult{}, err
	}
	benchAgents := make([]benchAgent, len(agents))
	agentAddrs := make([]string, len(agents))
	for i, a := range agents {
		benchAgents[i], agentAddrs[i] = benchAgent{n: i + 1, addr: a.addrs.data}, a.addrs.data
	}
	if cfg.EndpointsFile != "" {
		e := api.Endpoints{Origins: []string{origin.addrs.data}, Trackers: []string{tracker.addrs.data}, Agents: agentAddrs}
		if err := api.WriteEndpoints(cfg.EndpointsFile, e); err != nil {
			return SwarmResult{}, fmt.Errorf("write endpoints file: %w", err)
		}
		s.endpointsFile = cfg.EndpointsFile
	}

	// Seed the origin through its API, as Swarm does, before any clock starts.
	seeded := time.Now()
	var uploaded atomic.Int64
	stopTick := ticker(func() { reportSwarm(deps, SwarmProgress{Phase: PhaseSeed, Done: uploaded.Load(), Total: cfg.Size}) })
	d, crc, err := seedBlob(ctx, client.NewOrigin(origin.addrs.data, hc), 0, cfg.Size, &uploaded)
	stopTick()
	if err != nil {
		return SwarmResult{}, err
	}
	reportSwarm(deps, SwarmProgress{Phase: PhaseSeed, Done: cfg.Size, Total: cfg.Size})
	res.SeedS = time.Since(seeded).Seconds()
	res.Digest = d
	originOut := func() (int64, error) {
		st, err := client.NewOrigin(origin.addrs.data, hc).Torrents(ctx, d)
		if err != nil {
			return 0, fmt.Errorf("read the origin's torrent: %w", err)
		}
		for _, t := range st {
			if t.Digest == d {
				return t.BytesOut, nil
			}
		}
		return 0, nil
	}
	outBefore, err := originOut()
	if err != nil {
		return SwarmResult{}, err
	}

	pulls, released, err := s.pull(ctx, cfg, deps, benchAgents, d, crc)
	if err != nil {
		return SwarmResult{}, err
	}
	outAfter, err := originOut()
	if err != nil {
		return SwarmResult{}, err
	}
	res.OriginBytesOut = outAfter - outBefore
	res.OriginCopies = float64(res.OriginBytesOut) / float64(cfg.Size)
	if err := summarize(ctx, hc, &res, benchAgents, d, pulls, released); err != nil {
		return SwarmResult{}, err
	}
	return res, nil
}

// pull starts one client process per agent, waits until every one has connected, releases
// them all at once and waits for each to read the blob and exit. It returns each client's
// times from the release, and the release.
func (s *procSet) pull(ctx context.Context, cfg SwarmConfig, deps SwarmDeps, agents []benchAgent, d digest.Digest, crc uint32) ([]pull, time.Time, error) {
	// The barrier: every client's stdin is the read end of one pipe, and each waits to read
	// it. Closing the one write end, here, ends every read at once.
	gate, release, err := os.Pipe()
	if err != nil {
		return nil, time.Time{}, fmt.Errorf("make the clients' release pipe: %w", err)
	}
	defer func() { _ = release.Close() }() // at the latest: a client left waiting then goes on to be stopped
	clients := make([]*proc, len(agents))
	for i, a := range agents {
		args := []string{"bench", "swarm-client", "--agent", a.addr, "--digest", d.String(), "--size", strconv.FormatInt(cfg.Size, 10)}
		if !cfg.SkipVerify {
			args = append(args, "--crc32c", fmt.Sprintf("%08x", crc))
		}
		c, err := s.startClient(i+1, args, gate)
		if err != nil {
			_ = gate.Close() // the children hold their own copies
			return nil, time.Time{}, err
		}
		clients[i] = c
	}
	_ = gate.Close() // read only by the clients; their copies keep it open
	deadline := time.NewTimer(s.readyTimeout)
	defer deadline.Stop()
	for _, c := range clients {
		select {
		case <-c.clientReady:
		case <-c.exited:
			return nil, time.Time{}, s.exitError(c, "before it was ready")
		case <-s.failed:
			return nil, time.Time{}, s.failure()
		case <-ctx.Done():
			return nil, time.Time{}, ctx.Err()
		case <-deadline.C:
			return nil, time.Time{}, fmt.Errorf("%w: %s (pid %d) not connected to its agent after %s%s", ErrProcess, c, c.pid(), s.readyTimeout, logTail(c.log))
		}
	}

	// Every process's CPU time so far, then the release.
	s.mark(func(p *proc) *time.Duration { return &p.cpuReleased })
	released := time.Now()
	if err := release.Close(); err != nil {
		return nil, time.Time{}, fmt.Errorf("release the clients: %w", err)
	}
	var finished atomic.Int64
	total := cfg.Size * int64(len(clients))
	stopTick := sync.OnceFunc(ticker(func() {
		reportSwarm(deps, SwarmProgress{Phase: PhaseSwarm, Done: finished.Load() * cfg.Size, Total: total})
	}))
	defer stopTick()
	timeout := time.NewTimer(cfg.Timeout)
	defer timeout.Stop()
	pulls := make([]pull, len(clients))
	for i, c := range clients {
		select {
		case <-c.outDone:
		case <-s.failed:
			return nil, time.Time{}, s.failure()
		case <-ctx.Done():
			return nil, time.Time{}, ctx.Err()
		case <-timeout.C:
			return nil, time.Time{}, fmt.Errorf("%d of %d clients finished after %s: %w", finished.Load(), len(clients), cfg.Timeout, errTimeout)
		}
		<-c.exited // its stdout closed: it is exiting
		if !c.cmd.ProcessState.Success() {
			return nil, time.Time{}, s.exitError(c, "")
		}
		r := c.result
		if r == nil {
			return nil, time.Time{}, fmt.Errorf("%w: %s (pid %d) exited without its result%s", ErrProcess, c, c.pid(), logTail(c.log))
		}
		if r.Bytes != cfg.Size {
			return nil, time.Time{}, fmt.Errorf("%w: %s read %d bytes, want %d", ErrProcess, c, r.Bytes, cfg.Size)
		}
		pulls[i] = pull{
			start: released,
			first: time.Unix(0, r.FirstByteUnixNano).Sub(released),
			last:  time.Unix(0, r.LastByteUnixNano).Sub(released),
		}
		finished.Add(1)
	}
	s.wall = time.Since(released)
	// The servers' CPU time at the end of the window; the clients' is read when reaped.
	s.mark(func(p *proc) *time.Duration {
		if p.role == roleClient {
			return nil
		}
		return &p.cpuEnd
	})
	stopTick()
	reportSwarm(deps, SwarmProgress{Phase: PhaseSwarm, Done: total, Total: total})
	return pulls, released, nil
}

// serverAddrs are one server's listeners: its API, its swarm port (origins and agents) and
// its admin listener.
type serverAddrs struct {
	data, peer, admin string
}

// bindRetries is how often a server is started again on new ports when one it was given was
// taken before it could bind it (the ports are picked free, then bound by the child).
const bindRetries = 3

// startServer starts `krakenctl serve role` with the config mk builds on fresh loopback
// addresses, and waits until it is ready.
func (s *procSet) startServer(ctx context.Context, hc *http.Client, role string, n int, peer bool, mk func(serverAddrs) map[string]any) (*proc, error) {
	name := procName(role, n)
	for attempt := 1; ; attempt++ {
		var a serverAddrs
		var err error
		if a.data, err = s.freeAddr(ctx); err == nil && peer {
			a.peer, err = s.freeAddr(ctx)
		}
		if err == nil {
			a.admin, err = s.freeAddr(ctx)
		}
		if err != nil {
			return nil, fmt.Errorf("pick ports for %s: %w", procLabel(role, n), err)
		}
		c := mk(a)
		if s.configHook != nil {
			s.configHook(procLabel(role, n), c)
		}
		b, err := yaml.Marshal(c)
		if err != nil {
			return nil, fmt.Errorf("write %s's config: %w", procLabel(role, n), err)
		}
		path := filepath.Join(s.dir, procConfigDir, name+".yaml")
		if err := os.WriteFile(path, b, 0o600); err != nil {
			return nil, fmt.Errorf("write %s's config: %w", procLabel(role, n), err)
		}
		p := s.newProc(role, n)
		p.addrs = a
		if err := s.start(p, []string{"serve", role, "--config", path}, nil, nil); err != nil {
			return nil, err
		}
		err = s.waitReady(ctx, hc, p)
		if err == nil {
			return p, nil
		}
		if attempt < bindRetries && p.hasExited() && logContains(p.log, "address already in use") {
			s.log.Warn("a port was taken before the server bound it; starting it again on others", "process", p.String(), "attempt", attempt)
			s.forget(p) // reaped: nothing to stop, and no part of the run's accounts
			continue
		}
		return nil, err
	}
}

// waitReady polls p's admin /readyz until it answers 200. It fails when p exits first, when
// ctx ends, or after s.readyTimeout (startTimeout unless a test says otherwise).
func (s *procSet) waitReady(ctx context.Context, hc *http.Client, p *proc) error {
	deadline := time.Now().Add(s.readyTimeout)
	tick := time.NewTicker(50 * time.Millisecond)
	defer tick.Stop()
	url := "http://" + p.addrs.admin + "/readyz"
	for {
		rctx, cancel := context.WithTimeout(ctx, time.Second)
		err := get(rctx, hc, url)
		cancel()
		if err == nil {
			p.ready.Store(true)
			if p.hasExited() { // between the answer and now: the watcher may have missed it
				return s.exitError(p, "as it became ready")
			}
			return nil
		}
		if ctx.Err() != nil {
			return ctx.Err()
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("%w: %s (pid %d) not ready after %s (%s: %w)%s", ErrProcess, p, p.pid(), s.readyTimeout, url, err, logTail(p.log))
		}
		select {
		case <-p.exited:
			return s.exitError(p, "during start")
		case <-ctx.Done():
			return ctx.Err()
		case <-tick.C:
		}
	}
}

// usage fills res's CPU and memory figures from every process's accounts, once each has been
// reaped.
func (s *procSet) usage(res *SwarmResult) {
	roles := &SwarmRoles{}
	for _, p := range s.all() {
		var u *SwarmRoleUsage
		switch p.role {
		case roleOrigin:
			u = &roles.Origin
		case roleTracker:
			u = &roles.Tracker
		case roleAgent:
			u = &roles.Agents
		default:
			u = &roles.Clients
		}
		ps := p.cmd.ProcessState
		life := ps.UserTime() + ps.SystemTime()
		// The window: from the release to the last client's exit. A client's ends with its life.
		end := life
		if p.role != roleClient && p.cpuEnd >= 0 {
			end = p.cpuEnd
		}
		window := end
		if p.cpuReleased >= 0 {
			window = max(end-p.cpuReleased, 0)
		}
		u.Processes++
		u.CPUS += window.Seconds()
		u.CPULifeS += life.Seconds()
		u.PeakRSSBytes = max(u.PeakRSSBytes, maxRSS(ps))
	}
	res.Roles = roles
	res.CPUSeconds = roles.Origin.CPUS + roles.Tracker.CPUS + roles.Agents.CPUS + roles.Clients.CPUS
	gib := float64(res.Agents) * float64(res.SizeBytes) / (1 << 30)
	res.CPUSecondsPerGiB = res.CPUSeconds / gib
	res.CPUS, res.CPUSPerGiB = res.CPUSeconds, res.CPUSecondsPerGiB
	if s.wall > 0 {
		res.CPUCores = res.CPUSeconds / s.wall.Seconds()
	}
}

// freeAddr returns a loopback address whose port was free a moment ago and that this run has
// not handed out before (a port freed by one probe can come back from the next).
func (s *procSet) freeAddr(ctx context.Context) (string, error) {
	for {
		ln, err := (&lc).Listen(ctx, "tcp", "127.0.0.1:0")
		if err != nil {
			return "", err
		}
		addr := ln.Addr().String()
		if err := ln.Close(); err != nil {
			return "", err
		}
		s.mu.Lock()
		taken := s.addrs[addr]
		s.addrs[addr] = true
		s.mu.Unlock()
		if !taken {
			return addr, nil
		}
	}
}

func procLabel(role string, n int) string {
	if n == 0 {
		return role
	}
	return role + " " + strconv.Itoa(n)
}

// procName is the file name of a process's log and config: "origin", "agent-003".
func procName(role string, n int) string {
	if n == 0 {
		return role
	}
	return fmt.Sprintf("%s-%03d", role, n)
}
