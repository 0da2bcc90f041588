// Package seed makes images hot before they are needed ("preheating"): it walks an image's
// manifest graph (index, platform manifests, configs, layers and, on request, referrers) and
// makes every blob present on every origin that owns it, pulling it through from another
// origin or the storage backend where it is missing, and optionally preloads it on agents
// through the swarm. `krakenctl seed` is its command.
//
// Everything read is verified: manifests against the digest they were asked by before they are
// parsed, blobs by the origins (which store only verified content) and by the agent client
// (which hashes what it streams). The graph is bounded in depth and size, so a hostile
// manifest cannot make a seed run forever.
package seed

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"sync"
	"time"

	"github.com/opencontainers/go-digest"
	"golang.org/x/sync/errgroup"

	"github.com/krakenctl/krakenctl/server/client"
	"github.com/krakenctl/krakenctl/server/registry"
	"github.com/krakenctl/krakenctl/swarm/snapshot"
)

// Defaults and bounds of Config.
const (
	DefaultParallel = 4
	// DefaultMaxDepth bounds the nesting of manifests: an index of indexes of manifests with
	// referrers is 4 deep; anything much deeper is a hostile or broken graph.
	DefaultMaxDepth = 8
	// DefaultMaxBlobs bounds the distinct blobs one seed walks.
	DefaultMaxBlobs = 10000
	// agentPoll is how often an agent is asked whether a blob it downloaded is committed.
	agentPoll = 50 * time.Millisecond
)

// Sentinel errors.
var (
	// ErrUnknownTag means the build-index has no such tag.
	ErrUnknownTag = errors.New("unknown tag")
	// ErrGraphTooLarge means a manifest graph is deeper or larger than the configured bounds.
	ErrGraphTooLarge = errors.New("manifest graph too large")
	// ErrNoOwners means the ring named no owner for a digest (no healthy origin).
	ErrNoOwners = errors.New("no healthy origin owns the digest")
)

// Kind says what a blob is in its image.
type Kind string

// Kinds of blobs.
const (
	KindIndex    Kind = "index"
	KindManifest Kind = "manifest"
	KindConfig   Kind = "config"
	KindLayer    Kind = "layer"
	// KindBlob is a bare digest seeded as one blob, outside any graph.
	KindBlob Kind = "blob"
)

// Target is one thing to seed: a tag or a manifest digest of a repository, or a bare blob.
type Target struct {
	// Repo is the repository, which is also the namespace of its blobs on the origins.
	Repo string
	// Tag, when set, is resolved on the build-index.
	Tag string
	// Digest is the manifest (or, with Blob, the blob) when Tag is empty.
	Digest digest.Digest
	// Blob seeds Digest as one blob instead of walking it as a manifest.
	Blob bool
}

// String is the target as an operator writes it.
func (t Target) String() string {
	switch {
	case t.Tag != "":
		return t.Repo + ":" + t.Tag
	case t.Blob:
		return t.Digest.String()
	}
	return t.Repo + "@" + t.Digest.String()
}

// Config tunes a Seeder.
type Config struct {
	// Parallel bounds the blobs warmed at once; DefaultParallel when zero.
	Parallel int
	// Referrers walks the referrers (signatures, SBOMs...) of every manifest too.
	Referrers bool
	// Agents are the agents' API addresses to preload every blob on; none: origins only.
	Agents []string
	// MaxDepth and MaxBlobs bound the graph; the defaults when zero.
	MaxDepth, MaxBlobs int
}

// Deps are a Seeder's clients.
type Deps struct {
	// Origins is the origin cluster. Required.
	Origins *client.Cluster
	// BuildIndex resolves tags, links of non-sha256 digests and referrers; nil when only sha256
	// digests without referrers are seeded.
	BuildIndex *client.BuildIndexes
	// HTTPClient talks to agents; nil means http.DefaultClient.
	HTTPClient *http.Client
	// Progress, when set, is told about each blob as it moves. It is called from several
	// goroutines at once.
	Progress func(Progress)
	Log      *slog.Logger
}

// Progress is one step of one blob, or the end of the walk.
type Progress struct {
	// Blob is the blob that moved; nil on the one event that ends the walk.
	Blob *Blob
	// Blobs, at the end of the walk, is how many blobs it reached (failed ones included).
	Blobs int
	// Done and Total are the bytes an agent has streamed so far (Total -1 when unknown); both
	// zero when the step is not a transfer.
	Done, Total int64
	// Finished is set once, when the blob's Result is final.
	Finished bool
}

