// Package fs is the embedded default backend: objects are files under one root directory.
//
// Layout: the object (namespace, name) is the file <root>/<namespace>/_objects/<name>, so the
// object "ubuntu" of namespace "library" (library/_objects/ubuntu) cannot collide with the
// namespace "library/ubuntu" (library/ubuntu/_objects/...): namespace components never start
// with "_". Uploads write a temporary file beside the target whose name contains "~" (which no
// object name may), fsync it, rename it into place and fsync the directory, so readers see the
// previous object or the whole new one, and a completed Upload survives a crash. A crash during
// an Upload can leave a temporary file behind; List ignores it and it is safe to delete.
//
// Every access goes through an os.Root opened on the root directory, on top of the key checks
// of backend.CheckNamespace and backend.CheckName, so no key or symbolic link inside the tree
// reaches a file outside it.
package fs

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	iofs "io/fs"
	"os"
	"path"
	"slices"
	"strings"
	"syscall"

	"github.com/krakenctl/krakenctl/backend"
)

// Config configures the filesystem backend.
type Config struct {
	// Root is the directory holding the objects. It is created if missing.
	Root string `yaml:"root"`
}

// Validate reports configuration errors, naming the key.
func (c Config) Validate() error {
	if c.Root == "" {
		return errors.New("root: must be set")
	}
	return nil
}

const (
	objectsDir = "_objects"
	tmpPrefix  = "~tmp-"
	// copyChunk is how much Download hands to io.CopyN between context checks. CopyN keeps the
	// *os.File visible to w's ReadFrom, so sockets still get sendfile.
	copyChunk = 4 << 20
	dirPerm   = 0o755
	filePerm  = 0o644
)

// Backend stores objects as files. It is safe for concurrent use; concurrent Uploads of one
// object are atomic and the last rename wins.
type Backend struct {
	root *os.Root
}

// New validates cfg, creates the root directory if needed and opens it.
func New(cfg Config) (*Backend, error) {
	if err := cfg.Validate(); err != nil {
		return nil, fmt.Errorf("fs backend: %w", err)
	}
	if err := os.MkdirAll(cfg.Root, dirPerm); err != nil {
		return nil, fmt.Errorf("create fs backend root: %w", err)
	}
	root, err := os.OpenRoot(cfg.Root)
	if err != nil {
		return nil, fmt.Errorf("open fs backend root: %w", err)
	}
	return &Backend{root: root}, nil
}

// Close releases the root directory. Calls after Close fail.
func (b *Backend) Close() error {
	return b.root.Close()
}

// Root returns the root directory as configured.
func (b *Backend) Root() string { return b.root.Name() }

func objectPath(namespace, name string) string {
	return namespace + "/" + objectsDir + "/" + name
}

// Stat implements backend.Backend.
func (b *Backend) Stat(ctx context.Context, namespace, name string) (backend.Info, error) {
	if err := backend.CheckRequest(ctx, namespace, name); err != nil {
		return backend.Info{}, fmt.Errorf("stat %s/%s: %w", namespace, name, err)
	}
	fi, err := b.root.Stat(objectPath(namespace, name))
	if err != nil {
		return backend.Info{}, fmt.Errorf("stat %s/%s: %w", namespace, name, notFound(err))
	}
	if !fi.Mode().IsRegular() {
		return backend.Info{}, fmt.Errorf("stat %s/%s: not a regular file", namespace, name)
	}
	return backend.Info{Size: fi.Size(), ModTime: fi.ModTime()}, nil
}

// Download implements backend.Backend. It stops between chunks of a few MiB when ctx is
// cancelled.
func (b *Backend) Download(ctx context.Context, namespace, name string, w io.Writer) error {
	if err := backend.CheckRequest(ctx, namespace, name); err != nil {
		return fmt.Errorf("download %s/%s: %w", namespace, name, err)
	}
	f, err := b.root.Open(objectPath(namespace, name))
	if err != nil {
		return fmt.Errorf("download %s/%s: %w", namespace, name, notFound(err))
	}
	defer func() { _ = f.Close() }() // read-only: nothing to lose
	if fi, err := f.Stat(); err != nil {
		return fmt.Errorf("download %s/%s: %w", namespace, name, err)
	} else if !fi.Mode().IsRegular() {
		return fmt.Errorf("download %s/%s: not a regular file", namespace, name)
	}
	for {
		if err := ctx.Err(); err != nil {
			return fmt.Errorf("download %s/%s: %w", namespace, name, err)
		}
		n, err := io.CopyN(w, f, copyChunk)
		if errors.Is(err, io.EOF) {
			return nil
		}
		if err != nil {
			return fmt.Errorf("download %s/%s: %w", namespace, name, err)
		}
		if n < copyChunk {
			return nil
		}
	}
}

// Upload implements backend.Backend.
func (b *Backend) Upload(ctx context.Context, namespace, name string, r io.Reader, size int64) error {
	if err := backend.CheckRequest(ctx, namespace, name); err != nil {
		return fmt.Errorf("upload %s/%s: %w", namespace, name, err)
	}
	if err := b.upload(ctx, namespace, name, r, size); err != nil {
		return fmt.Errorf("upload %s/%s: %w", namespace, name, err)
	}
	return nil
}

