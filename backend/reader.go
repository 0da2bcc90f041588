package backend

import (
	"context"
	"io"
)

// ContextReader reads R until Ctx is done, and keeps the first error R returned (not io.EOF),
// or Ctx's: after an io.Copy from it fails, a non-nil Err says the reading side failed (the
// store's body, or the cancel), a nil one that the writer did. Every backend's Download copies
// the store's body through one, and names the side in its error.
type ContextReader struct {
	Ctx context.Context
	R   io.Reader
	// Err is the reading side's first error; nil until one happens.
	Err error
}

func (c *ContextReader) Read(p []byte) (int, error) {
	if c.Err != nil {
		return 0, c.Err
	}
	if err := c.Ctx.Err(); err != nil {
		c.Err = err
		return 0, err
	}
	n, err := c.R.Read(p)
	if err != nil && err != io.EOF {
		c.Err = err
	}
	return n, err
}
