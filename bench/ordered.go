package main

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"slices"
	"sync/atomic"
	"time"

	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/relayq/relay"
)

const (
	orderedQueue      = "bench-ordered"
	orderedClients    = 2
	orderedWorkers    = relay.DefaultWorkers // per client
	orderedRate       = 200                  // jobs/s of the pickup phase …
	orderedRateKeys   = 50                   // … round-robin over this many keys
	orderedChainJobs  = 2_000                // the queue-wide sequence, one EnqueueMany
	orderedSpreadKeys = 100                  // the spread backlog: keys …
	orderedPerKey     = 50                   // … × jobs of each, one EnqueueMany
	// backlogDeadline bounds each backlog phase of ordered and limited: jobs not started by
	// then are cancelled, so that they neither run into the next phase nor stretch the run.
	backlogDeadline = 15 * time.Second
)

// runOrdered: the queue "bench-ordered" is made ordered (relay.SetQueue) and served by two
// clients with 100 workers each, on pools of their own; handlers return at once. Three
// phases, one after the other:
//
//  1. pickup: one producer commits one job per transaction at 200 jobs/s on an open-loop
//     schedule for half of -duration, round-robin over 50 order keys; latency is handler
//     start − Commit returned.
//  2. queue-wide sequence: 2,000 jobs without an order key (one sequence for the whole
//     queue) in one EnqueueMany; throughput is the jobs run / (EnqueueMany returned → last
//     handler returned), and the hand-off is the start of each job − the return of the one
//     before it: its outcome written, the NOTIFY that frees the sequence, the next claim.
//  3. spread backlog: 100 keys × 50 jobs in one EnqueueMany, keys interleaved; throughput
//     as in 2, and the hand-off within each key.
//
// A backlog phase gets 15 s: the jobs it has not started by then are cancelled and
// counted. Every job's id, start and return are kept: a job that starts before an
// earlier-enqueued job of its key (lower id) has started is out of order; one that starts
// before the job before it in its key has returned, or finds another job of its key
// running when it starts (a counter per key), overlapped.
func runOrdered(ctx context.Context, b *bench) (*RunResult, error) {
	dur := b.opts.duration / 2
	nRate := int64(orderedRate * dur.Seconds())
	loChain := nRate
	loSpread := loChain + orderedChainJobs
	total := loSpread + orderedSpreadKeys*orderedPerKey
	keyOf := func(seq int64) int { // 0–49 the pickup phase's keys, 50 the sequence, then the spread's
		switch {
		case seq < loChain:
			return int(seq % orderedRateKeys)
		case seq < loSpread:
			return orderedRateKeys
		}
		return orderedRateKeys + 1 + int((seq-loSpread)%orderedSpreadKeys)
	}
	t := newTracker(newRecorder(b.base, int(total)), orderedRateKeys+1+orderedSpreadKeys, keyOf)
	rec := t.rec

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
	if err := relay.SetQueue(ctx, prodPool, orderedQueue, relay.QueueSettings{Ordered: true}, schema); err != nil {
		return nil, err
	}
	if q, err := relay.GetQueue(ctx, prodPool, orderedQueue, schema); err != nil {
		return nil, err
	} else if !q.Ordered || q.GlobalLimit != 0 {
		return nil, fmt.Errorf("queue %q reads back as %+v after SetQueue(Ordered)", orderedQueue, q.QueueSettings)
	}
	_, stopClients, err := b.startClients(ctx, orderedClients, map[string]relay.QueueConfig{orderedQueue: {Workers: orderedWorkers}},
		func(_ context.Context, job *relay.Job[seqArgs]) error {
			t.end(t.begin(job, time.Now()))
			return nil
		})
	if err != nil {
		return nil, err
	}
	defer stopClients()
	time.Sleep(200 * time.Millisecond) // idle: start-up claims are done

	var phase atomic.Value
	phase.Store("pickup")
	var sent atomic.Int64
	stopProgress := b.progress("ordered", func(time.Duration) []any {
		return []any{"phase", phase.Load(), "sent", sent.Load(), "started", rec.started.Load(), "of", total}
	})
	defer func() {
		if stopProgress != nil {
			stopProgress()
		}
	}()
	var notes []string

	// 1. Pickup latency at an open-loop rate.
	opts := b.enqueueOpts(orderedQueue)
	keyOpts := make([][]relay.EnqueueOption, orderedRateKeys)
	for k := range keyOpts {
		keyOpts[k] = append(slices.Clone(opts), relay.OrderKey(fmt.Sprintf("r%02d", k)))
	}
	loop, err := enqueueOpenLoop(ctx, b, prodPool, rec, t.ids, 0, nRate, orderedRate, dur, &sent, func(seq int64) []relay.EnqueueOption {
		return keyOpts[seq%orderedRateKeys]
	})
	if err != nil {
		return nil, err
	}
	if !waitFor(ctx, 10*time.Second, time.Millisecond, func() bool { return t.finished.Load() >= loop.sent }) {
		notes = append(notes, fmt.Sprintf("pickup: %d of %d jobs had not returned 10 s after the last commit", loop.sent-t.finished.Load(), loop.sent))
	}

	// 2. One queue-wide sequence, from a backlog.
	phase.Store("queue-wide sequence")
	specs := make([]relay.JobSpec, orderedChainJobs)
	for i := range specs {
		specs[i] = benchKind.Job(seqArgs{Seq: loChain + int64(i)})
	}
	chainRun, err := t.backlog(ctx, b, prodPool, loChain, specs, opts, &sent)
	if err != nil {
		return nil, err
	}

	// 3. A backlog spread over 100 keys.
	phase.Store("spread backlog")
	specs = make([]relay.JobSpec, orderedSpreadKeys*orderedPerKey)
	spreadKeys := make([][]relay.EnqueueOption, orderedSpreadKeys)
	for k := range spreadKeys {
		spreadKeys[k] = []relay.EnqueueOption{relay.OrderKey(fmt.Sprintf("s%03d", k))}
	}
	for i := range specs {
		specs[i] = benchKind.Job(seqArgs{Seq: loSpread + int64(i)}, spreadKeys[i%orderedSpreadKeys]...)
	}
	spreadRun, err := t.backlog(ctx, b, prodPool, loSpread, specs, opts, &sent)
	if err != nil {
		return nil, err
	}
	stopProgress()
	stopProgress = nil
	stopClients()

	// Results.
	p := rec.pickups(0, loop.sent, nil, nil, nil)
	chain := t.check(loChain, loSpread)
	spread := t.check(loSpread, total)
	all := t.check(0, total)
	b.log.Debug("slowest pickups (ms since the benchmark began)", "workload", "ordered", "jobs", p.slowest)
	spreadName := fmt.Sprintf("%d keys × %d", orderedSpreadKeys, orderedPerKey)
	res := &RunResult{
		Metrics: []Metric{{Name: "pickup: rate achieved", Unit: unitRate, Value: loop.rate()}},
		series: []series{
			{label: fmt.Sprintf("pickup (%d/s over %d keys)", orderedRate, orderedRateKeys), hist: p.hist},
			{label: "queue-wide sequence: hand-off", hist: chain.handoff},
		},
	}
	res.Metrics = append(res.Metrics, latencyMetrics("pickup ", p.hist, nil, nil)...)
	res.Metrics = append(res.Metrics, phaseMetrics("pickup ", rec.phases(0, loop.sent, nil))...)
	res.Metrics = append(res.Metrics,
		Metric{Name: "queue-wide sequence: throughput", Unit: unitRate, Value: chainRun.rate()},
		Metric{Name: "queue-wide sequence: hand-off p50", Unit: unitMs, Value: ms(chain.handoff.ValueAtQuantile(50))},
		Metric{Name: "queue-wide sequence: hand-off p99", Unit: unitMs, Value: ms(chain.handoff.ValueAtQuantile(99))},
		Metric{Name: "queue-wide sequence: hand-off max", Unit: unitMs, Value: ms(chain.handoff.Max())},
		Metric{Name: "queue-wide sequence: split: returned → claim began p50", Unit: unitMs, Value: ms(chain.wake.ValueAtQuantile(50))},
		Metric{Name: "queue-wide sequence: split: returned → claim began p99", Unit: unitMs, Value: ms(chain.wake.ValueAtQuantile(99))},
		Metric{Name: fmt.Sprintf("queue-wide sequence: not started in %v (cancelled)", backlogDeadline), Unit: unitCount, Value: float64(chainRun.cut)},
		Metric{Name: spreadName + ": throughput", Unit: unitRate, Value: spreadRun.rate()},
		Metric{Name: spreadName + ": hand-off within a key p50", Unit: unitMs, Value: ms(spread.handoff.ValueAtQuantile(50))},
		Metric{Name: spreadName + ": hand-off within a key p99", Unit: unitMs, Value: ms(spread.handoff.ValueAtQuantile(99))},
		Metric{Name: fmt.Sprintf("%s: not started in %v (cancelled)", spreadName, backlogDeadline), Unit: unitCount, Value: float64(spreadRun.cut)},
		Metric{Name: "started out of order", Unit: unitCount, Value: float64(all.outOfOrder), Target: never()},
		Metric{Name: "overlapped within a key", Unit: unitCount, Value: float64(all.overlapped), Target: never()},
		Metric{Name: "ran twice", Unit: unitCount, Value: float64(rec.dups.Load()), Target: never()},
		Metric{Name: "never started", Unit: unitCount, Value: float64(p.missing + t.missing(loChain, total)), Target: never()},
		Metric{Name: "started before Commit returned", Unit: unitCount, Value: float64(p.early)},
	)
	res.Notes = append(res.Notes,
		fmt.Sprintf("queue %q ordered (SetQueue), %d clients × %d workers, each on a pool of %d connections; no-op handlers",
			orderedQueue, orderedClients, orderedWorkers, b.opts.poolConns),
		fmt.Sprintf("pickup: %d jobs/s for %v, one job per transaction, open loop, round-robin over %d order keys (each key gets a job every %v)",
			orderedRate, dur, orderedRateKeys, time.Duration(orderedRateKeys)*time.Second/orderedRate),
		"queue-wide sequence: "+chainRun.describe("jobs without an order key"),
		spreadName+": "+spreadRun.describe("jobs, keys interleaved"),
		"hand-off = start of a job − return of the job before it in its key; \"claim began\" is the claim transaction's now(), taken before it waits for the queue's claim lock",
		"order is by job id within a key; \"overlapped\": started before the job before it in its key returned, or found another job of its key running",
	)
	res.Notes = append(res.Notes, notes...)
	if loop.maxLag > 10*time.Millisecond {
		res.Notes = append(res.Notes, fmt.Sprintf("pickup: the producer fell up to %v behind its schedule", loop.maxLag.Round(time.Millisecond)))
	}
	if loop.sent < nRate {
		res.Notes = append(res.Notes, fmt.Sprintf("pickup: the producer sent only %d of %d jobs", loop.sent, nRate))
	}
	if all.outOfOrder+all.overlapped > 0 {
		res.Notes = append(res.Notes, fmt.Sprintf("order violations (out of order / overlapped): pickup %d / %d, queue-wide sequence %d / %d, %s %d / %d",
			all.outOfOrder-chain.outOfOrder-spread.outOfOrder, all.overlapped-chain.overlapped-spread.overlapped,
			chain.outOfOrder, chain.overlapped, spreadName, spread.outOfOrder, spread.overlapped))
	}
	return res, nil
}

