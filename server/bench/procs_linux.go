package bench

import (
	"bytes"
	"os"
	"strconv"
	"strings"
	"syscall"
	"time"
)

// procAttr puts a benchmark process in a process group of its own, so that a Ctrl-C at the
// terminal reaches the benchmark alone, which then stops its processes in order; and has the
// kernel kill it should the benchmark die without stopping it (SIGKILL, say). Pdeathsig is
// tied to the thread that started the child, which Go keeps for as long as the process
// runs: only a goroutine that locks its thread and exits ends one, and none here does.
func procAttr() *syscall.SysProcAttr {
	return &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGKILL}
}

// userHZ is the unit of the CPU times in /proc/PID/stat (USER_HZ): 100 on every Linux
// architecture Go supports.
const userHZ = 100

// procCPU returns the user and system CPU time process pid has used so far, all its threads
// together (/proc/PID/stat's utime and stime), and whether it could be read.
func procCPU(pid int) (time.Duration, bool) {
	b, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/stat")
	if err != nil {
		return 0, false
	}
	// The command name, in parentheses, may hold spaces: the fields that follow it are
	// state (field 3 of proc(5)), ..., utime (14), stime (15).
	i := bytes.LastIndexByte(b, ')')
	if i < 0 {
		return 0, false
	}
	f := strings.Fields(string(b[i+1:]))
	if len(f) < 13 {
		return 0, false
	}
	u, err1 := strconv.ParseInt(f[11], 10, 64)
	s, err2 := strconv.ParseInt(f[12], 10, 64)
	if err1 != nil || err2 != nil {
		return 0, false
	}
	return time.Duration(u+s) * time.Second / userHZ, true
}

// maxRSS returns the peak resident set of a reaped process (getrusage's ru_maxrss, which
// Linux gives in KiB); 0 where unknown.
func maxRSS(ps *os.ProcessState) int64 {
	ru, ok := ps.SysUsage().(*syscall.Rusage)
	if !ok {
		return 0
	}
	return ru.Maxrss << 10
}
