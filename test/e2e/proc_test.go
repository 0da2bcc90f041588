package e2e

import (
	"context"
	"os"
	"os/exec"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
)

// proc is one `krakenctl serve ROLE` process that a test starts, kills and restarts.
type proc struct {
	t      *testing.T
	role   string // "origin", "build-index"
	name   string // how messages name it: an address or a node ID
	addr   string // its API address
	config string
	log    *os.File
	// ready, when set, is polled after start until it returns nil.
	ready func(ctx context.Context) error
	// env, when set, is added to the process's environment (fault injection, say).
	env []string

	cmd    *exec.Cmd
	exited chan struct{}
}

// handedOut holds every address freeAddr returned in this process. A port is free once its
// listener closes, and the kernel may give it to the next caller: two nodes of one test were
// handed the same port under load (a build-index told to join itself), so no port is handed
// out twice.
var handedOut = struct {
	sync.Mutex
	addrs map[string]bool
}{addrs: map[string]bool{}}

// freeAddr returns a loopback address whose port was free a moment ago and that no other call
// returned (freeAddrOn).
func freeAddr(t *testing.T) string {
	t.Helper()
	return freeAddrOn(t, "127.0.0.1")
}

func (p *proc) start() {
	p.t.Helper()
	cmd := exec.Command(bin, "serve", p.role, "--config", p.config, "--log-level", "debug")
	cmd.Stdout, cmd.Stderr = p.log, p.log
	if p.env != nil {
		cmd.Env = append(os.Environ(), p.env...)
	}
	require.NoError(p.t, cmd.Start())
	p.cmd, p.exited = cmd, make(chan struct{})
	go func() { _ = cmd.Wait(); close(p.exited) }()
	if p.ready == nil {
		return
	}
	require.Eventually(p.t, func() bool {
		select {
		case <-p.exited:
			p.t.Fatalf("%s %s exited during start; log %s", p.role, p.name, p.log.Name())
		default:
		}
		ctx, cancel := context.WithTimeout(context.Background(), time.Second)
		defer cancel()
		return p.ready(ctx) == nil
	}, 60*time.Second, 20*time.Millisecond, "%s %s ready", p.role, p.name)
}

func (p *proc) running() bool { return p.cmd != nil }

// kill sends SIGKILL: no graceful shutdown, like a crashed host.
func (p *proc) kill() {
	if p.cmd == nil {
		return
	}
	_ = p.cmd.Process.Signal(syscall.SIGKILL)
	<-p.exited
	p.cmd = nil
}

// stop sends SIGTERM and expects a clean exit.
func (p *proc) stop() {
	p.t.Helper()
	if p.cmd == nil {
		return
	}
	require.NoError(p.t, p.cmd.Process.Signal(syscall.SIGTERM))
	select {
	case <-p.exited:
	case <-time.After(30 * time.Second):
		p.t.Fatalf("%s %s did not stop on SIGTERM", p.role, p.name)
	}
	require.True(p.t, p.cmd.ProcessState.Success(), "%s %s exit: %v", p.role, p.name, p.cmd.ProcessState)
	p.cmd = nil
}
