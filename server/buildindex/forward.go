package buildindex

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"time"

	"github.com/krakenctl/krakenctl/server/client"
	"github.com/krakenctl/krakenctl/server/registry"
	"github.com/krakenctl/krakenctl/server/registry/errcode"
	"github.com/krakenctl/krakenctl/tagstore"
)

// HeaderForwardedBy marks a request one node forwarded to the leader, with the forwarding
// node's ID. A node that receives such a request and is not the leader either answers 503
// rather than forwarding it again, so requests cannot loop between nodes with stale views.
const HeaderForwardedBy = "Krakenctl-Forwarded-By"

// leaderWait bounds how long a request waits for an election to finish before it gives up
// with 503.
const leaderWait = 5 * time.Second

// leaderPoll is how often a request waiting for a leader tries again.
const leaderPoll = 20 * time.Millisecond

// errForwarded says the leader answered the request and the answer was relayed; the handler
// writes nothing more.
var errForwarded = errors.New("forwarded to the leader")

// onLeader runs op, which needs the leader. When the store says another node leads, the
// request (with body, the bytes already read from it) is forwarded there and onLeader returns
// errForwarded. While no leader (or no leader's API address) is known it retries for up to
// leaderWait, then gives up with 503.
//
// op must change nothing when it fails with ErrNotLeader (the store's contract), so running it
// again, or on the leader, is safe.
func (s *Server) onLeader(w http.ResponseWriter, r *http.Request, body []byte, op func() error) error {
	var deadline time.Time
	for {
		err := op()
		var nle *tagstore.NotLeaderError
		if err == nil || !errors.As(err, &nle) {
			return err
		}
		if by := r.Header.Get(HeaderForwardedBy); by != "" {
			return &errcode.Error{Status: http.StatusServiceUnavailable, Code: errcode.CodeUnavailable,
				Message: fmt.Sprintf("node %s, to which %s forwarded the request, is not the leader (leader %q); retry", s.cfg.Raft.NodeID, by, nle.LeaderID),
				Err:     err}
		}
		if nle.LeaderAPIAddr != "" && nle.LeaderAPIAddr != s.cfg.Advertise {
			s.forward(w, r, body, nle.LeaderAPIAddr)
			return errForwarded
		}
		// An election is under way, or the new leader has not recorded its API address yet.
		if deadline.IsZero() {
			deadline = time.Now().Add(s.leaderWait)
		}
		if time.Now().After(deadline) {
			return &errcode.Error{Status: http.StatusServiceUnavailable, Code: errcode.CodeUnavailable,
				Message: fmt.Sprintf("no leader reachable within %s (the cluster is electing one, or this node is cut off); retry", s.leaderWait),
				Err:     err}
		}
		ctx, cancel := context.WithDeadline(r.Context(), deadline)
		_ = s.store.WaitForLeader(ctx)
		cancel()
		select {
		case <-r.Context().Done():
			return r.Context().Err()
		case <-time.After(leaderPoll):
		}
	}
}

// requireLeader fails with *tagstore.NotLeaderError unless this node believes it leads. The
// handlers call it before work that only makes sense on the leader (a content check, reading
// the backend for a restore), so followers forward first.
func (s *Server) requireLeader() error {
	if s.store.IsLeader() {
		return nil
	}
	l, ok := s.store.Leader()
	if !ok || l.ID == s.cfg.Raft.NodeID {
		return &tagstore.NotLeaderError{}
	}
	return &tagstore.NotLeaderError{LeaderID: l.ID, LeaderAPIAddr: l.APIAddr, LeaderRaftAddr: l.RaftAddr}
}

// forward relays the request to the leader at addr and copies its answer back.
func (s *Server) forward(w http.ResponseWriter, r *http.Request, body []byte, addr string) {
	s.metrics.forwarded.Inc()
	var rd io.Reader = http.NoBody
	if body != nil {
		rd = bytes.NewReader(body)
	}
	req, err := http.NewRequestWithContext(r.Context(), r.Method, "http://"+addr+r.URL.RequestURI(), rd)
	if err != nil {
		registry.WriteError(w, r, fmt.Errorf("forward to leader %s: %w", addr, err))
		return
	}
	for _, h := range []string{"Content-Type", "Accept"} {
		if v := r.Header.Get(h); v != "" {
			req.Header.Set(h, v)
		}
	}
	req.Header.Set(HeaderForwardedBy, s.cfg.Raft.NodeID)
	resp, err := s.hc.Do(req)
	if err != nil {
		if r.Context().Err() != nil {
			return // The client went away.
		}
		s.log.Warn("forward to leader", "leader", addr, "path", r.URL.Path, "err", err)
		if r.Method != http.MethodGet && r.Method != http.MethodHead && !client.NotSent(err) {
			// The leader may have received the write, and applied it, before the connection
			// failed: its outcome is unknown, not a failure.
			registry.WriteError(w, r, &errcode.Error{Status: http.StatusGatewayTimeout, Code: errcode.CodeOutcomeUnknown,
				Message: fmt.Sprintf("the connection to the leader %s failed after the write was sent; it may or may not have been applied: read the value to find out", addr),
				Err:     err})
			return
		}
		w.Header().Set("Retry-After", "1")
		registry.WriteError(w, r, &errcode.Error{Status: http.StatusServiceUnavailable, Code: errcode.CodeUnavailable,
			Message: fmt.Sprintf("the leader %s is unreachable; retry", addr), Err: err})
		return
	}
	defer func() { _ = resp.Body.Close() }()
	for k, vs := range resp.Header {
		switch http.CanonicalHeaderKey(k) {
		case "Connection", "Keep-Alive", "Transfer-Encoding", "Trailer", "Upgrade":
			continue
		}
		w.Header()[k] = vs
	}
	w.WriteHeader(resp.StatusCode)
	_, _ = io.Copy(w, resp.Body)
}
