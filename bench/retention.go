package main

import (
	"context"
	"fmt"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/relayq/relay"
	"github.com/relayq/relay/internal/cpustat"
)

// The retention workloads: does pruning keep the table at a steady size under a steady
// load, at what cost, and what does it cost to delete a large backlog of finished jobs?

const (
	retentionBatch     = 10 // jobs per enqueueing transaction
	retentionProducers = 4
	sampleEvery        = 5 * time.Second
)

// keepEverything is a retention under which nothing is pruned.
var keepEverything = relay.Retention{Succeeded: relay.KeepForever, Failed: relay.KeepForever, Cancelled: relay.KeepForever}

// runRetention: the same steady workload twice, each on a freshly migrated schema: first
// with every job kept, then with a retention of -retention-keep for every finished state.
// Producers offer -retention-rate jobs/s (batches of 10 per transaction, open loop) for
// -retention-duration to a client with 100 workers whose jobs return at once. Every 5 s it
// samples the jobs table: its size with indexes (pg_total_relation_size), heap, indexes,
// live and dead tuples and the deletes counted so far (pg_stat_user_tables). Throughput
// and pickup latency are measured after a 5 s warm-up; the sizes are flat if the largest
// of the last third of the run is no larger than that of the middle third.
func runRetention(ctx context.Context, b *bench) (*RunResult, error) {
	res := &RunResult{Details: map[string]any{}}
	var phases [2]steadyPhase
	for i, keep := range []time.Duration{relay.KeepForever, b.opts.retentionKeep} {
		if i > 0 {
			if err := b.db.reset(ctx); err != nil {
				return nil, err
			}
		}
		p, err := runSteady(ctx, b, keep)
		if err != nil {
			return nil, err
		}
		phases[i] = p
		label := p.label()
		res.Metrics = append(res.Metrics,
			Metric{Name: label + ": completed", Unit: unitRate, Value: p.completed},
			Metric{Name: label + ": pickup p50", Unit: unitMs, Value: ms(p.pickup.ValueAtQuantile(50))},
			Metric{Name: label + ": pickup p99", Unit: unitMs, Value: ms(p.pickup.ValueAtQuantile(99))},
			Metric{Name: label + ": table+indexes at the end", Unit: unitMB, Value: mb(p.last().Total)},
			Metric{Name: label + ":   heap / indexes", Unit: unitFloat, Value: float64(p.last().Heap) / float64(max(p.last().Indexes, 1))},
			Metric{Name: label + ":   live rows at the end", Unit: unitCount, Value: float64(p.last().Live)},
			Metric{Name: label + ":   dead rows at the end", Unit: unitCount, Value: float64(p.last().Dead)},
			Metric{Name: label + ": cpu other processes", Unit: unitCores, Value: p.otherCPU},
		)
		res.Details[label+" samples"] = p.samples
		res.Notes = append(res.Notes, label+": "+p.table(), label+": slowest pickups, with when the job was committed: "+strings.Join(p.slowest, ", "))
		if i == 0 {
			continue
		}
		growth := 100 * (float64(p.maxSize(2, 3)) - float64(p.maxSize(1, 3))) / float64(max(p.maxSize(1, 3), 1))
		after := p.since(b.opts.retentionKeep + 2*sampleEvery)
		res.Metrics = append(res.Metrics,
			Metric{Name: label + ": size growth, last third over middle third", Unit: unitPct, Value: growth, Target: atMost(10)},
			Metric{Name: label + ": deleted once the window had passed", Unit: unitRate, Value: after.deleteRate()},
		)
	}
	ratio := 100 * phases[1].completed / max(phases[0].completed, 1)
	res.Metrics = append(res.Metrics,
		Metric{Name: "throughput with pruning ÷ without", Unit: unitPct, Value: ratio, Target: atLeast(90)},
		Metric{Name: "pickup p99 with pruning ÷ without", Unit: unitPct,
			Value: 100 * float64(phases[1].pickup.ValueAtQuantile(99)) / float64(max(phases[0].pickup.ValueAtQuantile(99), 1))},
	)
	res.Notes = append(res.Notes, fmt.Sprintf("%d producers offer %d jobs/s in batches of %d for %v per phase; pruning every %v (a tenth of the retention, at least 1 s) in batches of 1,000",
		retentionProducers, b.opts.retentionRate, retentionBatch, b.opts.retentionDuration, max(b.opts.retentionKeep/10, time.Second)))
	return res, nil
}

