package bench

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"os"
	"path/filepath"
	"slices"
	"sort"
	"sync"
	"sync/atomic"
	"time"

	"github.com/opencontainers/go-digest"
	"golang.org/x/sync/errgroup"

	"github.com/krakenctl/krakenctl/server/buildindex"
	"github.com/krakenctl/krakenctl/server/client"
	"github.com/krakenctl/krakenctl/server/cluster"
	"github.com/krakenctl/krakenctl/server/httpserve"
	"github.com/krakenctl/krakenctl/server/pki"
	"github.com/krakenctl/krakenctl/tagstore"
)

// Defaults of TagsConfig.
const (
	DefaultNodes   = 3
	DefaultClients = 32
	DefaultPuts    = 20000
	DefaultGets    = 100000
	DefaultList    = 100000
)

// Repositories the benchmark writes to.
const (
	putRepo  = "bench/puts"
	listRepo = "bench/list"
)

// ClientName is the common name of the certificate the benchmark's clients present with TLS,
// in group pki.GroupProxy: the proxy is what writes tags in production, so the clients are
// authorized as it is, by the same check.
const ClientName = "bench-client"

// listRuns is how many times the full listing is timed; the median is reported.
const listRuns = 5

// ErrInvalidConfig is wrapped by Tags when the configuration cannot be run.
var ErrInvalidConfig = errors.New("invalid benchmark config")

// TagsConfig says what Tags measures. Zero fields take the defaults above (a zero Gets or List
// means the default too; set them negative to skip a phase).
type TagsConfig struct {
	// Nodes is the size of the build-index cluster.
	Nodes int
	// Clients is how many requests are in flight at once, spread over the nodes round-robin
	// (followers forward writes and linearizable reads to the leader, as in production).
	Clients int
	// LeaderOnly sends every request to the leader instead, which leaves out the forwarding hop.
	LeaderOnly bool
	// Puts is how many distinct tags the put phase writes.
	Puts int
	// Gets is how many linearizable reads the get phase makes, of tags the put phase wrote.
	Gets int
	// List is how many tags one repository holds when its listing is timed.
	List int
	// TLS runs every link over mutual TLS, as a cluster of separate hosts would: each node
	// serves its HTTP API, its admin listener and Raft with a certificate of its own from a CA
	// made for the run, and verifies its callers' (see cluster.TLS); the benchmark's clients
	// present ClientName's. Without it everything is plain text.
	TLS bool
	// Dir holds the nodes' Raft state (and, with TLS, the certificates in Dir/tls); "" uses a
	// temporary directory removed afterwards.
	Dir string
}

func (c *TagsConfig) defaults() {
	set := func(p *int, v int) {
		if *p == 0 {
			*p = v
		}
	}
	set(&c.Nodes, DefaultNodes)
	set(&c.Clients, DefaultClients)
	set(&c.Puts, DefaultPuts)
	set(&c.Gets, DefaultGets)
	set(&c.List, DefaultList)
}

func (c *TagsConfig) validate() error {
	var errs []error
	if c.Nodes < 1 || c.Nodes > 9 {
		errs = append(errs, fmt.Errorf("nodes: want 1..9, got %d", c.Nodes))
	}
	if c.Clients < 1 {
		errs = append(errs, fmt.Errorf("clients: want at least 1, got %d", c.Clients))
	}
	if c.Puts < 1 {
		errs = append(errs, fmt.Errorf("puts: want at least 1, got %d", c.Puts))
	}
	if err := errors.Join(errs...); err != nil {
		return fmt.Errorf("%w: %w", ErrInvalidConfig, err)
	}
	return nil
}

// TagsDeps are what Tags needs besides its configuration.
type TagsDeps struct {
	// Logger receives the nodes' logs; nil discards them.
	Logger *slog.Logger
	// Progress, when set, is told how each phase advances: a few times a second while it
	// runs, and once with Done == Total when it ends. Calls come from one goroutine at a time.
	Progress func(Progress)
}

