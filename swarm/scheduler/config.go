package scheduler

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"time"

	"github.com/opencontainers/go-digest"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/krakenctl/krakenctl/swarm/announce"
	"github.com/krakenctl/krakenctl/swarm/castore"
	"github.com/krakenctl/krakenctl/swarm/metainfo"
	"github.com/krakenctl/krakenctl/swarm/wire"
)

// Defaults of Config.
const (
	DefaultMaxConns         = 20
	DefaultSeedOnlyMaxConns = 1024
	DefaultPipelineBytes    = 4 << 20
	DefaultRequestTimeout   = 15 * time.Second
	DefaultHandshakeTimeout = 10 * time.Second
	DefaultSeedTime         = 10 * time.Minute
	DefaultBlacklistTime    = time.Minute
	DefaultSaveInterval     = time.Second
	// DefaultMaxHandshakes bounds the connections accepted whose handshake has not arrived:
	// an honest handshake takes a round trip, so a full table is mostly idle sockets.
	DefaultMaxHandshakes = 256
	// DefaultIdleGrace is how long a connection may go without use before a newcomer may take
	// its slot.
	DefaultIdleGrace = 10 * time.Second
	// DefaultNoRequestTimeout is how long a connection may stay open with no request in
	// either direction.
	DefaultNoRequestTimeout = 30 * time.Second
	// DefaultWindowFraction: the picker's window is this fraction of the pieces (at least
	// minWindow), so the prefix a client sees trails the download by at most that much.
	DefaultWindowFraction = 8
	minWindow             = 16
)

// MetainfoKind is the castore sidecar kind under which a committed blob's encoded metainfo is
// kept, so that the blob can be seeded after the torrent that downloaded it is gone. Origins
// store theirs under the same kind.
const MetainfoKind = "metainfo"

// Config tunes a Scheduler. The zero value of every field means its default.
type Config struct {
	// PeerID identifies this host in handshakes and announces; zero means a random one.
	PeerID wire.PeerID
	// Advertise is the host:port peers dial to reach this scheduler's listener; empty means
	// the listener's address.
	Advertise string
	// API is the "ip:port" of this host's HTTP API (where its /swarm/torrents is served),
	// sent in every announce (announce.Request.API) so that the tracker's swarm list leads an
	// operator's tools to each member; empty sends none.
	API string
	// SeedOnly makes a scheduler that never downloads: it serves the blobs in its store to
	// any peer that asks (origins). It needs no Tracker.
	SeedOnly bool
	// NoSuperSeed makes a seed-only scheduler announce every piece at once instead of
	// revealing them one by one (see superseed.go); for comparison only.
	NoSuperSeed bool
	// MaxConns bounds the connections per torrent (DefaultMaxConns, DefaultSeedOnlyMaxConns
	// when SeedOnly).
	MaxConns int
	// MaxConnsPerAddr bounds the connections per torrent that peers at one IP address opened
	// to this host; 0 means MaxConns/4, at least min(MaxConns, 16). Connections this host
	// dialled are not counted: their addresses came from the tracker, not from the peer.
	// Loopback gets no exception, so the bound must leave room for a dev cluster, which runs
	// every host on 127.0.0.1: an origin's default (256 of 1024) covers the most agents
	// `bench swarm` starts, an agent's (16 of 20) all its slots but those it dials.
	MaxConnsPerAddr int
	// MaxConnsPerHost bounds the connections peers at one IP address opened to this host over
	// all torrents, handshakes still in progress included; 0 means 4 × MaxConns, at least
	// 1024 (one agent host downloading many blobs at once holds one per blob).
	MaxConnsPerHost int
	// MaxHandshakes bounds the connections accepted whose handshake is still awaited
	// (DefaultMaxHandshakes); at the bound a newcomer displaces the one waiting longest
	// from the address with the most waiting (slots.go).
	MaxHandshakes int
	// IdleGrace is how long a connection may go unused (no request or piece either way, no
	// new piece announced, nothing requested of it outstanding) before a newcomer needing the
	// slot may evict it (DefaultIdleGrace).
	IdleGrace time.Duration
	// NoRequestTimeout closes a connection over which neither side has requested anything
	// for this long since it opened (DefaultNoRequestTimeout); negative disables it.
	// Connections this host dialled to an origin are exempt.
	NoRequestTimeout time.Duration
	// PipelineBytes is how many bytes of requests each connection keeps outstanding; at
	// least two pieces are always outstanding.
	PipelineBytes int64
	// Window is the picker's window in pieces (piece.Config.Window); 0 means an eighth of
	// the pieces, at least 16; negative disables it.
	Window int
	// RequestTimeout is how long a request may stay unanswered before it is asked elsewhere.
	RequestTimeout time.Duration
	// HandshakeTimeout bounds dialing and the handshake.
	HandshakeTimeout time.Duration
	// SeedTime is how long a finished torrent keeps seeding after its last upload.
	SeedTime time.Duration
	// BlacklistTime is how long a misbehaving peer is refused.
	BlacklistTime time.Duration
	// SaveInterval is how often download progress is made durable for resume.
	SaveInterval time.Duration
	// EgressRate and IngressRate are the host's limits in bytes per second; 0 is unlimited.
	EgressRate, IngressRate int64
}

// Tracker is what the scheduler asks of the tracker; *announce.Client implements it.
type Tracker interface {
	Announce(ctx context.Context, req announce.Request) (announce.Response, error)
	Metainfo(ctx context.Context, ns string, d digest.Digest) (metainfo.MetaInfo, error)
}

