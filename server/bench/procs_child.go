package bench

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"
)

// The kinds of process of a separate-process run.
const (
	roleOrigin  = "origin"
	roleTracker = "tracker"
	roleAgent   = "agent"
	roleClient  = "client"
)

// stopTiers is the order in which the processes are stopped, each tier waited for before
// the next: clients before the agents they read from, agents before the tracker they announce
// to and the origin they pull from, so that none logs errors about a server gone under it.
var stopTiers = []string{roleClient, roleAgent, roleTracker, roleOrigin}

// stopGrace is how long a process has to exit after SIGTERM before it is sent SIGKILL.
const stopGrace = 10 * time.Second

// logTailLines and logTailBytes bound the end of a log quoted in an error.
const (
	logTailLines = 15
	logTailBytes = 4 << 10
)

// lc binds the probes that pick free ports.
var lc net.ListenConfig

// procSet is every process a separate-process run started, and the first failure of one.
type procSet struct {
	bin, dir     string
	log          *slog.Logger
	started      func(name string, pid int)            // SwarmDeps.procStarted
	configHook   func(name string, cfg map[string]any) // SwarmDeps.procConfig
	readyTimeout time.Duration                         // startTimeout, or SwarmDeps.procReadyTimeout
	// wall is the swarm phase's wall time; endpointsFile is removed by stopAll ("": none).
	wall          time.Duration
	endpointsFile string

	mu    sync.Mutex
	procs []*proc
	addrs map[string]bool // every address freeAddr handed out

	failed   chan struct{} // closed at the first failure; err is set before
	failOnce sync.Once
	err      error
}

func newProcSet(bin, dir string, deps SwarmDeps) *procSet {
	s := &procSet{bin: bin, dir: dir, log: deps.Logger, started: deps.procStarted, configHook: deps.procConfig, readyTimeout: startTimeout,
		addrs: map[string]bool{}, failed: make(chan struct{})}
	if deps.procReadyTimeout > 0 {
		s.readyTimeout = deps.procReadyTimeout
	}
	return s
}

// proc is one process of the run: a server (`krakenctl serve ROLE`) or a client (`krakenctl
// bench swarm-client`).
type proc struct {
	role  string
	n     int    // agents and clients from 1; 0 for the origin and the tracker
	log   string // where its stderr (and a server's stdout) goes
	addrs serverAddrs
	cmd   *exec.Cmd
	// cancel ends its context, which sends it SIGTERM (cmd.Cancel).
	cancel context.CancelFunc
	// exited is closed once it has been reaped: cmd.ProcessState is set.
	exited chan struct{}
	// ready is set once a server answered /readyz or a client said it is connected: from then
	// on an exit of its own is a failure of the run, which the watcher reports (before, the
	// wait for it does). stopping is set once stopAll asks it to stop.
	ready, stopping atomic.Bool
	killed          bool // stopAll sent SIGKILL; written and read by stopAll

	// A client's stdout: clientReady is closed when it said it is connected, outDone when its
	// stdout ended, with result (nil when it wrote none) set before.
	clientReady, outDone chan struct{}
	result               *SwarmClientResult

	// Its CPU time at the release and, for a server, at the last client's exit (/proc);
	// -1 where it could not be read.
	cpuReleased, cpuEnd time.Duration
}

func (p *proc) String() string { return procLabel(p.role, p.n) }

func (p *proc) pid() int { return p.cmd.Process.Pid }

func (p *proc) hasExited() bool {
	select {
	case <-p.exited:
		return true
	default:
		return false
	}
}

func (s *procSet) newProc(role string, n int) *proc {
	return &proc{role: role, n: n, log: filepath.Join(s.dir, procLogDir, procName(role, n)+".log"), exited: make(chan struct{}), cpuReleased: -1, cpuEnd: -1}
}

