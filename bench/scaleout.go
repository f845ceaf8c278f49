package main

import (
	"context"
	"fmt"
	"io"
	"math/rand/v2"
	"strconv"
	"strings"
	"time"

	"github.com/relayq/relay"
	"github.com/relayq/relay/internal/cpustat"
	"github.com/relayq/relay/internal/fleet"
)

const (
	scaleoutJobs    = 50_000 // no-op jobs
	scaleoutWorked  = 20_000 // jobs that work (-job-ms): the backlog of issue 12's run
	scaleoutWorkers = 200    // in all, however many clients share them
	scaleoutIdle    = 15 * time.Second
	scaleoutPrefix  = "relay-bench-so-" // application_name of the worker processes' pools
	// scaleoutPoll is how often the bench looks for unfinished jobs, through the claim's and
	// the rescuer's partial indexes: a count of the succeeded jobs, which reads every
	// finished one (~5 ms at 50,000), kept a backend busy for a third of a core polled every
	// millisecond, and for a quarter polled every 10 ms through drains of jobs that work. The
	// end of a drain of 2–5 s is known within 1 %.
	scaleoutPoll = 10 * time.Millisecond
)

// runScaleout drains one backlog with the same total workers spread over 1 client and
// over -clients clients, each a process of its own (package fleet), as pods would be: the
// ratio of the two throughputs is what scaling out costs. Before each drain the clients
// sit idle for a while, which measures what each costs the database when there is no work:
// connections and transactions per second.
func runScaleout(ctx context.Context, b *bench) (*RunResult, error) {
	n := b.opts.clients
	res := &RunResult{}
	if b.opts.jobWork.max > 0 {
		b.db.adminStatements++
		if _, err := b.db.admin.Exec(ctx, fleet.EffectsTable(scaleoutEffects(b))); err != nil {
			return nil, err
		}
		res.Metrics = append(res.Metrics, Metric{Name: "capacity of 200 workers (jobs of " + b.opts.jobWork.String() + " ms)",
			Unit: unitRate, Value: scaleoutWorkers / b.opts.jobWork.mean().Seconds()})
	}
	var one float64
	for _, layout := range []struct {
		label          string
		procs, perProc int
	}{
		{"1 client", 1, 1},
		{fmt.Sprintf("%d clients in 1 process", n), 1, n},
		{fmt.Sprintf("%d client processes", n), n, 1},
	} {
		m, rate, err := scaleoutPhase(ctx, b, layout.label, layout.procs, layout.perProc)
		if err != nil {
			return nil, err
		}
		res.Metrics = append(res.Metrics, m...)
		switch {
		case layout.procs*layout.perProc == 1:
			one = rate
		case layout.procs == 1: // what more clients cost, without more processes
			res.Metrics = append(res.Metrics, Metric{Name: "throughput ratio: " + layout.label + " / 1 client", Unit: unitRatio, Value: rate / one})
		default:
			res.Metrics = append(res.Metrics, Metric{
				Name: "throughput ratio: " + layout.label + " / 1 client", Unit: unitRatio, Value: rate / one, Target: atLeast(0.8),
			})
		}
	}
	return res, nil
}

