package castore

import (
	"errors"
	"fmt"
	"math"
	"time"

	"github.com/opencontainers/go-digest"
)

// This file is cleanup: the standing policies a role runs on a timer (idle time, age, high and
// low watermarks) and the manual evictions an operator asks for, through one entry point,
// Cleanup. Everything is decided under the store's lock, like DeleteIdle: a read that starts
// before the decision pins the blob and keeps it, one that starts after finds it gone; and a
// dry run decides the same way without removing, so it reports what a real run at that moment
// would remove. Capacity eviction (reserve.go) is apart: it runs when a write needs room.
//
// Cleanup never removes a blob that is open (being read, or served to peers), held (an origin's
// blob awaiting write-back), or that the caller's Keep claims (a blob the swarm is seeding or
// downloading), nor any blob of a store that holds the only copies (Options.OnlyCopies). Partial downloads and upload sessions are not blobs: it leaves them alone.

// Reasons a blob is removed by Cleanup, the label of its metrics.
const (
	// ReasonTTI: not used (committed, opened, touched) for Policy.TTI.
	ReasonTTI = "tti"
	// ReasonTTL: in this store for Policy.TTL since it arrived (Info.Created).
	ReasonTTL = "ttl"
	// ReasonWatermark: usage was over the high watermark; least recently used first, down to
	// the low watermark.
	ReasonWatermark = "watermark"
	// ReasonManual: an operator's eviction (Manual).
	ReasonManual = "manual"
)

// Reasons lists every removal reason, in the order reports give them.
var Reasons = []string{ReasonTTI, ReasonTTL, ReasonWatermark, ReasonManual}

// Why Cleanup kept a blob it would otherwise have removed.
const (
	// KeptOpen: the blob is open (read by a client, or sent to a peer).
	KeptOpen = "open"
	// KeptHeld: the blob is held (an origin's blob awaiting write-back).
	KeptHeld = "held"
	// KeptActive: the caller's Keep claimed it (the swarm seeds or downloads it).
	KeptActive = "active"
	// KeptAbsent: a manual eviction named a digest the store does not hold.
	KeptAbsent = "absent"
	// KeptOnlyCopy: the store holds the only copies of its blobs (Options.OnlyCopies).
	KeptOnlyCopy = "only copy"
)

// ErrBadPolicy means a cleanup policy or a manual eviction is out of range.
var ErrBadPolicy = errors.New("castore: bad cleanup policy")

// Policy is a store's standing cleanup policy. The zero value removes nothing.
type Policy struct {
	// TTI removes blobs not used (committed, opened, touched) for this long; 0 is off.
	TTI time.Duration
	// TTL removes blobs this long after they entered the store (Info.Created), used or not; 0
	// is off.
	TTL time.Duration
	// HighWatermark and LowWatermark are percentages of the capacity or, when the store has no
	// capacity, of the file system holding it (used = size - available, which counts whatever
	// else fills that disk): above High, least recently used blobs go until usage is at or
	// below Low. Both 0 is off; otherwise 0 < Low < High <= 100.
	HighWatermark int
	LowWatermark  int
}

// Validate checks the ranges, naming the field at fault.
func (p Policy) Validate() error {
	var errs []error
	if p.TTI < 0 {
		errs = append(errs, fmt.Errorf("%w: tti %s is negative", ErrBadPolicy, p.TTI))
	}
	if p.TTL < 0 {
		errs = append(errs, fmt.Errorf("%w: ttl %s is negative", ErrBadPolicy, p.TTL))
	}
	if err := checkWatermarks(p.HighWatermark, p.LowWatermark); err != nil {
		errs = append(errs, err)
	}
	return errors.Join(errs...)
}

func checkWatermarks(high, low int) error {
	if high == 0 && low == 0 {
		return nil
	}
	if low <= 0 || low >= high || high > 100 {
		return fmt.Errorf("%w: watermarks high %d%%, low %d%%: want 0 < low < high <= 100", ErrBadPolicy, high, low)
	}
	return nil
}

