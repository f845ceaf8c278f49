package main

import (
	"context"
	"fmt"
	"math/rand/v2"
	"sync/atomic"
	"time"

	"github.com/relayq/relay"
)

const (
	scheduledJobs = 1000
	scheduledTxs  = 10 // enqueued after Start in this many transactions
	scheduledMin  = time.Second
	scheduledMax  = 5 * time.Second
)

// runScheduled: 1,000 jobs with RunAt spread uniformly at random 1–5 s ahead, enqueued
// after the client started, in 10 transactions. Lateness is handler start − RunAt on the
// wall clock (the database compares run_at with its own, which is this machine's).
func runScheduled(ctx context.Context, b *bench) (*RunResult, error) {
	runAt := make([]int64, scheduledJobs) // Unix ns
	began := make([]atomic.Int64, scheduledJobs)
	claimed := make([]atomic.Int64, scheduledJobs) // AttemptedAt: the claim statement's now()
	var started, dups atomic.Int64

	clientPool, prodPool, closePools, err := b.pools(ctx, 2)
	if err != nil {
		return nil, err
	}
	defer closePools()
	c, err := b.startClient(ctx, clientPool, map[string]relay.QueueConfig{benchQueue: {Workers: 100}},
		func(_ context.Context, job *relay.Job[seqArgs]) error {
			now := time.Now().UnixNano()
			if s := job.Args.Seq; s >= 0 && s < scheduledJobs && began[s].CompareAndSwap(0, now) {
				claimed[s].Store(job.AttemptedAt.UnixNano())
				started.Add(1)
			} else {
				dups.Add(1)
			}
			return nil
		})
	if err != nil {
		return nil, err
	}
	defer stopClient(ctx, c)
	time.Sleep(200 * time.Millisecond)

	base := time.Now()
	specs := make([]relay.JobSpec, scheduledJobs)
	var last time.Time
	for i := range specs {
		// Whole microseconds: PostgreSQL keeps microseconds, and a truncated run_at would
		// let a job start up to 1 µs "early" by the nanosecond clock.
		t := base.Add(scheduledMin + rand.N(scheduledMax-scheduledMin)).Truncate(time.Microsecond)
		runAt[i] = t.UnixNano()
		if t.After(last) {
			last = t
		}
		specs[i] = benchKind.Job(seqArgs{Seq: int64(i)}, relay.RunAt(t))
	}
	opts := b.enqueueOpts(benchQueue)
	per := scheduledJobs / scheduledTxs
	for k := 0; k < scheduledJobs; k += per {
		tx, err := prodPool.Begin(ctx)
		if err != nil {
			return nil, err
		}
		if _, err := relay.EnqueueMany(ctx, tx, specs[k:k+per], opts...); err != nil {
			tx.Rollback(ctx)
			return nil, err
		}
		if err := tx.Commit(ctx); err != nil {
			return nil, err
		}
	}
	enqueued := time.Since(base)
	stopProgress := b.progress("scheduled", func(time.Duration) []any {
		return []any{"started", started.Load(), "of", scheduledJobs}
	})
	all := waitFor(ctx, time.Until(last)+10*time.Second, time.Millisecond, func() bool { return started.Load() >= scheduledJobs })
	stopProgress()

	lateness := newHist()
	ph := phaseHists{wake: newHist(), run: newHist()}
	var early, missing int64
	var maxEarly time.Duration
	for i := range began {
		s := began[i].Load()
		if s == 0 {
			missing++
			continue
		}
		d := time.Duration(s - runAt[i])
		if d < 0 {
			early++
			maxEarly = max(maxEarly, -d)
			d = 0
		}
		record(lateness, d)
		if a := claimed[i].Load(); a != 0 {
			record(ph.wake, time.Duration(a-runAt[i]))
			record(ph.run, time.Duration(s-a))
		}
	}
	res := &RunResult{
		Metrics: []Metric{
			{Name: "started early (before RunAt)", Unit: unitCount, Value: float64(early), Target: never()},
			{Name: "lateness count", Unit: unitCount, Value: float64(lateness.TotalCount())},
			{Name: "lateness p50", Unit: unitMs, Value: ms(lateness.ValueAtQuantile(50))},
			{Name: "lateness p99", Unit: unitMs, Value: ms(lateness.ValueAtQuantile(99)), Target: atMost(5)},
			{Name: "lateness max", Unit: unitMs, Value: ms(lateness.Max())},
			{Name: "split: RunAt → claim began p50", Unit: unitMs, Value: ms(ph.wake.ValueAtQuantile(50))},
			{Name: "split: RunAt → claim began p99", Unit: unitMs, Value: ms(ph.wake.ValueAtQuantile(99))},
			{Name: "split: claim began → handler p50", Unit: unitMs, Value: ms(ph.run.ValueAtQuantile(50))},
			{Name: "split: claim began → handler p99", Unit: unitMs, Value: ms(ph.run.ValueAtQuantile(99))},
			{Name: "never started", Unit: unitCount, Value: float64(missing)},
			{Name: "ran twice", Unit: unitCount, Value: float64(dups.Load())},
		},
		series: []series{{label: "lateness", hist: lateness}},
	}
	res.Notes = append(res.Notes, fmt.Sprintf("enqueued after Start in %d transactions of %d (took %v), RunAt uniform in [now+%v, now+%v)",
		scheduledTxs, per, enqueued.Round(time.Millisecond), scheduledMin, scheduledMax))
	if early > 0 {
		res.Notes = append(res.Notes, fmt.Sprintf("%d jobs started before their RunAt (the earliest by %v); recorded as 0 ms lateness", early, maxEarly))
	}
	if !all {
		res.Notes = append(res.Notes, fmt.Sprintf("%d jobs had not started 10 s after the last RunAt", missing))
	}
	return res, nil
}
