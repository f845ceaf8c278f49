package main

import (
	"context"
	"fmt"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"github.com/relayq/relay"
)

const (
	queuesCount   = 100
	queuesWorkers = 10
	queuesRate    = 1000 // jobs/s over all queues
)

// runQueues: one client working 100 queues with 10 workers each; jobs go round-robin to
// the queues at 1,000/s in total, one job per transaction, on an open-loop schedule shared
// by -producers senders, for -duration: at the default 20 s each queue gets ~200 jobs, so
// its p99 is not just its single slowest job. Reports each queue's p99 pickup latency.
func runQueues(ctx context.Context, b *bench) (*RunResult, error) {
	dur := b.opts.duration
	n := int64(queuesRate * dur.Seconds())
	rec := newRecorder(b.base, int(n))
	names := make([]string, queuesCount)
	queues := make(map[string]relay.QueueConfig, queuesCount)
	optsOf := make([][]relay.EnqueueOption, queuesCount)
	for i := range names {
		names[i] = fmt.Sprintf("q%03d", i)
		queues[names[i]] = relay.QueueConfig{Workers: queuesWorkers}
		optsOf[i] = b.enqueueOpts(names[i])
	}

	clientPool, prodPool, closePools, err := b.pools(ctx, b.opts.producers)
	if err != nil {
		return nil, err
	}
	defer closePools()
	c, err := b.startClient(ctx, clientPool, queues, rec.handler)
	if err != nil {
		return nil, err
	}
	defer stopClient(ctx, c)
	time.Sleep(500 * time.Millisecond) // let 100 dispatchers finish their first claims

	var (
		next, sent atomic.Int64
		wg         sync.WaitGroup
		errOnce    sync.Once
		prodErr    error
		failed     atomic.Bool
	)
	interval := float64(time.Second) / queuesRate
	stopProgress := b.progress("queues", func(time.Duration) []any {
		return []any{"sent", sent.Load(), "done", rec.started.Load()}
	})
	start := time.Now()
	for range b.opts.producers {
		wg.Go(func() {
			for !failed.Load() && ctx.Err() == nil {
				i := next.Add(1) - 1
				if i >= n {
					return
				}
				sleepUntil(ctx, start.Add(time.Duration(float64(i)*interval)))
				err := func() error {
					tx, err := prodPool.Begin(ctx)
					if err != nil {
						return err
					}
					defer tx.Rollback(ctx)
					if _, err := relay.Enqueue(ctx, tx, benchKind, seqArgs{Seq: i}, optsOf[i%queuesCount]...); err != nil {
						return err
					}
					return tx.Commit(ctx)
				}()
				if err != nil {
					errOnce.Do(func() { prodErr = err })
					failed.Store(true)
					return
				}
				rec.committed(i, time.Now())
				sent.Add(1)
			}
		})
	}
	wg.Wait()
	sendTook := time.Since(start)
	total := sent.Load()
	all := waitFor(ctx, 10*time.Second, time.Millisecond, func() bool { return rec.started.Load() >= total })
	stopProgress()
	if prodErr != nil {
		return nil, fmt.Errorf("producer: %w", prodErr)
	}
	if err := stopClient(ctx, c); err != nil {
		b.log.Warn("stop client", "error", err)
	}

	perQueue := make([]histogram, queuesCount)
	for i := range perQueue {
		perQueue[i] = newHist()
	}
	p := rec.pickups(0, n, nil, func(seq int64) int { return int(seq % queuesCount) }, perQueue)
	var lastStart int64
	for i := range total {
		lastStart = max(lastStart, rec.start[i].Load())
	}
	p99s := make([]float64, queuesCount)
	byQueue := map[string]float64{}
	best, worst := 0, 0
	for i, h := range perQueue {
		p99s[i] = ms(h.ValueAtQuantile(99))
		byQueue[names[i]] = p99s[i]
		if p99s[i] < p99s[best] {
			best = i
		}
		if p99s[i] > p99s[worst] {
			worst = i
		}
	}
	sorted := slices.Sorted(slices.Values(p99s))
	ratio := p99s[worst] / max(p99s[best], 0.001)
	span := time.Duration(lastStart - rec.since(start))
	b.log.Debug("slowest pickups (ms since the benchmark began)", "workload", "queues", "jobs", p.slowest)
	res := &RunResult{
		Metrics: []Metric{
			{Name: "throughput (jobs started / span)", Unit: unitRate, Value: float64(p.hist.TotalCount()) / span.Seconds()},
			{Name: "send rate achieved", Unit: unitRate, Value: float64(total) / sendTook.Seconds()},
		},
		Details: map[string]any{"queue_p99_ms": byQueue},
		series: []series{
			{label: "all queues", hist: p.hist},
			{label: "best queue p99 (" + names[best] + ")", hist: perQueue[best]},
			{label: "worst queue p99 (" + names[worst] + ")", hist: perQueue[worst]},
		},
	}
	res.Metrics = append(res.Metrics, latencyMetrics("all queues: pickup ", p.hist, nil, nil)...)
	res.Metrics = append(res.Metrics, phaseMetrics("all queues: ", rec.phases(0, total, nil))...)
	res.Metrics = append(res.Metrics,
		Metric{Name: "best queue p99", Unit: unitMs, Value: p99s[best]},
		Metric{Name: "median queue p99", Unit: unitMs, Value: median(sorted)},
		Metric{Name: "worst queue p99", Unit: unitMs, Value: p99s[worst]},
		Metric{Name: "worst/best queue p99", Unit: unitRatio, Value: ratio, Target: atMost(10)},
		Metric{Name: "started before Commit returned", Unit: unitCount, Value: float64(p.early)},
		Metric{Name: "never started", Unit: unitCount, Value: float64(p.missing)},
	)
	res.Notes = append(res.Notes, fmt.Sprintf("%d queues × %d workers, one client; %d jobs/s round-robin for %v, one job per transaction, open loop shared by %d senders; ~%d jobs per queue, so a queue's p99 is about its %s largest latency",
		queuesCount, queuesWorkers, queuesRate, dur, b.opts.producers, n/queuesCount, ordinal(max(1, n/queuesCount/100))))
	res.Notes = append(res.Notes, fmt.Sprintf("per-queue p99 (ms), sorted: %s", compactList(sorted)))
	if !all {
		res.Notes = append(res.Notes, fmt.Sprintf("%d jobs had not started 10 s after the last commit", p.missing))
	}
	return res, nil
}

// compactList prints a sorted list of values as its deciles: min, p10, … p90, max.
func compactList(sorted []float64) string {
	if len(sorted) == 0 {
		return ""
	}
	s := ""
	for d := 0; d <= 10; d++ {
		i := min(d*len(sorted)/10, len(sorted)-1)
		if d > 0 {
			s += " "
		}
		s += fmt.Sprintf("%.2f", sorted[i])
	}
	return "deciles " + s
}

// ordinal names the k-th largest sample a per-queue p99 stands for.
func ordinal(k int64) string {
	switch k {
	case 1:
		return "1st"
	case 2:
		return "2nd"
	case 3:
		return "3rd"
	}
	return fmt.Sprintf("%dth", k)
}