// Manual is an operator's eviction. Every criterion set adds blobs (their union is removed,
// never one in use); DownTo then removes least recently used blobs until usage is at or below
// it. At least one criterion must be set.
type Manual struct {
	// Digests removes these blobs; one the store does not hold is reported as KeptAbsent.
	Digests []digest.Digest
	// IdleOver removes blobs not used for this long (> 0).
	IdleOver time.Duration
	// OlderThan removes blobs that entered the store this long ago (> 0).
	OlderThan time.Duration
	// DownTo removes least recently used blobs until usage is at or below it.
	DownTo *Target
}

// Target is a usage to clean down to: Bytes of committed blobs in the store, or Percent of
// the watermarks' basis (the capacity, else the file system, other files included). Exactly
// one is set; Bytes may be 0 (remove everything that may be removed).
type Target struct {
	Bytes   *int64
	Percent *float64
}

func (m *Manual) validate() error {
	if m.IdleOver < 0 || m.OlderThan < 0 {
		return fmt.Errorf("%w: negative duration", ErrBadPolicy)
	}
	if len(m.Digests) == 0 && m.IdleOver == 0 && m.OlderThan == 0 && m.DownTo == nil {
		return fmt.Errorf("%w: nothing to evict: name digests, an idle time, an age or a target", ErrBadPolicy)
	}
	for _, d := range m.Digests {
		if err := checkDigest(d); err != nil {
			return err
		}
	}
	if t := m.DownTo; t != nil {
		switch {
		case (t.Bytes == nil) == (t.Percent == nil):
			return fmt.Errorf("%w: a target is bytes or a percentage, not both or neither", ErrBadPolicy)
		case t.Bytes != nil && *t.Bytes < 0:
			return fmt.Errorf("%w: target %d bytes is negative", ErrBadPolicy, *t.Bytes)
		case t.Percent != nil && (math.IsNaN(*t.Percent) || *t.Percent < 0 || *t.Percent > 100):
			return fmt.Errorf("%w: target %v%% is not between 0 and 100", ErrBadPolicy, *t.Percent)
		}
	}
	return nil
}

// CleanupOptions are the inputs of one Cleanup.
type CleanupOptions struct {
	// Policy is applied when Manual is nil.
	Policy Policy
	// Manual, when set, is an operator's eviction instead of the policy.
	Manual *Manual
	// Keep reports blobs the caller must keep (a role passes its swarm scheduler's Active).
	// It is called with the store's lock held, only for blobs about to be removed: it must be
	// quick and must not call the Store.
	Keep func(digest.Digest) bool
	// DryRun decides the same way and removes nothing.
	DryRun bool
	// Now is the time the policy measures from; zero means the store's clock.
	Now time.Time
}

// CleanupBlob is one blob a Cleanup removed (or, dry, would remove), or kept.
type CleanupBlob struct {
	Info
	// Reason is why it was chosen: tti, ttl, watermark or manual.
	Reason string
	// Kept, for a blob chosen but not removed, says why: open, held, active or absent.
	Kept string
	// Err is why a removal failed (the file could not be deleted); the blob stays.
	Err error
}

// Basis is what the watermarks and a percentage target measure.
type Basis struct {
	// Name is "capacity" or "filesystem"; "" when neither could be measured.
	Name string
	// Total is the capacity, or the file system's size.
	Total int64
	// Used is the committed and reserved bytes against the capacity, or the file system's
	// used bytes (size - available).
	Used int64
	// Err says why the file system could not be measured.
	Err error
}

// Percent is Used as a percentage of Total (0 without a Total).
func (b Basis) Percent() float64 {
	if b.Total <= 0 {
		return 0
	}
	return 100 * float64(b.Used) / float64(b.Total)
}

// CleanupReport says what a Cleanup removed (or, dry, would remove) and what it kept.
type CleanupReport struct {
	DryRun bool
	Now    time.Time
	// Removed are the blobs removed, in the order decided (for each criterion, least recently
	// used first).
	Removed []CleanupBlob
	// Kept are the blobs a criterion chose that stayed because they are in use (or absent);
	// removals that failed are here too, with Err.
	Kept []CleanupBlob
	// Basis is the watermarks' measure before the run.
	Basis Basis
	// Target is the usage the run cleaned down to (the low watermark or the manual target),
	// -1 when none applied.
	Target int64
}

