package tagstore

import (
	"context"
	"fmt"
	"slices"
	"strings"
	"time"

	"github.com/hashicorp/raft"
)

// probeTimeout bounds the connection check of a joining node's Raft address.
const probeTimeout = 3 * time.Second

// Join adds a node to the cluster as a voter (or a non-voter, with Suffrage
// SuffrageNonvoter) and records its API address. Only the leader accepts it.
//
// A voter is added in two steps, so that a node that never answers cannot cost the quorum: it
// joins as a non-voter, and is promoted once it has answered the leader and holds the log up
// to its own addition. A node that does not get there within Config.JoinTimeout (of silence:
// the wait goes on while it makes progress) is removed again, and Join returns an error
// wrapping ErrUnavailable. When ctx ends first, the node stays a non-voter (which costs the
// quorum nothing) and the error wraps ErrIndeterminate; joining again resumes.
//
// It returns ErrExists, changing nothing, when the ID or the Raft address already belongs to
// a member with different details. Joining again with identical details is a no-op that
// succeeds (it fills in the API address if it was never recorded, and promotes a non-voter
// asked to be a voter), so a node may retry its join until it sees success. With the network
// transport, the node's Raft address must accept connections first (and, with TLS, present a
// certificate naming the node's ID): ErrUnavailable otherwise.
func (s *Store) Join(ctx context.Context, m Member) error {
	if err := ValidateNodeID(m.ID); err != nil {
		return fmt.Errorf("join: %w", err)
	}
	if err := checkHostPort(m.RaftAddr); err != nil {
		return fmt.Errorf("join %s: %w raft address: %w", m.ID, ErrInvalid, err)
	}
	if m.APIAddr != "" {
		if err := checkHostPort(m.APIAddr); err != nil {
			return fmt.Errorf("join %s: %w API address: %w", m.ID, ErrInvalid, err)
		}
	}
	suffrage := raft.Voter
	switch m.Suffrage {
	case "", SuffrageVoter:
	case SuffrageNonvoter:
		suffrage = raft.Nonvoter
	default:
		return fmt.Errorf("join %s: %w suffrage %q: want %q or %q", m.ID, ErrInvalid, m.Suffrage, SuffrageVoter, SuffrageNonvoter)
	}
	if s.closed.Load() {
		return fmt.Errorf("join %s: %w", m.ID, ErrClosed)
	}
	if s.raft.State() != raft.Leader {
		return fmt.Errorf("join %s: %w", m.ID, s.notLeader())
	}
	cf := s.raft.GetConfiguration()
	if err := s.wait(ctx, cf); err != nil {
		return fmt.Errorf("join %s: read configuration: %w", m.ID, err)
	}
	s.mu.RLock()
	apiAddr, recorded := s.st.members[m.ID]
	s.mu.RUnlock()
	for _, srv := range cf.Configuration().Servers {
		sameID, sameAddr := string(srv.ID) == m.ID, string(srv.Address) == m.RaftAddr
		switch {
		case sameID && sameAddr:
			if srv.Suffrage == raft.Voter && suffrage == raft.Nonvoter {
				return fmt.Errorf("join %s: %w: the member is a voter", m.ID, ErrExists)
			}
			if m.APIAddr != "" && recorded && apiAddr != "" && apiAddr != m.APIAddr {
				return fmt.Errorf("join %s: %w: the member's API address is %s, not %s", m.ID, ErrExists, apiAddr, m.APIAddr)
			}
			if srv.Suffrage != suffrage {
				// A non-voter asked to be a voter: an earlier join that ended before the
				// promotion, or a member added as a non-voter on purpose.
				if err := s.promote(ctx, m, s.raft.LastIndex(), false); err != nil {
					return err
				}
			}
			if m.APIAddr != "" && apiAddr != m.APIAddr {
				return s.recordAPIAddr(ctx, m)
			}
			return nil
		case sameID:
			return fmt.Errorf("join %s: %w: node %s is already a member at raft address %s", m.ID, ErrExists, m.ID, srv.Address)
		case sameAddr:
			return fmt.Errorf("join %s: %w: raft address %s already belongs to member %s", m.ID, ErrExists, m.RaftAddr, srv.ID)
		}
	}
	if err := s.probe(ctx, m.ID, m.RaftAddr); err != nil {
		return fmt.Errorf("join %s: %w", m.ID, err)
	}
	f := s.raft.AddNonvoter(raft.ServerID(m.ID), raft.ServerAddress(m.RaftAddr), cf.Index(), s.cfg.ApplyTimeout)
	if err := s.wait(ctx, f); err != nil {
		return fmt.Errorf("join %s: add to configuration: %w", m.ID, err)
	}
	s.log.Info("added member", "member", m.ID, "raft_addr", m.RaftAddr, "api_addr", m.APIAddr, "suffrage", SuffrageNonvoter)
	if suffrage == raft.Voter {
		if err := s.promote(ctx, m, f.Index(), true); err != nil {
			return err
		}
	}
	if m.APIAddr != "" {
		return s.recordAPIAddr(ctx, m)
	}
	return nil
}