// steadyPhase is one run of the steady workload.
type steadyPhase struct {
	keep      time.Duration
	completed float64 // jobs/s started after the warm-up
	pickup    histogram
	samples   []sizeSample
	otherCPU  float64
	slowest   []string // the slowest pickups, and when their jobs were committed
}

func (p steadyPhase) label() string {
	if p.keep < 0 {
		return "kept"
	}
	return "retention " + p.keep.String()
}

func (p steadyPhase) last() sizeSample { return p.samples[len(p.samples)-1] }

// maxSize is the largest total size among the samples of the part-th of parts equal
// parts of the run (0: the first).
func (p steadyPhase) maxSize(part, parts int) int64 {
	n := len(p.samples)
	var m int64
	for _, s := range p.samples[n*part/parts : n*(part+1)/parts] {
		m = max(m, s.Total)
	}
	return m
}

// since is the phase from elapsed time at on.
func (p steadyPhase) since(at time.Duration) steadyPhase {
	for i, s := range p.samples {
		if s.Elapsed >= at {
			p.samples = p.samples[i:]
			return p
		}
	}
	p.samples = p.samples[len(p.samples)-1:]
	return p
}

// deleteRate is the rows deleted per second between the first and last samples.
func (p steadyPhase) deleteRate() float64 {
	a, z := p.samples[0], p.last()
	return rateOver(z.Deleted-a.Deleted, z.Elapsed-a.Elapsed)
}

// table renders the samples, one line each.
func (p steadyPhase) table() string {
	var s strings.Builder
	s.WriteString("every 5 s — elapsed: table+indexes MB (heap + indexes), live rows, dead rows, rows deleted/s since the last sample:")
	for i, x := range p.samples {
		rate := 0.0
		if i > 0 {
			prev := p.samples[i-1]
			rate = rateOver(x.Deleted-prev.Deleted, x.Elapsed-prev.Elapsed)
		}
		fmt.Fprintf(&s, "\n      %4.0fs: %6.1f (%.1f + %.1f), %s live, %s dead, %s/s deleted",
			x.Elapsed.Seconds(), mb(x.Total), mb(x.Heap), mb(x.Indexes), thousands(float64(x.Live)), thousands(float64(x.Dead)), thousands(rate))
	}
	return s.String()
}