// Host is the outcome of one blob on one origin or agent.
type Host struct {
	Addr  string `json:"addr"`
	Error string `json:"error,omitempty"`
}

// Blob is one blob of a seed and what happened to it.
type Blob struct {
	// Target is the target the blob was reached from (the first one, when several share it).
	Target string        `json:"target"`
	Repo   string        `json:"repository"`
	Digest digest.Digest `json:"digest"`
	// Stored is the sha256 digest the content is stored under, when Digest is another algorithm.
	Stored   digest.Digest `json:"stored,omitempty"`
	Kind     Kind          `json:"kind"`
	Size     int64         `json:"size"`
	Origins  []Host        `json:"origins"`
	Agents   []Host        `json:"agents,omitempty"`
	Duration time.Duration `json:"duration_ns"`
	// Error says why the blob is not hot everywhere asked; empty on success.
	Error string `json:"error,omitempty"`
	// Err is the error behind Error when the walk failed the blob, for callers that classify it.
	Err error `json:"-"`
}

// Warmed counts the hosts of hs without an error.
func Warmed(hs []Host) int {
	n := 0
	for _, h := range hs {
		if h.Error == "" {
			n++
		}
	}
	return n
}

// Report is the outcome of a seed: every blob reached, in graph order.
type Report struct {
	Blobs []*Blob `json:"blobs"`
	// Failed counts the blobs with an error.
	Failed int `json:"failed"`
}

// Seeder seeds targets. It is safe for concurrent use.
type Seeder struct {
	cfg  Config
	deps Deps
}

// New returns a Seeder.
func New(cfg Config, deps Deps) (*Seeder, error) {
	if deps.Origins == nil {
		return nil, errors.New("new seeder: no origin cluster")
	}
	if cfg.Parallel < 0 || cfg.MaxDepth < 0 || cfg.MaxBlobs < 0 {
		return nil, fmt.Errorf("new seeder: parallel, max depth and max blobs must not be negative")
	}
	if cfg.Parallel == 0 {
		cfg.Parallel = DefaultParallel
	}
	if cfg.MaxDepth == 0 {
		cfg.MaxDepth = DefaultMaxDepth
	}
	if cfg.MaxBlobs == 0 {
		cfg.MaxBlobs = DefaultMaxBlobs
	}
	if deps.HTTPClient == nil {
		deps.HTTPClient = http.DefaultClient
	}
	if deps.Log == nil {
		deps.Log = slog.New(slog.DiscardHandler)
	}
	return &Seeder{cfg: cfg, deps: deps}, nil
}

// Seed walks every target's graph and warms each of its blobs once, up to Parallel at a time.
// A blob that fails does not stop the others: the report says which failed and why. The error
// is non-nil when anything failed (a target that could not be resolved, a blob that could not
// be warmed everywhere), or when ctx ended.
func (s *Seeder) Seed(ctx context.Context, targets []Target) (*Report, error) {
	w := &walk{s: s, seen: map[string]*Blob{}}
	var errs []error
	for _, t := range targets {
		if err := w.target(ctx, t); err != nil {
			errs = append(errs, err)
		}
		if ctx.Err() != nil {
			return w.report(), ctx.Err()
		}
	}
	s.progress(Progress{Blobs: len(w.blobs)})
	g, gctx := errgroup.WithContext(ctx)
	g.SetLimit(s.cfg.Parallel)
	for _, b := range w.blobs {
		if b.Error != "" {
			continue // failed during the walk (a manifest that could not be read)
		}
		g.Go(func() error {
			s.warm(gctx, b)
			return nil
		})
	}
	_ = g.Wait() // warm records errors in the blobs
	rep := w.report()
	for _, b := range rep.Blobs {
		if b.Error != "" {
			errs = append(errs, fmt.Errorf("%s %s of %s: %s", b.Kind, b.Digest, b.Target, b.Error))
		}
	}
	if err := ctx.Err(); err != nil {
		return rep, err
	}
	return rep, errors.Join(errs...)
}

// Walk resolves every target and walks its graph without warming anything: every blob reached,
// in graph order (a manifest before what it references), manifests that could not be read
// carrying their error. Replication copies what it returns. The error is about a target as a
// whole (a tag that does not resolve, a graph over the bounds) or ctx.
func (s *Seeder) Walk(ctx context.Context, targets []Target) (*Report, error) {
	w := &walk{s: s, seen: map[string]*Blob{}}
	var errs []error
	for _, t := range targets {
		if err := w.target(ctx, t); err != nil {
			errs = append(errs, err)
		}
		if err := ctx.Err(); err != nil {
			return w.report(), err
		}
	}
	return w.report(), errors.Join(errs...)
}