// tracker records, besides a recorder's commit, claim and start times, each job's id and
// when its handler returned, and, when jobs have keys, how many of each key run at once.
type tracker struct {
	rec      *recorder
	ids      []int64        // as Enqueue and EnqueueMany returned them
	ended    []atomic.Int64 // handler returned, as offsets from rec.base
	cut      []bool         // not started by its backlog phase's deadline, and cancelled
	finished atomic.Int64   // handlers returned
	keyOf    func(seq int64) int
	running  []atomic.Int32 // per key
	overlap  []atomic.Bool  // found another job of its key running when it started
}

// newTracker tracks the jobs of rec; keyOf, if not nil, gives each job's key in [0, keys).
func newTracker(rec *recorder, keys int, keyOf func(seq int64) int) *tracker {
	n := len(rec.start)
	t := &tracker{rec: rec, ids: make([]int64, n), ended: make([]atomic.Int64, n), cut: make([]bool, n), keyOf: keyOf}
	if keyOf != nil {
		t.running, t.overlap = make([]atomic.Int32, keys), make([]atomic.Bool, n)
	}
	return t
}

// begin records that job's handler started at now, its first action; end(seq) is its
// last. A sequence number out of range is counted by the recorder and ignored.
func (t *tracker) begin(job *relay.Job[seqArgs], now time.Time) int64 {
	seq := job.Args.Seq
	if seq < 0 || seq >= int64(len(t.ended)) {
		t.rec.began(seq, now)
		return -1
	}
	if t.keyOf != nil && t.running[t.keyOf(seq)].Add(1) > 1 {
		t.overlap[seq].Store(true)
	}
	t.rec.beganClaimed(seq, now, job.AttemptedAt)
	return seq
}