// Phases of the tag benchmark, in order, as Progress names them.
const (
	PhaseStart = "start"
	PhasePut   = "put"
	PhaseGet   = "get"
	PhaseFill  = "fill"
	PhaseList  = "list"
)

// Progress is a snapshot of one phase.
type Progress struct {
	Phase string
	Done  int
	Total int
}

// TagsResult is what Tags measured. Rates are operations per second of wall time with every
// client busy; latencies are per request as one client saw it.
type TagsResult struct {
	Nodes   int `json:"nodes"`
	Clients int `json:"clients"`
	// LeaderOnly says every request went to the leader (else they were spread over the nodes).
	LeaderOnly bool `json:"leader_only"`
	// TLS says every link ran over mutual TLS (TagsConfig.TLS); Endpoints are the API URLs the
	// clients called, https:// with TLS.
	TLS       bool     `json:"tls"`
	Endpoints []string `json:"endpoints"`

	// Puts distinct tags written, with the rate and latency percentiles.
	Puts     int     `json:"puts"`
	PutsPerS float64 `json:"puts_per_s"`
	PutP50Ms float64 `json:"put_p50_ms"`
	PutP99Ms float64 `json:"put_p99_ms"`
	// PutCPUUs is the CPU time the whole process (every node and every client: they share it)
	// spent per put during the put phase, in microseconds; 0 where the platform does not say.
	// Unlike the rate it hardly moves with the machine's load, so it shows what a change such
	// as TLS costs when the rates are too noisy to.
	PutCPUUs float64 `json:"put_cpu_us"`

	// Gets linearizable reads, with the rate and latency percentiles.
	Gets     int     `json:"gets"`
	GetsPerS float64 `json:"gets_per_s"`
	GetP50Ms float64 `json:"get_p50_ms"`
	GetP99Ms float64 `json:"get_p99_ms"`
	// GetCPUUs is PutCPUUs for the get phase.
	GetCPUUs float64 `json:"get_cpu_us"`

	// ListTags is how many tags the listed repository held; FillPerS is the put rate while
	// filling it (a second put measurement, on a bigger store).
	ListTags int     `json:"list_tags"`
	FillPerS float64 `json:"fill_puts_per_s,omitempty"`
	// ListPages is how many requests one full listing took (the server caps the page size).
	ListPages int `json:"list_pages"`
	// ListMs is the median time of one full paginated listing of ListTags tags through the
	// leader's HTTP API (linearizable, JSON decoded); ListRunsMs are all the runs.
	ListMs     float64   `json:"list_ms"`
	ListRunsMs []float64 `json:"list_runs_ms"`
	// List100kMs is ListMs when ListTags is 100,000 (the issue's target), else null.
	List100kMs *float64 `json:"list_100k_ms"`
	// ListStoreMs is the median time of the same listing inside the leader's tag store, as one
	// linearizable read of every tag (no HTTP, no JSON): what the listing costs the store.
	ListStoreMs float64 `json:"list_store_ms"`

	// ElapsedS is the run's wall time in seconds, from before the cluster started to the end of
	// the last measurement (stopping the cluster is not included).
	ElapsedS float64 `json:"elapsed_s"`
}

