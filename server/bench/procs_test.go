package bench

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/json"
	"fmt"
	"hash/crc32"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"runtime"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/opencontainers/go-digest"
	"github.com/stretchr/testify/require"
)

// pids records the processes a separate-process run starts.
type pids struct {
	mu sync.Mutex
	m  map[string]int
}

func (p *pids) add(name string, pid int) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.m == nil {
		p.m = map[string]int{}
	}
	p.m[name+fmt.Sprintf("#%d", pid)] = pid
}

func (p *pids) names() []string {
	p.mu.Lock()
	defer p.mu.Unlock()
	var out []string
	for n := range p.m {
		out = append(out, n[:strings.IndexByte(n, '#')])
	}
	return out
}

// pid returns the PID of the process named name (the first, if it was started again).
func (p *pids) pid(name string) int {
	p.mu.Lock()
	defer p.mu.Unlock()
	for n, pid := range p.m {
		if n[:strings.IndexByte(n, '#')] == name {
			return pid
		}
	}
	return 0
}

// requireGone fails unless every process recorded is gone: reaped, so no PID answers (kill
// with signal 0 fails with ESRCH).
func (p *pids) requireGone(t *testing.T) {
	t.Helper()
	p.mu.Lock()
	defer p.mu.Unlock()
	require.NotEmpty(t, p.m)
	for name, pid := range p.m {
		err := syscall.Kill(pid, 0)
		require.ErrorIs(t, err, syscall.ESRCH, "%s (pid %d) is gone", name, pid)
	}
}

func requireEmptyDir(t *testing.T, dir string) {
	t.Helper()
	entries, err := os.ReadDir(dir)
	require.NoError(t, err)
	require.Empty(t, entries, "the run's directory is removed")
}

func TestSwarmProcesses(t *testing.T) {
	t.Parallel()
	bin := binary(t)
	parent := t.TempDir()
	var started pids
	var mu sync.Mutex
	var seen []SwarmProgress
	const size = 4 << 20
	res, err := Swarm(t.Context(), SwarmConfig{Agents: 2, Size: size, Rate: 8 << 20, Dir: parent, SkipBaseline: true, Processes: true, Binary: bin},
		SwarmDeps{
			procStarted: started.add,
			Progress:    func(p SwarmProgress) { mu.Lock(); seen = append(seen, p); mu.Unlock() },
		})
	require.NoError(t, err)

	// Every process was a process of its own, and none is left.
	require.ElementsMatch(t, []string{"origin", "tracker", "agent 1", "agent 2", "client 1", "client 2"}, started.names())
	started.requireGone(t)
	requireEmptyDir(t, parent)

	// Every client read the whole blob and checked its CRC-32C (the run fails otherwise);
	// each agent received the blob's bytes through the swarm.
	require.True(t, res.Processes)
	require.True(t, res.Verified)
	require.Len(t, res.PerAgent, 2)
	h := sha256.New()
	_, err = io.Copy(h, blobReader(0, size))
	require.NoError(t, err)
	require.Equal(t, digest.NewDigest(digest.SHA256, h), res.Digest)
	for _, a := range res.PerAgent {
		require.Positive(t, a.TimeS)
		require.LessOrEqual(t, a.FirstByteS, a.TimeS)
		require.GreaterOrEqual(t, a.BytesIn, int64(size), "agent %d received the blob", a.Agent)
	}
	require.Positive(t, res.OriginCopies)
	require.LessOrEqual(t, res.P50S, res.P99S)
	require.InDelta(t, res.IdealS/res.P50S, res.EfficiencyP50, 1e-9)

	// CPU from each process's own account, split by role; peak RSS per role.
	rl := res.Roles
	require.NotNil(t, rl)
	require.Equal(t, 1, rl.Origin.Processes)
	require.Equal(t, 1, rl.Tracker.Processes)
	require.Equal(t, 2, rl.Agents.Processes)
	require.Equal(t, 2, rl.Clients.Processes)
	require.Positive(t, res.CPUSeconds)
	require.InDelta(t, rl.Origin.CPUS+rl.Tracker.CPUS+rl.Agents.CPUS+rl.Clients.CPUS, res.CPUSeconds, 1e-9)
	require.InDelta(t, res.CPUSeconds/(2.0*size/(1<<30)), res.CPUSecondsPerGiB, 1e-9)
	require.Equal(t, res.CPUSeconds, res.CPUS)
	for _, u := range []SwarmRoleUsage{rl.Origin, rl.Tracker, rl.Agents, rl.Clients} {
		require.Positive(t, u.CPULifeS, "every process used some CPU in its life")
		require.LessOrEqual(t, u.CPUS, u.CPULifeS+0.02, "the window is part of the life (to /proc's 10 ms ticks)")
		if runtime.GOOS == "linux" {
			require.Positive(t, u.PeakRSSBytes)
		}
	}

	// The JSON keeps today's keys and adds the processes' CPU.
	raw, err := json.Marshal(res)
	require.NoError(t, err)
	var m map[string]any
	require.NoError(t, json.Unmarshal(raw, &m))
	for _, k := range []string{"agents", "size_bytes", "p50_s", "p99_s", "efficiency_p50", "efficiency_p99", "origin_copies",
		"per_agent", "cpu_s", "cpu_seconds", "cpu_seconds_per_gib", "roles"} {
		require.Contains(t, m, k)
	}
	require.Contains(t, m["roles"], "agents")

	// The phases ended in order.
	var ends []string
	for _, p := range seen {
		if p.Done == p.Total && (len(ends) == 0 || ends[len(ends)-1] != p.Phase) {
			ends = append(ends, p.Phase)
		}
	}
	require.Equal(t, []string{PhaseStart, PhaseSeed, PhaseSwarm}, ends)
}

