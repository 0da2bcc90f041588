package bench

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"path/filepath"
	"time"

	"github.com/krakenctl/krakenctl/server/buildindex"
	"github.com/krakenctl/krakenctl/tagstore"
)

// startTimeout bounds how long a cluster may take to elect a leader and take in every node.
const startTimeout = time.Minute

// cluster is a build-index cluster running in this process on loopback.
type cluster struct {
	apiAddrs []string
	stores   []*tagstore.Store
	cancel   context.CancelFunc
	done     []chan error
}

// startCluster starts n build-index nodes under dir: the first bootstraps the Raft group, the
// others join it through its API, as operators start a real cluster. Content checks are off and
// there is no storage backend. It returns once every node is a voter and a leader is known; on
// error everything it started is stopped.
func startCluster(ctx context.Context, n int, dir string, log *slog.Logger) (_ *cluster, err error) {
	c := &cluster{}
	runCtx, cancel := context.WithCancel(context.WithoutCancel(ctx))
	c.cancel = cancel
	defer func() {
		if err != nil {
			err = errors.Join(err, c.close())
		}
	}()
	off := false
	for i := range n {
		apiLn, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			return nil, fmt.Errorf("start build-index %d: %w", i+1, err)
		}
		raftLn, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			apiLn.Close()
			return nil, fmt.Errorf("start build-index %d: %w", i+1, err)
		}
		cfg := buildindex.Config{
			Listen:        apiLn.Addr().String(),
			RaftListen:    raftLn.Addr().String(),
			Dir:           filepath.Join(dir, fmt.Sprintf("node-%d", i+1)),
			VerifyContent: &off,
			Raft:          tagstore.Config{NodeID: fmt.Sprintf("bi-%d", i+1), Bootstrap: i == 0},
		}
		if i > 0 {
			cfg.Join = []string{c.apiAddrs[0]}
		}
		cfg.Defaults()
		// The node's store is opened here rather than by the Server so that the benchmark can
		// also time a listing inside the store, without HTTP.
		st, err := tagstore.Open(cfg.Raft, tagstore.Deps{Listener: raftLn, Logger: log})
		if err != nil {
			apiLn.Close()
			return nil, fmt.Errorf("start build-index %d: %w", i+1, err)
		}
		c.stores = append(c.stores, st)
		srv, err := buildindex.New(cfg, buildindex.Deps{Listener: apiLn, Store: st, Logger: log})
		if err != nil {
			apiLn.Close()
			return nil, fmt.Errorf("start build-index %d: %w", i+1, err)
		}
		done := make(chan error, 1)
		go func() { done <- srv.Run(runCtx) }()
		c.done = append(c.done, done)
		c.apiAddrs = append(c.apiAddrs, cfg.Advertise)
	}

	wctx, wcancel := context.WithTimeout(ctx, startTimeout)
	defer wcancel()
	tick := time.NewTicker(20 * time.Millisecond)
	defer tick.Stop()
	for {
		if c.formed(n) {
			return c, nil
		}
		for i, d := range c.done {
			select {
			case err := <-d:
				d <- err // for close
				return nil, fmt.Errorf("build-index %d stopped while starting: %w", i+1, err)
			default:
			}
		}
		select {
		case <-wctx.Done():
			if ctx.Err() != nil {
				return nil, ctx.Err()
			}
			return nil, fmt.Errorf("start build-index cluster: no leader with all %d nodes voting after %s", n, startTimeout)
		case <-tick.C:
		}
	}
}

// formed reports whether every node knows the same leader and n voting members.
func (c *cluster) formed(n int) bool {
	leader := ""
	for _, st := range c.stores {
		s := st.Status()
		if s.LeaderID == "" || s.LeaderAPIAddr == "" || (leader != "" && s.LeaderID != leader) || len(s.Members) != n {
			return false
		}
		leader = s.LeaderID
		for _, m := range s.Members {
			if m.Suffrage != tagstore.SuffrageVoter {
				return false
			}
		}
	}
	return true
}

// leaderIndex returns the index of the node that leads now.
func (c *cluster) leaderIndex() (int, error) {
	for i, st := range c.stores {
		if st.IsLeader() {
			return i, nil
		}
	}
	return 0, errors.New("no build-index node leads")
}

// close stops every node and closes their stores.
func (c *cluster) close() error {
	c.cancel()
	var errs []error
	for i, d := range c.done {
		if err := <-d; err != nil {
			errs = append(errs, fmt.Errorf("stop build-index %d: %w", i+1, err))
		}
	}
	for i := len(c.stores) - 1; i >= 0; i-- {
		if err := c.stores[i].Close(); err != nil {
			errs = append(errs, fmt.Errorf("close build-index %d store: %w", i+1, err))
		}
	}
	return errors.Join(errs...)
}
