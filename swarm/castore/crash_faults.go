//go:build krakenctl_faults && unix

package castore

import (
	"os"
	"syscall"
)

// crashEnv names the commit step at which a binary built with the krakenctl_faults tag kills
// itself (SIGKILL, as kill -9 would), for the crash tests in test/e2e. Release builds compile
// crashAt to nothing (crash_nofaults.go).
const crashEnv = "KRAKENCTL_FAULT_CRASH_AT"

// crashAt kills the process when step is the one crashEnv names.
func crashAt(step string) {
	if os.Getenv(crashEnv) == step {
		_ = syscall.Kill(os.Getpid(), syscall.SIGKILL)
		select {} // The signal is on its way; never carry on past the step.
	}
}