// Deps are the scheduler's collaborators.
type Deps struct {
	// Store holds finished blobs and partial downloads; required. The scheduler does not
	// close it.
	Store *castore.Store
	// Listener accepts peer connections; required. Run closes it.
	Listener net.Listener
	// Tracker is required unless Config.SeedOnly.
	Tracker Tracker
	// Metainfo returns the metainfo of a blob in the store that a peer asked for; nil means
	// the store's MetainfoKind sidecar. Origins pass their own, which generates it on demand.
	Metainfo func(ctx context.Context, d digest.Digest) (metainfo.MetaInfo, error)
	// SeedStripe tells a super-seeding scheduler (SeedOnly) which of the origins serving blob d
	// it is: index in [0, count). Each origin then reveals its own stripe of the pieces first,
	// so that origins serving one swarm do not send the same pieces (superseed.go). nil, or a
	// count below 2, means this origin reveals every piece in order on its own. It is called
	// once each time a torrent starts seeding d, with none of the scheduler's locks held.
	SeedStripe func(d digest.Digest) (index, count int)
	// Dial opens connections to peers; nil means a net.Dialer. With TLS it returns the
	// connection with its TLS handshake done.
	Dial func(ctx context.Context, addr string) (net.Conn, error)
	// Authenticate, when set, decides whether the peer on nc may join a torrent, once its
	// swarm handshake (which names id) has been read, on connections in both directions, and
	// returns who holds the peer's credential (a certificate's name); an error refuses the
	// peer (metric reason "identity") and, for a peer this host dialled, blacklists its
	// address. A peer that dialled in and is blacklisted for misbehaving is blacklisted by its
	// IP address and holder too, so that it does not come back under a fresh peer id. With TLS the roles pass one that checks the certificate nc
	// presented: from the cluster CA, in a swarm group, and id bound to its holder
	// (wire.PeerID.BoundTo). nil admits every peer: plain P2P, for trusted networks only.
	//
	// A connection that has a TLS handshake of its own (HandshakeContext, as *tls.Conn has)
	// runs it before anything is read, bounded by Config.HandshakeTimeout, so that a peer
	// without a certificate is refused as such (reason "tls").
	Authenticate func(ctx context.Context, nc net.Conn, id wire.PeerID) (holder string, err error)
	// Logger receives connection and piece events at debug level and failures at warn; nil
	// discards them.
	Logger *slog.Logger
	// Registerer receives the scheduler's metrics; nil registers none.
	Registerer prometheus.Registerer
	// Now is the clock; nil means time.Now.
	Now func() time.Time
}

// Errors.
var (
	// ErrClosed is returned after the scheduler stopped.
	ErrClosed = errors.New("scheduler: closed")
	// ErrProtocol marks a peer that broke the protocol.
	ErrProtocol = errors.New("scheduler: protocol violation")
	// ErrBadPiece marks a piece that failed its hash.
	ErrBadPiece = errors.New("scheduler: piece failed verification")
	// ErrStalled marks a peer that kept requests waiting too long.
	ErrStalled = errors.New("scheduler: peer stalled")
	// ErrIdentity marks a peer that Deps.Authenticate refused.
	ErrIdentity = errors.New("scheduler: peer not admitted")
)

func (c *Config) withDefaults() error {
	if c.MaxConns == 0 {
		c.MaxConns = DefaultMaxConns
		if c.SeedOnly {
			c.MaxConns = DefaultSeedOnlyMaxConns
		}
	}
	if c.MaxConnsPerAddr == 0 {
		c.MaxConnsPerAddr = max(c.MaxConns/4, min(c.MaxConns, 16))
	}
	if c.MaxConnsPerHost == 0 {
		c.MaxConnsPerHost = max(4*c.MaxConns, 1024)
	}
	if c.MaxHandshakes == 0 {
		c.MaxHandshakes = DefaultMaxHandshakes
	}
	def := func(d *time.Duration, v time.Duration) {
		if *d == 0 {
			*d = v
		}
	}
	def(&c.IdleGrace, DefaultIdleGrace)
	def(&c.NoRequestTimeout, DefaultNoRequestTimeout)
	def(&c.RequestTimeout, DefaultRequestTimeout)
	def(&c.HandshakeTimeout, DefaultHandshakeTimeout)
	def(&c.SeedTime, DefaultSeedTime)
	def(&c.BlacklistTime, DefaultBlacklistTime)
	def(&c.SaveInterval, DefaultSaveInterval)
	if c.PipelineBytes == 0 {
		c.PipelineBytes = DefaultPipelineBytes
	}
	switch {
	case c.MaxConns < 0:
		return fmt.Errorf("max conns %d is negative", c.MaxConns)
	case c.MaxConnsPerAddr < 0 || c.MaxConnsPerHost < 0 || c.MaxHandshakes < 0:
		return fmt.Errorf("negative connection cap (per address %d, per host %d, handshakes %d)",
			c.MaxConnsPerAddr, c.MaxConnsPerHost, c.MaxHandshakes)
	case c.IdleGrace < 0:
		return errors.New("negative idle grace")
	case c.PipelineBytes < 0:
		return fmt.Errorf("pipeline bytes %d is negative", c.PipelineBytes)
	case c.EgressRate < 0 || c.IngressRate < 0:
		return fmt.Errorf("negative rate (egress %d, ingress %d)", c.EgressRate, c.IngressRate)
	case c.RequestTimeout < 0 || c.HandshakeTimeout < 0 || c.SeedTime < 0 || c.BlacklistTime < 0 || c.SaveInterval < 0:
		return errors.New("negative duration")
	}
	if c.PeerID == (wire.PeerID{}) {
		c.PeerID = wire.RandomPeerID()
	}
	return nil
}

func (c *Config) window(pieces int) int {
	switch {
	case c.Window < 0:
		return 0
	case c.Window > 0:
		return c.Window
	}
	return max(minWindow, pieces/DefaultWindowFraction)
}