// scaleoutPhase starts procs worker processes of perProc clients each, sharing
// scaleoutWorkers workers, measures them idle, then drains scaleoutJobs jobs enqueued in
// one transaction; it returns its metrics, named with label, and the drain's throughput.
func scaleoutPhase(ctx context.Context, b *bench, label string, procs, perProc int) ([]Metric, float64, error) {
	clients := procs * perProc
	jobs, truncate := scaleoutJobs, b.db.jobsTable()
	if b.opts.jobWork.max > 0 {
		jobs, truncate = scaleoutWorked, truncate+", "+scaleoutEffects(b)
	}
	b.db.adminStatements++
	if _, err := b.db.admin.Exec(ctx, "TRUNCATE "+truncate); err != nil {
		return nil, 0, err
	}
	running := make([]*fleet.Proc, 0, procs)
	stopAll := func() {
		for _, p := range running {
			if err := p.Stop(30 * time.Second); err != nil {
				b.log.Warn("stop worker process", "error", err)
			}
		}
		running = nil
	}
	defer stopAll()
	for i := range procs {
		id := fmt.Sprintf("%s%d-%d-%d", scaleoutPrefix, procs, perProc, i)
		p, err := fleet.Start(fleet.Spec{
			URL: b.db.url, Schema: b.opts.schema, ID: id, App: id, PoolConns: int32(b.opts.poolConns),
			Queue: benchQueue, Workers: scaleoutWorkers / clients, Clients: perProc, Effects: scaleoutEffects(b),
		}, io.Discard)
		if err != nil {
			return nil, 0, err
		}
		running = append(running, p)
	}
	for _, p := range running {
		if err := p.WaitReady(ctx); err != nil {
			return nil, 0, err
		}
	}

	// Idle: what the clients cost the database with nothing to do.
	s0, err := b.db.snapshot(ctx)
	if err != nil {
		return nil, 0, err
	}
	select {
	case <-time.After(scaleoutIdle):
	case <-ctx.Done():
		return nil, 0, context.Cause(ctx)
	}
	s1, err := b.db.snapshot(ctx)
	if err != nil {
		return nil, 0, err
	}
	wal0 := b.db.walSample(ctx)
	conns, err := b.db.countBackends(ctx, scaleoutPatterns)
	if err != nil {
		return nil, 0, err
	}
	idle := workBetween(s0, s1)

	// Drain: the whole backlog commits at once.
	var stmts0 []statement
	if b.opts.pgss {
		if stmts0, err = drainStatements(ctx, b); err != nil {
			return nil, 0, err
		}
	}
	cpu0 := cpustat.Take(b.db.postmasterPID())
	committed, err := enqueueBacklog(ctx, b, jobs, b.opts.jobWork.jobs())
	if err != nil {
		return nil, 0, err
	}
	var done time.Time
	if !waitFor(ctx, 5*time.Minute, scaleoutPoll, func() bool {
		left, err := b.db.anyUnfinished(ctx)
		done = time.Now()
		return err == nil && !left
	}) {
		return nil, 0, fmt.Errorf("scaleout (%s): the backlog did not drain within 5 minutes", label)
	}
	cpu := cpuMetrics(cpu0, cpustat.Take(b.db.postmasterPID()))
	if n, err := b.db.countSucceeded(ctx); err != nil || n != int64(jobs) {
		return nil, 0, fmt.Errorf("scaleout (%s): %d of %d jobs succeeded (%v)", label, n, jobs, err)
	}
	// Backends flush their statistics as they exit: stop the clients before reading them
	// (their few statements of stopping are counted too).
	stopAll()
	if err := b.db.waitGone(ctx, scaleoutPatterns); err != nil {
		return nil, 0, err
	}
	s2, err := b.db.snapshot(ctx)
	if err != nil {
		return nil, 0, err
	}
	wal1 := b.db.walSample(ctx)
	rate := float64(jobs) / done.Sub(committed).Seconds()
	ms := []Metric{
		{Name: label + ": throughput (commit → last outcome)", Unit: unitRate, Value: rate},
		{Name: label + ": idle transactions/s per client", Unit: unitFloat, Value: float64(idle.Xacts) / scaleoutIdle.Seconds() / float64(clients)},
		{Name: label + ": idle connections per client", Unit: unitFloat, Value: float64(conns) / float64(clients)},
		{Name: label + ": transactions/job while draining", Unit: unitFloat, Value: float64(workBetween(s1, s2).Xacts) / float64(jobs)},
	}
	if b.opts.jobWork.max > 0 {
		ms = append(ms, Metric{Name: label + ": throughput / capacity of the workers", Unit: unitRatio,
			Value: rate * b.opts.jobWork.mean().Seconds() / scaleoutWorkers})
	}
	if b.opts.pgss {
		stmts, err := drainStatements(ctx, b)
		if err != nil {
			return nil, 0, err
		}
		ms = append(ms, statementMetrics(label, jobs, stmts0, stmts)...)
	}
	for _, m := range append(cpu, walMetrics(wal0, wal1, jobs)...) {
		m.Name = label + ": " + m.Name
		ms = append(ms, m)
	}
	return ms, rate, nil
}

// drainStatementKinds are the statements of a drain whose numbers grow with the clients,
// told apart by how their text begins (pg_stat_statements shows constants as $n or as
// written, depending on the first call it saw).
var drainStatementKinds = []struct{ one, many, re string }{
	{"claim", "claims", `^WITH async AS \( SELECT set_config\([^)]*\) \), settings AS`},
	{"outcome batch", "outcome batches", `^WITH outcome AS MATERIALIZED`},
}

// drainStatements reads what drainStatementKinds cost so far, from pg_stat_statements (-pgss).
func drainStatements(ctx context.Context, b *bench) ([]statement, error) {
	var sts []statement
	for _, s := range drainStatementKinds {
		st, err := b.db.statementsMatching(ctx, s.re)
		if err != nil {
			return nil, err
		}
		sts = append(sts, st)
	}
	return sts, nil
}