// promote makes the non-voter m a voter once it has answered the leader with a log that
// reaches index. When it does not within JoinTimeout of silence, it is removed again if
// rollback is set (this Join added it), and left a non-voter otherwise.
func (s *Store) promote(ctx context.Context, m Member, index uint64, rollback bool) error {
	id := raft.ServerID(m.ID)
	err := s.awaitCaughtUp(ctx, id, index)
	switch {
	case err == nil:
	case ctx.Err() != nil:
		s.log.Warn("join ended before the new member caught up; it stays a non-voter until joined again", "member", m.ID, "err", err)
		return fmt.Errorf("join %s: %w: the member was added as a non-voter and is not yet promoted; join again to finish: %w", m.ID, ErrIndeterminate, err)
	case !rollback:
		return fmt.Errorf("join %s: %w: the non-voter %w", m.ID, ErrUnavailable, err)
	default:
		rctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), s.cfg.ApplyTimeout)
		defer cancel()
		if rerr := s.removeServer(rctx, id); rerr != nil {
			s.log.Error("remove a member that never answered", "member", m.ID, "err", rerr)
			return fmt.Errorf("join %s: %w: the node %w, and removing it again failed (it stays a non-voter, which costs no quorum; remove it): %w",
				m.ID, ErrUnavailable, err, rerr)
		}
		s.log.Warn("removed a joining member that never caught up", "member", m.ID, "raft_addr", m.RaftAddr, "err", err)
		return fmt.Errorf("join %s: %w: the node %w; it was removed again (is it running, and a build-index node of this cluster?)", m.ID, ErrUnavailable, err)
	}
	// Promote against the latest configuration, in which it must still be this non-voter: a
	// concurrent change (another join) makes Raft refuse, and the promotion is tried again.
	for attempt := 1; ; attempt++ {
		cf := s.raft.GetConfiguration()
		if err := s.wait(ctx, cf); err != nil {
			return fmt.Errorf("join %s: read configuration: %w", m.ID, err)
		}
		i := slices.IndexFunc(cf.Configuration().Servers, func(srv raft.Server) bool { return srv.ID == id })
		if i < 0 || string(cf.Configuration().Servers[i].Address) != m.RaftAddr {
			return fmt.Errorf("join %s: %w: the member was removed or changed while it caught up", m.ID, ErrUnavailable)
		}
		f := s.raft.AddVoter(id, raft.ServerAddress(m.RaftAddr), cf.Index(), s.cfg.ApplyTimeout)
		err := s.wait(ctx, f)
		if err != nil && attempt < 5 && strings.Contains(err.Error(), "configuration changed since") {
			continue // hashicorp/raft has no sentinel for it
		}
		if err != nil {
			return fmt.Errorf("join %s: promote to voter: %w", m.ID, err)
		}
		s.log.Info("promoted member to voter", "member", m.ID)
		return nil
	}
}