func TestSwarmProcessesChildFailsAtStart(t *testing.T) {
	t.Parallel()
	bin := binary(t)
	parent := t.TempDir()
	var started pids
	_, err := Swarm(t.Context(), SwarmConfig{Agents: 2, Size: 1 << 20, Rate: 8 << 20, Dir: parent, SkipBaseline: true, Processes: true, Binary: bin},
		SwarmDeps{
			procStarted: started.add,
			// Agent 2's config has a key no agent knows: it exits at once.
			procConfig: func(name string, cfg map[string]any) {
				if name == "agent 2" {
					cfg["no_such_key"] = true
				}
			},
		})
	require.ErrorIs(t, err, ErrProcess)
	msg := err.Error()
	t.Log(msg)
	require.Contains(t, msg, "agent 2 (pid ")
	require.Contains(t, msg, "exited during start: exit status")
	require.Contains(t, msg, "no_such_key", "the end of its log says why")
	require.Contains(t, msg, "logs and configs kept in "+parent)

	// Nothing runs on; the stores are gone, the logs and configs are kept.
	require.Contains(t, started.names(), "agent 2")
	started.requireGone(t)
	entries, err := os.ReadDir(parent)
	require.NoError(t, err)
	require.Len(t, entries, 1)
	dir := parent + "/" + entries[0].Name()
	kept, err := os.ReadDir(dir)
	require.NoError(t, err)
	var names []string
	for _, e := range kept {
		names = append(names, e.Name())
	}
	require.ElementsMatch(t, []string{"logs", "config"}, names)
	log, err := os.ReadFile(dir + "/logs/agent-002.log")
	require.NoError(t, err)
	require.Contains(t, string(log), "no_such_key")
	require.Contains(t, msg, dir+"/logs/agent-002.log")
}

func TestSwarmProcessesStopsWithItsContext(t *testing.T) {
	t.Parallel()
	bin := binary(t)
	parent := t.TempDir()
	var started pids
	ctx, cancel := context.WithCancel(t.Context())
	defer cancel()
	// 8 MiB at 1 MiB/s takes seconds: the context ends while the clients read.
	_, err := Swarm(ctx, SwarmConfig{Agents: 2, Size: 8 << 20, Rate: 1 << 20, Dir: parent, SkipBaseline: true, Processes: true, Binary: bin},
		SwarmDeps{
			procStarted: started.add,
			Progress: func(p SwarmProgress) {
				if p.Phase == PhaseSwarm {
					cancel()
				}
			},
		})
	require.ErrorIs(t, err, context.Canceled)
	require.Contains(t, started.names(), "client 2", "the clients had started")
	started.requireGone(t)
	requireEmptyDir(t, parent)
}