// Freed returns the bytes of the removed blobs, and per reason.
func (r CleanupReport) Freed() (total int64, byReason map[string]int64) {
	byReason = map[string]int64{}
	for _, b := range r.Removed {
		total += b.Size
		byReason[b.Reason] += b.Size
	}
	return total, byReason
}

// Cleanup applies opts.Policy, or the manual eviction opts.Manual, and reports what went and
// what stayed. It removes nothing that is open, held or claimed by opts.Keep. A dry run decides
// the same way under the same lock, so it reports what a real run at that moment removes. A
// blob whose file cannot be deleted is reported in Kept with its error; the others are
// removed anyway, and the error is returned too.
func (s *Store) Cleanup(opts CleanupOptions) (CleanupReport, error) {
	if opts.Manual != nil {
		if err := opts.Manual.validate(); err != nil {
			return CleanupReport{}, fmt.Errorf("cleanup: %w", err)
		}
	} else if err := opts.Policy.Validate(); err != nil {
		return CleanupReport{}, fmt.Errorf("cleanup: %w", err)
	}
	needBasis := opts.Manual == nil && opts.Policy.HighWatermark > 0 ||
		opts.Manual != nil && opts.Manual.DownTo != nil && opts.Manual.DownTo.Percent != nil
	// The file system is measured before the lock is taken: a syscall that may block on a
	// sick disk must not stall every read of the store.
	var fsTotal, fsAvail int64
	var fsErr error
	if needBasis && s.capacity == 0 {
		fsTotal, fsAvail, fsErr = s.disk(s.dir)
	}

	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed {
		return CleanupReport{}, fmt.Errorf("cleanup: %w", ErrClosed)
	}
	now := opts.Now
	if now.IsZero() {
		now = s.now()
	}
	rep := CleanupReport{DryRun: opts.DryRun, Now: now, Target: -1}
	switch {
	case s.capacity > 0:
		rep.Basis = Basis{Name: "capacity", Total: s.capacity, Used: s.used + s.reserved}
	case !needBasis:
	case fsErr != nil:
		rep.Basis = Basis{Err: fmt.Errorf("measure the file system of %s: %w", s.dir, fsErr)}
	default:
		rep.Basis = Basis{Name: "filesystem", Total: fsTotal, Used: fsTotal - fsAvail}
	}

	c := &chooser{s: s, keep: opts.Keep, chosen: map[digest.Digest]bool{}, rep: &rep}
	if m := opts.Manual; m != nil {
		for _, d := range m.Digests {
			e, ok := s.entries[d]
			if !ok {
				if !c.chosen[d] {
					c.chosen[d] = true
					rep.Kept = append(rep.Kept, CleanupBlob{Info: Info{Digest: d}, Reason: ReasonManual, Kept: KeptAbsent})
				}
				continue
			}
			c.pick(e, ReasonManual)
		}
		c.each(func(e *entry) string {
			if m.IdleOver > 0 && now.Sub(e.atime) >= m.IdleOver || m.OlderThan > 0 && now.Sub(e.created) >= m.OlderThan {
				return ReasonManual
			}
			return ""
		})
		switch t := m.DownTo; {
		case t == nil:
		case t.Bytes != nil:
			c.downTo(s.used, *t.Bytes, ReasonManual)
		case rep.Basis.Name != "":
			c.downTo(rep.Basis.Used, int64(*t.Percent/100*float64(rep.Basis.Total)), ReasonManual)
		}
	} else {
		p := opts.Policy
		if p.TTI > 0 || p.TTL > 0 {
			c.each(func(e *entry) string {
				switch {
				case p.TTI > 0 && now.Sub(e.atime) >= p.TTI:
					return ReasonTTI
				case p.TTL > 0 && now.Sub(e.created) >= p.TTL:
					return ReasonTTL
				}
				return ""
			})
		}
		if p.HighWatermark > 0 && rep.Basis.Name != "" {
			b := rep.Basis
			// What the idle and age rules free counts first: the watermark only tops it up.
			if b.Used-c.freed > int64(float64(p.HighWatermark)/100*float64(b.Total)) {
				c.downTo(b.Used, int64(float64(p.LowWatermark)/100*float64(b.Total)), ReasonWatermark)
			}
		}
	}

	var errs []error
	if !opts.DryRun {
		removed := rep.Removed[:0]
		for _, b := range rep.Removed {
			e := s.entries[b.Digest]
			if err := s.removeLocked(e); err != nil {
				b.Err = fmt.Errorf("remove %s: %w", b.Digest, err)
				errs = append(errs, b.Err)
				rep.Kept = append(rep.Kept, b)
				continue
			}
			s.metrics.cleaned(b.Reason, b.Size)
			removed = append(removed, b)
		}
		rep.Removed = removed
		if len(removed) > 0 {
			freed, by := rep.Freed()
			attrs := []any{"dir", s.dir, "blobs", len(removed), "bytes", freed, "kept_in_use", len(rep.Kept),
				"used_bytes", s.used, "capacity_bytes", s.capacity}
			for _, r := range Reasons {
				if by[r] > 0 {
					attrs = append(attrs, r+"_bytes", by[r])
				}
			}
			if opts.Manual != nil {
				attrs = append(attrs, "manual", true)
			}
			s.log.Info("castore: cleanup removed blobs", attrs...)
		}
	}
	if err := errors.Join(errs...); err != nil {
		return rep, fmt.Errorf("cleanup: %w", err)
	}
	return rep, nil
}

