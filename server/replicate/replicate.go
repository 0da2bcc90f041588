// Package replicate copies an image between krakenctl clusters: a tag and every blob of its
// manifest graph (index, platform manifests, configs, layers). Blobs stream from the source's
// origins to the destination's owning origins, which verify each against its digest before they
// store it, and each gets its link in the destination's repository (what a registry serves
// from it); only when every blob has landed is the tag written through the destination's
// build-index, so the destination never holds a tag whose content it lacks. A copy is
// idempotent: a blob the destination already has is not sent again, and a tag it already holds
// at the same digest ends the copy at once.
//
// `krakenctl replicate run` uses a Copier for one-shot copies; the build-index uses one to
// execute its replication rules from durable per-remote queues. Errors that retrying cannot
// fix (the destination refuses the request, the source lacks a blob the graph names, the graph
// is over its bounds) wrap ErrPermanent, so a queue parks the item instead of retrying it
// forever.
package replicate

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"time"
	"unicode/utf8"

	"github.com/opencontainers/go-digest"
	"golang.org/x/sync/errgroup"

	"github.com/krakenctl/krakenctl/server/client"
	"github.com/krakenctl/krakenctl/server/registry"
	"github.com/krakenctl/krakenctl/server/seed"
)

// DefaultParallel is how many blobs a copy sends at once unless Config says otherwise.
const DefaultParallel = 4

// Sentinel errors, wrapped with %w.
var (
	// ErrPermanent marks a failure that retrying cannot fix: the destination refused the
	// request (auth, an invalid name, content it rejects), or the source lacks content the
	// graph names. Queues park such items for an operator.
	ErrPermanent = errors.New("permanent replication failure")
	// ErrUnknownTag means the source has no such tag.
	ErrUnknownTag = errors.New("unknown tag")
	// ErrSourceIncomplete means the source cannot produce a blob or manifest of the graph.
	ErrSourceIncomplete = errors.New("the source lacks content of the image")
	// ErrSuperseded means the tag moved on at the source while its old value was copied.
	ErrSuperseded = errors.New("the tag moved on at the source")
)

// Cluster is one side of a copy: its origins and its build-index.
type Cluster struct {
	// Name is how reports and logs call the cluster ("source", a remote's name).
	Name       string
	Origins    *client.Cluster
	BuildIndex *client.BuildIndexes
}

// Config tunes a Copier.
type Config struct {
	// Parallel bounds the blobs sent at once; DefaultParallel when zero.
	Parallel int
	// MaxBlobs bounds the graph; seed.DefaultMaxBlobs when zero.
	MaxBlobs int
}

// Deps are a Copier's collaborators.
type Deps struct {
	// Progress, when set, hears about every blob as it moves. It is called from several
	// goroutines at once.
	Progress func(Progress)
	Log      *slog.Logger
}

// Target is what to copy: a repository's tag. Digest, when set, is the value to copy (the
// caller read it from the source, as the build-index does from its own store); otherwise the
// tag is resolved on the source.
type Target struct {
	Repo   string
	Tag    string
	Digest digest.Digest
	// StillCurrent, when set, is asked right before the tag is written whether Digest is still
	// the value to send; an error (ErrSuperseded when the tag moved on) stops the copy with
	// the tag unwritten, so a slow copy of an old value cannot land after a newer one.
	StillCurrent func(ctx context.Context) error
}

// String is the target as an operator writes it.
func (t Target) String() string { return t.Repo + ":" + t.Tag }

// Blob is one blob of a copy and what happened to it.
type Blob struct {
	Digest digest.Digest `json:"digest"`
	// Stored is the sha256 digest the content is stored under, when Digest is another algorithm.
	Stored digest.Digest `json:"stored,omitempty"`
	Kind   seed.Kind     `json:"kind"`
	// Size is the blob's size, -1 when unknown.
	Size int64 `json:"size"`
	// Copied is true when the blob was sent; false when the destination had it already.
	Copied   bool          `json:"copied"`
	Duration time.Duration `json:"duration_ns"`
	Error    string        `json:"error,omitempty"`

	done bool  // the blob's outcome is final
	err  error // what Error says, with its chain (ErrPermanent, ErrSourceIncomplete...)
}

