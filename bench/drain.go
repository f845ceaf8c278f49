package main

import (
	"context"
	"fmt"
	"sync/atomic"
	"time"

	"github.com/relayq/relay"
	"github.com/relayq/relay/internal/cpustat"
)

const (
	drainJobs  = 50_000
	drainBatch = 5_000 // jobs per EnqueueMany
)

// runDrain: 50,000 no-op jobs inserted with EnqueueMany into one empty queue, then a
// client with 100 workers is started; the time runs from Start until the last outcome is
// committed, as seen by a loop counting succeeded jobs.
func runDrain(ctx context.Context, b *bench) (*RunResult, error) {
	// Enqueue, and measure what enqueueing cost the database.
	s0, err := b.db.snapshot(ctx)
	if err != nil {
		return nil, err
	}
	enqTook, err := enqueueNoOps(ctx, b, drainJobs, b.enqueueOpts(benchQueue))
	if err != nil {
		return nil, err
	}
	if b.opts.analyze {
		if _, err := b.db.admin.Exec(ctx, "ANALYZE "+b.db.jobsTable()); err != nil {
			return nil, err
		}
	}
	s1, err := b.db.snapshot(ctx)
	if err != nil {
		return nil, err
	}

	// Drain.
	clientPool, err := b.db.newPool(ctx, b.opts.poolConns)
	if err != nil {
		return nil, err
	}
	defer clientPool.Close()
	var done atomic.Int64
	var lastDone int64
	stopProgress := b.progress("drain", func(el time.Duration) []any {
		d := done.Load()
		defer func() { lastDone = d }()
		return []any{"done", d, "last second", d - lastDone}
	})
	cpu0 := cpustat.Take(b.db.postmasterPID())
	start := time.Now()
	c, err := b.startClient(ctx, clientPool, map[string]relay.QueueConfig{benchQueue: {Workers: 100}},
		func(context.Context, *relay.Job[seqArgs]) error {
			done.Add(1)
			return nil
		})
	if err != nil {
		stopProgress()
		return nil, err
	}
	defer stopClient(ctx, c)
	clientID := c.ID()
	started := time.Now()
	// Wait for the handlers without touching the database, so as not to take CPU from
	// the drain; then count succeeded rows in a tight loop until all 50,000 are committed.
	if !waitFor(ctx, 5*time.Minute, 200*time.Microsecond, func() bool { return done.Load() >= drainJobs }) {
		stopProgress()
		return nil, fmt.Errorf("drain: only %d of %d handlers ran within 5 minutes", done.Load(), drainJobs)
	}
	handlersDone := time.Now()
	var durable time.Time
	polls := 0
	for {
		sent := time.Now() // the count's snapshot is taken after this: an upper bound
		n, err := b.db.countSucceeded(ctx)
		polls++
		if err != nil {
			stopProgress()
			return nil, err
		}
		if n >= drainJobs {
			durable = sent
			break
		}
		if time.Since(handlersDone) > time.Minute {
			stopProgress()
			return nil, fmt.Errorf("drain: only %d of %d outcomes committed a minute after the last handler ran", n, drainJobs)
		}
	}
	cpu1 := cpustat.Take(b.db.postmasterPID())
	stopProgress()
	if err := stopClient(ctx, c); err != nil {
		b.log.Warn("stop client", "error", err)
	}
	clientPool.Close()
	if err := b.db.waitBackendsGone(ctx, clientID); err != nil {
		return nil, err
	}
	s2, err := b.db.snapshot(ctx)
	if err != nil {
		return nil, err
	}

	took := durable.Sub(start)
	res := &RunResult{Metrics: []Metric{
		{Name: "throughput (Start → last outcome committed)", Unit: unitRate, Value: drainJobs / took.Seconds(), Target: atLeast(50_000)},
		{Name: "time Start → last outcome committed", Unit: unitSec, Value: took.Seconds()},
		{Name: "time Start → last handler ran", Unit: unitSec, Value: handlersDone.Sub(start).Seconds()},
		{Name: "time in Start (listener connect etc.)", Unit: unitMs, Value: float64(started.Sub(start)) / 1e6},
		{Name: "enqueue rate (EnqueueMany ×5,000)", Unit: unitRate, Value: drainJobs / enqTook.Seconds()},
	}}
	// CPU time per job, from Start to the last outcome: unlike the throughput, hardly
	// touched by what else the machine runs (to the clock tick: 10 ms over the run).
	if u, ok := cpustat.Between(cpu0, cpu1); ok {
		perJob := func(cores float64) float64 { return cores * u.Seconds / drainJobs * 1e6 }
		res.Metrics = append(res.Metrics, Metric{Name: "cpu per job: this process", Unit: unitMicros, Value: perJob(u.Self)})
		if u.HavePG {
			res.Metrics = append(res.Metrics, Metric{Name: "cpu per job: its PostgreSQL server", Unit: unitMicros, Value: perJob(u.Postgres)})
		}
	}
	res.Metrics = append(res.Metrics, workMetrics("processing: ", workBetween(s1, s2), drainJobs)...)
	res.Metrics = append(res.Metrics, workMetrics("enqueueing: ", workBetween(s0, s1), drainJobs)...)
	res.Notes = append(res.Notes, fmt.Sprintf("completion seen by %d count(*) polls after the last handler returned; the time is when the poll that saw 50,000 was sent", polls))
	return res, nil
}

// enqueueNoOps commits n no-op jobs with EnqueueMany, drainBatch at a time, through a
// pool of its own, with opts, and returns how long that took once the pool's connections
// are gone.
func enqueueNoOps(ctx context.Context, b *bench, n int, opts []relay.EnqueueOption) (time.Duration, error) {
	pool, err := b.db.newPool(ctx, 2)
	if err != nil {
		return 0, err
	}
	specs := make([]relay.JobSpec, drainBatch)
	start := time.Now()
	for k := 0; k < n; k += drainBatch {
		for i := range specs {
			specs[i] = benchKind.Job(seqArgs{Seq: int64(k + i)})
		}
		if _, err := relay.EnqueueMany(ctx, pool, specs, opts...); err != nil {
			pool.Close()
			return 0, err
		}
	}
	took := time.Since(start)
	pool.Close()
	return took, b.db.waitBackendsGone(ctx)
}