func (b *Backend) upload(ctx context.Context, namespace, name string, r io.Reader, size int64) (err error) {
	dir := namespace + "/" + objectsDir
	if err := b.mkdirs(dir); err != nil {
		return err
	}
	f, tmp, err := b.createTemp(dir)
	if err != nil {
		return err
	}
	defer func() {
		if err != nil {
			// The upload failed already; the temporary file goes, and its close and removal
			// errors would only hide the first.
			_ = f.Close()
			_ = b.root.Remove(tmp)
		}
	}()
	// Stop at the first read after ctx is done, and tell read errors from write errors.
	var readErr error
	src := readerFunc(func(p []byte) (int, error) {
		if readErr = ctx.Err(); readErr != nil {
			return 0, readErr
		}
		n, err := r.Read(p)
		if err != nil && err != io.EOF {
			readErr = err
		}
		return n, err
	})
	var n int64
	if size >= 0 {
		// Read one byte more than declared to detect a reader that is too long.
		n, err = io.Copy(f, io.LimitReader(src, size+1))
	} else {
		n, err = io.Copy(f, src)
	}
	if err != nil {
		if readErr != nil {
			if ctx.Err() != nil {
				return err
			}
			return fmt.Errorf("read: %w", err)
		}
		return fmt.Errorf("write: %w", err)
	}
	if size >= 0 && n != size {
		if n > size {
			return fmt.Errorf("reader has more than the declared %d bytes", size)
		}
		return fmt.Errorf("read %d bytes, declared %d: %w", n, size, io.ErrUnexpectedEOF)
	}
	if err := f.Sync(); err != nil {
		return fmt.Errorf("sync: %w", err)
	}
	if err := f.Close(); err != nil {
		return fmt.Errorf("close: %w", err)
	}
	if err := ctx.Err(); err != nil {
		return err
	}
	if err := b.root.Rename(tmp, dir+"/"+name); err != nil {
		return fmt.Errorf("rename into place: %w", err)
	}
	return b.syncDir(dir)
}

// createTemp creates a new file in dir whose name no object can have.
func (b *Backend) createTemp(dir string) (*os.File, string, error) {
	for range 10 {
		var rnd [8]byte
		rand.Read(rnd[:])
		tmp := dir + "/" + tmpPrefix + hex.EncodeToString(rnd[:])
		f, err := b.root.OpenFile(tmp, os.O_WRONLY|os.O_CREATE|os.O_EXCL, filePerm)
		if errors.Is(err, iofs.ErrExist) {
			continue
		}
		if err != nil {
			return nil, "", fmt.Errorf("create temporary file: %w", err)
		}
		return f, tmp, nil
	}
	return nil, "", fmt.Errorf("create temporary file in %s: too many collisions", dir)
}

// mkdirs creates dir and its missing parents, fsyncing the parent of every directory it
// creates so the new entries survive a crash.
func (b *Backend) mkdirs(dir string) error {
	if fi, err := b.root.Stat(dir); err == nil && fi.IsDir() {
		return nil
	}
	parts := strings.Split(dir, "/")
	for i := range parts {
		p := strings.Join(parts[:i+1], "/")
		err := b.root.Mkdir(p, dirPerm)
		if errors.Is(err, iofs.ErrExist) {
			continue
		}
		if err != nil {
			return fmt.Errorf("create directory: %w", err)
		}
		parent := "."
		if i > 0 {
			parent = path.Dir(p)
		}
		if err := b.syncDir(parent); err != nil {
			return err
		}
	}
	return nil
}

func (b *Backend) syncDir(dir string) error {
	d, err := b.root.Open(dir)
	if err != nil {
		return fmt.Errorf("sync directory: %w", err)
	}
	defer func() { _ = d.Close() }() // opened only to sync: the Sync's error is the one that counts
	if err := d.Sync(); err != nil {
		return fmt.Errorf("sync directory %s: %w", dir, err)
	}
	return nil
}

// List implements backend.Backend.
func (b *Backend) List(ctx context.Context, namespace, prefix string) ([]string, error) {
	if err := ctx.Err(); err != nil {
		return nil, fmt.Errorf("list %s: %w", namespace, err)
	}
	if err := backend.CheckNamespace(namespace); err != nil {
		return nil, fmt.Errorf("list %s: %w", namespace, err)
	}
	d, err := b.root.Open(namespace + "/" + objectsDir)
	if errors.Is(notFound(err), backend.ErrNotFound) {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("list %s: %w", namespace, err)
	}
	defer func() { _ = d.Close() }() // read-only: nothing to lose
	var names []string
	for {
		if err := ctx.Err(); err != nil {
			return nil, fmt.Errorf("list %s: %w", namespace, err)
		}
		entries, err := d.ReadDir(1024)
		for _, e := range entries {
			n := e.Name()
			if e.Type().IsRegular() && strings.HasPrefix(n, prefix) && backend.CheckName(n) == nil {
				names = append(names, n)
			}
		}
		if errors.Is(err, io.EOF) || (err == nil && len(entries) == 0) {
			break
		}
		if err != nil {
			return nil, fmt.Errorf("list %s: %w", namespace, err)
		}
	}
	slices.Sort(names)
	return names, nil
}

func notFound(err error) error {
	// ENOTDIR: a path component is a file, so the object cannot exist either.
	if errors.Is(err, iofs.ErrNotExist) || errors.Is(err, syscall.ENOTDIR) {
		return fmt.Errorf("%w: %w", backend.ErrNotFound, err)
	}
	return err
}

// readerFunc adapts a function to io.Reader.
type readerFunc func(p []byte) (int, error)

func (f readerFunc) Read(p []byte) (int, error) { return f(p) }

// Interface guards
var _ backend.Backend = (*Backend)(nil)
