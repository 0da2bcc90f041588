package tagstore

import (
	"context"
	"fmt"
	"net"
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
// It returns ErrExists, changing nothing, when the ID or the Raft address already belongs to
// a member with different details. Joining again with identical details is a no-op that
// succeeds (it fills in the API address if it was never recorded), so a node may retry its
// join until it sees success. With the TCP transport, the node's Raft address must accept
// connections (ErrUnavailable otherwise), so a mistyped address cannot cost the quorum.
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
			if srv.Suffrage != suffrage && m.Suffrage != "" {
				return fmt.Errorf("join %s: %w: the member is a %s", m.ID, ErrExists, suffrageName(srv.Suffrage))
			}
			if m.APIAddr != "" && recorded && apiAddr != "" && apiAddr != m.APIAddr {
				return fmt.Errorf("join %s: %w: the member's API address is %s, not %s", m.ID, ErrExists, apiAddr, m.APIAddr)
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
	if err := s.probe(ctx, m.RaftAddr); err != nil {
		return fmt.Errorf("join %s: %w", m.ID, err)
	}
	var f raft.IndexFuture
	if suffrage == raft.Nonvoter {
		f = s.raft.AddNonvoter(raft.ServerID(m.ID), raft.ServerAddress(m.RaftAddr), cf.Index(), s.cfg.ApplyTimeout)
	} else {
		f = s.raft.AddVoter(raft.ServerID(m.ID), raft.ServerAddress(m.RaftAddr), cf.Index(), s.cfg.ApplyTimeout)
	}
	if err := s.wait(ctx, f); err != nil {
		return fmt.Errorf("join %s: add to configuration: %w", m.ID, err)
	}
	s.log.Info("added member", "member", m.ID, "raft_addr", m.RaftAddr, "api_addr", m.APIAddr, "suffrage", suffrageName(suffrage))
	if m.APIAddr != "" {
		return s.recordAPIAddr(ctx, m)
	}
	return nil
}

// probe checks that a joining node's Raft address accepts connections before it becomes a
// voter. A voter that cannot be reached still counts toward the quorum, so adding one by
// mistake (a typo, a node not started yet) to a one-node cluster would stop every write until
// an operator recovers the cluster by hand. Only the TCP transport is probed.
func (s *Store) probe(ctx context.Context, addr string) error {
	if s.stream == nil {
		return nil
	}
	ctx, cancel := context.WithTimeout(ctx, probeTimeout)
	defer cancel()
	var d net.Dialer
	c, err := d.DialContext(ctx, "tcp", addr)
	if err != nil {
		return fmt.Errorf("%w: raft address %s does not accept connections (is the node running?): %w", ErrUnavailable, addr, err)
	}
	return c.Close()
}

func (s *Store) recordAPIAddr(ctx context.Context, m Member) error {
	if _, err := s.apply(ctx, cmdMemberMeta, "member", memberMetaCmd{ID: m.ID, APIAddr: m.APIAddr}); err != nil {
		return fmt.Errorf("join %s: record API address: %w", m.ID, err)
	}
	return nil
}

// Remove takes a node out of the cluster. Only the leader accepts it; an unknown ID returns
// ErrNotFound. Removing the leader itself works: it steps down once the change commits. The
// removed node keeps running, out of the cluster, until it is stopped.
func (s *Store) Remove(ctx context.Context, id string) error {
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
	if !slices.ContainsFunc(cf.Configuration().Servers, func(srv raft.Server) bool { return string(srv.ID) == id }) {
		return fmt.Errorf("remove %s: member %w", id, ErrNotFound)
	}
	if err := s.wait(ctx, s.raft.RemoveServer(raft.ServerID(id), cf.Index(), s.cfg.ApplyTimeout)); err != nil {
		return fmt.Errorf("remove %s: %w", id, err)
	}
	s.log.Info("removed member", "member", id)
	// Forget the API address too. The membership change is done either way; a leader that
	// removed itself is no longer leader and cannot write this, and a stale address of a
	// non-member is never shown.
	if _, err := s.apply(ctx, cmdMemberMeta, "member", memberMetaCmd{ID: id, Remove: true}); err != nil {
		s.log.Debug("forget removed member's API address", "member", id, "err", err)
	}
	return nil
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
