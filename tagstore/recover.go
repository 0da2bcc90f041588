package tagstore

import (
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"time"

	"github.com/hashicorp/raft"
	raftboltdb "github.com/hashicorp/raft-boltdb/v2"
	"go.etcd.io/bbolt"
	bolterrors "go.etcd.io/bbolt/errors"
)

// RecoverOptions say what configuration Recover gives a node: Members, or the configuration
// stored in the node's state without the members named in Drop. Exactly one of them is set.
type RecoverOptions struct {
	// Members is the new configuration: every surviving node, by ID and Raft address. They
	// become voters.
	Members []Member
	// Drop names the members to leave out of the stored configuration; the others keep their
	// address and suffrage.
	Drop []string
}

// RecoverResult is what Recover did.
type RecoverResult struct {
	// Before is the configuration stored in the node's state; Members the one it now has.
	Before  []Member
	Members []Member
	// Index is the last log index of the state the node keeps (the snapshot Recover wrote);
	// Tags and Links count what that state holds.
	Index uint64
	Tags  int
	Links int
}

// Recover rewrites the Raft state of a stopped node so that it starts with a new
// configuration: the peers.json procedure of hashicorp/raft (raft.RecoverCluster) as a call.
// It is how a cluster that lost its quorum (too many nodes gone for good) is brought back
// from the survivors: stop every survivor, Recover each with the same members (the
// survivors), start them, and they elect a leader among themselves with every entry any of
// them holds.
//
// The node's state (its snapshots, then every entry of its log, committed or not) is applied
// to a fresh tag state and saved as a new snapshot that carries the new configuration; the log
// is then emptied, so no old configuration entry can come back. cfg is the node's own
// configuration (NodeID, Dir; Advertise is checked against its entry in the members when set).
// The node must be stopped: its bolt file is locked while it runs.
//
// Recover refuses, changing nothing, a directory without Raft state, a configuration without
// this node or without a voter, and bad or duplicate IDs and addresses (ErrInvalid).
func Recover(cfg Config, opts RecoverOptions, logger *slog.Logger) (RecoverResult, error) {
	cfg.Defaults()
	if err := cfg.Validate(); err != nil {
		return RecoverResult{}, fmt.Errorf("recover: %w config: %w", ErrInvalid, err)
	}
	if logger == nil {
		logger = slog.New(slog.DiscardHandler)
	}
	if (len(opts.Members) == 0) == (len(opts.Drop) == 0) {
		return RecoverResult{}, fmt.Errorf("recover: %w: give either the members or the members to drop", ErrInvalid)
	}
	if _, err := os.Stat(filepath.Join(cfg.Dir, "raft.db")); err != nil {
		return RecoverResult{}, fmt.Errorf("recover: %w: no raft state in %s: %w", ErrInvalid, cfg.Dir, err)
	}
	hl := newHclogAdapter(logger, "raft")
	bolt, err := raftboltdb.New(raftboltdb.Options{Path: filepath.Join(cfg.Dir, "raft.db"), BoltOptions: &bbolt.Options{Timeout: time.Second}})
	if err != nil {
		if errors.Is(err, bolterrors.ErrTimeout) {
			return RecoverResult{}, fmt.Errorf("recover: %s is locked: stop the node first", filepath.Join(cfg.Dir, "raft.db"))
		}
		return RecoverResult{}, fmt.Errorf("recover: %w", err)
	}
	defer func() { _ = bolt.Close() }() // the result is decided; a close error says nothing more
	snaps, err := raft.NewFileSnapshotStoreWithLogger(cfg.Dir, cfg.SnapshotRetain, hl.Named("snapshot"))
	if err != nil {
		return RecoverResult{}, fmt.Errorf("recover: %w", err)
	}

	before, err := storedConfiguration(bolt, snaps)
	if err != nil {
		return RecoverResult{}, fmt.Errorf("recover: %w", err)
	}
	res := RecoverResult{Before: toMembers(before)}
	var next raft.Configuration
	if len(opts.Members) > 0 {
		for _, m := range opts.Members {
			next.Servers = append(next.Servers, raft.Server{Suffrage: raft.Voter, ID: raft.ServerID(m.ID), Address: raft.ServerAddress(m.RaftAddr)})
		}
	} else {
		for _, id := range opts.Drop {
			if !slices.ContainsFunc(before.Servers, func(s raft.Server) bool { return string(s.ID) == id }) {
				return res, fmt.Errorf("recover: %w: %s is not in the stored configuration (%s)", ErrInvalid, id, describeServers(before))
			}
		}
		for _, srv := range before.Servers {
			if !slices.Contains(opts.Drop, string(srv.ID)) {
				next.Servers = append(next.Servers, srv)
			}
		}
	}
	if err := checkRecovery(cfg, next); err != nil {
		return res, fmt.Errorf("recover: %w: %w", ErrInvalid, err)
	}

	rc := raft.DefaultConfig()
	rc.LocalID = raft.ServerID(cfg.NodeID)
	rc.Logger = hl
	rc.NoLegacyTelemetry = true
	m, err := newMetrics(nil)
	if err != nil {
		return res, fmt.Errorf("recover: %w", err)
	}
	s := &Store{cfg: cfg, log: logger, m: m, st: newState(), feed: newFeed(1, func() {})}
	_, trans := raft.NewInmemTransport(raft.ServerAddress(cfg.NodeID)) // snapshots of version 1 do not use it
	defer func() { _ = trans.Close() }()
	if err := raft.RecoverCluster(rc, fsm{s}, bolt, bolt, snaps, trans, next); err != nil {
		return res, fmt.Errorf("recover: %w", err)
	}
	res.Members = toMembers(next)
	res.Index = s.applied.Load()
	res.Tags, res.Links = s.st.counts()
	logger.Info("recovered raft state with a new configuration", "dir", cfg.Dir, "index", res.Index,
		"before", describeServers(before), "after", describeServers(next))
	return res, nil
}