// walk is the state of one Seed's graph walk.
type walk struct {
	s     *Seeder
	seen  map[string]*Blob // by repo + "@" + digest
	blobs []*Blob
}

func (w *walk) report() *Report {
	r := &Report{Blobs: w.blobs}
	for _, b := range w.blobs {
		if b.Error != "" {
			r.Failed++
		}
	}
	return r
}

// add records a blob to warm; false when it was already reached. A blob beyond MaxBlobs is an
// error.
func (w *walk) add(b *Blob) (bool, error) {
	key := b.Repo + "@" + b.Digest.String()
	if _, ok := w.seen[key]; ok {
		return false, nil
	}
	if len(w.blobs) >= w.s.cfg.MaxBlobs {
		return false, fmt.Errorf("%w: more than %d blobs", ErrGraphTooLarge, w.s.cfg.MaxBlobs)
	}
	w.seen[key] = b
	w.blobs = append(w.blobs, b)
	return true, nil
}

// fail marks b failed during the walk and reports it.
func (w *walk) fail(b *Blob, err error) {
	b.Error, b.Err = err.Error(), err
	w.s.progress(Progress{Blob: b, Finished: true})
}

// target resolves t and walks its graph. The error is about the target as a whole (a tag that
// does not resolve, a graph over the bounds); blobs that fail carry their own errors.
func (w *walk) target(ctx context.Context, t Target) error {
	if t.Blob {
		_, err := w.add(&Blob{Target: t.String(), Repo: t.Repo, Digest: t.Digest, Kind: KindBlob, Size: -1})
		return err
	}
	d := t.Digest
	if t.Tag != "" {
		if w.s.deps.BuildIndex == nil {
			return fmt.Errorf("seed %s: no build-index to resolve the tag", t)
		}
		tag, err := w.s.deps.BuildIndex.GetTag(ctx, t.Repo, t.Tag, false)
		if err != nil {
			if client.IsNotFound(err) {
				return fmt.Errorf("seed %s: %w: the build-index has no tag %q in %s", t, ErrUnknownTag, t.Tag, t.Repo)
			}
			return fmt.Errorf("seed %s: resolve tag: %w", t, err)
		}
		if err := tag.Digest.Validate(); err != nil {
			return fmt.Errorf("seed %s: the build-index answered digest %q: %w", t, tag.Digest, err)
		}
		d = tag.Digest
	}
	if err := w.manifest(ctx, t, d, "", 0); err != nil {
		return fmt.Errorf("seed %s: %w", t, err)
	}
	return nil
}

// manifest records manifest d of t's repository (its kind unknown until it is read, want when
// its parent's descriptor said), reads and verifies it, then walks its children. Only the
// graph bounds are returned as errors; a manifest that cannot be read fails on its own.
func (w *walk) manifest(ctx context.Context, t Target, d digest.Digest, wantType string, depth int) error {
	if depth >= w.s.cfg.MaxDepth {
		return fmt.Errorf("%w: manifests nested more than %d deep at %s", ErrGraphTooLarge, w.s.cfg.MaxDepth, d)
	}
	b := &Blob{Target: t.String(), Repo: t.Repo, Digest: d, Kind: KindManifest, Size: -1}
	if registry.IsIndexMediaType(wantType) {
		b.Kind = KindIndex
	}
	fresh, err := w.add(b)
	if err != nil || !fresh {
		return err
	}
	m, err := w.s.readManifest(ctx, b)
	if err != nil {
		w.fail(b, err)
		return nil
	}
	b.Size = int64(len(m.Body))
	if registry.IsIndexMediaType(m.MediaType) {
		b.Kind = KindIndex
		for _, c := range m.Manifests {
			if err := w.manifest(ctx, t, c.Digest, c.MediaType, depth+1); err != nil {
				return err
			}
		}
	} else {
		for i, c := range m.Blobs {
			kind := KindLayer
			if i == 0 {
				kind = KindConfig // ParseManifest puts the config first
			}
			if len(c.URLs) > 0 {
				continue // a foreign layer by URL: fetched from elsewhere, not held by the origins
			}
			if _, err := w.add(&Blob{Target: t.String(), Repo: t.Repo, Digest: c.Digest, Kind: kind, Size: c.Size}); err != nil {
				return err
			}
		}
	}
	if !w.s.cfg.Referrers {
		return nil
	}
	refs, err := w.s.referrers(ctx, t.Repo, d)
	if err != nil {
		w.fail(b, err)
		return nil
	}
	for _, r := range refs {
		if err := w.manifest(ctx, t, r, "", depth+1); err != nil {
			return err
		}
	}
	return nil
}