func TestSwarmProcessesRejects(t *testing.T) {
	t.Parallel()
	bin := binary(t)
	base := SwarmConfig{Agents: 2, Size: 1 << 20, Rate: 1 << 20, SkipBaseline: true, Processes: true, Binary: bin}
	notExec := t.TempDir() + "/krakenctl"
	require.NoError(t, os.WriteFile(notExec, []byte("#!/bin/sh\n"), 0o600))
	for _, tc := range []struct {
		name string
		edit func(*SwarmConfig)
		want string
	}{
		{"negative agents", func(c *SwarmConfig) { c.Agents = -1 }, "agents: want 1..256"},
		{"tls", func(c *SwarmConfig) { c.TLS = true }, "processes: not with tls"},
		{"no p2p", func(c *SwarmConfig) { c.NoP2P = true }, "processes: not with no-p2p"},
		{"baseline", func(c *SwarmConfig) { c.SkipBaseline = false }, "processes: not with the baseline"},
		{"hold", func(c *SwarmConfig) { c.Hold = time.Second }, "processes: not with hold"},
		{"binary without processes", func(c *SwarmConfig) { c.Processes = false }, "binary: only with processes"},
		{"no such binary", func(c *SwarmConfig) { c.Binary = "/no/such/krakenctl" }, "binary: stat /no/such/krakenctl"},
		{"binary not executable", func(c *SwarmConfig) { c.Binary = notExec }, "binary: " + notExec + " is not an executable file"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			cfg := base
			cfg.Dir = t.TempDir()
			tc.edit(&cfg)
			_, err := Swarm(t.Context(), cfg, SwarmDeps{})
			require.ErrorIs(t, err, ErrInvalidConfig)
			require.ErrorContains(t, err, tc.want)
			requireEmptyDir(t, cfg.Dir)
		})
	}
}

// fakeAgent serves /health and blob at the benchmark's blob path.
func fakeAgent(t *testing.T, blob []byte) (string, digest.Digest) {
	t.Helper()
	d := digest.FromBytes(blob)
	mux := http.NewServeMux()
	mux.HandleFunc("GET /health", func(http.ResponseWriter, *http.Request) {})
	mux.HandleFunc("GET /namespace/bench/blobs/{d}", func(w http.ResponseWriter, r *http.Request) {
		if r.PathValue("d") != d.String() {
			http.NotFound(w, r)
			return
		}
		http.ServeContent(w, r, "", time.Time{}, bytes.NewReader(blob))
	})
	srv := httptest.NewServer(mux)
	t.Cleanup(srv.Close)
	return strings.TrimPrefix(srv.URL, "http://"), d
}