// Report is the outcome of one copy.
type Report struct {
	Repo   string        `json:"repository"`
	Tag    string        `json:"tag"`
	Digest digest.Digest `json:"digest"`
	To     string        `json:"to"`
	// UpToDate is true when the destination already held the tag at Digest: nothing was read
	// or sent.
	UpToDate bool    `json:"up_to_date"`
	Blobs    []*Blob `json:"blobs"`
	// Copied, Present and Failed count the blobs sent, found at the destination, and failed.
	Copied  int `json:"copied"`
	Present int `json:"present"`
	Failed  int `json:"failed"`
	// Bytes is what was sent.
	Bytes int64 `json:"bytes"`
	// TagWritten is true once the destination's build-index accepted the tag.
	TagWritten bool          `json:"tag_written"`
	Duration   time.Duration `json:"duration_ns"`
}

// Progress is one step of one blob, or the end of the walk.
type Progress struct {
	// Blob is the blob that moved; nil on the event that ends the walk.
	Blob *Blob
	// Blobs, at the end of the walk, is how many blobs the graph has.
	Blobs int
	// Done and Total are the bytes sent so far and the blob's size (-1 when unknown).
	Done, Total int64
	// Finished is set once per blob, when its outcome is final.
	Finished bool
}

// Copier copies images between clusters. It is safe for concurrent use.
type Copier struct {
	cfg  Config
	deps Deps
}

// New returns a Copier.
func New(cfg Config, deps Deps) (*Copier, error) {
	if cfg.Parallel < 0 || cfg.MaxBlobs < 0 {
		return nil, errors.New("new copier: parallel and max blobs must not be negative")
	}
	if cfg.Parallel == 0 {
		cfg.Parallel = DefaultParallel
	}
	if deps.Log == nil {
		deps.Log = slog.New(slog.DiscardHandler)
	}
	return &Copier{cfg: cfg, deps: deps}, nil
}

