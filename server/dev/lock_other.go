//go:build !unix

package dev

// lockDir does nothing where flock is unavailable; the origins' queues still refuse to open
// twice (after a timeout).
func lockDir(string) (unlock func(), err error) { return func() {}, nil }