// referrers lists the manifests whose subject is d in repo, from the build-index's links.
func (s *Seeder) referrers(ctx context.Context, repo string, d digest.Digest) ([]digest.Digest, error) {
	if s.deps.BuildIndex == nil {
		return nil, errors.New("list referrers: no build-index")
	}
	links, err := s.deps.BuildIndex.ListLinks(ctx, repo, registry.ReferrersPrefix(d), false)
	if err != nil {
		if client.IsNotFound(err) {
			return nil, nil
		}
		return nil, fmt.Errorf("list referrers: %w", err)
	}
	out := make([]digest.Digest, 0, len(links))
	for _, l := range links {
		if err := l.Digest.Validate(); err != nil {
			return nil, fmt.Errorf("list referrers: link %s holds %q: %w", l.Name, l.Digest, err)
		}
		out = append(out, l.Digest)
	}
	return out, nil
}

// stored returns the sha256 digest b's content is stored under on the origins: its own digest,
// else the build-index link of the repository (a sha512 manifest or blob).
func (s *Seeder) stored(ctx context.Context, b *Blob) (digest.Digest, error) {
	if err := b.Digest.Validate(); err != nil {
		return "", fmt.Errorf("invalid digest %q: %w", b.Digest, err)
	}
	if b.Digest.Algorithm() == digest.SHA256 {
		return b.Digest, nil
	}
	if b.Stored != "" {
		return b.Stored, nil
	}
	if s.deps.BuildIndex == nil {
		return "", fmt.Errorf("resolve %s: no build-index to read its link", b.Digest)
	}
	link := registry.BlobLink(b.Digest)
	if b.Kind == KindIndex || b.Kind == KindManifest {
		link = registry.ManifestLink(b.Digest)
	}
	l, err := s.deps.BuildIndex.GetLink(ctx, b.Repo, link, false)
	if err != nil {
		return "", fmt.Errorf("resolve %s: build-index link %s: %w", b.Digest, link, err)
	}
	if l.Digest.Algorithm() != digest.SHA256 || l.Digest.Validate() != nil {
		return "", fmt.Errorf("resolve %s: the build-index link %s holds %q, not a sha256 digest", b.Digest, link, l.Digest)
	}
	b.Stored = l.Digest
	return l.Digest, nil
}

// readManifest reads manifest b from the origins (pulled through where missing), checks that
// it hashes to b.Digest in its own algorithm, and parses it.
func (s *Seeder) readManifest(ctx context.Context, b *Blob) (*registry.Manifest, error) {
	stored, err := s.stored(ctx, b)
	if err != nil {
		return nil, err
	}
	buf := &capped{max: registry.MaxManifestSize}
	if _, err := s.deps.Origins.Pull(ctx, b.Repo, stored, buf, nil); err != nil {
		if client.IsNotFound(err) {
			return nil, fmt.Errorf("read manifest: no origin or storage backend has it in namespace %s: %w", b.Repo, err)
		}
		return nil, fmt.Errorf("read manifest: %w", err)
	}
	body := buf.Bytes()
	if got := b.Digest.Algorithm().FromBytes(body); got != b.Digest {
		return nil, fmt.Errorf("read manifest: the stored content hashes to %s", got)
	}
	m, err := registry.ParseManifest("", body)
	if err != nil {
		return nil, fmt.Errorf("read manifest: not a manifest: %w", err)
	}
	return m, nil
}

// errTooLarge is capped's write error past its bound.
var errTooLarge = fmt.Errorf("larger than any manifest (%d bytes)", registry.MaxManifestSize)

// capped is a buffer that refuses to grow past max bytes, so a huge blob named as a manifest
// is not read into memory.
type capped struct {
	bytes.Buffer
	max int
}

func (c *capped) Write(p []byte) (int, error) {
	if c.Len()+len(p) > c.max {
		return 0, errTooLarge
	}
	return c.Buffer.Write(p)
}

func (s *Seeder) progress(p Progress) {
	if s.deps.Progress != nil {
		s.deps.Progress(p)
	}
}

// warm makes b present on every owning origin, then on every agent, and records the outcome.
func (s *Seeder) warm(ctx context.Context, b *Blob) {
	start := time.Now()
	defer func() {
		b.Duration = time.Since(start)
		s.progress(Progress{Blob: b, Finished: true})
	}()
	s.progress(Progress{Blob: b})
	if err := s.warmOrigins(ctx, b); err != nil {
		b.Error = err.Error()
		return
	}
	if len(s.cfg.Agents) == 0 {
		return
	}
	if err := s.warmAgents(ctx, b); err != nil {
		b.Error = err.Error()
	}
}

