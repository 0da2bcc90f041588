package tagstore_test

import (
	"context"
	"errors"
	"fmt"
	"math"
	"math/rand/v2"
	"os"
	"path/filepath"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/anishathalye/porcupine"
	"github.com/stretchr/testify/require"

	"github.com/krakenctl/krakenctl/tagstore"
	"github.com/krakenctl/krakenctl/tagstore/tagstoretest"
)

// A history of puts and linearizable gets of a few tags is checked against a register per
// tag. Writes whose outcome is unknown (leadership lost, node killed, time out) are recorded
// as pending forever: the checker may place them anywhere after their call, or nowhere.

const (
	opGet = iota
	opPut
	opDelete
)

type kvInput struct {
	op         int
	key, value string
}

type kvOutput struct {
	value   string
	unknown bool
}

var registerModel = porcupine.Model{
	Partition: func(history []porcupine.Operation) [][]porcupine.Operation {
		byKey := map[string][]porcupine.Operation{}
		var keys []string
		for _, op := range history {
			k := op.Input.(kvInput).key
			if _, ok := byKey[k]; !ok {
				keys = append(keys, k)
			}
			byKey[k] = append(byKey[k], op)
		}
		parts := make([][]porcupine.Operation, 0, len(keys))
		for _, k := range keys {
			parts = append(parts, byKey[k])
		}
		return parts
	},
	Init: func() any { return "" },
	Step: func(state, input, output any) (bool, any) {
		in, out := input.(kvInput), output.(kvOutput)
		switch in.op {
		case opPut:
			return true, in.value
		case opDelete:
			// A delete returns the value it removed ("" when there was none).
			return out.unknown || out.value == state.(string), ""
		default:
			return out.value == state.(string), state
		}
	},
	DescribeOperation: func(input, output any) string {
		in, out := input.(kvInput), output.(kvOutput)
		switch {
		case in.op == opPut && out.unknown:
			return fmt.Sprintf("put(%s, %s) -> ?", in.key, in.value)
		case in.op == opPut:
			return fmt.Sprintf("put(%s, %s)", in.key, in.value)
		case in.op == opDelete && out.unknown:
			return fmt.Sprintf("delete(%s) -> ?", in.key)
		case in.op == opDelete:
			return fmt.Sprintf("delete(%s) -> %q", in.key, out.value)
		default:
			return fmt.Sprintf("get(%s) -> %q", in.key, out.value)
		}
	},
}

// history records operations from concurrent clients.
type history struct {
	start time.Time
	mu    sync.Mutex
	ops   []porcupine.Operation
	// counts of completed operations by kind, for checking the test did something.
	puts, gets, deletes, unknown atomic.Int64
}

func (h *history) now() int64 { return time.Since(h.start).Nanoseconds() }

func (h *history) add(op porcupine.Operation) {
	h.mu.Lock()
	h.ops = append(h.ops, op)
	h.mu.Unlock()
}

// client issues random puts and gets until stop closes, following leader hints.
type client struct {
	c       *tagstoretest.Cluster
	h       *history
	id      int
	nextID  *atomic.Int64
	keys    []string
	rnd     *rand.Rand
	target  *tagstoretest.Node
	seq     int
	succeed atomic.Int64 // successful operations since the last reset
}

func (cl *client) pick(hint string) {
	nodes := cl.c.Nodes()
	for _, n := range nodes {
		if hint != "" && n.ID == hint && n.Store() != nil {
			cl.target = n
			return
		}
	}
	cl.target = nodes[cl.rnd.IntN(len(nodes))]
}

func (cl *client) run(stop <-chan struct{}) {
	cl.pick("")
	for {
		select {
		case <-stop:
			return
		default:
		}
		s := cl.target.Store()
		if s == nil {
			cl.pick("")
			continue
		}
		key := cl.keys[cl.rnd.IntN(len(cl.keys))]
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
		switch r := cl.rnd.IntN(100); {
		case r < 45:
			cl.seq++
			value := fmt.Sprintf("c%d-%d", cl.id, cl.seq)
			in := kvInput{op: opPut, key: key, value: string(dg(value))}
			call := cl.h.now()
			_, err := s.Put(ctx, "lin", key, dg(value))
			cl.write(in, kvOutput{}, call, err, &cl.h.puts)
		case r < 55:
			in := kvInput{op: opDelete, key: key}
			call := cl.h.now()
			old, err := s.Delete(ctx, "lin", key)
			if errors.Is(err, tagstore.ErrNotFound) {
				err = nil // the delete was applied and found nothing
			}
			cl.write(in, kvOutput{value: string(old.Digest)}, call, err, &cl.h.deletes)
		default:
			call := cl.h.now()
			t, err := s.Get(ctx, "lin", key, tagstore.Linearizable)
			ret := cl.h.now()
			out := kvOutput{value: string(t.Digest)}
			switch {
			case err == nil || errors.Is(err, tagstore.ErrNotFound):
				cl.h.add(porcupine.Operation{ClientId: cl.id, Input: kvInput{op: opGet, key: key}, Output: out, Call: call, Return: ret})
				cl.h.gets.Add(1)
				cl.succeed.Add(1)
			default:
				cl.notApplied(err) // a failed read has no effect; just find the leader
			}
		}
		cancel()
	}
}

