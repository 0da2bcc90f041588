package server

import (
	"context"

	"golang.org/x/sync/errgroup"
)

// Role is a running server: Run blocks until ctx is cancelled (then shuts down gracefully and
// returns nil) or the role fails (then returns the error).
type Role interface {
	Run(ctx context.Context) error
}

// Run runs roles concurrently. When any of them returns an error, the others are cancelled; Run
// waits for all of them and returns the first error.
func Run(ctx context.Context, roles ...Role) error {
	g, ctx := errgroup.WithContext(ctx)
	for _, r := range roles {
		g.Go(func() error { return r.Run(ctx) })
	}
	return g.Wait()
}
