//go:build !linux

package bench

import (
	"os"
	"syscall"
	"time"
)

// procAttr is the default here: no process group of its own, no death signal.
func procAttr() *syscall.SysProcAttr { return nil }

// procCPU cannot read a running process's CPU time here (no /proc): the separate-process
// run then counts each process's whole life.
func procCPU(int) (time.Duration, bool) { return 0, false }

// maxRSS is unknown here (ru_maxrss is in other units, and not everywhere).
func maxRSS(*os.ProcessState) int64 { return 0 }