// Copy copies t from src to dst: every blob of the graph the destination lacks, then the tag.
// The report says what happened to each blob, also on error. An error wrapping ErrPermanent
// will not go away by retrying.
func (c *Copier) Copy(ctx context.Context, src, dst Cluster, t Target) (*Report, error) {
	start := time.Now()
	rep := &Report{Repo: t.Repo, Tag: t.Tag, Digest: t.Digest, To: dst.Name}
	defer func() { rep.Duration = time.Since(start) }()
	if src.Origins == nil || dst.Origins == nil || dst.BuildIndex == nil {
		return rep, fmt.Errorf("copy %s: %w: both clusters need origins and the destination a build-index", t, ErrPermanent)
	}
	if rep.Digest == "" {
		if src.BuildIndex == nil {
			return rep, fmt.Errorf("copy %s: %w: no source build-index to resolve the tag", t, ErrPermanent)
		}
		tag, err := src.BuildIndex.GetTag(ctx, t.Repo, t.Tag, false)
		switch {
		case client.IsNotFound(err):
			return rep, fmt.Errorf("copy %s: %w: %w: the source has no tag %q in %s", t, ErrPermanent, ErrUnknownTag, t.Tag, t.Repo)
		case err != nil:
			return rep, fmt.Errorf("copy %s: resolve the tag on the source: %w", t, err)
		}
		rep.Digest = tag.Digest
	}
	if err := rep.Digest.Validate(); err != nil {
		return rep, fmt.Errorf("copy %s: %w: digest %q: %w", t, ErrPermanent, rep.Digest, err)
	}
	// A destination already at this value holds the whole graph: the tag went in last. Its
	// store's own value counts, not an upstream registry's answer for a registry-backed
	// repository.
	cur, err := dst.BuildIndex.GetStoredTag(ctx, t.Repo, t.Tag)
	switch {
	case err == nil && cur.Digest == rep.Digest:
		rep.UpToDate = true
		return rep, nil
	case err != nil && !client.IsNotFound(err):
		return rep, c.classify(fmt.Errorf("copy %s: read the tag on %s: %w", t, dst.Name, err))
	}

	s, err := seed.New(seed.Config{MaxBlobs: c.cfg.MaxBlobs}, seed.Deps{Origins: src.Origins, BuildIndex: src.BuildIndex, Log: c.deps.Log})
	if err != nil {
		return rep, err
	}
	walked, err := s.Walk(ctx, []seed.Target{{Repo: t.Repo, Digest: rep.Digest}})
	if walked != nil {
		for _, b := range walked.Blobs {
			rb := &Blob{Digest: b.Digest, Stored: b.Stored, Kind: b.Kind, Size: b.Size, Error: truncate(b.Error, maxErrorText)}
			rep.Blobs = append(rep.Blobs, rb)
			if rb.Error != "" {
				// A manifest of the graph the walk could not read: permanent when no origin
				// or backend of the source has it, else (origins down) worth retrying.
				rb.done, rb.err = true, b.Err
				if client.IsNotFound(b.Err) {
					rb.err = fmt.Errorf("%w: %w: %w", ErrPermanent, ErrSourceIncomplete, b.Err)
				}
				c.progress(Progress{Blob: rb, Finished: true})
			}
		}
	}
	if err != nil {
		if errors.Is(err, seed.ErrGraphTooLarge) {
			err = fmt.Errorf("%w: %w", ErrPermanent, err)
		}
		return c.finish(rep, fmt.Errorf("copy %s: %w", t, err))
	}
	c.progress(Progress{Blobs: len(rep.Blobs)})

	var bytes atomic.Int64
	g, gctx := errgroup.WithContext(ctx)
	g.SetLimit(c.cfg.Parallel)
	for _, b := range rep.Blobs {
		if b.Error != "" {
			continue // a manifest the walk could not read
		}
		g.Go(func() error {
			began := time.Now()
			n, err := c.blob(gctx, src, dst, t.Repo, b)
			b.Duration = time.Since(began)
			bytes.Add(n)
			if err != nil {
				b.Error, b.err = truncate(err.Error(), maxErrorText), err
			}
			b.done = true
			c.progress(Progress{Blob: b, Done: n, Total: b.Size, Finished: true})
			return nil // every blob is tried; failures are in the blobs
		})
	}
	_ = g.Wait()
	rep.Bytes = bytes.Load()
	if err := ctx.Err(); err != nil {
		return c.finish(rep, err)
	}
	if rep.countFailed() > 0 {
		return c.finish(rep, fmt.Errorf("copy %s: %w", t, c.blobErrors(rep)))
	}
	if t.StillCurrent != nil {
		if err := t.StillCurrent(ctx); err != nil {
			return c.finish(rep, fmt.Errorf("copy %s: before writing the tag: %w", t, err))
		}
	}
	if _, err := dst.BuildIndex.PutTag(ctx, t.Repo, t.Tag, rep.Digest); err != nil {
		return c.finish(rep, c.classify(fmt.Errorf("copy %s: write the tag on %s: %w", t, dst.Name, err)))
	}
	rep.TagWritten = true
	return c.finish(rep, nil)
}

// finish counts the blobs' outcomes into rep.
func (c *Copier) finish(rep *Report, err error) (*Report, error) {
	rep.Copied, rep.Present, rep.Failed = 0, 0, 0
	for _, b := range rep.Blobs {
		switch {
		case b.Error != "":
			rep.Failed++
		case b.Copied:
			rep.Copied++
		case b.done:
			rep.Present++
		}
	}
	return rep, err
}

func (r *Report) countFailed() int {
	n := 0
	for _, b := range r.Blobs {
		if b.Error != "" {
			n++
		}
	}
	return n
}

// blobErrors joins the blobs' errors, keeping their chains (a caller tells ErrSourceIncomplete
// from a refusal), and wraps ErrPermanent when any of them is permanent: retrying the copy would
// fail the same way on that blob.
func (c *Copier) blobErrors(rep *Report) error {
	var errs []error
	var text []string
	permanent := false
	for _, b := range rep.Blobs {
		if b.Error == "" {
			continue
		}
		berr := b.err
		if berr == nil {
			berr = errors.New(b.Error)
		}
		errs = append(errs, berr)
		if len(text) < maxErrorsShown {
			text = append(text, fmt.Sprintf("%s %s: %s", b.Kind, b.Digest, b.Error))
		}
		if errors.Is(berr, ErrPermanent) {
			permanent = true
		}
	}
	msg := fmt.Sprintf("%d of %d blobs failed: %s", len(errs), len(rep.Blobs), strings.Join(text, "; "))
	if len(errs) > len(text) {
		msg += fmt.Sprintf("; and %d more", len(errs)-len(text))
	}
	if permanent {
		msg = ErrPermanent.Error() + ": " + msg
		errs = append(errs, ErrPermanent)
	}
	return &boundedError{msg: msg, errs: errs}
}