// warmOrigins asks each owner of b for its metainfo: an owner that lacks the blob pulls it
// from another origin or the backend first, then hashes its pieces, so the swarm's first
// request finds both ready.
func (s *Seeder) warmOrigins(ctx context.Context, b *Blob) error {
	stored, err := s.stored(ctx, b)
	if err != nil {
		return err
	}
	st, err := s.deps.Origins.Ring(ctx, stored)
	if err != nil {
		return fmt.Errorf("ask the ring for the owners: %w", err)
	}
	if len(st.Owners) == 0 {
		return ErrNoOwners
	}
	b.Origins = make([]Host, len(st.Owners))
	var wg sync.WaitGroup
	var mu sync.Mutex
	for i, addr := range st.Owners {
		b.Origins[i].Addr = addr
		wg.Go(func() {
			mi, err := s.deps.Origins.Origin(addr).Metainfo(ctx, b.Repo, stored)
			if err != nil {
				if client.IsNotFound(err) {
					err = fmt.Errorf("neither another origin nor the storage backend has it in namespace %s", b.Repo)
				}
				b.Origins[i].Error = err.Error()
				s.deps.Log.Warn("warm blob on origin failed", "digest", b.Digest, "origin", addr, "err", err)
				return
			}
			mu.Lock()
			b.Size = mi.Length
			mu.Unlock()
		})
	}
	wg.Wait()
	var errs []error
	for _, h := range b.Origins {
		if h.Error != "" {
			errs = append(errs, fmt.Errorf("origin %s: %s", h.Addr, h.Error))
		}
	}
	return errors.Join(errs...)
}

// warmAgents has every agent download b through the swarm, verified, and waits until each has
// committed it to its store. The agents download at once, so they feed each other.
func (s *Seeder) warmAgents(ctx context.Context, b *Blob) error {
	stored, err := s.stored(ctx, b)
	if err != nil {
		return err
	}
	b.Agents = make([]Host, len(s.cfg.Agents))
	var wg sync.WaitGroup
	var mu sync.Mutex
	done := make([]int64, len(s.cfg.Agents))
	for i, addr := range s.cfg.Agents {
		b.Agents[i].Addr = addr
		wg.Go(func() {
			ag := client.NewAgent(addr, s.deps.HTTPClient)
			_, err := ag.Pull(ctx, b.Repo, stored, io.Discard, func(n, total int64) {
				mu.Lock()
				done[i] = n
				var sum int64
				for _, v := range done {
					sum += v
				}
				mu.Unlock()
				if total >= 0 {
					total *= int64(len(done))
				}
				s.progress(Progress{Blob: b, Done: sum, Total: total})
			})
			if err == nil {
				err = waitStored(ctx, ag, stored)
			}
			if err != nil {
				b.Agents[i].Error = err.Error()
				s.deps.Log.Warn("preload blob on agent failed", "digest", b.Digest, "agent", addr, "err", err)
			}
		})
	}
	wg.Wait()
	var errs []error
	for _, h := range b.Agents {
		if h.Error != "" {
			errs = append(errs, fmt.Errorf("agent %s: %s", h.Addr, h.Error))
		}
	}
	return errors.Join(errs...)
}

// waitStored waits until the agent reports d committed to its store: a pull that streamed every
// verified byte may still be renaming the file into place.
func waitStored(ctx context.Context, ag *client.Agent, d digest.Digest) error {
	tick := time.NewTicker(agentPoll)
	defer tick.Stop()
	for {
		ts, err := ag.Torrents(ctx, d)
		if client.IsNotFound(err) {
			ts, err = nil, nil
		}
		if err != nil {
			return fmt.Errorf("ask agent for its torrent: %w", err)
		}
		if stored, err := committed(ts); stored || err != nil {
			return err
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("wait for the agent to store it: %w", ctx.Err())
		case <-tick.C:
		}
	}
}

// committed reports whether the torrents say the blob is in the agent's store. No torrent at
// all after a pull that succeeded means the agent served it from its store (it was there
// before, or its torrent was retired after it was committed).
func committed(ts []snapshot.TorrentStats) (bool, error) {
	if len(ts) == 0 {
		return true, nil
	}
	for _, t := range ts {
		switch {
		case t.State == "failed":
			return false, fmt.Errorf("the agent's download failed: %s", t.Error)
		case t.Finished != nil || t.State == "seeding":
			return true, nil
		}
	}
	return false, nil
}
