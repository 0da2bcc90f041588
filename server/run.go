package server

import "context"

// Role is a running server: Run blocks until ctx is cancelled (then shuts down gracefully and
// returns nil) or the role fails (then returns the error).
type Role interface {
	Run(ctx context.Context) error
}