func (t *tracker) end(seq int64) {
	if seq >= 0 {
		if t.keyOf != nil {
			t.running[t.keyOf(seq)].Add(-1)
		}
		t.ended[seq].Store(t.rec.since(time.Now()))
	}
	t.finished.Add(1)
}

// missing counts the jobs in [lo, hi) that were enqueued, never started, and not cut.
func (t *tracker) missing(lo, hi int64) int64 {
	var n int64
	for seq := lo; seq < hi; seq++ {
		if t.ids[seq] != 0 && !t.cut[seq] && t.rec.start[seq].Load() == 0 {
			n++
		}
	}
	return n
}

// backlogRun is what a backlog phase did.
type backlogRun struct {
	jobs, ran, cut int64
	took, span     time.Duration // of EnqueueMany; from its return to the last handler's
}

func (r backlogRun) rate() float64 { return rateOver(r.ran, r.span) }

func (r backlogRun) describe(what string) string {
	s := fmt.Sprintf("%d %s in one EnqueueMany (took %v) while the clients ran; throughput = jobs run / (EnqueueMany returned → last handler returned: %v)",
		r.jobs, what, r.took.Round(time.Millisecond), r.span.Round(time.Millisecond))
	if r.cut > 0 {
		s += fmt.Sprintf("; CUT at %v: %d jobs had not started and were cancelled", backlogDeadline, r.cut)
	}
	return s
}

