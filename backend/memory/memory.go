// Package memory is an in-memory backend.Backend for other packages' tests.
//
// Besides the Backend contract it offers a fault hook (SetFailure, SetFault) that makes calls
// fail until it is cleared, and per-operation call counters, so callers can simulate storage
// that is down and comes back, and assert how often they retried.
package memory

import (
	"context"
	"fmt"
	"io"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/krakenctl/krakenctl/backend"
)

// Op names a Backend method for fault hooks and call counters.
type Op string

// The operations of backend.Backend.
const (
	OpStat     Op = "stat"
	OpDownload Op = "download"
	OpUpload   Op = "upload"
	OpList     Op = "list"
)

// chunk is how many bytes Upload reads and Download writes between context checks.
const chunk = 32 << 10

type key struct{ namespace, name string }

type object struct {
	data    []byte // never modified once stored; replaced whole on overwrite
	modTime time.Time
}

// Backend stores objects in a map. The zero value is not usable; call New. It is safe for
// concurrent use.
type Backend struct {
	mu      sync.RWMutex
	objects map[key]object
	fault   func(op Op, namespace, name string) error
	calls   map[Op]int
}

// New returns an empty backend with no fault set.
func New() *Backend {
	return &Backend{objects: make(map[key]object), calls: make(map[Op]int)}
}

// SetFailure makes every later call fail with an error wrapping err, until SetFailure(nil).
// Calls with an invalid key or a cancelled context still fail with those errors first.
func (b *Backend) SetFailure(err error) {
	if err == nil {
		b.SetFault(nil)
		return
	}
	b.SetFault(func(Op, string, string) error { return err })
}

// SetFault installs fn, consulted by every later call after its key and context checks: a
// non-nil result fails the call with an error wrapping it, and the call has no effect. For
// List, name is the prefix. fn runs without the backend's lock held, possibly concurrently.
// SetFault(nil) removes the hook.
func (b *Backend) SetFault(fn func(op Op, namespace, name string) error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	b.fault = fn
}

// Calls returns how many times op has been called, including calls that failed.
func (b *Backend) Calls(op Op) int {
	b.mu.RLock()
	defer b.mu.RUnlock()
	return b.calls[op]
}

// Peek returns a copy of the stored object, bypassing counters, faults and context. It is for
// assertions in tests.
func (b *Backend) Peek(namespace, name string) ([]byte, bool) {
	b.mu.RLock()
	defer b.mu.RUnlock()
	o, ok := b.objects[key{namespace, name}]
	if !ok {
		return nil, false
	}
	return slices.Clone(o.data), true
}

// Len returns the number of stored objects.
func (b *Backend) Len() int {
	b.mu.RLock()
	defer b.mu.RUnlock()
	return len(b.objects)
}

// begin counts the call and runs the checks every call shares.
func (b *Backend) begin(ctx context.Context, op Op, namespace, name string, checkName bool) error {
	b.mu.Lock()
	b.calls[op]++
	fault := b.fault
	b.mu.Unlock()
	if err := ctx.Err(); err != nil {
		return fmt.Errorf("memory %s %s/%s: %w", op, namespace, name, err)
	}
	if err := backend.CheckNamespace(namespace); err != nil {
		return fmt.Errorf("memory %s: %w", op, err)
	}
	if checkName {
		if err := backend.CheckName(name); err != nil {
			return fmt.Errorf("memory %s: %w", op, err)
		}
	}
	if fault != nil {
		if err := fault(op, namespace, name); err != nil {
			return fmt.Errorf("memory %s %s/%s: %w", op, namespace, name, err)
		}
	}
	return nil
}

func (b *Backend) get(namespace, name string) (object, error) {
	b.mu.RLock()
	defer b.mu.RUnlock()
	o, ok := b.objects[key{namespace, name}]
	if !ok {
		return object{}, fmt.Errorf("memory: %s/%s: %w", namespace, name, backend.ErrNotFound)
	}
	return o, nil
}

// Stat implements backend.Backend.
func (b *Backend) Stat(ctx context.Context, namespace, name string) (backend.Info, error) {
	if err := b.begin(ctx, OpStat, namespace, name, true); err != nil {
		return backend.Info{}, err
	}
	o, err := b.get(namespace, name)
	if err != nil {
		return backend.Info{}, err
	}
	return backend.Info{Size: int64(len(o.data)), ModTime: o.modTime}, nil
}

// Download implements backend.Backend. It writes in chunks and stops at the first chunk after
// ctx is cancelled.
func (b *Backend) Download(ctx context.Context, namespace, name string, w io.Writer) error {
	if err := b.begin(ctx, OpDownload, namespace, name, true); err != nil {
		return err
	}
	o, err := b.get(namespace, name)
	if err != nil {
		return err
	}
	for data := o.data; len(data) > 0; {
		if err := ctx.Err(); err != nil {
			return fmt.Errorf("memory download %s/%s: %w", namespace, name, err)
		}
		n := min(chunk, len(data))
		if _, err := w.Write(data[:n]); err != nil {
			return fmt.Errorf("memory download %s/%s: %w", namespace, name, err)
		}
		data = data[n:]
	}
	return nil
}

// Upload implements backend.Backend. The object becomes visible only once r is read to its end
// and matches size.
func (b *Backend) Upload(ctx context.Context, namespace, name string, r io.Reader, size int64) error {
	if err := b.begin(ctx, OpUpload, namespace, name, true); err != nil {
		return err
	}
	var data []byte
	if size > 0 {
		data = make([]byte, 0, min(size, 64<<20))
	}
	for {
		if err := ctx.Err(); err != nil {
			return fmt.Errorf("memory upload %s/%s: %w", namespace, name, err)
		}
		if len(data) == cap(data) {
			data = slices.Grow(data, chunk)
		}
		n, err := r.Read(data[len(data):min(cap(data), len(data)+chunk)])
		data = data[:len(data)+n]
		if size >= 0 && int64(len(data)) > size {
			return fmt.Errorf("memory upload %s/%s: reader has more than the declared %d bytes", namespace, name, size)
		}
		if err == io.EOF {
			break
		}
		if err != nil {
			return fmt.Errorf("memory upload %s/%s: read: %w", namespace, name, err)
		}
	}
	if size >= 0 && int64(len(data)) != size {
		return fmt.Errorf("memory upload %s/%s: read %d bytes, declared %d: %w", namespace, name, len(data), size, io.ErrUnexpectedEOF)
	}
	if err := ctx.Err(); err != nil {
		return fmt.Errorf("memory upload %s/%s: %w", namespace, name, err)
	}
	b.mu.Lock()
	defer b.mu.Unlock()
	b.objects[key{namespace, name}] = object{data: slices.Clip(data), modTime: time.Now()}
	return nil
}

// List implements backend.Backend.
func (b *Backend) List(ctx context.Context, namespace, prefix string) ([]string, error) {
	if err := b.begin(ctx, OpList, namespace, prefix, false); err != nil {
		return nil, err
	}
	b.mu.RLock()
	var names []string
	for k := range b.objects {
		if k.namespace == namespace && strings.HasPrefix(k.name, prefix) {
			names = append(names, k.name)
		}
	}
	b.mu.RUnlock()
	slices.Sort(names)
	return names, nil
}

// Interface guards
var _ backend.Backend = (*Backend)(nil)