// Tags runs the tag benchmark: it starts a cluster of cfg.Nodes build-index nodes on loopback,
// then measures puts, linearizable gets and a full listing of a cfg.List-tag repository
// through the HTTP API, and stops the cluster. It returns ctx's error when ctx ends first, and
// an error wrapping ErrInvalidConfig for a configuration it cannot run. Any request that fails
// fails the benchmark: the numbers are only reported for runs in which every request succeeded.
func Tags(ctx context.Context, cfg TagsConfig, deps TagsDeps) (_ TagsResult, err error) {
	cfg.defaults()
	if err := cfg.validate(); err != nil {
		return TagsResult{}, err
	}
	if deps.Logger == nil {
		deps.Logger = slog.New(slog.DiscardHandler)
	}
	began := time.Now()
	dir := cfg.Dir
	if dir == "" {
		d, err := os.MkdirTemp("", "krakenctl-bench-*")
		if err != nil {
			return TagsResult{}, fmt.Errorf("make state directory: %w", err)
		}
		defer func() {
			if rerr := os.RemoveAll(d); rerr != nil && err == nil {
				err = fmt.Errorf("remove state directory: %w", rerr)
			}
		}()
		dir = d
	}

	var ca *pki.CA
	if cfg.TLS {
		if ca, err = pki.NewCA("krakenctl bench tags CA"); err != nil {
			return TagsResult{}, fmt.Errorf("bench CA: %w", err)
		}
	}

	report(deps, Progress{Phase: PhaseStart, Total: cfg.Nodes})
	c, err := startTagCluster(ctx, cfg.Nodes, dir, ca, deps.Logger)
	if err != nil {
		return TagsResult{}, err
	}
	defer func() {
		if cerr := c.Close(); cerr != nil && err == nil {
			err = cerr
		}
	}()
	report(deps, Progress{Phase: PhaseStart, Done: cfg.Nodes, Total: cfg.Nodes})

	hc, scheme, err := benchClient(ca, tlsDir(dir), cfg.Clients)
	if err != nil {
		return TagsResult{}, err
	}
	defer hc.CloseIdleConnections()
	addrs := c.Addrs(cluster.BuildIndex)
	nodes := make([]*client.BuildIndex, len(addrs))
	endpoints := make([]string, len(addrs))
	for i, a := range addrs {
		endpoints[i] = scheme + "://" + a
		nodes[i] = client.NewBuildIndex(endpoints[i], hc)
	}
	targets := nodes
	if cfg.LeaderOnly {
		li, err := currentLeader(ctx, c)
		if err != nil {
			return TagsResult{}, err
		}
		targets = []*client.BuildIndex{nodes[li]}
	}

	res := TagsResult{Nodes: cfg.Nodes, Clients: cfg.Clients, LeaderOnly: cfg.LeaderOnly, TLS: cfg.TLS, Endpoints: endpoints,
		Puts: cfg.Puts, ListRunsMs: []float64{}}
	put := func(repo string) func(ctx context.Context, n *client.BuildIndex, i int) error {
		return func(ctx context.Context, n *client.BuildIndex, i int) error {
			_, err := n.PutTag(ctx, repo, tagName(i), digestOf(repo, i))
			return err
		}
	}

	// Puts.
	st, err := run(ctx, deps, PhasePut, cfg.Puts, cfg.Clients, targets, put(putRepo))
	if err != nil {
		return TagsResult{}, err
	}
	res.PutsPerS, res.PutP50Ms, res.PutP99Ms, res.PutCPUUs = st.rate(), st.percentileMs(50), st.percentileMs(99), st.cpuPerOpUs()

	// Linearizable gets of the tags just written, each checked against what was written.
	if cfg.Gets > 0 {
		res.Gets = cfg.Gets
		st, err := run(ctx, deps, PhaseGet, cfg.Gets, cfg.Clients, targets, func(ctx context.Context, n *client.BuildIndex, i int) error {
			k := int(mix(uint64(i)) % uint64(cfg.Puts))
			t, err := n.GetTag(ctx, putRepo, tagName(k), false)
			if err != nil {
				return err
			}
			if want := digestOf(putRepo, k); t.Digest != want {
				return fmt.Errorf("get %s:%s: got %s, want %s", putRepo, tagName(k), t.Digest, want)
			}
			return nil
		})
		if err != nil {
			return TagsResult{}, err
		}
		res.GetsPerS, res.GetP50Ms, res.GetP99Ms, res.GetCPUUs = st.rate(), st.percentileMs(50), st.percentileMs(99), st.cpuPerOpUs()
	}

	// Listing.
	if cfg.List > 0 {
		res.ListTags = cfg.List
		st, err := run(ctx, deps, PhaseFill, cfg.List, cfg.Clients, targets, put(listRepo))
		if err != nil {
			return TagsResult{}, err
		}
		res.FillPerS = st.rate()
		// The leader now, in case an election moved it while the repository was filled.
		li, err := currentLeader(ctx, c)
		if err != nil {
			return TagsResult{}, err
		}
		leader, store := nodes[li], c.BuildIndex(li).Store()
		var storeRuns []float64
		for r := range listRuns {
			report(deps, Progress{Phase: PhaseList, Done: r, Total: listRuns})
			d, pages, err := listAll(ctx, leader, listRepo, cfg.List)
			if err != nil {
				return TagsResult{}, err
			}
			res.ListPages = pages
			res.ListRunsMs = append(res.ListRunsMs, ms(d))
			d, err = listStore(ctx, store, listRepo, cfg.List)
			if err != nil {
				return TagsResult{}, err
			}
			storeRuns = append(storeRuns, ms(d))
		}
		report(deps, Progress{Phase: PhaseList, Done: listRuns, Total: listRuns})
		res.ListMs = median(res.ListRunsMs)
		res.ListStoreMs = median(storeRuns)
		if cfg.List == 100000 {
			v := res.ListMs
			res.List100kMs = &v
		}
	}
	res.ElapsedS = time.Since(began).Seconds()
	return res, nil
}