// backlog inserts specs (sequence numbers lo, lo+1, …) in one EnqueueMany and waits up to
// backlogDeadline for their handlers to return. Then it cancels, in one transaction, those
// that have not started, and gives the ones already claimed a second to return.
func (t *tracker) backlog(ctx context.Context, b *bench, pool *pgxpool.Pool, lo int64, specs []relay.JobSpec, opts []relay.EnqueueOption, sent *atomic.Int64) (backlogRun, error) {
	r := backlogRun{jobs: int64(len(specs))}
	hi := lo + r.jobs
	base := t.finished.Load()
	start := time.Now()
	ids, err := relay.EnqueueMany(ctx, pool, specs, opts...)
	if err != nil {
		return r, err
	}
	returned := time.Now()
	r.took = returned.Sub(start)
	for i, id := range ids {
		t.ids[lo+int64(i)] = id
		t.rec.committed(lo+int64(i), returned)
	}
	sent.Add(r.jobs)
	done := func() bool { return t.finished.Load()-base >= r.jobs-r.cut }
	if !waitFor(ctx, backlogDeadline, time.Millisecond, done) && ctx.Err() == nil {
		b.log.Warn("backlog phase out of time; cancelling the jobs not started", "after", backlogDeadline,
			"returned", t.finished.Load()-base, "of", r.jobs)
		if r.cut, err = t.cancelUnstarted(ctx, b, pool, lo, hi); err != nil {
			return r, err
		}
		waitFor(ctx, time.Second, time.Millisecond, done)
	}
	var last int64
	for seq := lo; seq < hi; seq++ {
		if e := t.ended[seq].Load(); e != 0 {
			r.ran++
			last = max(last, e)
		}
	}
	r.span = time.Duration(last - t.rec.since(returned))
	return r, nil
}