// start runs the binary with args as p, its stderr to p.log, and its stdin and stdout from
// and to the files given (nil: /dev/null and p.log). A goroutine reaps it; an exit of its own
// once it is ready fails the run.
func (s *procSet) start(p *proc, args []string, stdin, stdout *os.File) error {
	f, err := os.OpenFile(p.log, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o600)
	if err != nil {
		return fmt.Errorf("start %s: %w", p, err)
	}
	// Its own context, not the run's: the run's end stops the processes in order (stopAll),
	// not all at once.
	pctx, cancel := context.WithCancel(context.Background())
	cmd := exec.CommandContext(pctx, s.bin, args...)
	cmd.Cancel = func() error { return cmd.Process.Signal(syscall.SIGTERM) }
	if stdin != nil { // a nil *os.File in the interface would be a non-nil Reader
		cmd.Stdin = stdin
	}
	cmd.Stdout, cmd.Stderr = f, f
	if stdout != nil {
		cmd.Stdout = stdout
	}
	cmd.SysProcAttr = procAttr()
	err = cmd.Start()
	_ = f.Close() // the child has its own descriptor; nothing was written here
	if err != nil {
		cancel()
		return fmt.Errorf("start %s: %w", p, err)
	}
	p.cmd, p.cancel = cmd, cancel
	s.mu.Lock()
	s.procs = append(s.procs, p)
	s.mu.Unlock()
	s.log.Info("benchmark process started", "process", p.String(), "pid", p.pid(), "log", p.log)
	if s.started != nil {
		s.started(p.String(), p.pid())
	}
	go func() {
		_ = cmd.Wait() // how it ended is in cmd.ProcessState
		close(p.exited)
		// Read after exited is closed: waitReady sets ready before it looks at exited, so
		// one of the two sees the other and the exit is reported at least once.
		if p.stopping.Load() || !p.ready.Load() || (p.role == roleClient && cmd.ProcessState.Success()) {
			return
		}
		s.fail(s.exitError(p, "during the run"))
	}()
	return nil
}

// clientReadyLine is what a client process writes on stdout once it is connected to its
// agent and waits for the release.
const clientReadyLine = "ready"

// startClient starts client n with args, its stdin the release gate; it reads the client's
// stdout: the ready line, then its result.
func (s *procSet) startClient(n int, args []string, gate *os.File) (*proc, error) {
	r, w, err := os.Pipe()
	if err != nil {
		return nil, fmt.Errorf("start %s: %w", procLabel(roleClient, n), err)
	}
	p := s.newProc(roleClient, n)
	p.clientReady, p.outDone = make(chan struct{}), make(chan struct{})
	err = s.start(p, args, gate, w)
	_ = w.Close() // the child holds the write end now: its exit ends what r reads
	if err != nil {
		_ = r.Close()
		return nil, err
	}
	go func() {
		defer close(p.outDone)
		defer func() { _ = r.Close() }() // read side
		sc := bufio.NewScanner(r)
		if !sc.Scan() || sc.Text() != clientReadyLine {
			return
		}
		p.ready.Store(true)
		close(p.clientReady)
		if !sc.Scan() {
			return
		}
		var res SwarmClientResult
		if json.Unmarshal(sc.Bytes(), &res) == nil {
			p.result = &res
		}
		_, _ = io.Copy(io.Discard, r) // to its exit: outDone then means it is leaving
	}()
	return p, nil
}

// fail records the run's first failure and closes failed.
func (s *procSet) fail(err error) {
	s.failOnce.Do(func() {
		s.err = err
		close(s.failed)
	})
}

// failure returns the first failure; failed is closed.
func (s *procSet) failure() error {
	<-s.failed
	return s.err
}

// cause returns the run's first process failure, if there was one, instead of err: a request
// to a server that died fails too, but says less than the server's exit and its log.
func (s *procSet) cause(err error) error {
	select {
	case <-s.failed:
		if !errors.Is(err, ErrProcess) {
			return errors.Join(s.err, err)
		}
	default:
	}
	return err
}

// exitError says that p (reaped) exited, when, how, and how its log ends.
func (s *procSet) exitError(p *proc, when string) error {
	<-p.exited
	if when != "" {
		when = " " + when
	}
	return fmt.Errorf("%w: %s (pid %d) exited%s: %s%s", ErrProcess, p, p.pid(), when, p.cmd.ProcessState, logTail(p.log))
}

// forget drops p, which has been reaped, from the processes of the run.
func (s *procSet) forget(p *proc) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.procs = slices.DeleteFunc(s.procs, func(q *proc) bool { return q == p })
}