// tagName is the i-th tag the benchmark writes; names sort in numeric order.
func tagName(i int) string { return fmt.Sprintf("t%08d", i) }

// digestOf is the digest repo's i-th tag points at (any well-formed digest: the benchmark's
// nodes do not check that content exists).
func digestOf(repo string, i int) digest.Digest {
	return digest.FromString(fmt.Sprintf("%s %d", repo, i))
}

// mix scatters i over the uint64 range (splitmix64), so reads hit tags in no particular order.
func mix(i uint64) uint64 {
	i += 0x9e3779b97f4a7c15
	i = (i ^ (i >> 30)) * 0xbf58476d1ce4e5b9
	i = (i ^ (i >> 27)) * 0x94d049bb133111eb
	return i ^ (i >> 31)
}

// listAll lists every tag of repo through n, page after page, and checks that it got exactly
// want tags in order.
func listAll(ctx context.Context, n *client.BuildIndex, repo string, want int) (time.Duration, int, error) {
	start := time.Now()
	got, pages, last := 0, 0, ""
	prev := ""
	for {
		tags, next, err := n.ListTags(ctx, repo, last, want)
		if err != nil {
			return 0, 0, fmt.Errorf("list tags of %s after %q: %w", repo, last, err)
		}
		pages++
		for _, t := range tags {
			if t <= prev && got > 0 {
				return 0, 0, fmt.Errorf("list tags of %s: %q after %q: not in order", repo, t, prev)
			}
			prev = t
		}
		got += len(tags)
		if next == "" {
			break
		}
		if next <= last || len(tags) == 0 {
			return 0, 0, fmt.Errorf("list tags of %s: the page after %q does not advance", repo, last)
		}
		last = next
	}
	d := time.Since(start)
	if got != want {
		return 0, 0, fmt.Errorf("list tags of %s: got %d tags, want %d", repo, got, want)
	}
	return d, pages, nil
}

// listStore lists every tag of repo inside st in one linearizable read and checks the count.
func listStore(ctx context.Context, st buildindex.Store, repo string, want int) (time.Duration, error) {
	start := time.Now()
	tags, err := st.Tags(ctx, repo, "", want+1, tagstore.Linearizable)
	d := time.Since(start)
	if err != nil {
		return 0, fmt.Errorf("list tags of %s in the store: %w", repo, err)
	}
	if len(tags) != want {
		return 0, fmt.Errorf("list tags of %s in the store: got %d tags, want %d", repo, len(tags), want)
	}
	return d, nil
}

