// Package bandwidth limits the bytes per second a host sends to and receives from its peers:
// one token bucket for egress and one for ingress, shared by every connection of the host, as
// the operator sets them in the role's config.
//
// Callers take tokens in chunks of at most Chunk bytes before they move the bytes (egress) or
// right after they read them (ingress), so a connection never holds more than one chunk's
// worth of tokens ahead and many connections share the link fairly. A zero rate means no limit.
package bandwidth

import (
	"context"
	"fmt"
	"io"

	"golang.org/x/time/rate"
)

// Chunk is the largest number of bytes taken from a bucket at once. It is also the bucket's
// burst (or the burst is a tenth of a second of the rate, whichever is larger), so that a
// limited link never sends more than a short burst above its rate.
const Chunk = 64 << 10

// Limiter is a host's egress and ingress buckets. The zero value and a nil *Limiter limit
// nothing. It is safe for concurrent use.
type Limiter struct {
	egress, ingress *rate.Limiter
}

// New returns a limiter of egress and ingress bytes per second; 0 leaves that direction
// unlimited, a negative rate is an error.
func New(egress, ingress int64) (*Limiter, error) {
	if egress < 0 || ingress < 0 {
		return nil, fmt.Errorf("new bandwidth limiter: negative rate (egress %d, ingress %d)", egress, ingress)
	}
	return &Limiter{egress: bucket(egress), ingress: bucket(ingress)}, nil
}

func bucket(bps int64) *rate.Limiter {
	if bps == 0 {
		return nil
	}
	return rate.NewLimiter(rate.Limit(bps), max(Chunk, int(bps/10)))
}

// WaitEgress blocks until n bytes may be sent, taking the tokens in chunks; it returns ctx's
// error when ctx ends first (the tokens already taken are spent).
func (l *Limiter) WaitEgress(ctx context.Context, n int) error {
	if l == nil {
		return nil
	}
	return wait(ctx, l.egress, n)
}

// WaitIngress blocks until n received bytes are paid for, like WaitEgress.
func (l *Limiter) WaitIngress(ctx context.Context, n int) error {
	if l == nil {
		return nil
	}
	return wait(ctx, l.ingress, n)
}

func wait(ctx context.Context, b *rate.Limiter, n int) error {
	if b == nil {
		return nil
	}
	for n > 0 {
		c := min(n, b.Burst())
		if err := b.WaitN(ctx, c); err != nil {
			return fmt.Errorf("wait for bandwidth: %w", err)
		}
		n -= c
	}
	return nil
}

// Limited reports whether the egress (first) and ingress (second) directions have a limit.
func (l *Limiter) Limited() (egress, ingress bool) {
	if l == nil {
		return false, false
	}
	return l.egress != nil, l.ingress != nil
}

// Reader returns r with each Read capped at Chunk bytes and paid for in ingress tokens after
// it returns, so that a peer cannot push bytes into the host faster than its ingress rate (TCP
// flow control holds back the sender). ctx bounds the waits; once it ends, Read returns its
// error.
func (l *Limiter) Reader(ctx context.Context, r io.Reader) io.Reader {
	if l == nil || l.ingress == nil {
		return r
	}
	return &reader{ctx: ctx, r: r, l: l}
}

type reader struct {
	// ctx is the connection's lifetime: a reader lives exactly as long as the connection that
	// made it, which is the one case where keeping a context in a struct is what it is for.
	ctx context.Context
	r   io.Reader
	l   *Limiter
}

func (r *reader) Read(p []byte) (int, error) {
	if len(p) > Chunk {
		p = p[:Chunk]
	}
	n, err := r.r.Read(p)
	if n > 0 {
		if werr := r.l.WaitIngress(r.ctx, n); werr != nil && err == nil {
			err = werr
		}
	}
	return n, err
}

// Interface guards
var _ io.Reader = (*reader)(nil)
