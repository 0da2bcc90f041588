//go:build !krakenctl_faults || !unix

package castore

// crashAt does nothing outside builds with the krakenctl_faults tag (see crash_faults.go).
func crashAt(string) {}