// tlsDir is where a TLS run's certificates go.
func tlsDir(dir string) string { return filepath.Join(dir, "tls") }

// benchClient is the benchmark's clients' HTTP client and the scheme of the URLs they call,
// built as the components' and the CLI's are (httpserve.NewClient) with the pool the clients
// need. With ca it speaks TLS only, presenting a certificate of ClientName issued into dir and
// verifying the nodes' against ca, as a proxy's client does; a write sent straight to the
// leader the nodes name (a host:port) goes out as https:// too. The client is the same either
// way but for TLS, so that a TLS run differs from a plain one by TLS alone.
func benchClient(ca *pki.CA, dir string, clients int) (*http.Client, string, error) {
	o := httpserve.ClientOptions{MaxIdleConnsPerHost: clients * 2, MaxIdleConns: clients * 4}
	scheme := "http"
	if ca != nil {
		cfg, err := ca.IssueFiles(dir, "bench", pki.Leaf{Name: ClientName, Groups: []string{pki.GroupProxy}})
		if err != nil {
			return nil, "", fmt.Errorf("bench client certificate: %w", err)
		}
		p, err := pki.Load(cfg)
		if err != nil {
			return nil, "", fmt.Errorf("bench client certificate: %w", err)
		}
		o.DialTLS = p.DialTLS
		scheme = "https"
	}
	hc := httpserve.NewClient(o)
	hc.Timeout = time.Minute
	return hc, scheme, nil
}

// startTagCluster starts n build-index nodes under dir, as operators start a real cluster: the
// first bootstraps the Raft group, the others join it through its API. Content checks are off
// and there is no storage backend. With ca every node runs with TLS on every listener and
// mutual TLS to the others, its certificates in tlsDir(dir). It returns once every node is a
// voter and a leader is known; on error everything it started is stopped.
func startTagCluster(ctx context.Context, n int, dir string, ca *pki.CA, log *slog.Logger) (*cluster.Cluster, error) {
	off := false
	var tlsSpec *cluster.TLS
	if ca != nil {
		tlsSpec = &cluster.TLS{CA: ca, Dir: tlsDir(dir)}
	}
	c, err := cluster.New(cluster.Spec{
		Dir: dir, BuildIndexes: n, NoBackend: true, TLS: tlsSpec,
		BuildIndexConfig: func(i int, bc *buildindex.Config) {
			bc.Dir = filepath.Join(dir, fmt.Sprintf("node-%d", i+1))
			bc.Raft.NodeID = fmt.Sprintf("bi-%d", i+1)
			bc.VerifyContent = &off
		},
	}, cluster.Deps{Logger: log})
	if err != nil {
		return nil, fmt.Errorf("start build-index cluster: %w", err)
	}
	if err := c.Start(); err != nil {
		return nil, errors.Join(err, c.Close())
	}
	wctx, cancel := context.WithTimeout(ctx, startTimeout)
	defer cancel()
	if _, err := c.WaitLeader(wctx); err != nil {
		if ctx.Err() != nil {
			err = ctx.Err()
		} else {
			err = fmt.Errorf("start build-index cluster: no leader with all %d nodes voting after %s: %w", n, startTimeout, err)
		}
		return nil, errors.Join(err, c.Close())
	}
	return c, nil
}

// leaderTimeout bounds how long the benchmark waits for the nodes to agree on a leader
// between phases: an election under way (a leader that missed heartbeats under load) settles
// within a few election timeouts, a second each by default.
const leaderTimeout = 15 * time.Second