// checkRecovery checks a configuration Recover would write for cfg's node.
func checkRecovery(cfg Config, next raft.Configuration) error {
	ids, addrs := map[raft.ServerID]bool{}, map[raft.ServerAddress]bool{}
	self := false
	voters := 0
	for _, srv := range next.Servers {
		if err := ValidateNodeID(string(srv.ID)); err != nil {
			return fmt.Errorf("member %q: %w", srv.ID, err)
		}
		if err := checkHostPort(string(srv.Address)); err != nil {
			return fmt.Errorf("member %s: raft address: %w", srv.ID, err)
		}
		if ids[srv.ID] || addrs[srv.Address] {
			return fmt.Errorf("member %s (%s) is given twice", srv.ID, srv.Address)
		}
		ids[srv.ID], addrs[srv.Address] = true, true
		if srv.Suffrage == raft.Voter {
			voters++
		}
		if string(srv.ID) == cfg.NodeID {
			self = true
			if cfg.Advertise != "" && string(srv.Address) != cfg.Advertise {
				return fmt.Errorf("member %s has raft address %s, but the node advertises %s", srv.ID, srv.Address, cfg.Advertise)
			}
		}
	}
	switch {
	case !self:
		return fmt.Errorf("the members (%s) do not include this node, %s", describeServers(next), cfg.NodeID)
	case voters == 0:
		return errors.New("the members include no voter")
	}
	return nil
}

// storedConfiguration is the latest configuration in a node's state: that of the last
// configuration entry of its log, else that of its newest snapshot.
func storedConfiguration(logs raft.LogStore, snaps raft.SnapshotStore) (raft.Configuration, error) {
	first, err := logs.FirstIndex()
	if err != nil {
		return raft.Configuration{}, fmt.Errorf("read log: %w", err)
	}
	last, err := logs.LastIndex()
	if err != nil {
		return raft.Configuration{}, fmt.Errorf("read log: %w", err)
	}
	for i := last; i >= first && i > 0; i-- {
		var l raft.Log
		if err := logs.GetLog(i, &l); err != nil {
			return raft.Configuration{}, fmt.Errorf("read log entry %d: %w", i, err)
		}
		if l.Type == raft.LogConfiguration {
			cf, err := decodeConfiguration(l.Data)
			if err != nil {
				return raft.Configuration{}, fmt.Errorf("log entry %d: %w", i, err)
			}
			return cf, nil
		}
	}
	metas, err := snaps.List()
	if err != nil {
		return raft.Configuration{}, fmt.Errorf("list snapshots: %w", err)
	}
	if len(metas) == 0 {
		return raft.Configuration{}, errors.New("the raft state holds no configuration")
	}
	return metas[0].Configuration, nil
}

func toMembers(cf raft.Configuration) []Member {
	members := make([]Member, 0, len(cf.Servers))
	for _, srv := range cf.Servers {
		members = append(members, Member{ID: string(srv.ID), RaftAddr: string(srv.Address), Suffrage: suffrageName(srv.Suffrage)})
	}
	slices.SortFunc(members, func(a, b Member) int { return strings.Compare(a.ID, b.ID) })
	return members
}

func describeServers(cf raft.Configuration) string {
	parts := make([]string, 0, len(cf.Servers))
	for _, srv := range cf.Servers {
		parts = append(parts, fmt.Sprintf("%s=%s", srv.ID, srv.Address))
	}
	return strings.Join(parts, ", ")
}