// statementMetrics reports, between two readings of drainStatements, how many jobs each
// claim and outcome batch carried (claims that found nothing count too), their server time,
// and the shared buffers they used per job: scans that pass the rows other clients claimed
// show as more buffers per job.
func statementMetrics(label string, jobs int, before, after []statement) []Metric {
	var ms []Metric
	for i, s := range drainStatementKinds {
		calls := after[i].Calls - before[i].Calls
		if calls <= 0 {
			continue
		}
		ms = append(ms,
			Metric{Name: fmt.Sprintf("%s: jobs per %s", label, s.one), Unit: unitFloat, Value: float64(jobs) / float64(calls)},
			Metric{Name: fmt.Sprintf("%s: server ms per %s (waits for CPU included)", label, s.one), Unit: unitFloat,
				Value: (after[i].TotalMs - before[i].TotalMs) / float64(calls)},
			Metric{Name: fmt.Sprintf("%s: buffers per job in %s", label, s.many), Unit: unitFloat,
				Value: float64(after[i].Blocks-before[i].Blocks) / float64(jobs)},
		)
	}
	return ms
}

// enqueueBacklog enqueues n fleet jobs, the work of each from work, in one transaction
// and returns when it committed.
func enqueueBacklog(ctx context.Context, b *bench, n int, work func() fleet.Work) (time.Time, error) {
	specs := make([]relay.JobSpec, 0, drainBatch)
	b.db.adminStatements++
	tx, err := b.db.admin.Begin(ctx)
	if err != nil {
		return time.Time{}, err
	}
	defer tx.Rollback(ctx)
	opts := b.enqueueOpts(benchQueue)
	for k := 0; k < n; k += drainBatch {
		specs = specs[:0]
		for range min(drainBatch, n-k) {
			specs = append(specs, fleet.Kind.Job(work()))
		}
		if _, err := relay.EnqueueMany(ctx, tx, specs, opts...); err != nil {
			return time.Time{}, err
		}
	}
	if err := tx.Commit(ctx); err != nil {
		return time.Time{}, err
	}
	return time.Now(), nil
}

// scaleoutPatterns match the connections of the worker processes, their listeners' and
// reserved ones too.
var scaleoutPatterns = []string{scaleoutPrefix + "%", relay.ListenerApplicationName(scaleoutPrefix) + "%", relay.ReservedApplicationName(scaleoutPrefix) + "%"}

// scaleoutEffects is the table the jobs that work (-job-ms) leave their effects in.
func scaleoutEffects(b *bench) string { return b.db.quotedSchema() + ".scaleout_effects" }

// workRange is -job-ms: how long the handler of each scaleout job works, from min to max
// milliseconds; zero, no-op jobs.
type workRange struct{ min, max int }

func (w *workRange) String() string {
	if w.max == 0 {
		return "0"
	}
	return fmt.Sprintf("%d-%d", w.min, w.max)
}

func (w *workRange) Set(s string) error {
	lo, hi, found := strings.Cut(s, "-")
	if !found {
		hi = lo
	}
	var err1, err2 error
	w.min, err1 = strconv.Atoi(strings.TrimSpace(lo))
	w.max, err2 = strconv.Atoi(strings.TrimSpace(hi))
	if err1 != nil || err2 != nil || w.min < 0 || w.max < w.min || w.max > 60_000 {
		*w = workRange{}
		return fmt.Errorf("want MIN-MAX milliseconds, 0 ≤ MIN ≤ MAX ≤ 60000, as in 50-200")
	}
	return nil
}

func (w *workRange) mean() time.Duration {
	return time.Duration(w.min+w.max) * time.Millisecond / 2
}

// jobs returns what makes each job's work: durations drawn uniformly from the range by
// a generator of fixed seed (every drain gets the same backlog), and effects alternating
// between a plain INSERT (at least once) and CompleteTx (exactly once). No-op jobs without
// a range.
func (w *workRange) jobs() func() fleet.Work {
	if w.max == 0 {
		return func() fleet.Work { return fleet.Work{} }
	}
	rng := rand.New(rand.NewPCG(12, 2026))
	n := 0
	return func() fleet.Work {
		n++
		effect := fleet.EffectPlain
		if n%2 == 0 {
			effect = fleet.EffectTx
		}
		return fleet.Work{Ms: w.min + rng.IntN(w.max-w.min+1), Effect: effect}
	}
}