func TestSwarmClient(t *testing.T) {
	t.Parallel()
	blob, err := io.ReadAll(blobReader(0, 300<<10))
	require.NoError(t, err)
	addr, d := fakeAgent(t, blob)
	crc := crc32.Checksum(blob, castagnoli)

	// It says ready, waits for the release (here: stdin ends at once), reads, checks, and
	// reports one JSON line.
	var out bytes.Buffer
	before := time.Now()
	require.NoError(t, SwarmClient(t.Context(), SwarmClientConfig{Agent: addr, Digest: d, Size: int64(len(blob)), Verify: true, CRC32C: crc},
		strings.NewReader(""), &out))
	lines := strings.Split(strings.TrimSuffix(out.String(), "\n"), "\n")
	require.Len(t, lines, 2)
	require.Equal(t, "ready", lines[0])
	var r SwarmClientResult
	require.NoError(t, json.Unmarshal([]byte(lines[1]), &r))
	require.EqualValues(t, len(blob), r.Bytes)
	require.GreaterOrEqual(t, r.ReleasedUnixNano, before.UnixNano())
	require.LessOrEqual(t, r.ReleasedUnixNano, r.FirstByteUnixNano)
	require.LessOrEqual(t, r.FirstByteUnixNano, r.LastByteUnixNano)

	// Other bytes than the blob's fail it, after the ready line and with no result.
	out.Reset()
	err = SwarmClient(t.Context(), SwarmClientConfig{Agent: addr, Digest: d, Size: int64(len(blob)), Verify: true, CRC32C: crc + 1},
		strings.NewReader(""), &out)
	require.ErrorIs(t, err, errWrongBytes)
	require.Equal(t, "ready\n", out.String())

	// So does a length other than the blob's.
	err = SwarmClient(t.Context(), SwarmClientConfig{Agent: addr, Digest: d, Size: int64(len(blob)) + 1}, strings.NewReader(""), io.Discard)
	require.ErrorContains(t, err, fmt.Sprintf("the agent announced %d bytes, want %d", len(blob), len(blob)+1))

	// An agent that cannot be reached fails it before it says ready.
	out.Reset()
	err = SwarmClient(t.Context(), SwarmClientConfig{Agent: "127.0.0.1:1", Digest: d, Size: 1}, strings.NewReader(""), &out)
	require.ErrorContains(t, err, "connect to the agent")
	require.Empty(t, out.String())
}

// blockingReader blocks in Read until closed.
type blockingReader struct{ done chan struct{} }

func (b blockingReader) Read([]byte) (int, error) { <-b.done; return 0, io.EOF }

func TestSwarmClientEndsWithItsContextBeforeTheRelease(t *testing.T) {
	t.Parallel()
	blob := []byte("blob")
	addr, d := fakeAgent(t, blob)
	ctx, cancel := context.WithCancel(t.Context())
	release := blockingReader{done: make(chan struct{})}
	defer close(release.done) // ends the goroutine that waits on it
	errc := make(chan error, 1)
	go func() {
		errc <- SwarmClient(ctx, SwarmClientConfig{Agent: addr, Digest: d, Size: int64(len(blob))}, release, io.Discard)
	}()
	cancel()
	require.ErrorIs(t, <-errc, context.Canceled)
}

func TestLogTail(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	path := dir + "/x.log"
	require.Equal(t, "; its log "+path+": open "+path+": no such file or directory", logTail(path))
	require.NoError(t, os.WriteFile(path, nil, 0o600))
	require.Equal(t, "; its log "+path+" is empty", logTail(path))
	var b strings.Builder
	for i := range 100 {
		fmt.Fprintf(&b, "line %d\n", i)
	}
	require.NoError(t, os.WriteFile(path, []byte(b.String()), 0o600))
	tail := logTail(path)
	require.True(t, strings.HasPrefix(tail, "; its log "+path+" ends:\n    line 85\n"), tail)
	require.True(t, strings.HasSuffix(tail, "\n    line 99"), tail)
	require.True(t, logContains(path, "line 99"))
	require.False(t, logContains(path, "line 100"))
}

func TestProcCPU(t *testing.T) {
	t.Parallel()
	if runtime.GOOS != "linux" {
		_, ok := procCPU(os.Getpid())
		require.False(t, ok)
		return
	}
	// Burn some CPU, then read this process's own.
	deadline := time.Now().Add(50 * time.Millisecond)
	for time.Now().Before(deadline) {
		_ = sha256.Sum256([]byte("x"))
	}
	cpu, ok := procCPU(os.Getpid())
	require.True(t, ok)
	require.Positive(t, cpu)
	_, ok = procCPU(1 << 30) // no such process
	require.False(t, ok)
}

// syncBuffer is a bytes.Buffer that a child process's output and the test share.
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

