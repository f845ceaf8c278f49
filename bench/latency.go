package main

import (
	"context"
	"fmt"
	"sync/atomic"
	"time"
)

// runLatency: an idle client with 100 workers on one queue; one producer enqueues one job
// per transaction on an open-loop schedule at rate jobs/s for the configured duration.
// Latency is handler start − Commit returned.
func runLatency(ctx context.Context, b *bench, rate int) (*RunResult, error) {
	n := int64(float64(rate) * b.opts.duration.Seconds())
	rec := newRecorder(b.base, int(n))
	// The floor: a bare NOTIFY's round trip at the same rate, measured in this run.
	ref, err := notifyAtRate(ctx, b, rate, min(b.opts.duration, 5*time.Second))
	if err != nil {
		return nil, fmt.Errorf("NOTIFY reference: %w", err)
	}
	gap := time.Second / time.Duration(rate)
	stmtIdle, stmtHot, err := statementRoundTrips(ctx, b, int(float64(rate)*min(b.opts.duration, 2*time.Second).Seconds()),
		func(i int) time.Duration { return time.Duration(i) * gap })
	if err != nil {
		return nil, fmt.Errorf("statement reference: %w", err)
	}

	prodPool, stop, err := b.idleClient(ctx, rec, 2)
	if err != nil {
		return nil, err
	}
	defer stop()
	time.Sleep(200 * time.Millisecond) // idle: start-up claims are done

	opts := b.enqueueOpts(benchQueue)
	txTime := newHist() // Begin → Commit returned, on the producer
	var sent atomic.Int64
	var maxLag time.Duration
	stopProgress := b.progress(fmt.Sprintf("latency R=%d", rate), func(time.Duration) []any {
		return []any{"sent", sent.Load(), "done", rec.started.Load()}
	})
	interval := float64(time.Second) / float64(rate)
	giveUp := 2*b.opts.duration + 5*time.Second // a producer that far behind schedule stops
	start := time.Now()
	var last time.Time
	for i := range n {
		due := start.Add(time.Duration(float64(i) * interval))
		sleepUntil(ctx, due) // behind schedule: send at once, skip nothing
		if ctx.Err() != nil {
			break
		}
		t0 := time.Now()
		maxLag = max(maxLag, t0.Sub(due))
		var err error
		if last, err = enqueueOne(ctx, prodPool, rec, i, opts); err != nil {
			stopProgress()
			return nil, err
		}
		sent.Store(i + 1)
		record(txTime, last.Sub(t0))
		if last.Sub(start) > giveUp {
			b.log.Warn("producer too far behind schedule; stopping early", "sent", i+1, "of", n)
			break
		}
	}
	total := sent.Load()
	elapsed := last.Sub(start)
	allStarted := waitFor(ctx, 10*time.Second, time.Millisecond, func() bool { return rec.started.Load() >= total })
	stopProgress()
	stop()

	p := rec.pickups(0, total, nil, nil, nil)
	var rateTarget, p50, p99 *Target
	switch rate {
	case 100:
		p50, p99 = atMost(0.5), atMost(1.5)
	case 1000:
		rateTarget, p50, p99 = atLeast(0.99*float64(rate)), atMost(0.8), atMost(3)
	}
	achieved := 0.0
	if total > 1 && elapsed > 0 {
		// total jobs over the time from the first scheduled send to the last Commit
		achieved = float64(total) / elapsed.Seconds()
	}
	b.log.Debug("slowest pickups (ms since the benchmark began)", "workload", fmt.Sprintf("latency R=%d", rate), "jobs", p.slowest)
	res := &RunResult{
		Metrics: []Metric{
			{Name: "rate achieved", Unit: unitRate, Value: achieved, Target: rateTarget},
		},
		series: []series{{label: fmt.Sprintf("R=%d", rate), hist: p.hist}},
	}
	res.Metrics = append(res.Metrics, latencyMetrics("latency ", p.hist, p50, p99)...)
	res.Metrics = append(res.Metrics, againstNotify("latency", p.hist, ref, rate == 100)...)
	res.Metrics = append(res.Metrics,
		Metric{Name: fmt.Sprintf("SELECT 1 round trip p50, %d/s", rate), Unit: unitMs, Value: ms(stmtIdle.ValueAtQuantile(50))},
		Metric{Name: "SELECT 1 round trip p50, back to back", Unit: unitMs, Value: ms(stmtHot.ValueAtQuantile(50))},
	)
	res.Metrics = append(res.Metrics,
		Metric{Name: "started > 100 ms after commit", Unit: unitCount, Value: float64(rec.lateStarts(0, total, lateAfter)), Target: never()},
	)
	res.Metrics = append(res.Metrics, phaseMetrics("", rec.phases(0, total, nil))...)
	res.Metrics = append(res.Metrics,
		Metric{Name: "started before Commit returned", Unit: unitCount, Value: float64(p.early)},
		Metric{Name: "never started", Unit: unitCount, Value: float64(p.missing)},
		Metric{Name: "ran twice", Unit: unitCount, Value: float64(rec.dups.Load())},
		Metric{Name: "producer tx p50 (Begin→Commit)", Unit: unitMs, Value: ms(txTime.ValueAtQuantile(50))},
		Metric{Name: "producer tx p99 (Begin→Commit)", Unit: unitMs, Value: ms(txTime.ValueAtQuantile(99))},
		Metric{Name: "producer max lag behind schedule", Unit: unitMs, Value: float64(maxLag) / 1e6},
	)
	if p.early > 0 {
		res.Notes = append(res.Notes, fmt.Sprintf("%d jobs started before their Commit returned (earliest by %v); recorded as 0 ms in the histogram", p.early, p.maxEarly.Round(time.Microsecond)))
	}
	if !allStarted {
		res.Notes = append(res.Notes, fmt.Sprintf("%d of %d jobs had not started 10 s after the last commit", p.missing, total))
	}
	if total < n {
		res.Notes = append(res.Notes, fmt.Sprintf("the producer sent only %d of %d jobs", total, n))
	}
	return res, nil
}
