package backend

import (
	"context"
	"errors"
	"fmt"
)

// Deleter is implemented by backends that can remove objects; garbage collection (server/gc)
// uses it to free storage of blobs nothing references. It is a separate interface because a
// read-only backend (an upstream registry, an HTTP server without DELETE) has nothing to
// delete, and the Backend contract stays what every implementation passes.
type Deleter interface {
	// Delete removes the object. A missing object is an error wrapping ErrNotFound. It takes
	// ctx first and validates the key before any I/O, as every Backend method does.
	Delete(ctx context.Context, namespace, name string) error
}

// Delete removes an object from b when b can delete, and fails with an error wrapping
// errors.ErrUnsupported when it cannot.
func Delete(ctx context.Context, b Backend, namespace, name string) error {
	d, ok := b.(Deleter)
	if !ok {
		return fmt.Errorf("delete %s/%s: %w", namespace, name, errors.ErrUnsupported)
	}
	return d.Delete(ctx, namespace, name)
}

// Delete implements Deleter by forwarding to the namespace's backend; a backend without
// Delete answers an error wrapping errors.ErrUnsupported.
func (r *Router) Delete(ctx context.Context, namespace, name string) error {
	b, err := r.pick(namespace)
	if err != nil {
		return err
	}
	return Delete(ctx, b, namespace, name)
}