// Bounds on the text of errors: a remote's answers end up in them, in logs, in the durable
// queue and in status answers, so none may grow with what a remote sends.
const (
	maxErrorText   = 1024 // one blob's error
	maxErrorsShown = 3    // blobs named in a copy's error
)

// boundedError keeps a bounded message and the whole chain, for errors.Is.
type boundedError struct {
	msg  string
	errs []error
}

func (e *boundedError) Error() string   { return e.msg }
func (e *boundedError) Unwrap() []error { return e.errs }

// truncate cuts s to n bytes on a rune boundary, marking the cut.
func truncate(s string, n int) string {
	if len(s) <= n {
		return s
	}
	cut := n
	for cut > 0 && !utf8.RuneStart(s[cut]) {
		cut--
	}
	return s[:cut] + "…"
}

// classify wraps ErrPermanent around an answer about the request itself (401, 403, 400, 413:
// another attempt gets the same answer); 404, 409, 429 and server errors are retried.
func (c *Copier) classify(err error) error {
	if client.IsClientFault(err) {
		return fmt.Errorf("%w: %w", ErrPermanent, err)
	}
	return err
}

func (c *Copier) progress(p Progress) {
	if c.deps.Progress != nil {
		c.deps.Progress(p)
	}
}

// blob makes b present on the destination's owners of it, and linked in repo on its
// build-index, and returns the bytes sent. The link is what a destination's registries (agents,
// proxy) serve a blob or manifest of a repository by, as they scope content to repositories: a
// blob without it is unknown to a pull however many origins hold it. The proxy writes it on
// push; a copy writes it here, before the tag.
func (c *Copier) blob(ctx context.Context, src, dst Cluster, repo string, b *Blob) (int64, error) {
	stored, err := storedDigest(ctx, src, repo, b)
	if err != nil {
		return 0, err
	}
	n, err := c.send(ctx, src, dst, repo, stored, b)
	if err != nil {
		return n, err
	}
	// A repository holds what its links name (blob/<d>, manifest/<d>): without them the
	// destination's registries answer 404 for content its origins hold. The link also maps a
	// sha512 digest to the sha256 the bytes are stored under.
	name := registry.BlobLink(b.Digest)
	if b.Kind == seed.KindIndex || b.Kind == seed.KindManifest {
		name = registry.ManifestLink(b.Digest)
	}
	if !b.Copied {
		// Present already: most likely linked too (a write to the Raft group saved).
		if l, err := dst.BuildIndex.GetLink(ctx, repo, name, false); err == nil && l.Digest == stored {
			return n, nil
		}
	}
	if _, err := dst.BuildIndex.PutLink(ctx, repo, name, stored); err != nil {
		return n, c.classify(fmt.Errorf("write link %s on %s: %w", name, dst.Name, err))
	}
	return n, nil
}

// storedDigest is the sha256 digest b's content is stored under on the origins.
func storedDigest(ctx context.Context, src Cluster, repo string, b *Blob) (digest.Digest, error) {
	if err := b.Digest.Validate(); err != nil {
		return "", fmt.Errorf("%w: invalid digest %q: %w", ErrPermanent, b.Digest, err)
	}
	if b.Digest.Algorithm() == digest.SHA256 {
		return b.Digest, nil
	}
	if b.Stored != "" {
		return b.Stored, nil
	}
	if src.BuildIndex == nil {
		return "", fmt.Errorf("%w: resolve %s: no source build-index to read its link", ErrPermanent, b.Digest)
	}
	l, err := src.BuildIndex.GetLink(ctx, repo, registry.BlobLink(b.Digest), false)
	switch {
	case client.IsNotFound(err):
		return "", fmt.Errorf("%w: %w: no link for %s", ErrPermanent, ErrSourceIncomplete, b.Digest)
	case err != nil:
		return "", fmt.Errorf("resolve %s: %w", b.Digest, err)
	}
	if l.Digest.Algorithm() != digest.SHA256 || l.Digest.Validate() != nil {
		return "", fmt.Errorf("%w: the source's link for %s holds %q, not a sha256 digest", ErrPermanent, b.Digest, l.Digest)
	}
	b.Stored = l.Digest
	return l.Digest, nil
}