// awaitCaughtUp waits until the leader's last AppendEntries to id (a heartbeat at the latest,
// every tenth of the heartbeat timeout) was answered with a log that reaches index. It gives
// up after JoinTimeout without progress, or when ctx ends or leadership is lost.
func (s *Store) awaitCaughtUp(ctx context.Context, id raft.ServerID, index uint64) error {
	since := time.Now()
	var best uint64
	stall := time.NewTimer(s.cfg.JoinTimeout)
	defer stall.Stop()
	for {
		c, ok, changed := s.guard.contact(id)
		if ok && c.at.After(since) {
			if c.lastLog >= index {
				return nil
			}
			if c.lastLog > best {
				best = c.lastLog
				stall.Reset(s.cfg.JoinTimeout)
			}
		}
		if s.raft.State() != raft.Leader {
			return fmt.Errorf("caught up? %w", s.notLeader())
		}
		select {
		case <-changed:
		case <-stall.C:
			if best == 0 {
				return fmt.Errorf("did not answer the leader within %s", s.cfg.JoinTimeout)
			}
			return fmt.Errorf("stopped catching up at log index %d of %d for %s", best, index, s.cfg.JoinTimeout)
		case <-ctx.Done():
			return ctx.Err()
		case <-s.closing:
			return ErrClosed
		}
	}
}

// probe checks that a joining node's Raft address accepts connections before it is added. A
// voter that cannot be reached still counts toward the quorum, so adding one by mistake (a
// typo, a node not started yet) to a one-node cluster would stop every write until an
// operator recovers the cluster by hand. With TLS the probe completes a handshake, so the
// node must also hold a build-index certificate naming id. Only the network transport is
// probed.
func (s *Store) probe(ctx context.Context, id, addr string) error {
	if s.stream == nil {
		return nil
	}
	timeout := probeTimeout
	if dl, ok := ctx.Deadline(); ok {
		timeout = min(timeout, time.Until(dl))
	}
	c, err := s.stream.dial(raft.ServerAddress(addr), raft.ServerID(id), timeout)
	if err != nil {
		return fmt.Errorf("%w: raft address %s does not accept connections from this cluster (is the node running, with its certificate?): %w", ErrUnavailable, addr, err)
	}
	return c.Close()
}

func (s *Store) recordAPIAddr(ctx context.Context, m Member) error {
	if _, err := s.apply(ctx, cmdMemberMeta, "member", memberMetaCmd{ID: m.ID, APIAddr: m.APIAddr}); err != nil {
		return fmt.Errorf("join %s: record API address: %w", m.ID, err)
	}
	return nil
}

// RemoveOptions adjust Remove.
type RemoveOptions struct {
	// Force removes the member even when the voters left would not have a quorum of live
	// members: what an operator does to take out two dead nodes of three one after the other,
	// knowing the cluster stays unavailable until `cluster recover` or the nodes return.
	Force bool
}

// Remove takes a node out of the cluster. Only the leader accepts it; an unknown ID returns
// ErrNotFound. Removing the leader itself works: it steps down once the change commits. The
// removed node keeps running, out of the cluster, until it is stopped.
//
// Unless opts.Force is set, the removal of a voter is refused with ErrQuorum, changing nothing,
// when the voters that remain would not have a quorum of live ones: live is this leader, and every
// other voter that answers the leader within a short wait (twice the heartbeat timeout).
// Otherwise, removing a live node while another is down leaves a configuration no majority
// can ever be gathered for.
func (s *Store) Remove(ctx context.Context, id string, opts RemoveOptions) error {
	if s.closed.Load() {
		return fmt.Errorf("remove %s: %w", id, ErrClosed)
	}
	if s.raft.State() != raft.Leader {
		return fmt.Errorf("remove %s: %w", id, s.notLeader())
	}
	cf := s.raft.GetConfiguration()
	if err := s.wait(ctx, cf); err != nil {
		return fmt.Errorf("remove %s: read configuration: %w", id, err)
	}
	servers := cf.Configuration().Servers
	i := slices.IndexFunc(servers, func(srv raft.Server) bool { return string(srv.ID) == id })
	if i < 0 {
		return fmt.Errorf("remove %s: member %w", id, ErrNotFound)
	}
	// A non-voter counts toward no quorum: removing one never costs one.
	if !opts.Force && servers[i].Suffrage == raft.Voter {
		var remaining []raft.ServerID
		for _, srv := range servers {
			if srv.Suffrage == raft.Voter && string(srv.ID) != id {
				remaining = append(remaining, srv.ID)
			}
		}
		if err := s.checkQuorum(ctx, remaining); err != nil {
			return fmt.Errorf("remove %s: %w", id, err)
		}
	}
	if err := s.removeServer(ctx, raft.ServerID(id)); err != nil {
		return fmt.Errorf("remove %s: %w", id, err)
	}
	s.log.Info("removed member", "member", id, "forced", opts.Force)
	return nil
}

