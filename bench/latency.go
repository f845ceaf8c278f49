package main

import (
	"context"
	"fmt"
	"sync/atomic"
	"time"

	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/relayq/relay"
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

	// The floor of the producer's rate: the same loop committing a plain INSERT of a job's
	// kind, queue and args into a table of the jobs table's shape and indexes, on the same
	// pool.
	plain, err := plainAtRate(ctx, b, prodPool, rate, min(b.opts.duration, 5*time.Second))
	if err != nil {
		return nil, fmt.Errorf("plain INSERT reference: %w", err)
	}

	opts := b.enqueueOpts(benchQueue)
	var sent atomic.Int64
	stopProgress := b.progress(fmt.Sprintf("latency R=%d", rate), func(time.Duration) []any {
		return []any{"sent", sent.Load(), "done", rec.started.Load()}
	})
	prod, err := enqueueOpenLoop(ctx, b, prodPool, rec, nil, 0, n, rate, b.opts.duration, &sent,
		func(int64) []relay.EnqueueOption { return opts })
	if err != nil {
		stopProgress()
		return nil, err
	}
	total := prod.sent
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
	b.log.Debug("slowest pickups (ms since the benchmark began)", "workload", fmt.Sprintf("latency R=%d", rate), "jobs", p.slowest)
	res := &RunResult{
		Metrics: []Metric{
			{Name: "rate achieved", Unit: unitRate, Value: prod.rate(), Target: rateTarget},
			{Name: "plain INSERT producer: rate achieved", Unit: unitRate, Value: plain.rate()},
			{Name: "rate achieved / plain INSERT's", Unit: unitRatio, Value: prod.rate() / max(plain.rate(), 1)},
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
		Metric{Name: "producer tx p50 (Begin→Commit)", Unit: unitMs, Value: ms(prod.commit.ValueAtQuantile(50))},
		Metric{Name: "producer tx p99 (Begin→Commit)", Unit: unitMs, Value: ms(prod.commit.ValueAtQuantile(99))},
		Metric{Name: "producer max lag behind schedule", Unit: unitMs, Value: float64(prod.maxLag) / 1e6},
		Metric{Name: "plain INSERT producer tx p50", Unit: unitMs, Value: ms(plain.commit.ValueAtQuantile(50))},
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

// plainAtRate runs openLoop for dur with transactions that each commit a plain INSERT
// of a job's kind, queue and args (as the enqueue workload's baseline does) into a table
// of the jobs table's shape and indexes, with no NOTIFY: what the machine lets one
// producer commit at rate. It empties the table when done, so that vacuuming it does not
// fall within relay's measured run.
func plainAtRate(ctx context.Context, b *bench, pool *pgxpool.Pool, rate int, dur time.Duration) (loopResult, error) {
	table := b.db.quotedSchema() + ".plain_producer"
	if _, err := b.db.admin.Exec(ctx, "CREATE TABLE IF NOT EXISTS "+table+" (LIKE "+b.db.jobsTable()+" INCLUDING ALL)"); err != nil {
		return loopResult{}, err
	}
	defer b.db.admin.Exec(context.WithoutCancel(ctx), "TRUNCATE "+table)
	return openLoop(ctx, b, rate, int64(float64(rate)*dur.Seconds()), dur, func(int64) (time.Time, error) {
		tx, err := pool.Begin(ctx)
		if err != nil {
			return time.Time{}, err
		}
		defer tx.Rollback(ctx)
		if _, err := tx.Exec(ctx, "INSERT INTO "+table+" (kind, queue, args) VALUES ($1, $2, $3)", benchKind.Name(), benchQueue, `{"s":0}`); err != nil {
			return time.Time{}, err
		}
		if err := tx.Commit(ctx); err != nil {
			return time.Time{}, err
		}
		return time.Now(), nil
	})
}