// runSteady runs the steady workload once with retention keep for every finished state
// (KeepForever: nothing pruned).
func runSteady(ctx context.Context, b *bench, keep time.Duration) (steadyPhase, error) {
	p := steadyPhase{keep: keep}
	dur, rate := b.opts.retentionDuration, b.opts.retentionRate
	capacity := int64(float64(rate)*(dur+10*time.Second).Seconds()) + retentionBatch*retentionProducers
	rec := newRecorder(b.base, int(capacity))
	clientPool, prodPool, closePools, err := b.pools(ctx, retentionProducers)
	if err != nil {
		return p, err
	}
	defer closePools()
	retention := relay.Retention{Succeeded: keep, Failed: keep, Cancelled: keep}
	c, err := b.startClient(ctx, clientPool, map[string]relay.QueueConfig{benchQueue: {Workers: 100}}, rec.handler,
		func(cfg *relay.Config) { cfg.Retention = retention })
	if err != nil {
		return p, err
	}
	defer stopClient(ctx, c)

	var (
		nextSeq  atomic.Int64
		stopping atomic.Bool
		wg       sync.WaitGroup
		errOnce  sync.Once
		prodErr  error
	)
	interval := time.Duration(float64(time.Second) * retentionBatch * retentionProducers / float64(rate))
	opts := b.enqueueOpts(benchQueue)
	began := time.Now()
	for i := range retentionProducers {
		wg.Go(func() {
			specs := make([]relay.JobSpec, retentionBatch)
			next := began.Add(time.Duration(i) * interval / retentionProducers)
			for !stopping.Load() && ctx.Err() == nil {
				sleepUntil(ctx, next)
				next = next.Add(interval) // open loop: behind schedule, send at once
				seq0 := nextSeq.Add(retentionBatch) - retentionBatch
				if seq0+retentionBatch > capacity {
					return
				}
				for j := range specs {
					specs[j] = benchKind.Job(seqArgs{Seq: seq0 + int64(j)})
				}
				if err := enqueueInTx(ctx, prodPool, specs, opts); err != nil {
					errOnce.Do(func() { prodErr = err })
					stopping.Store(true)
					return
				}
				now := time.Now()
				for j := range int64(retentionBatch) {
					rec.committed(seq0+j, now)
				}
			}
		})
	}
	stopProgress := b.progress(p.label(), func(time.Duration) []any {
		return []any{"sent", nextSeq.Load(), "done", rec.started.Load()}
	})
	cpu0 := cpustat.Take(b.db.postmasterPID())
	warm := began.Add(5 * time.Second)
	var startedAtWarm int64
	for at := began; ; at = at.Add(sampleEvery) {
		sleepUntil(ctx, at)
		if ctx.Err() != nil || prodErr != nil {
			break
		}
		if at.Equal(warm) {
			startedAtWarm = rec.started.Load()
		}
		s, err := b.db.sizes(ctx)
		if err != nil {
			stopProgress()
			return p, err
		}
		s.Elapsed = at.Sub(began)
		p.samples = append(p.samples, s)
		if s.Elapsed >= dur {
			break
		}
	}
	end := time.Now()
	startedAtEnd := rec.started.Load()
	stopping.Store(true)
	wg.Wait()
	cpu := cpuMetrics(cpu0, cpustat.Take(b.db.postmasterPID()))
	p.otherCPU = cpu[len(cpu)-1].Value
	stopProgress()
	if prodErr != nil {
		return p, fmt.Errorf("producer: %w", prodErr)
	}
	p.completed = rateOver(startedAtEnd-startedAtWarm, end.Sub(warm))
	lo, hi := rec.since(warm), rec.since(end)
	pk := rec.pickups(0, min(nextSeq.Load(), capacity), func(_ int64, commit int64) bool { return commit >= lo && commit < hi }, nil, nil)
	p.pickup = pk.hist
	for _, j := range pk.slowest {
		s := fmt.Sprintf("%v at %.1fs", j.Latency.Round(time.Millisecond), j.CommitMs/1000-began.Sub(b.base).Seconds())
		if !slices.Contains(p.slowest, s) { // the jobs of one batch share their commit
			p.slowest = append(p.slowest, s)
		}
	}
	return p, nil
}

// enqueueInTx enqueues specs in one transaction on pool.
func enqueueInTx(ctx context.Context, pool *pgxpool.Pool, specs []relay.JobSpec, opts []relay.EnqueueOption) error {
	tx, err := pool.Begin(ctx)
	if err != nil {
		return err
	}
	defer tx.Rollback(ctx)
	if _, err := relay.EnqueueMany(ctx, tx, specs, opts...); err != nil {
		return err
	}
	return tx.Commit(ctx)
}

