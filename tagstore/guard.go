package tagstore

import (
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"time"

	"github.com/hashicorp/raft"
)

// errRefusedEntries is what a peer hears when its AppendEntries or InstallSnapshot carries
// something this node would not be able to apply.
var errRefusedEntries = errors.New("tagstore: refused entries this node cannot apply")

// guardTransport wraps the Raft transport between the network and Raft.
//
// Inbound, it checks every RPC before Raft sees it: an AppendEntries whose entries are not all
// commands this node knows (or valid configurations, no-ops and barriers), or an
// InstallSnapshot whose configuration does not decode, is answered with an error and never
// reaches Raft, so nothing of it is appended to the log. Raft itself panics on a configuration
// it cannot decode, and an entry the FSM cannot apply would otherwise sit in the log for good.
// Heartbeats take NetworkTransport's fast path past the consumer channel; they carry no
// entries.
//
// Outbound, it notes when each peer last answered an AppendEntries (heartbeats included,
// which the leader sends every tenth of the heartbeat timeout) and the last log index the peer
// reported, which membership changes use to tell a live, caught-up peer from a dead one.
type guardTransport struct {
	raft.Transport
	log     *slog.Logger
	refused func(reason string)

	out       chan raft.RPC
	done      chan struct{}
	closeOnce sync.Once
	wg        sync.WaitGroup

	mu       sync.Mutex
	contacts map[raft.ServerID]peerContact
	// changed is closed (and replaced) whenever a contact is noted, to wake waiters.
	changed chan struct{}
}

// peerContact is the last answer a peer gave to an AppendEntries.
type peerContact struct {
	at      time.Time
	lastLog uint64
}

func newGuardTransport(inner raft.Transport, log *slog.Logger, refused func(reason string)) *guardTransport {
	g := &guardTransport{
		Transport: inner,
		log:       log,
		refused:   refused,
		out:       make(chan raft.RPC),
		done:      make(chan struct{}),
		contacts:  map[raft.ServerID]peerContact{},
		changed:   make(chan struct{}),
	}
	g.wg.Add(1)
	go g.run(inner.Consumer())
	return g
}

// run passes the RPCs that pass the checks on to Raft, and answers the others.
func (g *guardTransport) run(in <-chan raft.RPC) {
	defer g.wg.Done()
	for {
		var rpc raft.RPC
		select {
		case <-g.done:
			return
		case rpc = <-in:
		}
		if err := checkRPC(rpc); err != nil {
			g.refused(refusedEntry)
			g.log.Warn("refused a raft RPC", "from", rpcFrom(rpc), "err", err)
			rpc.Respond(nil, fmt.Errorf("%w: %w", errRefusedEntries, err))
			continue
		}
		select {
		case g.out <- rpc:
		case <-g.done:
			rpc.Respond(nil, raft.ErrTransportShutdown)
			return
		}
	}
}

// rpcFrom names the sender of an RPC as its header claims.
func rpcFrom(rpc raft.RPC) string {
	if h, ok := rpc.Command.(raft.WithRPCHeader); ok {
		return fmt.Sprintf("%s (%s)", h.GetRPCHeader().ID, h.GetRPCHeader().Addr)
	}
	return "unknown"
}

// checkRPC refuses an RPC whose content this node could not apply.
func checkRPC(rpc raft.RPC) error {
	switch req := rpc.Command.(type) {
	case *raft.AppendEntriesRequest:
		return checkEntries(req.Entries)
	case *raft.InstallSnapshotRequest:
		if req.SnapshotVersion < 1 {
			return fmt.Errorf("snapshot version %d is not supported", req.SnapshotVersion)
		}
		if _, err := decodeConfiguration(req.Configuration); err != nil {
			return fmt.Errorf("snapshot configuration: %w", err)
		}
	}
	return nil
}