// write records a put or delete that returned err.
func (cl *client) write(in kvInput, out kvOutput, call int64, err error, count *atomic.Int64) {
	ret := cl.h.now()
	switch {
	case err == nil:
		cl.h.add(porcupine.Operation{ClientId: cl.id, Input: in, Output: out, Call: call, Return: ret})
		count.Add(1)
		cl.succeed.Add(1)
	case cl.notApplied(err):
	default:
		// Unknown outcome: it may take effect at any time after the call, or never.
		cl.h.add(porcupine.Operation{ClientId: cl.id, Input: in, Output: kvOutput{unknown: true}, Call: call, Return: math.MaxInt64})
		cl.h.unknown.Add(1)
		cl.id = int(cl.nextID.Add(1)) // a client waits for each operation; this one never returned
		cl.pick("")
	}
}

// notApplied reports whether err guarantees the write was not applied, and moves the client
// toward the leader.
func (cl *client) notApplied(err error) bool {
	var nl *tagstore.NotLeaderError
	switch {
	case errors.As(err, &nl):
		cl.pick(nl.LeaderID)
		if nl.LeaderID == "" {
			time.Sleep(5 * time.Millisecond) // election under way
		}
		return true
	case errors.Is(err, tagstore.ErrIndeterminate):
		return false
	case errors.Is(err, tagstore.ErrClosed), errors.Is(err, tagstore.ErrUnavailable):
		cl.pick("")
		return true
	default:
		return false
	}
}

func TestLinearizableUnderLeaderKillAndPartition(t *testing.T) {
	t.Parallel()
	checkLinearizable(t, tagstoretest.Inmem, func(c *tagstoretest.Cluster, progress func(string)) {
		old := c.Leader()
		c.Kill(old)
		c.Leader()
		progress("after the leader was killed")
		c.Restart(old)
		progress("after the old leader came back")

		isolated := c.Leader()
		c.Isolate(isolated)
		c.Leader()
		progress("with the leader isolated")
		c.Heal()
		progress("after the partition healed")
	})
}

func TestLinearizableUnderLeaderKillsOverTCP(t *testing.T) {
	t.Parallel()
	checkLinearizable(t, tagstoretest.TCP, func(c *tagstoretest.Cluster, progress func(string)) {
		for round := range 2 {
			old := c.Leader()
			c.Kill(old)
			c.Leader()
			progress(fmt.Sprintf("after leader kill %d", round+1))
			c.Restart(old)
			progress(fmt.Sprintf("after restart %d", round+1))
		}
	})
}

// The same over the transport as deployed with TLS: mutual TLS with each node's certificate
// naming its server id.
func TestLinearizableUnderLeaderKillsOverMutualTLS(t *testing.T) {
	t.Parallel()
	checkLinearizable(t, tagstoretest.MutualTLS, func(c *tagstoretest.Cluster, progress func(string)) {
		for round := range 2 {
			old := c.Leader()
			c.Kill(old)
			c.Leader()
			progress(fmt.Sprintf("after leader kill %d", round+1))
			c.Restart(old)
			progress(fmt.Sprintf("after restart %d", round+1))
		}
	})
}

// checkLinearizable runs clients against a three-node cluster while faults runs, then checks
// the recorded history. progress waits until every client has completed operations since the
// call, so each phase overlaps real traffic.
func checkLinearizable(t *testing.T, network tagstoretest.Network, faults func(*tagstoretest.Cluster, func(string))) {
	c := tagstoretest.Start(t, tagstoretest.Options{Network: network})
	h := &history{start: time.Now()}
	stop := make(chan struct{})
	var nextID atomic.Int64
	const clients = 6
	nextID.Store(clients - 1)
	cls := make([]*client, clients)
	var wg sync.WaitGroup
	for i := range clients {
		cls[i] = &client{c: c, h: h, id: i, nextID: &nextID, keys: []string{"k0", "k1", "k2"},
			rnd: rand.New(rand.NewPCG(uint64(i), 42))}
		wg.Go(func() { cls[i].run(stop) })
	}
	stopClients := sync.OnceFunc(func() {
		close(stop)
		wg.Wait()
	})
	defer stopClients()

	progress := func(what string) {
		t.Helper()
		for _, cl := range cls {
			cl.succeed.Store(0)
		}
		require.Eventually(t, func() bool {
			for _, cl := range cls {
				if cl.succeed.Load() < 50 {
					return false
				}
			}
			return true
		}, 30*time.Second, 5*time.Millisecond, "clients made no progress %s", what)
	}
	progress("at the start")
	faults(c, progress)
	stopClients()

	t.Logf("history: %d puts, %d deletes, %d gets, %d writes of unknown outcome",
		h.puts.Load(), h.deletes.Load(), h.gets.Load(), h.unknown.Load())
	require.Positive(t, h.puts.Load())
	require.Positive(t, h.deletes.Load())
	require.Positive(t, h.gets.Load())
	res, info := porcupine.CheckOperationsVerbose(registerModel, h.ops, 60*time.Second)
	if res != porcupine.Ok {
		path := filepath.Join(os.TempDir(), fmt.Sprintf("tagstore-linearizability-%d.html", time.Now().UnixNano()))
		if err := porcupine.VisualizePath(registerModel, info, path); err == nil {
			t.Logf("visualization of the history: %s", path)
		}
	}
	require.Equal(t, porcupine.Ok, res, "the history is not linearizable")
}