// runPruneBacklog: -prune-backlog finished jobs (10 million), succeeded two days ago,
// inserted directly and vacuumed, under a latency workload (one job per transaction at
// -prune-rate jobs/s, a client with 100 workers that keeps every job): 20 s without
// pruning, then a second client with the default retention (24 h) starts and deletes the
// backlog. Reports how long that takes and the latency of the workload before and during.
func runPruneBacklog(ctx context.Context, b *bench) (*RunResult, error) {
	n := b.opts.pruneBacklog
	t := time.Now()
	if err := b.db.insertFinished(ctx, n, 48*time.Hour); err != nil {
		return nil, err
	}
	before, err := b.db.sizes(ctx)
	if err != nil {
		return nil, err
	}
	b.log.Info("backlog ready", "jobs", n, "took", time.Since(t).Round(time.Second), "table+indexes MB", mb(before.Total))

	const baseline = 20 * time.Second
	rate := b.opts.pruneRate
	capacity := int64(rate)*int64((baseline+time.Hour)/time.Second) + 1
	rec := newRecorder(b.base, int(capacity))
	clientPool, prodPool, closePools, err := b.pools(ctx, 2)
	if err != nil {
		return nil, err
	}
	defer closePools()
	c, err := b.startClient(ctx, clientPool, map[string]relay.QueueConfig{benchQueue: {Workers: 100}}, rec.handler,
		func(cfg *relay.Config) { cfg.Retention = keepEverything })
	if err != nil {
		return nil, err
	}
	defer stopClient(ctx, c)
	time.Sleep(200 * time.Millisecond)

	prodCtx, stopProducer := context.WithCancel(ctx)
	defer stopProducer()
	var sent atomic.Int64
	produced := make(chan loopResult, 1)
	go func() {
		r, err := enqueueOpenLoop(prodCtx, b, prodPool, rec, nil, 0, capacity, rate, time.Hour, &sent,
			func(int64) []relay.EnqueueOption { return b.enqueueOpts(benchQueue) })
		if err != nil && prodCtx.Err() == nil {
			b.log.Error("producer", "error", err)
		}
		produced <- r
	}()
	pgPID := b.db.postmasterPID()
	t0, cpu0 := time.Now(), cpustat.Take(pgPID)
	sleepUntil(ctx, t0.Add(baseline))
	t1, cpu1 := time.Now(), cpustat.Take(pgPID)

	// The pruning client: default retention, a queue of its own that nothing is sent to.
	pruneCtx, cancel := context.WithCancel(ctx)
	defer cancel()
	pool, err := b.db.newPool(pruneCtx, 4)
	if err != nil {
		return nil, err
	}
	defer pool.Close()
	pruner, err := b.startClient(ctx, pool, map[string]relay.QueueConfig{"bench-idle": {Workers: 1}}, rec.handler)
	if err != nil {
		return nil, err
	}
	defer stopClient(ctx, pruner)
	stopProgress := b.progress("prune backlog", func(time.Duration) []any {
		return []any{"sent", sent.Load(), "done", rec.started.Load()}
	})
	var samples []sizeSample
	done := false
	for at := t1.Add(time.Second); !done && ctx.Err() == nil; at = at.Add(time.Second) {
		sleepUntil(ctx, at)
		if done, err = b.db.noExpiredLeft(ctx); err != nil {
			stopProgress()
			return nil, err
		}
		if len(samples) == 0 || done || at.Sub(t1) >= samples[len(samples)-1].Elapsed+30*time.Second {
			s, err := b.db.sizes(ctx)
			if err != nil {
				stopProgress()
				return nil, err
			}
			s.Elapsed = at.Sub(t1)
			samples = append(samples, s)
			b.log.Info("pruning", "elapsed", s.Elapsed, "deleted", s.Deleted-before.Deleted, "dead", s.Dead)
		}
	}
	t2, cpu2 := time.Now(), cpustat.Take(pgPID)
	stopProducer()
	loop := <-produced
	stopProgress()
	waitFor(ctx, 10*time.Second, time.Millisecond, func() bool { return rec.started.Load() >= sent.Load() })

	window := func(from, to time.Time) histogram {
		lo, hi := rec.since(from), rec.since(to)
		return rec.pickups(0, min(sent.Load(), capacity), func(_ int64, commit int64) bool { return commit >= lo && commit < hi }, nil, nil).hist
	}
	calm, pruning := window(t0, t1), window(t1, t2)
	took := t2.Sub(t1)
	last := samples[len(samples)-1]
	other := func(a, z cpustat.Sample) float64 { m := cpuMetrics(a, z); return m[len(m)-1].Value }
	res := &RunResult{
		Metrics: []Metric{
			{Name: "backlog of finished jobs", Unit: unitCount, Value: float64(n)},
			{Name: "table+indexes before", Unit: unitMB, Value: mb(before.Total)},
			{Name: "time to delete it", Unit: unitSec, Value: took.Seconds()},
			{Name: "deleted", Unit: unitRate, Value: rateOver(last.Deleted-before.Deleted, took)},
			{Name: "dead rows left for VACUUM at the end", Unit: unitCount, Value: float64(last.Dead)},
			{Name: "producer rate achieved", Unit: unitRate, Value: rateOver(loop.sent, t2.Sub(t0))},
		},
	}
	res.Metrics = append(res.Metrics, latencyMetrics("latency without pruning ", calm, nil, nil)...)
	res.Metrics = append(res.Metrics, Metric{Name: "latency without pruning: cpu other processes", Unit: unitCores, Value: other(cpu0, cpu1)})
	res.Metrics = append(res.Metrics, latencyMetrics("latency while pruning ", pruning, nil, nil)...)
	res.Metrics = append(res.Metrics, Metric{Name: "latency while pruning: cpu other processes", Unit: unitCores, Value: other(cpu1, cpu2)})
	res.Notes = append(res.Notes, fmt.Sprintf("%s jobs succeeded two days before, inserted with generate_series and vacuumed; a latency workload at %d jobs/s (one job per transaction) runs 20 s, then a client with the default retention (24 h) starts and deletes them, 1,000 per statement",
		thousands(float64(n)), rate))
	return res, nil
}

