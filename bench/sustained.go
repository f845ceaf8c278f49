package main

import (
	"context"
	"fmt"
	"sync"
	"sync/atomic"
	"time"

	"github.com/relayq/relay"
)

const (
	sustainedBatch  = 100 // jobs per EnqueueMany transaction
	sustainedWarmup = 2 * time.Second
)

// runSustained: producers enqueue batches of 100 per transaction, paced to at most
// -sustained-rate jobs/s and held back whenever more than -backlog jobs are enqueued but
// not started, while 100 workers run jobs that sleep 1 ms. Throughput and pickup latency
// are measured over -duration after a 2 s warm-up.
func runSustained(ctx context.Context, b *bench) (*RunResult, error) {
	dur := b.opts.duration
	capacity := int64(float64(b.opts.sustainedRate)*(sustainedWarmup+dur+5*time.Second).Seconds()) + sustainedBatch
	rec := newRecorder(b.base, int(capacity))
	var completed atomic.Int64

	s0, err := b.db.snapshot(ctx)
	if err != nil {
		return nil, err
	}
	clientPool, prodPool, closePools, err := b.pools(ctx, b.opts.producers)
	if err != nil {
		return nil, err
	}
	defer closePools()
	c, err := b.startClient(ctx, clientPool, map[string]relay.QueueConfig{benchQueue: {Workers: 100}},
		func(_ context.Context, job *relay.Job[seqArgs]) error {
			rec.beganClaimed(job.Args.Seq, time.Now(), job.AttemptedAt)
			time.Sleep(time.Millisecond)
			completed.Add(1)
			return nil
		})
	if err != nil {
		return nil, err
	}
	defer stopClient(ctx, c)
	clientID := c.ID()
	time.Sleep(200 * time.Millisecond)

	var (
		nextSeq   atomic.Int64 // sequence numbers handed out
		committed atomic.Int64
		stopping  atomic.Bool
		wg        sync.WaitGroup
		errOnce   sync.Once
		prodErr   error
		waited    atomic.Int64 // ns producers spent held back by the backlog bound
	)
	bound := int64(b.opts.backlog)
	// Each producer paces itself to its share of the rate; it never catches up on slots it
	// missed while held back by the backlog bound, so it never bursts.
	interval := time.Duration(float64(time.Second) * sustainedBatch * float64(b.opts.producers) / float64(b.opts.sustainedRate))
	opts := b.enqueueOpts(benchQueue)
	for p := range b.opts.producers {
		wg.Go(func() {
			specs := make([]relay.JobSpec, sustainedBatch)
			next := time.Now().Add(time.Duration(p) * interval / time.Duration(b.opts.producers))
			for !stopping.Load() && ctx.Err() == nil {
				sleepUntil(ctx, next)
				if now := time.Now(); now.Sub(next) > interval {
					next = now
				}
				next = next.Add(interval)
				if nextSeq.Load()+sustainedBatch-rec.started.Load() > bound {
					t := time.Now()
					for nextSeq.Load()+sustainedBatch-rec.started.Load() > bound && !stopping.Load() {
						time.Sleep(100 * time.Microsecond)
					}
					waited.Add(int64(time.Since(t)))
				}
				if stopping.Load() {
					return
				}
				seq0 := nextSeq.Add(sustainedBatch) - sustainedBatch
				if seq0+sustainedBatch > capacity {
					return
				}
				for i := range specs {
					specs[i] = benchKind.Job(seqArgs{Seq: seq0 + int64(i)})
				}
				if err := enqueueInTx(ctx, prodPool, specs, opts); err != nil {
					errOnce.Do(func() { prodErr = err })
					stopping.Store(true)
					return
				}
				now := time.Now()
				for i := range int64(sustainedBatch) {
					rec.committed(seq0+i, now)
				}
				committed.Add(sustainedBatch)
			}
		})
	}

	var lastDone int64
	stopProgress := b.progress("sustained", func(time.Duration) []any {
		d := completed.Load()
		defer func() { lastDone = d }()
		return []any{"sent", committed.Load(), "done", d, "backlog", committed.Load() - rec.started.Load(), "done/s", d - lastDone}
	})
	sleepUntil(ctx, time.Now().Add(sustainedWarmup))
	winStart, doneAtStart, sentAtStart := time.Now(), completed.Load(), committed.Load()
	var backlogSum, backlogN float64
	for t := winStart.Add(10 * time.Millisecond); t.Before(winStart.Add(dur)) && ctx.Err() == nil; t = t.Add(10 * time.Millisecond) {
		sleepUntil(ctx, t)
		backlogSum += float64(committed.Load() - rec.started.Load())
		backlogN++
	}
	sleepUntil(ctx, winStart.Add(dur))
	winEnd, doneAtEnd, sentAtEnd := time.Now(), completed.Load(), committed.Load()
	meanBacklog := backlogSum / max(backlogN, 1)
	stopping.Store(true)
	wg.Wait()
	heldBack := float64(waited.Load()) / float64(time.Since(winStart.Add(-sustainedWarmup))*time.Duration(b.opts.producers))
	total := committed.Load()
	drained := waitFor(ctx, 30*time.Second, time.Millisecond, func() bool { return completed.Load() >= total })
	stopProgress()
	if prodErr != nil {
		return nil, fmt.Errorf("producer: %w", prodErr)
	}
	if !drained {
		return nil, fmt.Errorf("sustained: %d of %d jobs done 30 s after the producers stopped", completed.Load(), total)
	}
	if err := stopClient(ctx, c); err != nil {
		b.log.Warn("stop client", "error", err)
	}
	clientPool.Close()
	prodPool.Close()
	if err := b.db.waitBackendsGone(ctx, clientID); err != nil {
		return nil, err
	}
	s1, err := b.db.snapshot(ctx)
	if err != nil {
		return nil, err
	}

	// Pickup latency of the jobs committed inside the window.
	lo, hi := rec.since(winStart), rec.since(winEnd)
	last := min(nextSeq.Load(), capacity) // a producer that hit capacity took a block it never used
	p := rec.pickups(0, last, func(_ int64, commit int64) bool { return commit >= lo && commit < hi }, nil, nil)
	secs := winEnd.Sub(winStart).Seconds()
	b.log.Debug("slowest pickups (ms since the benchmark began)", "workload", "sustained", "jobs", p.slowest)
	res := &RunResult{
		Metrics: []Metric{
			{Name: "completed", Unit: unitRate, Value: float64(doneAtEnd-doneAtStart) / secs},
			{Name: "enqueued (achieved offer)", Unit: unitRate, Value: float64(sentAtEnd-sentAtStart) / secs},
		},
		series: []series{{label: "pickup", hist: p.hist}},
	}
	res.Metrics = append(res.Metrics, latencyMetrics("pickup ", p.hist, nil, nil)...)
	res.Metrics = append(res.Metrics, phaseMetrics("pickup ", rec.phases(0, last, func(seq int64) bool {
		c := rec.commit[seq].Load()
		return c >= lo && c < hi
	}))...)
	res.Metrics = append(res.Metrics,
		Metric{Name: "started before Commit returned", Unit: unitCount, Value: float64(p.early)},
		Metric{Name: "ran twice", Unit: unitCount, Value: float64(rec.dups.Load())},
		Metric{Name: "producers' time held back by the backlog bound", Unit: unitPct, Value: 100 * heldBack},
		Metric{Name: "mean backlog ÷ throughput (Little's law)", Unit: unitMs, Value: 1000 * meanBacklog / max(float64(doneAtEnd-doneAtStart)/winEnd.Sub(winStart).Seconds(), 1)},
	)
	res.Metrics = append(res.Metrics, workMetrics("", workBetween(s0, s1), total)...)
	res.Notes = append(res.Notes,
		fmt.Sprintf("%d producers, batches of %d per transaction, offer capped at %d jobs/s and held under %d enqueued-but-not-started jobs; pickup latency is per job, so it includes the time spent in that backlog",
			b.opts.producers, sustainedBatch, b.opts.sustainedRate, b.opts.backlog),
		fmt.Sprintf("database work is per job over the whole run (%d jobs: enqueue, claim, outcome, warm-up included)", total))
	if p.early > 0 {
		res.Notes = append(res.Notes, fmt.Sprintf("%d jobs started before their Commit returned (earliest by %v); recorded as 0 ms", p.early, p.maxEarly.Round(time.Microsecond)))
	}
	return res, nil
}
