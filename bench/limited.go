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
	limitedQueue   = "bench-limited"
	limitedLimit   = 5  // the queue's GlobalLimit
	limitedClients = 2  // serving it …
	limitedWorkers = 50 // … with this many workers each
	limitedJobs    = 5_000
	limitedWork    = time.Millisecond // what a backlog job's handler sleeps
	limitedRate    = 200              // jobs/s of the open-loop phase
	limitedPoll    = 20 * time.Millisecond
)

// runLimited: the queue "bench-limited" gets a GlobalLimit of 5 (relay.SetQueue) and is
// served by two clients with 50 workers each, on pools of their own, so that the limit,
// not the workers, decides how many jobs run. Two phases:
//
//  1. backlog: 5,000 jobs whose handlers sleep 1 ms, in one EnqueueMany while the clients
//     run; throughput is the jobs run / (EnqueueMany returned → last handler returned),
//     and the jobs not started within 15 s are cancelled and counted. The handlers count
//     the jobs running at once on both clients (an atomic counter, raised first thing in
//     the handler and lowered last), and a poller reads the database's count of the
//     queue's running jobs (relay.GetQueue) every 20 ms: neither may exceed 5. At 1 ms a
//     job, five slots kept full would run at most ~5,000 jobs/s; "mean running" (the
//     handlers' summed time over the drain's span) says how full they were kept.
//  2. pickup: one producer commits one job per transaction at 200 jobs/s on an open-loop
//     schedule for half of -duration; handlers return at once; latency is handler start −
//     Commit returned.
func runLimited(ctx context.Context, b *bench) (*RunResult, error) {
	dur := b.opts.duration / 2
	nRate := int64(limitedRate * dur.Seconds())
	total := limitedJobs + nRate
	t := newTracker(newRecorder(b.base, int(total)), 0, nil)
	rec := t.rec
	var running, peakBacklog, peakRate, atLimit, overLimit atomic.Int64
	handler := func(_ context.Context, job *relay.Job[seqArgs]) error {
		now := time.Now()
		n := running.Add(1)
		seq := t.begin(job, now)
		backlog := seq >= 0 && seq < limitedJobs
		if backlog {
			raise(&peakBacklog, n)
		} else {
			raise(&peakRate, n)
		}
		switch {
		case n == limitedLimit:
			atLimit.Add(1)
		case n > limitedLimit:
			overLimit.Add(1)
		}
		if backlog {
			time.Sleep(limitedWork)
		}
		running.Add(-1)
		t.end(seq)
		return nil
	}

	if b.opts.analyze {
		if err := b.db.withHistory(ctx); err != nil {
			return nil, err
		}
	}
	prodPool, err := b.db.newPool(ctx, 2)
	if err != nil {
		return nil, err
	}
	defer prodPool.Close()
	schema := relay.Schema(b.opts.schema)
	if err := relay.SetQueue(ctx, prodPool, limitedQueue, relay.QueueSettings{GlobalLimit: limitedLimit}, schema); err != nil {
		return nil, err
	}
	if q, err := relay.GetQueue(ctx, prodPool, limitedQueue, schema); err != nil {
		return nil, err
	} else if q.Ordered || q.GlobalLimit != limitedLimit {
		return nil, fmt.Errorf("queue %q reads back as %+v after SetQueue(GlobalLimit: %d)", limitedQueue, q.QueueSettings, limitedLimit)
	}
	_, stopClients, err := b.startClients(ctx, limitedClients, map[string]relay.QueueConfig{limitedQueue: {Workers: limitedWorkers}}, handler)
	if err != nil {
		return nil, err
	}
	defer stopClients()
	time.Sleep(200 * time.Millisecond) // idle: start-up claims are done

	var phase atomic.Value
	phase.Store("backlog")
	var sent, peakDB, polls atomic.Int64
	stopProgress := b.progress("limited", func(time.Duration) []any {
		return []any{"phase", phase.Load(), "sent", sent.Load(), "started", rec.started.Load(), "of", total, "running", running.Load()}
	})
	defer func() {
		if stopProgress != nil {
			stopProgress()
		}
	}()
	var notes []string

	// 1. Drain a backlog, polling the database's count of running jobs.
	pollCtx, stopPoll := context.WithCancel(ctx)
	var pollErr error
	var wg sync.WaitGroup
	wg.Go(func() {
		tick := time.NewTicker(limitedPoll)
		defer tick.Stop()
		for {
			q, err := relay.GetQueue(pollCtx, prodPool, limitedQueue, schema)
			if err != nil {
				if pollCtx.Err() == nil {
					pollErr = err
				}
				return
			}
			polls.Add(1)
			raise(&peakDB, int64(q.Running))
			select {
			case <-pollCtx.Done():
				return
			case <-tick.C:
			}
		}
	})
	specs := make([]relay.JobSpec, limitedJobs)
	for i := range specs {
		specs[i] = benchKind.Job(seqArgs{Seq: int64(i)})
	}
	opts := b.enqueueOpts(limitedQueue)
	drain, err := t.backlog(ctx, b, prodPool, 0, specs, opts, &sent)
	stopPoll()
	wg.Wait()
	if err != nil {
		return nil, err
	}
	if pollErr != nil {
		return nil, fmt.Errorf("poll GetQueue: %w", pollErr)
	}

	// 2. Pickup latency at an open-loop rate.
	phase.Store("pickup")
	loop, err := enqueueOpenLoop(ctx, b, prodPool, rec, nil, limitedJobs, nRate, limitedRate, dur, &sent, func(int64) []relay.EnqueueOption { return opts })
	if err != nil {
		return nil, err
	}
	want := drain.ran + loop.sent // handlers that return
	if !waitFor(ctx, 10*time.Second, time.Millisecond, func() bool { return t.finished.Load() >= want }) {
		notes = append(notes, fmt.Sprintf("pickup: %d of %d jobs had not returned 10 s after the last commit", want-t.finished.Load(), loop.sent))
	}
	stopProgress()
	stopProgress = nil
	stopClients()

	// Results.
	var firstStart, lastEnd, busy int64
	for seq := range int64(limitedJobs) {
		s, e := rec.start[seq].Load(), t.ended[seq].Load()
		if s == 0 || e == 0 {
			continue
		}
		if firstStart == 0 || s < firstStart {
			firstStart = s
		}
		lastEnd = max(lastEnd, e)
		busy += e - s
	}
	meanRunning := 0.0
	if lastEnd > firstStart {
		meanRunning = float64(busy) / float64(lastEnd-firstStart)
	}
	p := rec.pickups(limitedJobs, limitedJobs+loop.sent, nil, nil, nil)
	b.log.Debug("slowest pickups (ms since the benchmark began)", "workload", "limited", "jobs", p.slowest)
	res := &RunResult{
		Metrics: []Metric{
			{Name: "backlog: throughput", Unit: unitRate, Value: drain.rate()},
			{Name: fmt.Sprintf("backlog: not started in %v (cancelled)", backlogDeadline), Unit: unitCount, Value: float64(drain.cut)},
			{Name: "backlog: max running at once (handlers)", Unit: unitCount, Value: float64(peakBacklog.Load()), Target: atMost(limitedLimit)},
			{Name: "backlog: max running at once (database, polled)", Unit: unitCount, Value: float64(peakDB.Load()), Target: atMost(limitedLimit)},
			{Name: "backlog: mean running (handler time ÷ span)", Unit: unitFloat, Value: meanRunning},
			{Name: fmt.Sprintf("backlog: starts that made %d running", limitedLimit), Unit: unitCount, Value: float64(atLimit.Load())},
			{Name: "pickup: rate achieved", Unit: unitRate, Value: loop.rate()},
		},
		series: []series{{label: fmt.Sprintf("pickup (%d/s, GlobalLimit %d)", limitedRate, limitedLimit), hist: p.hist}},
	}
	res.Metrics = append(res.Metrics, latencyMetrics("pickup ", p.hist, nil, nil)...)
	res.Metrics = append(res.Metrics, phaseMetrics("pickup ", rec.phases(limitedJobs, limitedJobs+loop.sent, nil))...)
	res.Metrics = append(res.Metrics,
		Metric{Name: "pickup: max running at once (handlers)", Unit: unitCount, Value: float64(peakRate.Load()), Target: atMost(limitedLimit)},
		Metric{Name: "ran twice", Unit: unitCount, Value: float64(rec.dups.Load()), Target: never()},
		Metric{Name: "never started", Unit: unitCount, Value: float64(t.missing(0, limitedJobs) + p.missing), Target: never()},
		Metric{Name: "started before Commit returned", Unit: unitCount, Value: float64(p.early)},
	)
	res.Notes = append(res.Notes,
		fmt.Sprintf("queue %q with GlobalLimit %d (SetQueue), %d clients × %d workers, each on a pool of %d connections",
			limitedQueue, limitedLimit, limitedClients, limitedWorkers, b.opts.poolConns),
		fmt.Sprintf("backlog: handlers sleep %v; %s; the database's running count polled %d times",
			limitedWork, drain.describe("jobs"), polls.Load()),
		fmt.Sprintf("pickup: %d jobs/s for %v, one job per transaction, open loop, no-op handlers", limitedRate, dur),
	)
	res.Notes = append(res.Notes, notes...)
	if peakBacklog.Load() < limitedLimit {
		res.Notes = append(res.Notes, fmt.Sprintf("backlog: the limit was never reached: at most %d jobs ran at once", peakBacklog.Load()))
	}
	if n := overLimit.Load(); n > 0 {
		res.Notes = append(res.Notes, fmt.Sprintf("%d jobs started with %d or more already running", n, limitedLimit))
	}
	if loop.maxLag > 10*time.Millisecond {
		res.Notes = append(res.Notes, fmt.Sprintf("pickup: the producer fell up to %v behind its schedule", loop.maxLag.Round(time.Millisecond)))
	}
	if loop.sent < nRate {
		res.Notes = append(res.Notes, fmt.Sprintf("pickup: the producer sent only %d of %d jobs", loop.sent, nRate))
	}
	return res, nil
}

// raise sets a to v if v is greater.
func raise(a *atomic.Int64, v int64) {
	for p := a.Load(); v > p && !a.CompareAndSwap(p, v); p = a.Load() {
	}
}