// sizeSample is a reading of the jobs table's size (bytes) and row counts, Elapsed into
// its phase.
type sizeSample struct {
	Elapsed              time.Duration
	Total, Heap, Indexes int64
	Live, Dead, Deleted  int64
}

// sizes reads the size of the jobs table with its indexes (and each), its live and
// dead tuples and the deletes counted so far.
func (d *database) sizes(ctx context.Context) (sizeSample, error) {
	d.adminStatements++
	var s sizeSample
	err := d.admin.QueryRow(ctx, `SELECT pg_total_relation_size(c.oid), pg_relation_size(c.oid), pg_indexes_size(c.oid),
			coalesce(t.n_live_tup, 0), coalesce(t.n_dead_tup, 0), coalesce(t.n_tup_del, 0)
		FROM pg_class c LEFT JOIN pg_stat_user_tables t ON t.relid = c.oid
		WHERE c.oid = $1::regclass`, d.jobsTable()).Scan(&s.Total, &s.Heap, &s.Indexes, &s.Live, &s.Dead, &s.Deleted)
	return s, err
}

// insertFinished inserts n jobs that succeeded ago before now, in transactions of a
// million, then vacuums and analyzes the table, as a table that has held them for a
// while would be.
func (d *database) insertFinished(ctx context.Context, n int64, ago time.Duration) error {
	const chunk = 1_000_000
	for lo := int64(0); lo < n; lo += chunk {
		d.adminStatements++
		_, err := d.admin.Exec(ctx, `INSERT INTO `+d.jobsTable()+`
			(kind, queue, args, state, attempt, max_attempts, created_at, run_at, attempted_at, attempted_by, finished_at)
			SELECT 'bench', 'old-' || (i % 20), jsonb_build_object('s', i), 'succeeded', 1, 20,
			       now() - $3::interval - interval '1 minute', now() - $3::interval - interval '1 minute',
			       now() - $3::interval - interval '1 second', 'bench-backfill', now() - $3::interval + (i % 3600) * interval '1 second'
			FROM generate_series($1::bigint, $2::bigint) i`, lo, min(lo+chunk, n)-1, ago)
		if err != nil {
			return fmt.Errorf("insert the backlog: %w", err)
		}
		d.log.Info("inserting the backlog", "jobs", min(lo+chunk, n))
	}
	d.adminStatements++
	if _, err := d.admin.Exec(ctx, "VACUUM (ANALYZE) "+d.jobsTable()); err != nil {
		return fmt.Errorf("vacuum the backlog: %w", err)
	}
	return nil
}

// noExpiredLeft reports whether no job that succeeded over a day ago is left: one probe
// of jobs_expiry_idx per queue of the backlog.
func (d *database) noExpiredLeft(ctx context.Context) (bool, error) {
	d.adminStatements++
	var left bool
	err := d.admin.QueryRow(ctx, `SELECT EXISTS (
			SELECT FROM unnest(array(SELECT 'old-' || i FROM generate_series(0, 19) i)) q
			WHERE EXISTS (SELECT FROM `+d.jobsTable()+` j
			              WHERE j.state = 'succeeded' AND j.queue = q AND j.finished_at < now() - interval '1 day'))`).Scan(&left)
	return !left, err
}

func mb(bytes int64) float64 { return float64(bytes) / (1 << 20) }
