package main

import (
	"context"
	"fmt"
	"sync/atomic"
	"time"
)

var burstGaps = []time.Duration{20 * time.Millisecond, 50 * time.Millisecond, 95 * time.Millisecond}

const (
	burstPairs = 10 // per gap
	burstIdle  = 200 * time.Millisecond
)

// runBurst: on an idle client, two jobs each in its own transaction, the second sent a
// gap after the first's Commit returned; ten pairs per gap, the gaps interleaved, with
// an idle pause between pairs. Reports the pickup latency of the second job per gap.
func runBurst(ctx context.Context, b *bench) (*RunResult, error) {
	n := 2 * burstPairs * len(burstGaps)
	rec := newRecorder(b.base, n)
	prodPool, stop, err := b.idleClient(ctx, rec, 2)
	if err != nil {
		return nil, err
	}
	defer stop()

	opts := b.enqueueOpts(benchQueue)
	enqueue := func(seq int64) (time.Time, error) {
		committed, _, err := enqueueOne(ctx, prodPool, rec, seq, opts)
		return committed, err
	}
	// gapOf[seq] is the index of the gap of pair seq/2.
	gapOf := make([]int, n)
	var pairs atomic.Int64
	stopProgress := b.progress("burst-after-idle", func(time.Duration) []any {
		return []any{"pairs", pairs.Load(), "of", n / 2}
	})
	seq := int64(0)
	for range burstPairs {
		for gi, gap := range burstGaps {
			time.Sleep(burstIdle)
			a := seq
			gapOf[a], gapOf[a+1] = gi, gi
			seq += 2
			at, err := enqueue(a)
			if err != nil {
				stopProgress()
				return nil, err
			}
			sleepUntil(ctx, at.Add(gap))
			if _, err := enqueue(a + 1); err != nil {
				stopProgress()
				return nil, err
			}
			if !waitFor(ctx, 5*time.Second, 100*time.Microsecond, func() bool {
				return rec.start[a].Load() != 0 && rec.start[a+1].Load() != 0
			}) {
				stopProgress()
				return nil, fmt.Errorf("burst: a job of pair %d did not start within 5 s", a/2)
			}
			pairs.Add(1)
		}
	}
	stopProgress()

	res := &RunResult{}
	second := make([]histogram, len(burstGaps))
	for i := range second {
		second[i] = newHist()
	}
	p := rec.pickups(0, int64(n), func(seq, _ int64) bool { return seq%2 == 1 }, func(seq int64) int { return gapOf[seq] }, second)
	first := rec.pickups(0, int64(n), func(seq, _ int64) bool { return seq%2 == 0 }, nil, nil)
	for gi, gap := range burstGaps {
		h := second[gi]
		label := fmt.Sprintf("gap %v: 2nd job ", gap)
		res.Metrics = append(res.Metrics,
			Metric{Name: label + "p50", Unit: unitMs, Value: ms(h.ValueAtQuantile(50))},
			Metric{Name: label + "p99", Unit: unitMs, Value: ms(h.ValueAtQuantile(99)), Target: atMost(5)},
			Metric{Name: label + "max", Unit: unitMs, Value: ms(h.Max())},
		)
		res.series = append(res.series, series{label: fmt.Sprintf("2nd job, gap %v", gap), hist: h})
	}
	res.Metrics = append(res.Metrics, phaseMetrics("2nd jobs: ", rec.phases(0, int64(n), func(seq int64) bool { return seq%2 == 1 }))...)
	res.Metrics = append(res.Metrics,
		Metric{Name: "1st job (after idle) p50", Unit: unitMs, Value: ms(first.hist.ValueAtQuantile(50))},
		Metric{Name: "1st job (after idle) max", Unit: unitMs, Value: ms(first.hist.Max())},
		Metric{Name: "started before Commit returned", Unit: unitCount, Value: float64(p.early + first.early)},
	)
	res.series = append(res.series, series{label: "1st job (after idle)", hist: first.hist})
	res.Notes = append(res.Notes, fmt.Sprintf("%d pairs per gap, gaps interleaved, %v idle before each pair; the gap runs from the 1st Commit returning to the 2nd Begin; each p99 is over %d samples, so it is about the max",
		burstPairs, burstIdle, burstPairs))
	return res, nil
}