// removeServer removes id from the configuration and forgets its API address.
func (s *Store) removeServer(ctx context.Context, id raft.ServerID) error {
	if err := s.wait(ctx, s.raft.RemoveServer(id, 0, s.cfg.ApplyTimeout)); err != nil {
		return err
	}
	// Forget the API address too. The membership change is done either way; a leader that
	// removed itself is no longer leader and cannot write this, and a stale address of a
	// non-member is never shown.
	if _, err := s.apply(ctx, cmdMemberMeta, "member", memberMetaCmd{ID: string(id), Remove: true}); err != nil {
		s.log.Debug("forget removed member's API address", "member", id, "err", err)
	}
	return nil
}

// checkQuorum returns nil once a quorum of voters is live: this leader, if it is one of them,
// and those that answered the leader since the call. It waits up to twice the heartbeat
// timeout for answers (heartbeats go out every tenth of it), then fails with ErrQuorum naming
// who did not answer.
func (s *Store) checkQuorum(ctx context.Context, voters []raft.ServerID) error {
	since := time.Now()
	need := len(voters)/2 + 1
	timeout := time.NewTimer(2 * s.cfg.HeartbeatTimeout)
	defer timeout.Stop()
	for {
		var live, silent []string
		var changed <-chan struct{}
		for _, id := range voters {
			c, ok, ch := s.guard.contact(id)
			changed = ch
			if string(id) == s.cfg.NodeID || ok && c.at.After(since) {
				live = append(live, string(id))
			} else {
				silent = append(silent, string(id))
			}
		}
		if len(live) >= need {
			return nil
		}
		select {
		case <-timeout.C:
			if len(voters) == 0 {
				return fmt.Errorf("%w: no voter would remain", ErrQuorum)
			}
			return fmt.Errorf("%w: the %d voters left (%s) need %d live for a quorum, but only %d answer (%s do not); "+
				"bring them back or remove them first, or force it", ErrQuorum, len(voters), strings.Join(idStrings(voters), ", "),
				need, len(live), strings.Join(silent, ", "))
		case <-changed:
		case <-ctx.Done():
			return ctx.Err()
		case <-s.closing:
			return ErrClosed
		}
	}
}

func idStrings(ids []raft.ServerID) []string {
	out := make([]string, len(ids))
	for i, id := range ids {
		out[i] = string(id)
	}
	return out
}

// members lists the latest configuration with recorded API addresses, sorted by ID.
func (s *Store) members() ([]Member, error) {
	cf := s.raft.GetConfiguration()
	if err := s.wait(context.Background(), cf); err != nil {
		return nil, err
	}
	_, leaderID := s.raft.LeaderWithID()
	s.mu.RLock()
	defer s.mu.RUnlock()
	servers := cf.Configuration().Servers
	members := make([]Member, 0, len(servers))
	for _, srv := range servers {
		members = append(members, Member{
			ID:       string(srv.ID),
			RaftAddr: string(srv.Address),
			APIAddr:  s.st.members[string(srv.ID)],
			Suffrage: suffrageName(srv.Suffrage),
			Leader:   srv.ID == leaderID,
		})
	}
	slices.SortFunc(members, func(a, b Member) int { return strings.Compare(a.ID, b.ID) })
	return members, nil
}

func suffrageName(s raft.ServerSuffrage) string {
	if s == raft.Voter {
		return SuffrageVoter
	}
	return SuffrageNonvoter
}
