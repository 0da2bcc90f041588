package wire_test

import (
	"testing"

	"github.com/krakenctl/krakenctl/swarm/wire"
)

func TestBoundPeerID(t *testing.T) {
	a := wire.BoundPeerID("agent-1")
	if !a.BoundTo("agent-1") {
		t.Fatalf("%s is not bound to the holder it was made for", a)
	}
	for _, other := range []string{"agent-2", "agent-1 ", "", "Agent-1"} {
		if a.BoundTo(other) {
			t.Errorf("%s made for agent-1 is bound to %q", a, other)
		}
	}
	b := wire.BoundPeerID("agent-1")
	if a == b {
		t.Fatal("two processes with one certificate drew the same peer id")
	}
	if !b.BoundTo("agent-1") {
		t.Fatal("second id of the same holder is not bound to it")
	}
	// A random id, as a host without TLS draws, is bound to nobody.
	if r := wire.RandomPeerID(); r.BoundTo("agent-1") {
		t.Fatalf("random id %s is bound to agent-1", r)
	}
	// Flipping any byte breaks the binding.
	for i := range wire.PeerIDLength {
		c := a
		c[i] ^= 1
		if c.BoundTo("agent-1") {
			t.Errorf("id with byte %d flipped is still bound", i)
		}
	}
}
