// Package e2e runs krakenctl as real processes: origins started with `krakenctl serve origin`,
// killed with SIGKILL mid-flight and restarted, driven by the `krakenctl` CLI.
package e2e

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"testing"
)

// bin is the krakenctl binary built once for the package.
var bin string

func TestMain(m *testing.M) {
	os.Exit(run(m))
}

func run(m *testing.M) int {
	dir, err := os.MkdirTemp("", "krakenctl-e2e-")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	defer func() { _ = os.RemoveAll(dir) }() // a temporary directory: the OS cleans up after a failure
	bin = filepath.Join(dir, "krakenctl")
	// krakenctl_faults compiles in the crash points of swarm/castore (KRAKENCTL_FAULT_CRASH_AT),
	// which do nothing unless that variable is set: capacity_test.go kills origins mid-commit.
	cmd := exec.Command("go", "build", "-race", "-tags", "krakenctl_faults", "-o", bin, "github.com/krakenctl/krakenctl/cmd/krakenctl")
	cmd.Stdout, cmd.Stderr = os.Stderr, os.Stderr
	cmd.Env = append(os.Environ(), "CGO_ENABLED=1")
	if err := cmd.Run(); err != nil {
		fmt.Fprintln(os.Stderr, "build krakenctl:", err)
		return 1
	}
	// A race-built binary sleeps a second at exit by default; every CLI call here would pay it.
	if err := os.Setenv("GORACE", "atexit_sleep_ms=0"); err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	return m.Run()
}