// childrenOf returns the PIDs whose parent is pid (/proc/PID/stat's fourth field).
func childrenOf(t *testing.T, pid int) []int {
	t.Helper()
	entries, err := os.ReadDir("/proc")
	require.NoError(t, err)
	var out []int
	for _, e := range entries {
		b, err := os.ReadFile("/proc/" + e.Name() + "/stat")
		if err != nil {
			continue // not a process, or gone meanwhile
		}
		i := bytes.LastIndexByte(b, ')')
		f := strings.Fields(string(b[i+1:]))
		if len(f) > 1 && f[1] == strconv.Itoa(pid) {
			n, err := strconv.Atoi(e.Name())
			require.NoError(t, err)
			out = append(out, n)
		}
	}
	return out
}

// The command as an operator runs it: SIGINT (Ctrl-C) while the clients read stops every
// process it started and removes its directory.
func TestSwarmProcessesCommandStopsOnSIGINT(t *testing.T) {
	t.Parallel()
	if runtime.GOOS != "linux" {
		t.Skip("finds the benchmark's children in /proc")
	}
	bin := binary(t)
	parent := t.TempDir()
	// 8 MiB at 1 MiB/s takes seconds: SIGINT comes while the clients read.
	cmd := exec.Command(bin, "bench", "swarm", "--processes", "--agents", "2", "--size", "8MiB", "--rate", "1MiB", "--dir", parent)
	var stderr syncBuffer
	cmd.Stdout, cmd.Stderr = io.Discard, &stderr
	require.NoError(t, cmd.Start())
	exited := make(chan error, 1)
	go func() { exited <- cmd.Wait() }()
	// Not a terminal: one line per phase on stderr.
	require.Eventually(t, func() bool { return strings.Contains(stderr.String(), "swarm: every client") }, time.Minute, 20*time.Millisecond, "%s", &stderr)
	kids := childrenOf(t, cmd.Process.Pid)
	require.Len(t, kids, 6, "origin, tracker, 2 agents and 2 clients")
	require.NoError(t, cmd.Process.Signal(os.Interrupt))
	select {
	case err := <-exited:
		require.Error(t, err, "an interrupted run fails")
	case <-time.After(time.Minute):
		_ = cmd.Process.Kill()
		t.Fatalf("the benchmark did not stop on SIGINT: %s", &stderr)
	}
	require.Contains(t, stderr.String(), "context canceled")
	for _, pid := range kids {
		require.ErrorIs(t, syscall.Kill(pid, 0), syscall.ESRCH, "child %d is gone", pid)
	}
	requireEmptyDir(t, parent)
}

// A port picked free but taken before the server binds it: the server is started again on
// other ports, and the run goes on as if nothing happened.
func TestSwarmProcessesRetryATakenPort(t *testing.T) {
	t.Parallel()
	bin := binary(t)
	taken, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	defer func() { _ = taken.Close() }()
	var started pids
	var once sync.Once
	res, err := Swarm(t.Context(), SwarmConfig{Agents: 1, Size: 1 << 20, Rate: 8 << 20, Dir: t.TempDir(), SkipBaseline: true, Processes: true, Binary: bin},
		SwarmDeps{
			procStarted: started.add,
			procConfig: func(name string, cfg map[string]any) {
				if name == "agent 1" {
					once.Do(func() { cfg["listen"] = taken.Addr().String() })
				}
			},
		})
	require.NoError(t, err)
	require.ElementsMatch(t, []string{"origin", "tracker", "agent 1", "agent 1", "client 1"}, started.names(), "agent 1 started twice")
	started.requireGone(t)
	require.Equal(t, 1, res.Roles.Agents.Processes, "the agent that could not bind is no part of the accounts")
}

