package buildindex

import "time"

// WaitObject exposes waitObject to the package's external tests (the Raft cluster tests, which
// assemble their nodes with server/cluster and so cannot live in this package).
var WaitObject = waitObject

// SetGroupProbeWindow shortens how long an empty ordinal 0 waits for join addresses to answer,
// and returns the restore.
func SetGroupProbeWindow(d time.Duration) func() {
	old := groupProbeWindow
	groupProbeWindow = d
	return func() { groupProbeWindow = old }
}