// cancelUnstarted cancels the jobs in [lo, hi) whose handlers have not started, in one
// transaction, and marks them cut; a job that finished meanwhile is left alone.
func (t *tracker) cancelUnstarted(ctx context.Context, b *bench, pool *pgxpool.Pool, lo, hi int64) (int64, error) {
	tx, err := pool.Begin(ctx)
	if err != nil {
		return 0, err
	}
	defer tx.Rollback(ctx)
	var seqs []int64
	for seq := lo; seq < hi; seq++ {
		if t.rec.start[seq].Load() != 0 {
			continue
		}
		err := relay.Cancel(ctx, tx, t.ids[seq], relay.Schema(b.opts.schema))
		if errors.Is(err, relay.ErrJobFinished) {
			continue
		}
		if err != nil {
			return 0, fmt.Errorf("cancel: %w", err)
		}
		seqs = append(seqs, seq)
	}
	if err := tx.Commit(ctx); err != nil {
		return 0, fmt.Errorf("cancel: %w", err)
	}
	for _, seq := range seqs {
		t.cut[seq] = true
	}
	return int64(len(seqs)), nil
}

// orderCheck is what the jobs of some keys did to their keys' order.
type orderCheck struct {
	outOfOrder int64     // started while a job of its key with a lower id had not
	overlapped int64     // see tracker.check
	handoff    histogram // start − return of the job before it in its key
	wake       histogram // claim began − return of the job before it in its key
}

// check goes through the jobs in [lo, hi), key by key in id order. A job is out of order
// if a job of its key with a lower id started after it or never started; it overlapped
// if it found another job of its key running, or started before the job before it
// returned.
func (t *tracker) check(lo, hi int64) orderCheck {
	c := orderCheck{handoff: newHist(), wake: newHist()}
	byKey := map[int][]int64{}
	for seq := lo; seq < hi; seq++ {
		if t.ids[seq] != 0 {
			k := t.keyOf(seq)
			byKey[k] = append(byKey[k], seq)
		}
	}
	for _, seqs := range byKey {
		slices.SortFunc(seqs, func(a, b int64) int { return cmp.Compare(t.ids[a], t.ids[b]) })
		var latest int64 // the latest start of the key's jobs so far
		gap := false     // one of them never started
		for i, seq := range seqs {
			s := t.rec.start[seq].Load()
			if s == 0 {
				gap = true
				continue
			}
			if gap || s < latest {
				c.outOfOrder++
			}
			latest = max(latest, s)
			over := t.overlap[seq].Load()
			if i > 0 {
				if e := t.ended[seqs[i-1]].Load(); e != 0 {
					if s < e {
						over = true
					} else {
						record(c.handoff, time.Duration(s-e))
						record(c.wake, time.Duration(t.rec.claim[seq].Load()-e))
					}
				}
			}
			if over {
				c.overlapped++
			}
		}
	}
	return c
}
