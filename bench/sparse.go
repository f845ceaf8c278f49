package main

import (
	"context"
	"fmt"
	"time"
)

const (
	sparseJobs = 20
	// sparseGap is long enough that every connection the next job's enqueue, wakeup and
	// claim use has been idle for over a second, which pgxpool answers with a ping before
	// it hands a connection out.
	sparseGap = 1500 * time.Millisecond
)

// runSparse: pickup on a client that has been idle for a while, as most queues are most
// of the day. One job per sparseGap, each in its own transaction, on an idle client with
// 100 workers; latency is handler start − Commit returned, as in the latency workload.
// The reference is a bare NOTIFY sent halfway between two jobs, on connections idle just
// as long, in the same run.
func runSparse(ctx context.Context, b *bench) (*RunResult, error) {
	rec := newRecorder(b.base, sparseJobs)
	prodPool, stop, err := b.idleClient(ctx, rec, 1)
	if err != nil {
		return nil, err
	}
	defer stop()

	type reference struct {
		hist histogram
		err  error
	}
	refDone := make(chan reference, 1)
	go func() {
		h, err := notifyRoundTrip(ctx, b, sparseJobs, func(i int) time.Duration { return sparseGap/2 + time.Duration(i)*sparseGap })
		refDone <- reference{h, err}
	}()
	stopProgress := b.progress("sparse", func(time.Duration) []any { return []any{"started", rec.started.Load(), "of", sparseJobs} })
	opts := b.enqueueOpts(benchQueue)
	start := time.Now()
	for i := range int64(sparseJobs) {
		sleepUntil(ctx, start.Add(time.Duration(i+1)*sparseGap))
		if _, _, err := enqueueOne(ctx, prodPool, rec, i, opts); err != nil {
			stopProgress()
			return nil, err
		}
	}
	allStarted := waitFor(ctx, 10*time.Second, time.Millisecond, func() bool { return rec.started.Load() >= sparseJobs })
	stopProgress()
	ref := <-refDone
	if ref.err != nil {
		return nil, fmt.Errorf("NOTIFY reference: %w", ref.err)
	}

	p := rec.pickups(0, sparseJobs, nil, nil, nil)
	res := &RunResult{series: []series{{label: "sparse", hist: p.hist}}}
	res.Metrics = append(res.Metrics, latencyMetrics("pickup ", p.hist, nil, nil)...)
	res.Metrics = append(res.Metrics, againstNotify("pickup", p.hist, ref.hist, true)...)
	res.Metrics = append(res.Metrics,
		Metric{Name: "started > 100 ms after commit", Unit: unitCount, Value: float64(rec.lateStarts(0, sparseJobs, lateAfter)), Target: never()},
		Metric{Name: "never started", Unit: unitCount, Value: float64(p.missing), Target: never()},
	)
	res.Metrics = append(res.Metrics, phaseMetrics("", rec.phases(0, sparseJobs, nil))...)
	res.Notes = append(res.Notes, fmt.Sprintf("%d jobs %v apart, a NOTIFY reference halfway between each two; each p99 is over %d samples, so it is about the max",
		sparseJobs, sparseGap, sparseJobs))
	if !allStarted {
		res.Notes = append(res.Notes, fmt.Sprintf("%d of %d jobs had not started 10 s after the last commit", p.missing, sparseJobs))
	}
	return res, nil
}
