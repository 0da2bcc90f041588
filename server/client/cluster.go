package client

import (
	"context"
	"crypto/sha256"
	"errors"
	"fmt"
	"io"
	"net/http"
	"slices"
	"sync/atomic"

	"github.com/opencontainers/go-digest"

	"github.com/krakenctl/krakenctl/server/api"
)

// ErrNoOrigins means no origin address was given.
var ErrNoOrigins = errors.New("no origin addresses")

// ErrDigestMismatch means downloaded bytes do not hash to the digest asked for.
var ErrDigestMismatch = errors.New("downloaded content does not match its digest")

// Cluster is a client of a whole origin cluster: it learns a blob's owners from the ring and
// fails over between them. It is safe for concurrent use.
type Cluster struct {
	addrs atomic.Pointer[[]string]
	hc    *http.Client
}

// NewCluster returns a client of the origins at addrs ("host:port"). Any one of them that
// answers is enough to learn the ring.
func NewCluster(addrs []string, hc *http.Client) *Cluster {
	c := &Cluster{hc: hc}
	c.SetAddrs(addrs)
	return c
}

// Addrs returns the origin addresses the cluster uses now.
func (c *Cluster) Addrs() []string { return slices.Clone(c.list()) }

// SetAddrs replaces the origin addresses (a role whose origins come from DNS calls it when the
// answer changes); requests already under way finish with the old ones.
func (c *Cluster) SetAddrs(addrs []string) {
	a := slices.Clone(addrs)
	c.addrs.Store(&a)
}

func (c *Cluster) list() []string { return *c.addrs.Load() }

// Origin returns a client of one origin.
func (c *Cluster) Origin(addr string) *Origin { return NewOrigin(addr, c.hc) }

// Ring returns the ring as seen by the first origin that answers; with a digest, its owners.
func (c *Cluster) Ring(ctx context.Context, d digest.Digest) (api.RingStatus, error) {
	addrs := c.list()
	if len(addrs) == 0 {
		return api.RingStatus{}, ErrNoOrigins
	}
	var errs []error
	for _, a := range addrs {
		st, err := c.Origin(a).Ring(ctx, d)
		if err == nil {
			return st, nil
		}
		if ctx.Err() != nil {
			return api.RingStatus{}, ctx.Err()
		}
		errs = append(errs, err)
	}
	return api.RingStatus{}, fmt.Errorf("no origin answered: %w", errors.Join(errs...))
}

// candidates returns the origins to try for d: its current owners first, then every other
// known address (an origin that is not an owner still pulls through from the owners).
func (c *Cluster) candidates(ctx context.Context, d digest.Digest) ([]string, error) {
	st, err := c.Ring(ctx, d)
	if err != nil {
		return nil, err
	}
	seen := map[string]bool{}
	var out []string
	for _, lists := range [][]string{st.Owners, c.list()} {
		for _, a := range lists {
			if !seen[a] {
				seen[a] = true
				out = append(out, a)
			}
		}
	}
	return out, nil
}

// PushResult says where a blob landed.
type PushResult struct {
	Digest digest.Digest `json:"digest"`
	Size   int64         `json:"size"`
	// Origin is the origin that accepted the upload; it copied the blob to the other Owners.
	Origin string   `json:"origin"`
	Owners []string `json:"owners"`
}

// Push uploads size bytes of src, which hash to d, to the first owner of d that accepts it,
// as a chunked upload. That origin copies it to the other owners and writes it back to storage.
func (c *Cluster) Push(ctx context.Context, ns string, d digest.Digest, src io.ReaderAt, size int64, opts UploadOptions) (PushResult, error) {
	st, err := c.Ring(ctx, d)
	if err != nil {
		return PushResult{}, fmt.Errorf("push %s: %w", d, err)
	}
	targets := st.Owners
	if len(targets) == 0 {
		targets = c.list()
	}
	var errs []error
	for _, a := range targets {
		err := c.Origin(a).UploadChunked(ctx, ns, d, src, size, opts)
		if err == nil {
			return PushResult{Digest: d, Size: size, Origin: a, Owners: st.Owners}, nil
		}
		if ctx.Err() != nil {
			return PushResult{}, ctx.Err()
		}
		if IsClientFault(err) {
			// The request itself is wrong (bad digest, too large, bad name): another origin
			// would say the same.
			return PushResult{}, fmt.Errorf("push %s to %s: %w", d, a, err)
		}
		errs = append(errs, fmt.Errorf("%s: %w", a, err))
	}
	return PushResult{}, fmt.Errorf("push %s: every owner failed: %w", d, errors.Join(errs...))
}

// Pull writes blob d to w, verifying its digest, from the first owner that serves it. When an
// origin fails mid-stream the next one resumes at the byte where it stopped. progress, when
// set, gets the bytes written so far and the total size.
func (c *Cluster) Pull(ctx context.Context, ns string, d digest.Digest, w io.Writer, progress func(done, total int64)) (int64, error) {
	cands, err := c.candidates(ctx, d)
	if err != nil {
		return 0, fmt.Errorf("pull %s: %w", d, err)
	}
	h := sha256.New()
	pw := &progressWriter{w: io.MultiWriter(w, h), fn: progress}
	var errs []error
	notFound := 0
	for _, a := range cands {
		err := c.pullFrom(ctx, a, ns, d, pw)
		if err == nil {
			if got := digest.NewDigest(digest.SHA256, h); got != d {
				return pw.n, fmt.Errorf("pull %s: %w (got %s)", d, ErrDigestMismatch, got)
			}
			return pw.n, nil
		}
		if ctx.Err() != nil {
			return pw.n, ctx.Err()
		}
		if IsNotFound(err) {
			notFound++
		}
		errs = append(errs, fmt.Errorf("%s: %w", a, err))
	}
	if notFound == len(cands) {
		return pw.n, fmt.Errorf("pull %s: %w", d, ErrNotFound)
	}
	return pw.n, fmt.Errorf("pull %s: %w", d, errors.Join(errs...))
}

func (c *Cluster) pullFrom(ctx context.Context, addr, ns string, d digest.Digest, pw *progressWriter) error {
	body, total, err := c.Origin(addr).Open(ctx, ns, d, pw.n)
	if err != nil {
		return err
	}
	defer func() { _ = body.Close() }() // read side
	pw.total = total
	if pw.fn != nil {
		pw.fn(pw.n, total)
	}
	if _, err := io.Copy(pw, body); err != nil {
		return fmt.Errorf("read blob: %w", err)
	}
	if total >= 0 && pw.n != total {
		return fmt.Errorf("read blob: got %d of %d bytes", pw.n, total)
	}
	return nil
}

type progressWriter struct {
	w     io.Writer
	n     int64
	total int64
	fn    func(done, total int64)
}

func (p *progressWriter) Write(b []byte) (int, error) {
	n, err := p.w.Write(b)
	p.n += int64(n)
	if p.fn != nil {
		p.fn(p.n, p.total)
	}
	return n, err
}