// chooser collects what one Cleanup removes, under s.mu.
type chooser struct {
	s      *Store
	keep   func(digest.Digest) bool
	chosen map[digest.Digest]bool // decided either way
	freed  int64
	rep    *CleanupReport
}

// inUse says why e must stay, or "".
func (c *chooser) inUse(e *entry) string {
	switch {
	case c.s.onlyCopies:
		return KeptOnlyCopy
	case e.opens > 0:
		return KeptOpen
	case c.s.holds[e.digest] > 0:
		return KeptHeld
	case c.keep != nil && c.keep(e.digest):
		return KeptActive
	}
	return ""
}

// pick decides e for reason, once: removed, or kept when in use.
func (c *chooser) pick(e *entry, reason string) {
	if c.chosen[e.digest] {
		return
	}
	c.chosen[e.digest] = true
	b := CleanupBlob{Info: e.info(), Reason: reason}
	if b.Kept = c.inUse(e); b.Kept != "" {
		c.rep.Kept = append(c.rep.Kept, b)
		return
	}
	c.rep.Removed = append(c.rep.Removed, b)
	c.freed += e.size
}

// each picks, least recently used first, every blob for which reason returns a reason.
func (c *chooser) each(reason func(*entry) string) {
	for el := c.s.lru.Back(); el != nil; el = el.Prev() {
		e := el.Value.(*entry)
		if r := reason(e); r != "" {
			c.pick(e, r)
		}
	}
}

// downTo picks least recently used blobs until used, less what is already picked, is at or
// below target bytes.
func (c *chooser) downTo(used, target int64, reason string) {
	c.rep.Target = target
	for el := c.s.lru.Back(); el != nil && used-c.freed > target; el = el.Prev() {
		c.pick(el.Value.(*entry), reason)
	}
}

// BlobState is a committed blob and whether something keeps it from removal.
type BlobState struct {
	Info
	// Open and Held: read at the moment, or held (awaiting write-back).
	Open, Held bool
}

// LeastRecentlyUsed returns up to n committed blobs, least recently used first.
func (s *Store) LeastRecentlyUsed(n int) []BlobState {
	s.mu.Lock()
	defer s.mu.Unlock()
	out := make([]BlobState, 0, min(max(n, 0), len(s.entries)))
	for el := s.lru.Back(); el != nil && len(out) < n; el = el.Prev() {
		e := el.Value.(*entry)
		out = append(out, BlobState{Info: e.info(), Open: e.opens > 0, Held: s.holds[e.digest] > 0})
	}
	return out
}

// DiskUsage returns the size of the file system holding the store and its used bytes, as df's
// Use% counts them (size = used + available to unprivileged users), which is what the
// watermarks measure when the store has no capacity.
func (s *Store) DiskUsage() (total, used int64, err error) {
	t, a, err := s.disk(s.dir)
	if err != nil {
		return 0, 0, fmt.Errorf("measure the file system of %s: %w", s.dir, err)
	}
	return t, t - a, nil
}
