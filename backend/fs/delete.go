package fs

import (
	"context"
	"fmt"

	"github.com/krakenctl/krakenctl/backend"
)

// Delete implements backend.Deleter: it removes the object's file. Readers that opened it
// before keep reading the whole object (the file is unlinked, not truncated).
func (b *Backend) Delete(ctx context.Context, namespace, name string) error {
	if err := backend.CheckRequest(ctx, namespace, name); err != nil {
		return fmt.Errorf("delete %s/%s: %w", namespace, name, err)
	}
	if err := b.root.Remove(objectPath(namespace, name)); err != nil {
		return fmt.Errorf("delete %s/%s: %w", namespace, name, notFound(err))
	}
	return nil
}