// currentLeader returns the index of the node that leads now. Cluster.Leader alone would fail
// the run while an election is under way (the nodes then name different leaders, or none), so
// it waits, up to leaderTimeout, until every node names the same one.
func currentLeader(ctx context.Context, c *cluster.Cluster) (int, error) {
	wctx, cancel := context.WithTimeout(ctx, leaderTimeout)
	defer cancel()
	li, err := c.WaitLeader(wctx)
	if err != nil {
		if ctx.Err() != nil {
			return 0, ctx.Err()
		}
		return 0, fmt.Errorf("no build-index leader after %s: %w", leaderTimeout, err)
	}
	return li, nil
}

// stats are one phase's measurements.
type stats struct {
	n         int
	wall      time.Duration
	latencies []time.Duration // sorted
	cpu       time.Duration   // the process's CPU time during the phase; 0 when unknown
}

func (s stats) cpuPerOpUs() float64 {
	if s.n == 0 {
		return 0
	}
	return float64(s.cpu.Microseconds()) / float64(s.n)
}

func (s stats) rate() float64 {
	if s.wall <= 0 {
		return 0
	}
	return float64(s.n) / s.wall.Seconds()
}

func (s stats) percentileMs(p float64) float64 {
	if len(s.latencies) == 0 {
		return 0
	}
	i := int(float64(len(s.latencies)-1) * p / 100)
	return ms(s.latencies[i])
}

func ms(d time.Duration) float64 { return float64(d.Microseconds()) / 1000 }

func median(v []float64) float64 {
	if len(v) == 0 {
		return 0
	}
	s := slices.Clone(v)
	sort.Float64s(s)
	if len(s)%2 == 1 {
		return s[len(s)/2]
	}
	return (s[len(s)/2-1] + s[len(s)/2]) / 2
}

// run calls op for i in [0, total) from clients goroutines, client k talking to node k mod
// len(nodes), and reports progress while it runs. The first error stops every client.
func run(ctx context.Context, deps TagsDeps, phase string, total, clients int, nodes []*client.BuildIndex,
	op func(ctx context.Context, n *client.BuildIndex, i int) error) (stats, error) {
	clients = min(clients, total)
	var next, done atomic.Int64
	lat := make([][]time.Duration, clients)
	g, gctx := errgroup.WithContext(ctx)

	stop := make(chan struct{})
	var wg sync.WaitGroup
	if deps.Progress != nil {
		wg.Add(1)
		go func() {
			defer wg.Done()
			t := time.NewTicker(200 * time.Millisecond)
			defer t.Stop()
			for {
				select {
				case <-stop:
					return
				case <-t.C:
					deps.Progress(Progress{Phase: phase, Done: int(done.Load()), Total: total})
				}
			}
		}()
	}

	start, cpu0 := time.Now(), processCPU()
	for k := range clients {
		n := nodes[k%len(nodes)]
		lat[k] = make([]time.Duration, 0, total/clients+1)
		g.Go(func() error {
			for {
				i := int(next.Add(1) - 1)
				if i >= total {
					return nil
				}
				t0 := time.Now()
				if err := op(gctx, n, i); err != nil {
					return fmt.Errorf("%s %d via %s: %w", phase, i, n.Addr(), err)
				}
				lat[k] = append(lat[k], time.Since(t0))
				done.Add(1)
			}
		})
	}
	err := g.Wait()
	wall, cpu := time.Since(start), processCPU()-cpu0
	if cpu0 == 0 {
		cpu = 0
	}
	close(stop)
	wg.Wait()
	if err != nil {
		if ctx.Err() != nil {
			return stats{}, ctx.Err()
		}
		return stats{}, err
	}
	report(deps, Progress{Phase: phase, Done: total, Total: total})
	all := make([]time.Duration, 0, total)
	for _, l := range lat {
		all = append(all, l...)
	}
	slices.Sort(all)
	return stats{n: total, wall: wall, latencies: all, cpu: cpu}, nil
}

func report(deps TagsDeps, p Progress) {
	if deps.Progress != nil {
		deps.Progress(p)
	}
}
