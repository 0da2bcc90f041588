package queue

import (
	"context"
	"errors"
	"log/slog"
	"math/rand/v2"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"
)

// Executor runs one attempt of a task. It returns nil on success, an error wrapping
// ErrPermanent when retrying cannot help, and any other error to be retried.
type Executor func(ctx context.Context, t Task) error

// RunnerConfig tunes a Runner.
type RunnerConfig struct {
	// Workers is how many tasks run at once (default 4).
	Workers int
	// RetryInitial is the first retry delay (default 1s); it doubles per failure up to RetryMax
	// (default 5m), with ±20% jitter so that tasks failing together do not retry together.
	RetryInitial, RetryMax time.Duration
	// Timeout bounds one attempt (default 30m).
	Timeout time.Duration
	// Park keeps a task that failed permanently in the queue's parked set (Queue.Park), for an
	// operator to retry, instead of dropping it.
	Park bool
}

func (c *RunnerConfig) defaults() {
	if c.Workers <= 0 {
		c.Workers = 4
	}
	if c.RetryInitial <= 0 {
		c.RetryInitial = time.Second
	}
	if c.RetryMax < c.RetryInitial {
		c.RetryMax = max(5*time.Minute, c.RetryInitial)
	}
	if c.Timeout <= 0 {
		c.Timeout = 30 * time.Minute
	}
}

// Runner executes the due tasks of a Queue.
type Runner struct {
	q    *Queue
	cfg  RunnerConfig
	exec Executor
	log  *slog.Logger
	// Finished, when set, is called after a task left the queue (success or permanent failure).
	finished func(Task, error)

	attempts *prometheus.CounterVec
	depth    *prometheus.GaugeVec
}

// RunnerDeps are a Runner's collaborators.
type RunnerDeps struct {
	Logger *slog.Logger
	// Registerer receives krakenctl_<subsystem>_queue_tasks_total{kind,result} and
	// krakenctl_<subsystem>_queue_tasks{kind}; nil registers nowhere.
	Registerer prometheus.Registerer
	// Subsystem names the role in metric names ("origin", "buildindex").
	Subsystem string
	// Finished is called after a task left the queue, with nil on success or the permanent error.
	Finished func(Task, error)
}

// NewRunner returns a Runner of q's tasks through exec.
func NewRunner(q *Queue, cfg RunnerConfig, exec Executor, deps RunnerDeps) (*Runner, error) {
	cfg.defaults()
	r := &Runner{q: q, cfg: cfg, exec: exec, log: deps.Logger, finished: deps.Finished}
	if r.log == nil {
		r.log = slog.New(slog.DiscardHandler)
	}
	r.attempts = prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "krakenctl_" + deps.Subsystem + "_queue_tasks_total", Help: "Durable queue task attempts, by kind and result.",
	}, []string{"kind", "result"})
	r.depth = prometheus.NewGaugeVec(prometheus.GaugeOpts{
		Name: "krakenctl_" + deps.Subsystem + "_queue_tasks", Help: "Tasks waiting in the durable queue, by kind.",
	}, []string{"kind"})
	if deps.Registerer != nil {
		for _, c := range []prometheus.Collector{r.attempts, r.depth} {
			if err := deps.Registerer.Register(c); err != nil {
				return nil, err
			}
		}
	}
	return r, nil
}

// Run executes due tasks until ctx ends, then waits for running attempts to stop. A task whose
// attempt is cut short by ctx stays queued unchanged.
func (r *Runner) Run(ctx context.Context) error {
	sem := make(chan struct{}, r.cfg.Workers)
	var wg sync.WaitGroup
	defer wg.Wait()
	timer := time.NewTimer(0)
	defer timer.Stop()
	for {
		select {
		case <-ctx.Done():
			return nil
		case <-timer.C:
		case <-r.q.wake:
		}
		free := r.cfg.Workers - len(sem)
		if free <= 0 {
			continue // a finishing worker wakes us
		}
		tasks, next, counts, err := r.q.Due(time.Now(), free)
		if err != nil {
			r.log.Error("read queue", "err", err)
			next = time.Now().Add(time.Second)
		}
		r.depth.Reset()
		for k, n := range counts {
			r.depth.WithLabelValues(k).Set(float64(n))
		}
		for _, t := range tasks {
			sem <- struct{}{}
			wg.Add(1)
			go func() {
				defer wg.Done()
				defer func() { <-sem }()
				r.runTask(ctx, t)
			}()
		}
		if !timer.Stop() {
			select {
			case <-timer.C:
			default:
			}
		}
		wait := time.Minute
		if !next.IsZero() {
			wait = max(time.Until(next), 10*time.Millisecond)
		}
		timer.Reset(wait)
	}
}

func (r *Runner) runTask(ctx context.Context, t Task) {
	tctx, cancel := context.WithTimeout(ctx, r.cfg.Timeout)
	err := r.exec(tctx, t)
	cancel()
	log := r.log.With("task", t.Kind, "key", t.Key, "attempt", t.Attempts+1)
	switch {
	case err == nil:
		r.attempts.WithLabelValues(t.Kind, "ok").Inc()
		r.finish(t, nil, log)
	case ctx.Err() != nil:
		// Shutting down: leave the task as it was; it runs again after the restart.
		r.q.Release(t)
	case errors.Is(err, ErrPermanent) && r.cfg.Park:
		r.attempts.WithLabelValues(t.Kind, "parked").Inc()
		log.Error("task failed permanently; parked until retried", "err", err)
		if perr := r.q.Park(t, err); perr != nil {
			log.Error("park task", "err", perr)
			return
		}
		if r.finished != nil {
			r.finished(t, err)
		}
	case errors.Is(err, ErrPermanent):
		r.attempts.WithLabelValues(t.Kind, "dropped").Inc()
		log.Error("task failed permanently; dropped", "err", err)
		r.finish(t, err, log)
	default:
		r.attempts.WithLabelValues(t.Kind, "retry").Inc()
		at := time.Now().Add(r.Backoff(t.Attempts + 1))
		log.Warn("task failed; will retry", "err", err, "retry_at", at)
		if rerr := r.q.Retry(t, err, at); rerr != nil {
			log.Error("reschedule task", "err", rerr)
		}
	}
}

func (r *Runner) finish(t Task, cause error, log *slog.Logger) {
	if err := r.q.Done(t); err != nil {
		log.Error("finish task", "err", err)
		return
	}
	if r.finished != nil {
		r.finished(t, cause)
	}
}

// Backoff is the delay before attempt number attempt (1 = the first retry).
func (r *Runner) Backoff(attempt int) time.Duration {
	d := r.cfg.RetryInitial
	for i := 1; i < attempt && d < r.cfg.RetryMax; i++ {
		d *= 2
	}
	d = min(d, r.cfg.RetryMax)
	return time.Duration(float64(d) * (0.8 + 0.4*rand.Float64()))
}