// A server that dies while the clients read fails the run at once, named, with its log.
func TestSwarmProcessesServerDiesMidRun(t *testing.T) {
	t.Parallel()
	bin := binary(t)
	parent := t.TempDir()
	var started pids
	var once sync.Once
	// 8 MiB at 1 MiB/s takes seconds: the tracker dies while the clients read; the swarm
	// itself would go on without it.
	_, err := Swarm(t.Context(), SwarmConfig{Agents: 2, Size: 8 << 20, Rate: 1 << 20, Dir: parent, SkipBaseline: true, Processes: true, Binary: bin},
		SwarmDeps{
			procStarted: started.add,
			Progress: func(p SwarmProgress) {
				if p.Phase == PhaseSwarm {
					once.Do(func() { _ = syscall.Kill(started.pid("tracker"), syscall.SIGKILL) }) // checked by the error below
				}
			},
		})
	require.ErrorIs(t, err, ErrProcess)
	require.ErrorContains(t, err, "tracker (pid ")
	require.ErrorContains(t, err, "exited during the run: signal: killed; its log ")
	require.ErrorContains(t, err, "logs and configs kept in "+parent)
	started.requireGone(t)
}

// A server that runs but never becomes ready fails the run, named, with its last answer and
// its log.
func TestSwarmProcessesServerNeverReady(t *testing.T) {
	t.Parallel()
	// A wrapper that runs krakenctl, except for the tracker, which it replaces by a process
	// that never listens.
	wrapper := t.TempDir() + "/krakenctl"
	script := "#!/bin/sh\nif [ \"$1 $2\" = \"serve tracker\" ]; then exec sleep 600; fi\nexec " + binary(t) + " \"$@\"\n"
	require.NoError(t, os.WriteFile(wrapper, []byte(script), 0o700))
	parent := t.TempDir()
	var started pids
	_, err := Swarm(t.Context(), SwarmConfig{Agents: 1, Size: 1 << 20, Rate: 8 << 20, Dir: parent, SkipBaseline: true, Processes: true, Binary: wrapper},
		SwarmDeps{procStarted: started.add, procReadyTimeout: 2 * time.Second})
	require.ErrorIs(t, err, ErrProcess)
	require.ErrorContains(t, err, "tracker (pid ")
	require.ErrorContains(t, err, "not ready after 2s (http://127.0.0.1:")
	require.ErrorContains(t, err, "connection refused")
	require.ErrorContains(t, err, "/logs/tracker.log is empty")
	require.ErrorContains(t, err, "logs and configs kept in "+parent)
	require.ElementsMatch(t, []string{"origin", "tracker"}, started.names(), "no agent started")
	started.requireGone(t)
}

func TestSwarmProcessesTimesOut(t *testing.T) {
	t.Parallel()
	bin := binary(t)
	var started pids
	// 8 MiB at 1 MiB/s cannot arrive in 300 ms.
	_, err := Swarm(t.Context(), SwarmConfig{Agents: 2, Size: 8 << 20, Rate: 1 << 20, Timeout: 300 * time.Millisecond, Dir: t.TempDir(),
		SkipBaseline: true, Processes: true, Binary: bin}, SwarmDeps{procStarted: started.add})
	require.ErrorIs(t, err, errTimeout)
	require.ErrorContains(t, err, "0 of 2 clients finished after 300ms: timed out")
	started.requireGone(t)
}

// The command as an operator runs it, with no --binary: its servers and clients are its own
// executable, and -o json carries the processes' CPU.
func TestSwarmProcessesCommand(t *testing.T) {
	t.Parallel()
	parent := t.TempDir()
	cmd := exec.Command(binary(t), "bench", "swarm", "--processes", "--agents", "1", "--size", "1MiB", "--rate", "8MiB", "--dir", parent, "-o", "json")
	var stdout, stderr syncBuffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	require.NoError(t, cmd.Run(), "%s", &stderr)
	var m map[string]any
	require.NoError(t, json.Unmarshal([]byte(stdout.String()), &m), "one JSON object: %s", &stdout)
	require.Equal(t, true, m["processes"])
	require.Positive(t, m["cpu_seconds"])
	require.Positive(t, m["cpu_seconds_per_gib"])
	roles, ok := m["roles"].(map[string]any)
	require.True(t, ok, "roles: %v", m["roles"])
	for _, r := range []string{"origin", "tracker", "agents", "clients"} {
		require.Contains(t, roles, r)
	}
	require.Len(t, m["per_agent"], 1)
	requireEmptyDir(t, parent)
}