// all returns every process started so far.
func (s *procSet) all() []*proc {
	s.mu.Lock()
	defer s.mu.Unlock()
	return append([]*proc(nil), s.procs...)
}

// mark reads the CPU time of every process still running into the field at(p) points to
// (nil: leave p out).
func (s *procSet) mark(at func(*proc) *time.Duration) {
	for _, p := range s.all() {
		if f := at(p); f != nil {
			if cpu, ok := procCPU(p.pid()); ok {
				*f = cpu
			}
		}
	}
}

// stopAll stops every process still running, tier by tier (stopTiers): SIGTERM to each
// process of the tier by its PID, then SIGKILL to any still there after stopGrace, and waits
// until each has been reaped. It returns an error for a server that had to be killed or that
// exited with a failure; a process that had ended on its own was reported when it did. Later
// calls stop only what was started since.
func (s *procSet) stopAll() error {
	var errs []error
	procs := s.all()
	for _, tier := range stopTiers {
		var stopping []*proc
		for _, p := range procs {
			if p.role != tier || p.stopping.Swap(true) {
				continue
			}
			if p.hasExited() {
				continue // it ended on its own, and was reported then
			}
			p.cancel() // SIGTERM
			stopping = append(stopping, p)
		}
		deadline := time.Now().Add(stopGrace)
		for _, p := range stopping {
			t := time.NewTimer(time.Until(deadline))
			select {
			case <-p.exited:
			case <-t.C:
				_ = p.cmd.Process.Kill() // by its PID; it may have exited just now
				p.killed = true
				<-p.exited
			}
			t.Stop()
			if err := s.stopError(p); err != nil {
				errs = append(errs, err)
			}
		}
	}
	if s.endpointsFile != "" {
		if err := os.Remove(s.endpointsFile); err != nil && !errors.Is(err, os.ErrNotExist) {
			errs = append(errs, fmt.Errorf("remove endpoints file: %w", err))
		}
		s.endpointsFile = ""
	}
	return errors.Join(errs...)
}

// stopError is the error of a server that did not stop cleanly on SIGTERM, else nil. A
// client asked to stop was cut short by the run's end, which is the error that matters.
func (s *procSet) stopError(p *proc) error {
	switch {
	case p.role == roleClient:
		return nil
	case p.killed:
		return fmt.Errorf("%w: %s (pid %d) did not stop within %s of SIGTERM: killed%s", ErrProcess, p, p.pid(), stopGrace, logTail(p.log))
	case !p.cmd.ProcessState.Success():
		return s.exitError(p, "on SIGTERM")
	}
	return nil
}

// logTail returns "; its log PATH ends:" and the last lines of the log at path, indented, to
// end an error with.
func logTail(path string) string {
	b, err := readTail(path, logTailBytes)
	if err != nil {
		return fmt.Sprintf("; its log %s: %v", path, err)
	}
	b = bytes.TrimRight(b, "\n")
	if len(b) == 0 {
		return fmt.Sprintf("; its log %s is empty", path)
	}
	lines := strings.Split(string(b), "\n")
	if len(lines) > logTailLines {
		lines = lines[len(lines)-logTailLines:]
	}
	return fmt.Sprintf("; its log %s ends:\n    %s", path, strings.Join(lines, "\n    "))
}

// readTail returns the last n bytes of the file at path, from the start of a line when the
// file is longer.
func readTail(path string, n int64) ([]byte, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, err
	}
	defer func() { _ = f.Close() }() // read only
	fi, err := f.Stat()
	if err != nil {
		return nil, err
	}
	off := max(fi.Size()-n, 0)
	b := make([]byte, fi.Size()-off)
	if _, err := f.ReadAt(b, off); err != nil && !errors.Is(err, io.EOF) {
		return nil, err
	}
	if off > 0 {
		if i := bytes.IndexByte(b, '\n'); i >= 0 {
			b = b[i+1:]
		}
	}
	return b, nil
}

// logContains says whether the end of the log at path holds s.
func logContains(path, s string) bool {
	b, err := readTail(path, logTailBytes)
	return err == nil && bytes.Contains(b, []byte(s))
}
