package buildindex

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"sync"
	"time"

	"github.com/krakenctl/krakenctl/server/registry/errcode"
	"github.com/krakenctl/krakenctl/tagstore"
)

// readIndexPath is the leader's endpoint that hands followers a read index.
const readIndexPath = "/internal/read-index"

// followerCatchUp bounds how long a follower waits to apply up to a read index before it gives
// up on serving the read itself and forwards it to the leader instead.
const followerCatchUp = time.Second

// readIndexResponse is the body of GET /internal/read-index.
type readIndexResponse struct {
	Index uint64 `json:"index"`
}

// handleReadIndex answers a follower's read-index request: the index this leader has applied
// after confirming it still leads. Every write acknowledged before the request is at or below
// it.
func (s *Server) handleReadIndex(w http.ResponseWriter, r *http.Request) error {
	idx, err := s.store.ReadIndex(r.Context())
	if err != nil {
		return err
	}
	return writeJSON(w, http.StatusOK, readIndexResponse{Index: idx})
}

// read runs op (a read) with consistency c: directly when c is Stale, else through
// linearizableRead.
func (s *Server) read(w http.ResponseWriter, r *http.Request, c tagstore.Consistency, op func(tagstore.Consistency) error) error {
	if c == tagstore.Stale {
		return op(c)
	}
	return s.linearizableRead(w, r, op)
}

// linearizableRead runs op (a read) linearizably. On the leader op reads directly. On a follower
// it asks the leader for a read index (concurrent readers share one request), waits until its
// own state reaches it, and runs op with Stale consistency: reads spread over every node
// instead of all landing on the leader. When that is not possible (the leader is unreachable or
// this node lags) it falls back to onLeader, which forwards the request.
func (s *Server) linearizableRead(w http.ResponseWriter, r *http.Request, op func(tagstore.Consistency) error) error {
	err := op(tagstore.Linearizable)
	var nle *tagstore.NotLeaderError
	if !errors.As(err, &nle) || nle.LeaderAPIAddr == "" || nle.LeaderAPIAddr == s.cfg.Advertise || r.Header.Get(HeaderForwardedBy) != "" {
		if err == nil || !errors.As(err, &nle) {
			return err
		}
		return s.onLeader(w, r, nil, func() error { return op(tagstore.Linearizable) })
	}
	if ferr := s.followerRead(r.Context(), nle.LeaderAPIAddr); ferr != nil {
		s.log.Debug("follower read not possible; forwarding", "leader", nle.LeaderAPIAddr, "err", ferr)
		return s.onLeader(w, r, nil, func() error { return op(tagstore.Linearizable) })
	}
	s.metrics.followerReads.Inc()
	return op(tagstore.Stale)
}

// followerRead makes this follower's state at least as new as the leader's at the time of the
// call.
func (s *Server) followerRead(ctx context.Context, leader string) error {
	idx, err := s.readIndexes.get(ctx, func(ctx context.Context) (uint64, error) { return s.fetchReadIndex(ctx, leader) })
	if err != nil {
		return err
	}
	wctx, cancel := context.WithTimeout(ctx, followerCatchUp)
	defer cancel()
	return s.store.WaitApplied(wctx, idx)
}

func (s *Server) fetchReadIndex(ctx context.Context, leader string) (uint64, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, "http://"+leader+readIndexPath, nil)
	if err != nil {
		return 0, err
	}
	req.Header.Set(HeaderForwardedBy, s.cfg.Raft.NodeID)
	resp, err := s.hc.Do(req)
	if err != nil {
		return 0, fmt.Errorf("read index from %s: %w", leader, err)
	}
	defer func() { _ = resp.Body.Close() }()
	body, err := io.ReadAll(io.LimitReader(resp.Body, 4096))
	if err != nil {
		return 0, fmt.Errorf("read index from %s: %w", leader, err)
	}
	if resp.StatusCode != http.StatusOK {
		return 0, fmt.Errorf("read index from %s: %w", leader, errcode.DecodeError(resp.StatusCode, body))
	}
	var ri readIndexResponse
	if err := json.Unmarshal(body, &ri); err != nil {
		return 0, fmt.Errorf("read index from %s: %w", leader, err)
	}
	return ri.Index, nil
}

// readIndexBatcher shares read-index requests between concurrent readers. A reader may only use
// an index from a request that started after it arrived (an older one could miss a write
// acknowledged just before the read began), so a reader that arrives while a request is in
// flight waits for the next one, which then serves everyone who queued meanwhile.
type readIndexBatcher struct {
	mu      sync.Mutex
	running bool
	next    *readIndexRound // the round the next arrivals join; nil until someone waits
}

type readIndexRound struct {
	fetch func(context.Context) (uint64, error) // the first joiner's: it names the current leader
	done  chan struct{}
	index uint64
	err   error
}

func (b *readIndexBatcher) get(ctx context.Context, fetch func(context.Context) (uint64, error)) (uint64, error) {
	b.mu.Lock()
	if b.next == nil {
		b.next = &readIndexRound{fetch: fetch, done: make(chan struct{})}
	}
	round := b.next
	if !b.running {
		b.running = true
		go b.run()
	}
	b.mu.Unlock()
	select {
	case <-round.done:
		return round.index, round.err
	case <-ctx.Done():
		return 0, ctx.Err()
	}
}

// run serves rounds one after another until nobody waits.
func (b *readIndexBatcher) run() {
	for {
		b.mu.Lock()
		round := b.next
		b.next = nil
		if round == nil {
			b.running = false
			b.mu.Unlock()
			return
		}
		b.mu.Unlock()
		// Detached from any one reader: the round serves all of them.
		ctx, cancel := context.WithTimeout(context.Background(), leaderWait)
		round.index, round.err = round.fetch(ctx)
		cancel()
		close(round.done)
	}
}