// send streams blob d from the source to the first owner on the destination that takes it,
// unless an owner has it. The destination origin hashes what arrives and refuses content that
// is not d; the source side checks the same as it reads.
func (c *Copier) send(ctx context.Context, src, dst Cluster, ns string, d digest.Digest, b *Blob) (int64, error) {
	st, err := dst.Origins.Ring(ctx, d)
	if err != nil {
		return 0, fmt.Errorf("find the owners on %s: %w", dst.Name, err)
	}
	owners := trustedOwners(st.Owners, dst.Origins.Addrs())
	// Present already: touched rather than only looked up, so a garbage collection running on
	// the destination keeps it now that a link will name it (docs/gc.md); one that collected it
	// first makes the touch fail, and the blob is copied again below.
	if err := dst.Origins.Origin(owners[0]).GCTouch(ctx, ns, d); err == nil {
		if b.Size < 0 {
			if size, err := dst.Origins.Origin(owners[0]).Stat(ctx, ns, d); err == nil {
				b.Size = size
			}
		}
		return 0, nil
	}
	var errs []error
	for _, owner := range owners {
		n, err := c.stream(ctx, src, dst.Origins.Origin(owner), ns, d, b)
		if err == nil {
			b.Copied = true
			return n, nil
		}
		if ctx.Err() != nil {
			return n, ctx.Err()
		}
		if errors.Is(err, ErrPermanent) {
			return n, err
		}
		errs = append(errs, fmt.Errorf("%s: %w", owner, err))
	}
	return 0, fmt.Errorf("send to %s: every owner failed: %w", dst.Name, errors.Join(errs...))
}

// maxOwners bounds the origins one blob is offered to: a ring has 3 or 5 replicas.
const maxOwners = 8

// trustedOwners picks where a blob goes on the destination: the owners its ring names that the
// destination's endpoints file lists too (the remote's answer decides the order, not the
// addresses: the file is the operator's, the answer comes over the network, and a liar's list
// could aim our uploads at any host), at most maxOwners; when it names none of those, the
// listed origins themselves, which take an upload for any digest and pass it to its owners.
func trustedOwners(owners, listed []string) []string {
	known := map[string]bool{}
	for _, a := range listed {
		known[a] = true
	}
	var out []string
	for _, o := range owners {
		if known[o] && !slices.Contains(out, o) {
			out = append(out, o)
			if len(out) == maxOwners {
				break
			}
		}
	}
	if len(out) == 0 {
		out = listed[:min(len(listed), maxOwners)]
	}
	return out
}

// errUploadEnded is what a pull still writing sees once the upload it feeds has ended: the
// upload's error is the one to report.
var errUploadEnded = errors.New("the upload to the destination ended")

// stream pulls d from the source into one upload to owner.
func (c *Copier) stream(ctx context.Context, src Cluster, owner *client.Origin, ns string, d digest.Digest, b *Blob) (int64, error) {
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	pr, pw := io.Pipe()
	var pullErr error
	var sent int64
	var wg sync.WaitGroup
	wg.Go(func() {
		n, err := src.Origins.Pull(ctx, ns, d, pw, func(done, total int64) {
			c.progress(Progress{Blob: b, Done: done, Total: total})
		})
		sent, pullErr = n, err
		_ = pw.CloseWithError(err) // nil closes cleanly: the upload sees EOF
	})
	err := owner.Upload(ctx, ns, d, pr, b.Size)
	_ = pr.CloseWithError(errUploadEnded) // unblocks a pull the upload stopped reading
	cancel()
	wg.Wait()
	switch {
	case pullErr != nil && !errors.Is(pullErr, context.Canceled) && !errors.Is(pullErr, errUploadEnded) && err != nil && !client.IsClientFault(err):
		// The source failed first and the upload saw its error.
		if client.IsNotFound(pullErr) {
			return sent, fmt.Errorf("%w: %w: no origin or storage backend of the source has %s", ErrPermanent, ErrSourceIncomplete, d)
		}
		return sent, fmt.Errorf("read from the source: %w", pullErr)
	case err != nil:
		if client.IsNotFound(pullErr) {
			return sent, fmt.Errorf("%w: %w: no origin or storage backend of the source has %s", ErrPermanent, ErrSourceIncomplete, d)
		}
		return sent, c.classify(fmt.Errorf("upload to %s: %w", owner.Addr(), err))
	}
	return sent, nil
}
