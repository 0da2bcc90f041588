package memory

import (
	"context"
	"fmt"

	"github.com/krakenctl/krakenctl/backend"
)

// OpDelete names Delete for fault hooks and call counters.
const OpDelete Op = "delete"

// Delete implements backend.Deleter.
func (b *Backend) Delete(ctx context.Context, namespace, name string) error {
	if err := b.begin(ctx, OpDelete, namespace, name, true); err != nil {
		return err
	}
	b.mu.Lock()
	defer b.mu.Unlock()
	k := key{namespace, name}
	if _, ok := b.objects[k]; !ok {
		return fmt.Errorf("memory: %s/%s: %w", namespace, name, backend.ErrNotFound)
	}
	delete(b.objects, k)
	return nil
}