// checkEntries accepts log entries this node can apply: commands it knows (or that are marked
// ignorable), configurations that decode to a valid configuration, no-ops and barriers.
func checkEntries(entries []*raft.Log) error {
	for _, e := range entries {
		switch e.Type {
		case raft.LogCommand:
			if _, _, err := decodeCommand(e.Data); err != nil {
				return fmt.Errorf("entry %d: %w", e.Index, err)
			}
		case raft.LogConfiguration:
			if _, err := decodeConfiguration(e.Data); err != nil {
				return fmt.Errorf("entry %d: %w", e.Index, err)
			}
		case raft.LogNoop, raft.LogBarrier:
		default:
			return fmt.Errorf("entry %d: log entry type %s is not supported", e.Index, e.Type)
		}
	}
	return nil
}

// decodeConfiguration decodes a Raft configuration and checks it as Raft checks the ones it
// makes: raft.DecodeConfiguration panics on bytes it cannot decode, and Raft trusts a
// configuration from its leader.
func decodeConfiguration(data []byte) (cf raft.Configuration, err error) {
	defer func() {
		if r := recover(); r != nil {
			err = fmt.Errorf("configuration does not decode: %v", r)
		}
	}()
	cf = raft.DecodeConfiguration(data)
	ids, addrs := map[raft.ServerID]bool{}, map[raft.ServerAddress]bool{}
	voters := 0
	for _, srv := range cf.Servers {
		switch {
		case srv.ID == "" || srv.Address == "":
			return cf, errors.New("configuration has a server without ID or address")
		case ids[srv.ID]:
			return cf, fmt.Errorf("configuration has server %s twice", srv.ID)
		case addrs[srv.Address]:
			return cf, fmt.Errorf("configuration has address %s twice", srv.Address)
		case srv.Suffrage != raft.Voter && srv.Suffrage != raft.Nonvoter:
			return cf, fmt.Errorf("configuration gives server %s suffrage %d", srv.ID, srv.Suffrage)
		}
		ids[srv.ID], addrs[srv.Address] = true, true
		if srv.Suffrage == raft.Voter {
			voters++
		}
	}
	if voters == 0 {
		return cf, errors.New("configuration has no voter")
	}
	return cf, nil
}

// Consumer is the channel of RPCs that passed the checks.
func (g *guardTransport) Consumer() <-chan raft.RPC { return g.out }

// AppendEntries sends an AppendEntries (or a heartbeat) and notes the peer's answer.
func (g *guardTransport) AppendEntries(id raft.ServerID, target raft.ServerAddress, args *raft.AppendEntriesRequest, resp *raft.AppendEntriesResponse) error {
	err := g.Transport.AppendEntries(id, target, args, resp)
	if err == nil {
		g.noteContact(id, resp.LastLog)
	}
	return err
}

// RequestPreVote forwards to the wrapped transport: Raft uses pre-votes only when its
// transport offers them, and both NetworkTransport and InmemTransport do.
func (g *guardTransport) RequestPreVote(id raft.ServerID, target raft.ServerAddress, args *raft.RequestPreVoteRequest, resp *raft.RequestPreVoteResponse) error {
	pv, ok := g.Transport.(raft.WithPreVote)
	if !ok {
		return errors.New("tagstore: the raft transport does not support pre-votes")
	}
	return pv.RequestPreVote(id, target, args, resp)
}

func (g *guardTransport) noteContact(id raft.ServerID, lastLog uint64) {
	g.mu.Lock()
	g.contacts[id] = peerContact{at: time.Now(), lastLog: lastLog}
	close(g.changed)
	g.changed = make(chan struct{})
	g.mu.Unlock()
}

// contact returns the peer's last answer, and a channel closed at the next answer of any peer.
func (g *guardTransport) contact(id raft.ServerID) (peerContact, bool, <-chan struct{}) {
	g.mu.Lock()
	defer g.mu.Unlock()
	c, ok := g.contacts[id]
	return c, ok, g.changed
}

// Close stops passing RPCs to Raft and closes the wrapped transport when it can be closed.
// Raft calls it when it shuts down; it is idempotent.
func (g *guardTransport) Close() error {
	var err error
	g.closeOnce.Do(func() {
		close(g.done)
		g.wg.Wait()
		if c, ok := g.Transport.(raft.WithClose); ok {
			err = c.Close()
		}
	})
	return err
}

// Interface guards
var (
	_ raft.Transport   = (*guardTransport)(nil)
	_ raft.WithPreVote = (*guardTransport)(nil)
	_ raft.WithClose   = (*guardTransport)(nil)
)
